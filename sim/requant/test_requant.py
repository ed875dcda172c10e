"""cocotb bench: the generated Verilog of a Requantiser against the exact requantisation
(``numerics.requantize``, then ReLU), bit for bit, on Icarus and Verilator.

Layout after verilog-axis: the shared ``addershift.sim.stream_bench.StreamTB`` (clock, reset, one
loop per clock cycle driving the input stream and taking the output under idle and back-pressure
generators, checking the output's stream rule), the scenarios as cocotb tests, and at the bottom
the pytest functions that generate the Verilog and run this file through
``addershift.sim.runner.run_cocotb``. The vectors and the
reference are ``addershift.sim.requant_vectors``, shared with the Amaranth tests; payloads are
packed and unpacked with the Requantiser's own layouts.

Scenarios: random vectors, and corners (extreme accumulators and biases with every shift the build
allows, every shift pair and sign pair of ``pow2x2``, the most negative multiplier, ties at +-0.5),
each under four flow patterns: none, an idle source, a back-pressured sink, and both.
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


def _params():
    from addershift.sim.runner import bench_params
    return bench_params()


def _requantiser(params):
    """The Requantiser the Verilog was generated from (for layouts and widths only)."""
    from addershift.hw.requant import Requantiser
    dut = Requantiser(**params["build"])
    dut._MustUse__silence = True
    return dut


async def run_cases(dut, cases_for_pattern):
    """Each pattern's cases through the Verilog; every output equal to the reference."""
    from addershift.sim.requant_vectors import expected, pack, transfers, unpack
    from addershift.sim.stream_bench import StreamTB
    params = _params()
    rq = _requantiser(params)
    tb = StreamTB(dut)
    await tb.reset()
    values = 0
    for name, (pause_source, pause_sink) in PATTERNS.items():
        cases = cases_for_pattern(rq, name)
        words = [pack(rq, t) for t in transfers(cases, rq.lanes)]
        got = [unpack(rq, word) for word in
               await tb.run(words, len(words), pause_source=pause_source, pause_sink=pause_sink)]
        want = expected(rq, cases)
        for t, (g, e) in enumerate(zip(got, want)):
            assert g == e, f"{name}, transfer {t}: got {g}, expected {e}"
        values += len(cases)
    dut._log.info(f"{values} values equal the reference in {tb.cycles} cycles")
    from addershift.sim.runner import report_values
    report_values(params, values)


@cocotb.test()
async def random_vectors(dut):
    """Accumulators and biases of every magnitude, shifts mostly near the output range."""
    from addershift.sim.requant_vectors import random_cases
    params = _params()
    rng = np.random.default_rng(params["seed"])
    await run_cases(dut, lambda rq, pattern: random_cases(rng, rq, params["count"]))


@cocotb.test()
async def corners_and_ties(dut):
    """Extremes with every shift, sign and extreme multiplier; ties at +-0.5 (corners once,
    under the free pattern; ties under every pattern)."""
    from addershift.sim.requant_vectors import corner_cases, tie_cases
    await run_cases(dut, lambda rq, pattern: (corner_cases(rq) if pattern == "free" else [])
                    + tie_cases(rq))


# --- pytest: generate the Verilog and run this bench -----------------------------------------------

#: The contract's widths (z and the pow2x2 sum in two adder stages), two lanes.
BUILD = dict(acc_bits=20, bias_bits=32, shift_max=40, out_bits=8, lanes=2)


def run_bench(simulator, mode, tmp_path, *, count, seed=1, build=BUILD):
    from amaranth.back import verilog

    from addershift.hw.requant import Requantiser
    from addershift.sim.runner import run_cocotb

    build = dict(build, mode=mode)
    top = f"requant_{mode}"
    path = tmp_path / f"{top}.v"
    path.write_text(verilog.convert(Requantiser(**build), name=top, emit_src=False))
    report = tmp_path / "report.json"
    run_cocotb(simulator=simulator, verilog=path, toplevel=top,
               test_module=pathlib.Path(__file__), build_dir=tmp_path / "build",
               params={"build": build, "seed": seed, "count": count, "report": str(report)})
    return json.loads(report.read_text())["values"]


# The default run: every mode on Icarus (a few seconds each) and the multiplier-free pow2x2, the
# most intricate, on Verilator, whose C++ build alone takes 15-20 s of CPU here; the other modes
# on Verilator and the long runs are marked slow.
DEFAULT_CASES = [("icarus", "shift"), ("icarus", "pow2x2"), ("icarus", "mul"),
                 ("verilator", "pow2x2")]
SLOW_CASES = [("verilator", "shift"), ("verilator", "mul")]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator, mode", DEFAULT_CASES)
def test_requant_bench(simulator, mode, tmp_path):
    assert run_bench(simulator, mode, tmp_path, count=300) >= 2000


#: The short pipeline (``carry_max=48, shift_levels=3``: every adder of these widths in one
#: stage, two stages per shifter), for the slower iCE40 clocks.
SHORT = dict(BUILD, carry_max=48, shift_levels=3)


@pytest.mark.cocotb
@pytest.mark.parametrize("mode", ["shift", "pow2x2"])
def test_requant_bench_short_pipeline(mode, tmp_path):
    assert run_bench("icarus", mode, tmp_path, count=300, build=SHORT) >= 2000


# Widths other than BUILD's as Verilog (the Amaranth tests build these too): one lane and four, a
# narrow output, no shift at all, the widest accumulator and output, narrow biases.
OTHER_BUILDS = [
    ("shift", dict(acc_bits=16, bias_bits=18, shift_max=40, out_bits=8, lanes=1)),
    ("pow2x2", dict(acc_bits=23, bias_bits=24, shift_max=40, out_bits=4, lanes=4)),
    ("mul", dict(acc_bits=22, bias_bits=32, shift_max=0, out_bits=8, lanes=1)),
    ("pow2x2", dict(acc_bits=48, bias_bits=32, shift_max=40, out_bits=16, lanes=2)),
]


@pytest.mark.cocotb
@pytest.mark.parametrize("mode, build", OTHER_BUILDS)
def test_requant_bench_other_widths(mode, build, tmp_path):
    assert run_bench("icarus", mode, tmp_path, count=200, build=build) >= 800


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_requant_bench_registered_input(simulator, tmp_path):
    """The accelerator's deep pipeline (``register_input=True``) in generated Verilog."""
    assert run_bench(simulator, "pow2x2", tmp_path, count=300,
                     build=dict(BUILD, register_input=True)) >= 2000


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("simulator, mode", SLOW_CASES)
def test_requant_bench_other_modes(simulator, mode, tmp_path):
    assert run_bench(simulator, mode, tmp_path, count=300) >= 2000


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("mode", ["shift", "pow2x2", "mul"])
def test_requant_bench_long(simulator, mode, tmp_path):
    """A long run: over 200k random values per mode and simulator."""
    assert run_bench(simulator, mode, tmp_path, count=50_000, seed=7) >= 200_000
