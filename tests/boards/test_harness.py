"""SerialHarness: every input bit comes from the chain, the output is the parity of every output bit."""

import random

import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from addershift.boards.harness import SerialHarness


class _Comb(wiring.Component):
    """Outputs are a fixed combinational function of the inputs (so the expected parity is known)."""
    a: In(3)
    b: In(5)
    y: Out(7)
    z: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(self.a * 3 + self.b), self.z.eq(self.b ^ 0b1010)]
        return m


def _silence(*objs):
    # Built only to be inspected or rejected: Amaranth would warn that they were never elaborated.
    for obj in objs:
        obj._MustUse__silence = True


def _parity(v):
    return bin(v).count("1") & 1


def test_chain_feeds_inputs_and_parity_reaches_so():
    dut = _Comb()
    h = SerialHarness(dut)
    assert (h.in_bits, h.out_bits) == (8, 11)
    # 11 outputs -> groups 4,4,3 -> one group of 3: two register levels.
    assert h.xor_levels == 2
    # LUTs: 7 in the chain (every bit but the first), 3 XORs of 4, 4, 3 and 1 of 3 in the tree.
    assert h.cost == {"ffs": 8 + 3 + 1, "luts": 7 + 4, "ice40_cells": 12}
    rng = random.Random(1)
    bits = [rng.randrange(2) for _ in range(200)]

    async def bench(ctx):
        chain = 0
        history = []
        for t, bit in enumerate(bits):
            ctx.set(h.si, bit)
            await ctx.tick()
            shifted = ((chain << 1) | bit) & 0xFF
            chain = shifted ^ ((shifted << 1) & 0xFF)
            a, b = chain & 0b111, chain >> 3
            assert (ctx.get(dut.a), ctx.get(dut.b)) == (a, b)
            history.append(_parity(((a * 3 + b) & 0x7F) | (((b ^ 0b1010) & 0xF) << 7)))
            if t >= h.xor_levels:
                assert ctx.get(h.so) == history[t - h.xor_levels], t

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_rejects_non_components_and_output_less_designs():
    with pytest.raises(TypeError, match=r"Design under test must be a wiring.Component, not 1"):
        SerialHarness(1)

    class NoOut(wiring.Component):
        a: In(2)

        def elaborate(self, platform):
            return Module()

    dut = NoOut()
    _silence(dut)
    with pytest.raises(ValueError, match=r"at least one output bit, not 0"):
        SerialHarness(dut)


def test_wide_tree_shape():
    class Wide(wiring.Component):
        y: Out(1024)

        def elaborate(self, platform):
            return Module()

    dut = Wide()
    h = SerialHarness(dut)
    _silence(dut, h)
    # 1024 -> 256 -> 64 -> 16 -> 4 -> 1: five levels of four-input XORs.
    assert h.xor_levels == 5
    assert h.cost == {"ffs": 341, "luts": 341, "ice40_cells": 341}


class _RegisteredInputs(wiring.Component):
    """An input register and a copy of it, neither with a reset: what a PE with registered inputs
    and an array's per-tile operand copies look like to Yosys."""
    a: In(8)
    y: Out(8)

    def elaborate(self, platform):
        m = Module()
        a_reg = Signal(8, reset_less=True)
        y_reg = Signal(8, reset_less=True)
        m.d.comb += self.y.eq(y_reg)
        m.d.sync += [a_reg.eq(self.a), y_reg.eq(a_reg)]
        return m


@pytest.mark.parametrize("target", ["ice40-up5k", "ecp5-85f"])
def test_the_designs_input_registers_stay_its_own(tmp_path, target):
    """Yosys merges registers with the same input: with a plain shift chain the design's registers
    of chain bits (and their copies) would be chain bits themselves, and the harness's cost, taken
    off, would take them with it."""
    from addershift.boards.report import synthesize
    dut = _RegisteredInputs()
    h = SerialHarness(dut)
    _silence(h)
    r = synthesize(dut, target=target, build_dir=tmp_path, place=False)
    assert r.used("ff") == h.cost["ffs"] + 2 * 8
