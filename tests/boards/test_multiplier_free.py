""""Multiplier-free" measured on the whole accelerator (UART, host link, core, requantiser):
Yosys sees no $mul and, allowed to use SB_MAC16 blocks (-dsp), maps none. The synthesis runs
take about a minute per build, so they run with `make test-slow`; the count before mapping (what
the build's report calls `$mul before mapping`) takes seconds and runs in `make test` over the
shapes and requantiser lanes that make index arithmetic."""

import json

import pytest
from amaranth.back import rtlil

from addershift.boards.report import (_cells_by_type, premap_multipliers, synthesize,
                                      yosys_stat_commands)
from addershift.boards.toolchain import prepare_environment, run_tool
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


def _premap_mul(tmp_path, config):
    """``$mul`` cells Yosys finds in the design before technology mapping (as a build counts)."""
    top = AcceleratorTop(config=config, clk_freq=48_000_000, baud=115200)
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", platform=_UltraPlus()))
    after_read, _ = yosys_stat_commands("top")
    (tmp_path / "top.ys").write_text("\n".join(["read_rtlil top.il", *after_read]) + "\n")
    prepare_environment()
    run_tool("YOSYS", ["-q", "top.ys"], cwd=tmp_path, log_name="yosys.log")
    return premap_multipliers(_cells_by_type(json.loads((tmp_path / "top.premap.json")
                                                         .read_text())))


@pytest.mark.parametrize("pe, mode, rows, cols, lanes", [
    ("adder", "pow2x2", 2, 2, 1), ("adder", "pow2x2", 3, 3, 1), ("adder", "pow2x2", 3, 3, 3),
    ("shift", "shift", 2, 2, 1), ("shift", "shift", 3, 3, 1), ("shift", "shift", 3, 4, 2)])
def test_no_multiplier_before_mapping_with_any_requantiser_lanes(tmp_path, pe, mode, rows, cols,
                                                                 lanes):
    """A row split into requantiser transfers is selected by a chunk index; indexed through a
    data layout, the shift accumulators' 22-bit chunks made that a `$mul` by 22 (found by the
    fit study of the iCEBreaker's shift accelerator, 2026-11-29)."""
    config = ArrayConfig(pe=pe, rows=rows, cols=cols, max_k=72, requant_mode=mode,
                         requant_lanes=lanes)
    assert _premap_mul(tmp_path, config) == 0


def test_the_premap_count_sees_a_multiplier(tmp_path):
    config = ArrayConfig(pe="mul", rows=2, cols=2, max_k=72, requant_mode="mul",
                         requant_lanes=1)
    assert _premap_mul(tmp_path, config) >= 4          # a PE's each, and the requantiser's


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
