"""cocotb bench: the generated Verilog of a lone processing element (what ``addershift generate
--unit pe`` writes: registered inputs, the weight in its natural form) against the golden model,
bit for bit and cycle for cycle, on Icarus and Verilator.

The pytest side makes the per-cycle inputs (``addershift.sim.pe_vectors.schedule``: random
reductions, every corner operand and exponent code, the longest reductions at both ends of the
accumulator, idle cycles and ``hold`` cycles between steps) and hands them to the bench as a JSON
file; the bench drives one cycle per entry (inputs after the falling edge, ``done`` and ``acc``
read once they settle) and writes the samples back; ``pe_vectors.check_samples`` then compares
them with ``golden.array_op``, ``done`` exactly ``latency`` cycles after each last step: the
check the Amaranth tests (``tests/hw/test_pe.py``) make.
"""

import json
import pathlib

import cocotb
import numpy as np
import pytest
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


@cocotb.test()
async def cycles(dut):
    """Drive the cycles of ``params["cycles"]``; write the ``(done, acc)`` samples."""
    from addershift.sim.runner import bench_params
    params = bench_params()
    schedule = json.loads(pathlib.Path(params["cycles"]).read_text())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("valid", "x", "w", "last", "hold"):
        getattr(dut, name).value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    samples = []
    for valid, x, w, last, hold in schedule:
        dut.valid.value, dut.w.value, dut.last.value, dut.hold.value = valid, w, last, hold
        dut.x.value = x & ((1 << len(dut.x)) - 1)
        await ReadOnly()
        samples.append((int(dut.done.value), dut.acc.value.to_signed()))
        await FallingEdge(dut.clk)
    pathlib.Path(params["samples"]).write_text(json.dumps(samples))


# --- pytest: generate the Verilog, run this bench, check the samples ------------------------

#: Each kind at the default widths and at narrow or unusual ones (negative exponent codes, one
#: exponent, a 3-bit mul weight), as tests/hw/test_pe.py's PE_CASES.
CASES = [
    ("adder", dict(x_bits=8, max_length=40)), ("adder", dict(x_bits=4, max_length=9)),
    ("shift", dict(x_bits=8, p_min=0, p_max=7, max_length=40)),
    ("shift", dict(x_bits=6, p_min=-3, p_max=2, max_length=17)),
    ("shift", dict(x_bits=8, p_min=2, p_max=2, max_length=5)),
    ("mul", dict(x_bits=8, w_bits=8, max_length=40)),
    ("mul", dict(x_bits=5, w_bits=3, max_length=11)),
]


def run_bench(simulator, kind, params, tmp_path, *, seed=1, count=40):
    """Generate the lone PE as ``generate --unit pe`` does, run ``count`` random reductions and
    the corners through its Verilog and check every sample; the reductions compared."""
    from addershift.hw.generate import build_unit, generate
    from addershift.hw.pe import make_pe
    from addershift.sim.pe_vectors import (check_samples, corner_reductions, extreme_reductions,
                                           random_reductions, schedule)
    from addershift.sim.runner import run_cocotb

    top = f"pe_{kind}"
    generate(build_unit("pe", kind=kind, **params), tmp_path / f"{top}.v", top=top)
    pe = make_pe(kind, **params)            # the same PE, for its widths and the vectors
    pe._MustUse__silence = True
    rng = np.random.default_rng(seed)
    reductions = (random_reductions(pe, count, rng) + corner_reductions(pe, rng)
                  + extreme_reductions(pe))
    inputs = schedule(pe, reductions, rng, idle=0.2, hold=0.1)
    (tmp_path / "cycles.json").write_text(json.dumps(inputs))
    samples = tmp_path / "samples.json"
    run_cocotb(simulator=simulator, verilog=tmp_path / f"{top}.v", toplevel=top,
               test_module=pathlib.Path(__file__), build_dir=tmp_path / "build",
               params={"cycles": str(tmp_path / "cycles.json"), "samples": str(samples)})
    return check_samples(pe, reductions, inputs, json.loads(samples.read_text()))


@pytest.mark.cocotb
@pytest.mark.parametrize("kind, params", CASES, ids=lambda v: str(v))
def test_pe_bench(kind, params, tmp_path):
    assert run_bench("icarus", kind, params, tmp_path) >= 40


@pytest.mark.cocotb
@pytest.mark.parametrize("kind, params", [CASES[0], CASES[3]], ids=lambda v: str(v))
def test_pe_bench_verilator(kind, params, tmp_path):
    assert run_bench("verilator", kind, params, tmp_path) >= 40
