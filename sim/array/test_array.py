"""cocotb bench: the generated Verilog of a SystolicArray against the golden model, on Icarus and
Verilator, exactly.

Layout after verilog-axis: a TB (``addershift.sim.stream_bench.StreamTB``: clock, reset, a source
and a sink on the two streams with idle and back-pressure generators, a per-cycle monitor that
checks the stream rules), the scenarios as cocotb tests, and at the bottom the pytest functions that generate the Verilog (with
``addershift.hw.generate``, so the JSON sidecar names the ports) and run this file through
``addershift.sim.runner.run_cocotb``. Parameters reach the bench through ``bench_params()``.

Scenarios: random tiles (K from 1 to ``k_max``, operands uniform over their ranges, shift weights
zero one time in five) and corner tiles (all-minimum and all-maximum operands, every exponent code
with every sign, ``max_length``-step tiles at both ends of the accumulator range), each under four
flow patterns: none, an idle source, a back-pressured sink, and both; and resets of one and two
cycles in the middle of a reduction with a result unread.
"""

import itertools
import json
import pathlib
import random

import cocotb
import numpy as np
import pytest

# (pause source?, pause sink?) generators per pattern, verilog-axis style: 1 = pause this cycle.
PATTERNS = {
    "free": (None, None),
    "idle": (lambda: itertools.cycle([0, 0, 1, 0, 1, 1, 0]), None),
    "backpressure": (None, lambda: itertools.cycle([0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0])),
    "both": (lambda: itertools.cycle([1, 0, 0, 0]), lambda: itertools.cycle([0, 0, 1])),
}


def _params():
    from addershift.sim.runner import bench_params
    return bench_params()


def _array(params):
    """The array the Verilog was generated from (for layouts and golden results only)."""
    from addershift.hw.array import SystolicArray
    arr = SystolicArray(kind=params["kind"], rows=params["rows"], cols=params["cols"],
                        **params.get("widths", {}))
    arr._MustUse__silence = True
    return arr


def check_rows(arr, tiles, rows):
    """Compare received rows with the golden model, tile by tile; return the values compared."""
    from addershift.sim.array_vectors import golden_tile
    for t, tile in enumerate(tiles):
        got = rows[t * arr.rows:(t + 1) * arr.rows]
        assert [last for _, last in got] == [0] * (arr.rows - 1) + [1], f"tile {t}: last flags"
        expected = golden_tile(arr, tile)
        np.testing.assert_array_equal(np.array([acc for acc, _ in got]), expected,
                                      err_msg=f"tile {t} (K={tile[0].shape[1]})")
    return len(tiles) * arr.rows * arr.cols


async def run_tiles(dut, tiles_for_pattern):
    """Stream each flow pattern's tiles through the array (the TB checks the stream rules) and
    compare every row with the golden model."""
    from addershift.sim.array_vectors import step_words, unpack_row
    from addershift.sim.stream_bench import StreamTB
    params = _params()
    arr = _array(params)
    tb = StreamTB(dut)
    await tb.reset()
    values = 0
    for name, (pause_source, pause_sink) in PATTERNS.items():
        tiles = tiles_for_pattern(arr, name)
        words = [w for tile in tiles for w in step_words(arr, tile)]
        out = await tb.run(words, arr.rows * len(tiles), pause_source=pause_source,
                           pause_sink=pause_sink)
        values += check_rows(arr, tiles, [unpack_row(arr, word) for word in out])
    dut._log.info(f"{values} output values equal the golden model in {tb.cycles} cycles "
                  f"({tb.in_stalls} input stall cycles)")
    from addershift.sim.runner import report_values
    report_values(params, values)


@cocotb.test()
async def random_tiles(dut):
    """Random K in 1..k_max and random operands, under every flow pattern."""
    params = _params()
    rng = np.random.default_rng(params["seed"])
    from addershift.sim.array_vectors import random_tile
    per_pattern = params["tiles"]
    k_max = params["k_max"]

    def length():
        # Log-uniform over 1..k_max: every length class is covered without spending most of the
        # cycles on the longest tiles.
        return int(min(k_max, np.floor(np.exp(rng.uniform(0, np.log(k_max + 1))))))

    def tiles(arr, pattern):
        return [random_tile(arr, length(), rng) for _ in range(per_pattern)]

    await run_tiles(dut, tiles)


@cocotb.test()
async def corner_tiles(dut):
    """All-min/all-max operands, every exponent code and zero weights, max_length extremes."""
    from addershift.sim.array_vectors import (exponent_tile, extreme_tiles,
                                              operand_corner_tiles)
    from addershift.sw.numerics import Op

    def tiles(arr, pattern):
        out = list(operand_corner_tiles(arr, 2))
        if arr.kind is Op.SHIFT:
            out.append(exponent_tile(arr))
        if pattern in ("free", "both"):     # the long ones twice, not four times
            out += list(extreme_tiles(arr))
        return out

    await run_tiles(dut, tiles)


@cocotb.test()
async def reset_mid_reduction(dut):
    """A reset of one and of two cycles while a finished result waits unread and the next
    reduction is half summed: both are dropped. ``i.ready`` is low the cycle after the reset (the
    array's reset is a register of the design's; in an array of several tiles, a register per row
    of tiles feeds its tiles' copies), no old row is offered, and the tiles sent next sum from
    zero. The Verilog twin of ``tests/hw/test_array.py::test_reset_mid_reduction_starts_clean``."""
    from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

    from addershift.sim.array_vectors import random_tile, step_words, unpack_row
    from addershift.sim.runner import report_values
    from addershift.sim.stream_bench import StreamTB
    params = _params()
    arr = _array(params)
    rng = np.random.default_rng(params["seed"] + 1)
    k_max = min(arr.max_length, 12)
    tb = StreamTB(dut)
    await tb.reset()
    values = 0
    for reset_cycles in (1, 2):
        finished, partial = random_tile(arr, k_max // 2 + 1, rng), random_tile(arr, k_max, rng)
        before = step_words(arr, finished) + step_words(arr, partial)[:k_max // 2]
        for word in before:      # the sink takes nothing: the finished result waits unread
            tb.i_payload.value, tb.i_valid.value, tb.o_ready.value = word, 1, 0
            taken = False
            while not taken:     # inputs change on the falling edge, the rising one transfers
                await ReadOnly()
                taken = bool(int(tb.i_ready.value))
                await FallingEdge(dut.clk)
        tb.i_valid.value, dut.rst.value = 0, 1
        for _ in range(reset_cycles):
            await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await ReadOnly()
        assert (int(tb.i_ready.value), int(tb.o_valid.value)) == (0, 0), "the cycle after reset"
        await FallingEdge(dut.clk)
        await ReadOnly()
        assert (int(tb.i_ready.value), int(tb.o_valid.value)) == (1, 0), "two cycles after reset"
        await FallingEdge(dut.clk)
        after = [random_tile(arr, k, rng) for k in (3, k_max, 1)]
        # The sink waits before its first take: a row kept across the reset would show there.
        out = await tb.run([w for tile in after for w in step_words(arr, tile)],
                           arr.rows * len(after),
                           pause_sink=lambda: itertools.chain([1] * 30, itertools.repeat(0)))
        values += check_rows(arr, after, [unpack_row(arr, word) for word in out])
    report_values(params, values)


# --- pytest: generate the Verilog and run this bench -----------------------------------------------

def _shapes(count, seed):
    """``count`` (kind, rows, cols) triples per kind, rows and cols drawn from 1..8."""
    rnd = random.Random(seed)
    return [(kind, rnd.randint(1, 8), rnd.randint(1, 8))
            for kind in ("adder", "shift", "mul") for _ in range(count)]


# The default run: one shape per kind and simulator, a few thousand output values each. Icarus
# takes the full 8 x 8 adder array; Verilator, whose C++ build of 64 PEs alone takes about a
# minute of this machine's CPU, smaller ones. Two adder shapes cross a tile boundary, so the
# per-tile copies of operands and control run as Verilog too.
DEFAULT_CASES = [
    ("icarus", "adder", 8, 8, 8), ("icarus", "shift", 3, 5, 40), ("icarus", "mul", 6, 2, 50),
    ("icarus", "adder", 9, 3, 30),          # two tiles of rows (hw.array.TILE)
    ("verilator", "adder", 3, 9, 40),       # two tiles of columns
    ("verilator", "shift", 2, 7, 40), ("verilator", "mul", 4, 4, 40),
]


def run_bench(simulator, kind, rows, cols, tmp_path, *, tiles, k_max=300,
              max_length=300, seed=1, widths=None, target=None):
    """``target``: generate the Verilog as for that :data:`addershift.boards.report.TARGETS`
    device (ECP5: the adder PEs' carry cells instantiated, simulated with Yosys' models)."""
    from addershift.boards.report import TARGETS
    from addershift.hw.array import SystolicArray
    from addershift.hw.generate import generate
    from addershift.sim.cells import cell_models
    from addershift.sim.runner import run_cocotb

    widths = dict(widths or {}, max_length=max_length)
    arr = SystolicArray(kind=kind, rows=rows, cols=cols, **widths)
    top = f"array_{kind}_{rows}x{cols}"
    platform = TARGETS[target] if target else None
    info = generate(arr, tmp_path / f"{top}.v", top=top, platform=platform)
    assert {p["name"] for p in info["ports"]} >= {"i__payload", "o__payload", "clk", "rst"}
    if platform is not None and platform.family == "ecp5":
        verilog = (tmp_path / f"{top}.v").read_text()
        assert "CCU2C" in verilog
        (tmp_path / f"{top}.v").write_text(verilog + cell_models())
    report = tmp_path / "report.json"
    run_cocotb(simulator=simulator, verilog=tmp_path / f"{top}.v", toplevel=top,
               test_module=pathlib.Path(__file__), build_dir=tmp_path / "build",
               params={"kind": kind, "rows": rows, "cols": cols, "widths": widths,
                       "seed": seed, "tiles": tiles, "k_max": k_max, "report": str(report)})
    results = json.loads(report.read_text())
    return results["values"]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator,kind,rows,cols,tiles", DEFAULT_CASES)
def test_array_bench(simulator, kind, rows, cols, tiles, tmp_path):
    values = run_bench(simulator, kind, rows, cols, tmp_path, tiles=tiles)
    assert values >= 2000


# Widths other than the default 8 bits (the Amaranth tests' too): a narrower activation, a
# shift exponent range with negative codes and one past 3, a 7-bit mul weight. Random and corner
# tiles, each kind on Icarus, shift on Verilator.
OTHER_WIDTHS = {"adder": dict(x_bits=5), "shift": dict(x_bits=6, p_min=-2, p_max=5),
                "mul": dict(x_bits=4, w_bits=7)}


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator,kind,rows,cols", [
    ("icarus", "adder", 3, 2), ("icarus", "shift", 2, 3), ("icarus", "mul", 2, 2),
    ("verilator", "shift", 2, 3)])
def test_array_bench_other_widths(simulator, kind, rows, cols, tmp_path):
    values = run_bench(simulator, kind, rows, cols, tmp_path, tiles=20, k_max=60, max_length=60,
                       widths=OTHER_WIDTHS[kind])
    assert values >= 400


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator,rows,cols", [("icarus", 4, 3), ("verilator", 2, 3)])
def test_array_bench_with_ecp5_carry_cells(simulator, rows, cols, tmp_path):
    """The adder PEs of ECP5 builds: their accumulators on instantiated CCU2C cells
    (``hw.pe.ecp5_carry_chain``) run as Yosys' model of the cell, against the golden model."""
    values = run_bench(simulator, "adder", rows, cols, tmp_path, tiles=40, target="ecp5-85f")
    assert values >= 1000


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("kind,rows,cols", _shapes(2, seed=2024))
def test_array_bench_long(simulator, kind, rows, cols, tmp_path):
    """A long run: well over a million output values in total across the shapes."""
    tiles = -(-200_000 // (4 * rows * cols))     # per pattern: about 200k values per shape
    values = run_bench(simulator, kind, rows, cols, tmp_path, tiles=tiles, k_max=20,
                       seed=rows * 10 + cols)
    assert values >= 200_000
