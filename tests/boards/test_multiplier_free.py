""""Multiplier-free" measured on the whole accelerator (UART, host link, core, requantiser):
Yosys sees no $mul and, allowed to use SB_MAC16 blocks (-dsp), maps none. Yosys only (no place
and route): about a minute per build, so these run with `make test-slow`."""

import pytest

from addershift.boards.report import synthesize
from addershift.hw.accelerator import AcceleratorTop
from addershift.hw.config import ArrayConfig


class _UltraPlus:
    """Enough of a platform for the core to pick SB_SPRAM256KA."""
    device = "iCE40UP5K"


def _count(tmp_path, **config):
    top = AcceleratorTop(config=ArrayConfig(rows=2, cols=2, max_k=72, **config),
                         clk_freq=48_000_000, baud=115200)
    return synthesize(top, target="ice40-up5k-dsp", build_dir=tmp_path, harness=False,
                      place=False, platform=_UltraPlus())


@pytest.mark.slow
@pytest.mark.parametrize("pe, mode", [("adder", "pow2x2"), ("shift", "shift")])
def test_adder_and_shift_accelerators_have_no_multiplier(tmp_path, pe, mode):
    r = _count(tmp_path, pe=pe, requant_mode=mode)
    assert r.premap_mul == 0 and r.dsp_cells == 0 and r.multiplier_free
    assert r.resources["lut4"].used > 1000     # the whole design was there


@pytest.mark.slow
def test_the_count_sees_a_requantiser_multiplier(tmp_path):
    # The same adder build with the integer-multiplier requantisation: the PEs still have none,
    # the requantiser's lanes do.
    r = _count(tmp_path, pe="adder", requant_mode="mul")
    assert r.premap_mul > 0 and r.dsp_cells > 0 and not r.multiplier_free
