"""The PEs in Amaranth's simulator against the golden model, and their parameter checks.

Each kind runs random reductions (random lengths and values, idle gaps, ``hold`` cycles) and the
corners (all-minimum and all-maximum operands, every exponent code, zero weights, the longest
reduction at the extremes of the derived accumulator range); ``acc`` must equal
``golden.array_op`` exactly whenever ``done`` is high, and ``done`` must come :attr:`latency` cycles
after each ``last`` step (``hold`` cycles excluded).
"""


import numpy as np
import pytest
from amaranth.hdl import Shape, signed
from amaranth.hdl import ClockDomain, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from addershift.hw.pe import (PE_CLASSES, AdderPE, MulPE, ShiftPE, ShiftWeight, Sign, make_pe)
from addershift.sim.pe_vectors import (check_samples, corner_reductions, extreme_reductions, golden,
                                       random_reductions, random_weights, schedule, weight_bits)
from addershift.sw.numerics import Op, acc_width

KINDS = ("adder", "shift", "mul")


def unused(component):
    """Mark a component built only to read its properties (no UnusedElaboratable warning)."""
    component._MustUse__silence = True
    return component


# --- driver ------------------------------------------------------------------------------------

def _raw(signal):
    return signal.as_value() if isinstance(signal, data.View) else signal


def run_pe(pe, cycles):
    """Drive ``cycles`` into ``pe``; return the per-cycle ``(done, acc)`` samples."""
    samples = []

    async def bench(ctx):
        for valid, x, w, last, hold in cycles:
            ctx.set(pe.valid, valid)
            ctx.set(pe.x, x)
            ctx.set(_raw(pe.w), w)
            ctx.set(pe.last, last)
            ctx.set(pe.hold, hold)
            samples.append((ctx.get(pe.done), ctx.get(pe.acc)))
            await ctx.tick()

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return samples


def check_pe(pe, reductions, rng, **gaps):
    """Run ``reductions`` through ``pe`` and compare with the golden model, timing included."""
    cycles = schedule(pe, reductions, rng, **gaps)
    check_samples(pe, reductions, cycles, run_pe(pe, cycles))


# --- simulations -------------------------------------------------------------------------------

PE_CASES = [
    ("adder", dict(x_bits=8, max_length=40)),
    ("adder", dict(x_bits=4, max_length=9)),
    ("shift", dict(x_bits=8, p_min=0, p_max=7, max_length=40)),
    ("shift", dict(x_bits=6, p_min=-3, p_max=2, max_length=17)),   # 6 codes in a 3-bit field
    ("shift", dict(x_bits=8, p_min=2, p_max=2, max_length=5)),      # one exponent
    ("mul", dict(x_bits=8, w_bits=8, max_length=40)),
    ("mul", dict(x_bits=5, w_bits=3, max_length=11)),
]


class Encoded(wiring.Component):
    """A PE built with ``register_inputs=False`` behind the encoding the array applies, so tests
    drive natural weights into it; it forwards the inner PE's parameters."""

    def __init__(self, pe):
        self.pe = pe
        super().__init__({"x": In(signed(pe.x_bits)), "w": In(pe.weight_shape), "valid": In(1),
                          "last": In(1), "hold": In(1), "acc": Out(signed(pe.acc_bits)),
                          "done": Out(1)})

    def __getattr__(self, name):
        if name in ("kind", "latency", "x_bits", "w_bits", "p_min", "p_max", "max_length",
                    "acc_bits", "weight_shape"):
            return getattr(self.__dict__["pe"], name)
        raise AttributeError(name)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        m.d.comb += [pe.x.eq(self.x), pe.w.eq(pe.encode_weight(self.w)), pe.valid.eq(self.valid),
                     pe.last.eq(self.last), pe.hold.eq(self.hold), self.acc.eq(pe.acc),
                     self.done.eq(pe.done)]
        return m


@pytest.mark.parametrize("kind,params", PE_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("register_inputs", [True, False])
def test_pe_random_and_corners(kind, params, register_inputs):
    rng = np.random.default_rng(abs(hash((kind, str(params), register_inputs))) % 2**32)
    pe = make_pe(kind, register_inputs=register_inputs, **params)
    dut = pe if register_inputs else Encoded(pe)
    reductions = (random_reductions(pe, 12, rng) + corner_reductions(pe, rng) +
                  extreme_reductions(pe))
    check_pe(dut, reductions, rng, idle=0.2, hold=0.1)


def test_pe_back_to_back_no_gaps():
    """Every other cycle carries a step (just the required idle after each last)."""
    rng = np.random.default_rng(7)
    for kind in KINDS:
        pe = make_pe(kind, max_length=8)
        reductions = [(rng.integers(-128, 128, size=k), random_weights(pe, k, rng))
                      for k in [1, 1, 2, 8, 1, 3, 8, 8]]
        check_pe(pe, reductions, rng)


# --- parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,params", [
    ("adder", dict(x_bits=8, max_length=128)),
    ("adder", dict(x_bits=4, max_length=1)),
    ("shift", dict(x_bits=8, p_min=0, p_max=7, max_length=128)),
    ("shift", dict(x_bits=8, p_min=-4, p_max=-4, max_length=3)),
    ("mul", dict(x_bits=8, w_bits=8, max_length=300)),
    ("mul", dict(x_bits=8, w_bits=2, max_length=7)),
])
def test_acc_bits_come_from_numerics(kind, params):
    pe = unused(make_pe(kind, **params))
    widths = {k: v for k, v in params.items() if k != "max_length"}
    if kind == "adder":
        widths["w_bits"] = params["x_bits"]
    assert pe.acc_bits == acc_width(kind, params["max_length"], **widths)
    assert len(pe.acc) == pe.acc_bits and pe.acc.shape().signed
    assert pe.kind is Op(kind)
    assert isinstance(pe, PE_CLASSES[Op(kind)])


def test_defaults_and_read_only_properties():
    pe = unused(AdderPE())
    assert (pe.x_bits, pe.w_bits, pe.p_min, pe.p_max, pe.max_length) == (8, 8, None, None, 128)
    assert pe.acc_bits == 16 and pe.latency == 3 and pe.idle_after_last == 1
    assert unused(AdderPE(register_inputs=False)).latency == 2
    shift = unused(ShiftPE())
    assert (shift.p_min, shift.p_max, shift.w_bits) == (0, 7, None)
    assert shift.weight_shape == ShiftWeight(p_min=0, p_max=7)
    assert unused(MulPE(w_bits=4)).w_bits == 4
    for name in ("x_bits", "acc_bits", "latency", "max_length", "kind"):
        with pytest.raises(AttributeError):
            setattr(pe, name, 1)
    assert pe.params() == {"kind": "adder", "x_bits": 8, "w_bits": 8, "max_length": 128,
                           "acc_bits": 16}


@pytest.mark.parametrize("call,exc,message", [
    (lambda: make_pe("div"), ValueError,
     "PE kind must be one of adder, shift, mul, not 'div'"),
    (lambda: AdderPE(x_bits=1), ValueError, "x_bits must be between 2 and 32, not 1"),
    (lambda: AdderPE(x_bits=33), ValueError, "x_bits must be between 2 and 32, not 33"),
    (lambda: AdderPE(x_bits="8"), TypeError, "x_bits must be an integer, not '8'"),
    (lambda: AdderPE(x_bits=True), TypeError, "x_bits must be an integer, not True"),
    (lambda: MulPE(w_bits=1), ValueError, "w_bits must be between 2 and 32, not 1"),
    (lambda: AdderPE(max_length=0), ValueError, "max_length must be at least 1, not 0"),
    (lambda: AdderPE(max_length=2.5), TypeError, "max_length must be an integer, not 2.5"),
    (lambda: AdderPE(x_bits=8, w_bits=6), ValueError,
     "Adder weights share the activations' format: w_bits must equal x_bits (8), not 6"),
    (lambda: ShiftPE(w_bits=8), ValueError,
     "w_bits does not apply to shift PEs (their weights are sign and exponent), not 8"),
    (lambda: AdderPE(p_min=0), ValueError,
     "p_min and p_max apply to shift PEs only, not to 'adder' (got p_min=0, p_max=None)"),
    (lambda: ShiftPE(p_min=3, p_max=1), ValueError, "p_max must be at least p_min (3), not 1"),
    (lambda: ShiftPE(p_min=0, p_max=32), ValueError, "p_max - p_min must be at most 31, not 32"),
    (lambda: ShiftPE(p_min=0.5), TypeError, "p_min must be an integer, not 0.5"),
    (lambda: AdderPE(register_inputs=1), TypeError, "register_inputs must be a bool, not 1"),
    (lambda: AdderPE(acc_control="array"), ValueError,
     "acc_control must be 'internal' or 'external', not 'array'"),
])
def test_parameter_messages(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value) == message


def test_shift_weight_layout():
    layout = ShiftWeight(p_min=-3, p_max=2)
    assert dict((name, f.shape) for name, f in layout) == {"sign": Sign,
                                                           "exponent": Shape.cast(range(8))}
    # Sign in bits 0-1, exponent code p - p_min above it.
    assert layout.encode(1, -3) == 0b000_01
    assert layout.encode(-1, 2) == 0b101_11
    assert layout.encode(0, 2) == 0                   # zero weights have one encoding
    assert [Sign.of(s).value_int for s in (-1, 0, 1)] == [-1, 0, 1]
    with pytest.raises(ValueError, match=r"^Shift weight sign must be -1, 0 or 1, not 2$"):
        layout.encode(2, 0)
    with pytest.raises(ValueError, match=r"^Shift weight exponent must be an integer in \[-3, 2\], "
                                         r"not 3$"):
        layout.encode(1, 3)
    assert ShiftWeight(p_min=0, p_max=0) == ShiftWeight(p_min=0, p_max=0)
    assert ShiftWeight(p_min=0, p_max=0) != ShiftWeight(p_min=0, p_max=1)


@pytest.mark.parametrize("kind", KINDS)
def test_reset_mid_reduction(kind):
    """A one-cycle reset in the middle of a reduction: the next reductions start from zero."""
    rng = np.random.default_rng(13)
    pe = make_pe(kind, max_length=10)
    first = random_reductions(pe, 1, rng)[0]
    after = [random_reductions(pe, 1, rng)[0] for _ in range(3)]
    samples = []

    async def bench(ctx):
        x, weights = first
        for j in range(min(3, len(x))):       # a partial reduction, then reset
            ctx.set(pe.valid, 1)
            ctx.set(pe.x, int(x[j]))
            ctx.set(_raw(pe.w), weight_bits(pe, weights, j))
            await ctx.tick()
        # Steps in flight in every pipeline stage when the reset comes.
        ctx.set(pe.valid, 1)
        ctx.set(pe.x, int(x[0]))
        ctx.set(_raw(pe.w), weight_bits(pe, weights, 0))
        await ctx.tick()
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        ctx.set(pe.valid, 0)
        for x, weights in after:
            for j in range(len(x)):
                ctx.set(pe.valid, 1)
                ctx.set(pe.last, j == len(x) - 1)
                ctx.set(pe.x, int(x[j]))
                ctx.set(_raw(pe.w), weight_bits(pe, weights, j))
                await ctx.tick()
            ctx.set(pe.valid, 0)
            ctx.set(pe.last, 0)
            for _ in range(pe.latency + 1):
                if ctx.get(pe.done):
                    samples.append(ctx.get(pe.acc))
                await ctx.tick()

    top = Module()
    top.submodules.pe = pe
    top.domains.sync = cd = ClockDomain("sync")
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert samples == [golden(pe, x, w) for x, w in after]


def _carry_cells(fragment):
    count = sum(getattr(sub, "type", None) == "CCU2C" for sub, *_ in fragment.subfragments)
    return count + sum(_carry_cells(sub) for sub, *_ in fragment.subfragments)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", [None, "ice40-up5k", "ecp5-85f"])
def test_ecp5_builds_put_the_adder_accumulator_on_carry_cells(kind, target):
    """Only an adder PE on an ECP5 instantiates CCU2C cells: one chain of ``x + ~w`` (x_bits + 1
    sum bits), a start half cell and the accumulator (its term XOR folded in,
    hw.pe.ecp5_carry_chain); sim/array runs that Verilog with Yosys' model of the cell against
    the golden model."""
    from amaranth.hdl import Fragment
    from addershift.boards.report import TARGETS
    from addershift.hw.pe import has_ecp5_carries
    platform = TARGETS[target] if target else None
    for register_inputs in (True, False):
        pe = make_pe(kind, max_length=300, register_inputs=register_inputs)
        expected = (-(-(pe.x_bits + 2 + pe.acc_bits) // 2)
                    if kind == "adder" and target == "ecp5-85f" else 0)
        assert _carry_cells(Fragment.get(pe, platform)) == expected
    assert has_ecp5_carries(platform) == (target == "ecp5-85f")
