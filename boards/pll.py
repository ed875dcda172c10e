"""PLL divider settings for iCE40 (SB_PLL40_*) and ECP5 (EHXPLLL), computed like icepll / ecppll.

Both searches are the ones Project IceStorm's ``icepll`` and Project Trellis' ``ecppll`` run (simple
feedback on iCE40, CLKOP feedback on ECP5), so the results agree with those tools; the tests
compare against the YoWASP builds of both.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["ICE40PLL", "ECP5PLL", "ice40_pll", "ecp5_pll"]


@dataclasses.dataclass(frozen=True)
class ICE40PLL:
    """SB_PLL40 parameters (``FEEDBACK_PATH="SIMPLE"``) and the frequencies they give, in MHz."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    f_pfd: float
    f_vco: float
    f_out: float


@dataclasses.dataclass(frozen=True)
class ECP5PLL:
    """EHXPLLL parameters (``FEEDBK_PATH="CLKOP"``) and the frequencies they give, in MHz."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    f_in: float
    f_vco: float
    f_out: float


def _check_mhz(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a number of MHz, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g} MHz, not {value!r}")


def ice40_pll(f_in, f_out):
    """The SB_PLL40 setting whose output is closest to ``f_out`` MHz from ``f_in`` MHz.

    Limits from the iCE40 sysCLOCK guide as icepll applies them: PFD 10-133 MHz, VCO 533-1066 MHz,
    output 16-275 MHz.
    """
    _check_mhz("PLL input frequency", f_in, 10, 133)
    _check_mhz("PLL output frequency", f_out, 16, 275)
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                out = f_vco / (1 << divq)
                if best is None or abs(out - f_out) < abs(best[-1] - f_out):
                    best = (divr, divf, divq, f_pfd, f_vco, out)
    divr, divf, divq, f_pfd, f_vco, out = best
    # icepll's loop filter choice for the PFD frequency.
    filter_range = next(i + 1 for i, limit in enumerate((17, 26, 44, 66, 101, math.inf))
                        if f_pfd < limit)
    return ICE40PLL(divr, divf, divq, filter_range, float(f_in), f_pfd, f_vco, out)


def ecp5_pll(f_in, f_out):
    """The EHXPLLL setting whose CLKOP is closest to ``f_out`` MHz from ``f_in`` MHz.

    Limits as ecppll applies them: input 8-400 MHz, PFD 3.125-400 MHz, VCO 400-800 MHz, output
    10-400 MHz; among equally close settings the VCO nearest 600 MHz wins.
    """
    _check_mhz("PLL input frequency", f_in, 8, 400)
    _check_mhz("PLL output frequency", f_out, 10, 400)
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            for clkop_div in range(1, 129):
                f_vco = f_pfd * clkfb_div * clkop_div
                if not 400 <= f_vco <= 800:
                    continue
                out = f_vco / clkop_div
                key = (abs(out - f_out), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f_vco, out)
    _, clki_div, clkfb_div, clkop_div, f_vco, out = best
    # CLKOP shifted by half a period, as Lattice's tools (and ecppll) do; with CLKOP as its own
    # feedback the phase does not change the output frequency.
    cphase = max(0, round(clkop_div / 2) - 1)
    return ECP5PLL(clki_div, clkfb_div, clkop_div, cphase, float(f_in), f_vco, out)
