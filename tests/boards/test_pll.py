"""PLL settings against icepll / ecppll (the YoWASP builds) and the parts' limits."""

import re
import subprocess

import pytest

from addershift.boards.pll import ecp5_pll, ice40_pll
from addershift.boards.toolchain import find_program


@pytest.mark.parametrize("f_out, divf, divq", [(48, 63, 4), (30, 79, 5), (60, 79, 4), (75, 49, 3)])
def test_ice40_known_settings(f_out, divf, divq):
    cfg = ice40_pll(12, f_out)
    assert (cfg.divr, cfg.divf, cfg.divq, cfg.filter_range) == (0, divf, divq, 1)
    assert cfg.f_out == f_out
    assert 533 <= cfg.f_vco <= 1066


def _icepll(f_in, f_out, tmp_path):
    out = subprocess.run([find_program("yowasp-icepll"), "-i", str(f_in), "-o", str(f_out)],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    return {k: int(re.search(rf"{k}:\s+(\d+)", out).group(1))
            for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")}


@pytest.mark.parametrize("f_in, f_out", [(12, 36), (12, 66.5), (12, 100), (25, 133), (30, 19)])
def test_ice40_matches_icepll(f_in, f_out, tmp_path):
    cfg = ice40_pll(f_in, f_out)
    assert _icepll(f_in, f_out, tmp_path) == {"DIVR": cfg.divr, "DIVF": cfg.divf,
                                              "DIVQ": cfg.divq, "FILTER_RANGE": cfg.filter_range}


@pytest.mark.parametrize("f_out", [50, 60, 75, 100, 120, 150, 200])
def test_ecp5_matches_ecppll(f_out, tmp_path):
    subprocess.run([find_program("yowasp-ecppll"), "-i", "25", "-o", str(f_out), "-f", "pll.v"],
                   capture_output=True, check=True, cwd=tmp_path)
    text = (tmp_path / "pll.v").read_text()
    params = {k: int(re.search(rf"\.{k}\((\d+)\)", text).group(1))
              for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV")}
    cfg = ecp5_pll(25, f_out)
    assert params == {"CLKI_DIV": cfg.clki_div, "CLKFB_DIV": cfg.clkfb_div,
                      "CLKOP_DIV": cfg.clkop_div}
    assert cfg.f_out == pytest.approx(f_out)
    assert 400 <= cfg.f_vco <= 800


def test_ecp5_inexact_frequency_is_closest():
    cfg = ecp5_pll(25, 133.3333)
    assert cfg.f_out == pytest.approx(400 / 3)


@pytest.mark.parametrize("call, message", [
    (lambda: ice40_pll(12, 500), "PLL output frequency must be between 16 and 275 MHz, not 500"),
    (lambda: ice40_pll(5, 48), "PLL input frequency must be between 10 and 133 MHz, not 5"),
    (lambda: ice40_pll(12, "48"), "PLL output frequency must be a number of MHz, not '48'"),
    (lambda: ecp5_pll(25, 401), "PLL output frequency must be between 10 and 400 MHz, not 401"),
    (lambda: ecp5_pll(float("nan"), 100), "PLL input frequency must be a number of MHz, not nan"),
])
def test_limits(call, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()
