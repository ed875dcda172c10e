"""cocotb bench: the generated Verilog of the pooling units of ``hw/pool.py`` (``MaxPool``,
``GlobalAvgPool``) against ``golden.max_pool2d`` and ``golden.global_avg_pool``, bit for bit, on
Icarus and Verilator.

Layout after verilog-axis, as ``sim/requant/``: the shared ``addershift.sim.stream_bench.StreamTB``
(clock, reset, a source and a sink under idle and back-pressure generators, the output's stream
rule checked every cycle), the scenarios as cocotb tests, and at the bottom the pytest functions
that generate the Verilog and run this file through ``addershift.sim.runner.run_cocotb``. The
vectors and golden results are ``addershift.sim.pool_vectors``, shared with the Amaranth tests.

A batch's frames stream back to back with the frame-size ports (``width``/``height``,
``pixels``/``shift``) held; the ports change only once the batch's last result is out.

Scenarios: frames of the smallest and the largest size the build takes and random sizes between
(max pooling; a channel held at an extreme, a channel alternating between both), every shift the
build allows (average), each under four flow patterns: none, an idle source, a back-pressured
sink, and both; and sums at both ends of their range and ties at +-0.5 with every shift (average).
"""

import itertools
import json
import pathlib

import cocotb
import numpy as np
import pytest

# (pause source?, pause sink?) generators per pattern, verilog-axis style: 1 = pause this cycle.
PATTERNS = {
    "free": (None, None),
    "idle": (lambda: itertools.cycle([0, 1, 0, 0, 1, 1]), None),
    "backpressure": (None, lambda: itertools.cycle([0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1])),
    "both": (lambda: itertools.cycle([1, 0, 0]), lambda: itertools.cycle([0, 0, 1, 1])),
}

#: Frame sizes (width, height) the average's batches take in turn (with its max_pixels = 64).
AVG_SIZES = [(1, 1), (8, 8), (3, 5), (7, 2), (4, 4), (64, 1)]


def _params():
    from addershift.sim.runner import bench_params
    return bench_params()


def _unit(params):
    """The unit the Verilog was generated from (for layouts, sizes and golden results only)."""
    from addershift.hw import pool
    dut = getattr(pool, params["unit"])(**params["build"])
    dut._MustUse__silence = True
    return dut


async def run_batches(dut, batches_for_pattern):
    """Each pattern's batches through the Verilog; every result equal to the golden model's."""
    from addershift.sim.pool_vectors import pack, unpack
    from addershift.sim.runner import report_values
    from addershift.sim.stream_bench import StreamTB
    params = _params()
    unit = _unit(params)
    tb = StreamTB(dut)
    await tb.reset()
    values = 0
    for name, (pause_source, pause_sink) in PATTERNS.items():
        for b, (settings, transfers, expected) in enumerate(batches_for_pattern(unit, name)):
            for port, value in settings.items():
                getattr(dut, port).value = value
            words = [pack(unit, t) for t in transfers]
            got = [unpack(unit, word) for word in await tb.run(
                words, len(expected), pause_source=pause_source, pause_sink=pause_sink)]
            for t, (g, e) in enumerate(zip(got, expected)):
                assert g == e, f"{name}, batch {b} {settings}, result {t}: got {g}, expected {e}"
            values += len(expected) * unit.lanes
    dut._log.info(f"{values} values equal the golden model's in {tb.cycles} cycles")
    report_values(params, values)


@cocotb.test()
async def random_frames(dut):
    """Max pooling: frames of every size class, two per batch. Average: every shift, in turn
    over ``AVG_SIZES``, two frames per batch."""
    from addershift.sim.pool_vectors import (avg_pool_batches, max_pool_batches,
                                             max_pool_sizes)
    params = _params()
    rng = np.random.default_rng(params["seed"])

    def batches(unit, pattern):
        if params["unit"] == "MaxPool":
            return max_pool_batches(rng, unit, max_pool_sizes(rng, unit))
        return avg_pool_batches(rng, unit, AVG_SIZES, range(unit.shift_max + 1))

    await run_batches(dut, batches)


@cocotb.test()
async def average_extremes_and_ties(dut):
    """Average only: sums at both ends of their range and ties, with every shift (once, under
    the free pattern)."""
    from addershift.sim.pool_vectors import avg_pool_extremes
    await run_batches(dut, lambda unit, pattern: avg_pool_extremes(
        unit, range(unit.shift_max + 1)) if pattern == "free" else [])


# --- pytest: generate the Verilog and run this bench ------------------------------------------

def run_bench(simulator, unit, build, tmp_path, *, seed=1):
    """Generate ``unit``'s Verilog from ``build`` and run the tests that apply to it; the number
    of values compared."""
    from amaranth.back import verilog

    from addershift.hw import pool
    from addershift.sim.runner import run_cocotb

    top = unit.lower()
    path = tmp_path / f"{top}.v"
    path.write_text(verilog.convert(getattr(pool, unit)(**build), name=top, emit_src=False))
    report = tmp_path / "report.json"
    tests = ["random_frames"] + (["average_extremes_and_ties"] if unit == "GlobalAvgPool" else [])
    run_cocotb(simulator=simulator, verilog=path, toplevel=top,
               test_module=pathlib.Path(__file__), build_dir=tmp_path / "build", testcase=tests,
               params={"unit": unit, "build": build, "seed": seed, "report": str(report)})
    return json.loads(report.read_text())["values"]


def max_pool(kernel, stride, **build):
    return dict(dict(lanes=3, bits=8, max_width=11, max_height=9), kernel=kernel, stride=stride,
                **build)


#: Every kernel/stride relation (non-overlapping, overlapping, with gaps, 1x1 and subsampling,
#: the widest window) and 16-bit values in one lane, on Icarus (a few seconds each).
MAX_BUILDS = [max_pool(2, 2), max_pool(3, 3), max_pool(3, 2), max_pool(2, 1), max_pool(1, 1),
              max_pool(1, 2), max_pool(2, 3), max_pool(3, 1), max_pool(5, 2),
              max_pool(2, 2, lanes=1, bits=16, max_width=6, max_height=6)]
AVG = dict(lanes=2, bits=8, out_bits=8, max_pixels=64)
#: The average with 8-bit results (saturating), exact 16-bit results, and one lane of 16 bits.
AVG_BUILDS = [AVG, dict(AVG, out_bits=16), dict(lanes=1, bits=16, out_bits=16, max_pixels=64)]


def _values(unit, build):
    """The values the bench compares for ``build`` (the average's exactly; the max's at least:
    one result per frame, two frames of each of the seven sizes, per pattern)."""
    lanes, patterns = build["lanes"], len(PATTERNS)
    if unit == "MaxPool":
        return patterns * 7 * 2 * lanes
    return (patterns * 2 + 4) * (build.get("shift_max", 40) + 1) * lanes


@pytest.mark.cocotb
@pytest.mark.parametrize("build", MAX_BUILDS, ids=lambda b: "k{kernel}s{stride}l{lanes}b{bits}"
                         .format(**b))
def test_max_pool_bench(build, tmp_path):
    assert run_bench("icarus", "MaxPool", build, tmp_path) >= _values("MaxPool", build)


@pytest.mark.cocotb
@pytest.mark.parametrize("build", AVG_BUILDS, ids=lambda b: "l{lanes}b{bits}o{out_bits}"
                         .format(**b))
def test_global_avg_pool_bench(build, tmp_path):
    assert run_bench("icarus", "GlobalAvgPool", build, tmp_path) == _values("GlobalAvgPool", build)


# Verilator's C++ build takes 15-20 s of CPU here: one build of each unit in the default run.
@pytest.mark.cocotb
@pytest.mark.parametrize("unit, build", [("MaxPool", max_pool(3, 2)), ("GlobalAvgPool", AVG)],
                         ids=["MaxPool", "GlobalAvgPool"])
def test_pool_bench_verilator(unit, build, tmp_path):
    assert run_bench("verilator", unit, build, tmp_path) >= _values(unit, build)
