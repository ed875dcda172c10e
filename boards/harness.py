"""A two-pin wrapper that keeps any component's logic alive through synthesis, for cost measurement.

A processing element or an array has far more ports than an iCE40UP5K-SG48 has pins (39), and
ports left unconnected let Yosys delete the logic behind them. :class:`SerialHarness` gives the
design under test exactly two pins:

- every input bit comes from a flip-flop of one chain fed by ``si``, each taking the XOR of the two
  bits before it (``si`` standing before the first): these are the design's registered inputs
  (the cost benchmark's "lone PE with registered inputs"). A plain shift chain would let Yosys
  merge the design's own input registers into it (a register of chain bit ``k`` is chain bit
  ``k + 1``; so are an array's per-tile operand copies, two registers down), and the design's
  registers would then be placed along the chain: on a 32 x 32 ECP5 array the tiles' operand
  copies doubled as the edge registers of the next row and were the slowest paths;
- every output bit enters a pipelined XOR tree (four inputs per LUT4, a register after each level)
  whose root drives ``so``: parity depends on every output bit, so nothing can be pruned, and each
  level costs one LUT deep, so the harness does not set the critical path.

The harness's own cost is known from its structure (:attr:`cost`) so reports can subtract it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SerialHarness"]


class SerialHarness(wiring.Component):
    """Feed ``dut``'s inputs from a shift chain and fold its outputs into one parity bit.

    Parameters
    ----------
    dut : wiring.Component
        The design under test; it is added as the submodule ``dut`` and clocked by ``sync``.

    Members
    -------
    si : In(1)
        Serial input of the input chain.
    so : Out(1)
        Registered parity of every output bit of ``dut`` (through :attr:`xor_levels` registers).

    Raises
    ------
    TypeError
        If ``dut`` is not a :class:`wiring.Component`.
    ValueError
        If ``dut`` has no output bits (nothing would survive synthesis).
    """

    def __init__(self, dut):
        # A rejected harness is never elaborated: no "created but never used" warning for it.
        self._MustUse__silence = True
        if not isinstance(dut, wiring.Component):
            raise TypeError(f"Design under test must be a wiring.Component, not {dut!r}")
        ins, outs = [], []
        for path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == In else outs).append(Value.cast(value))
        in_bits = sum(len(v) for v in ins)
        out_bits = sum(len(v) for v in outs)
        if out_bits == 0:
            raise ValueError(f"Design under test must have at least one output bit, not {out_bits}")
        self._dut = dut
        self._ins = ins
        self._outs = outs
        self._in_bits = in_bits
        self._out_bits = out_bits
        self._levels = self._tree_shape(out_bits)
        super().__init__({"si": In(1), "so": Out(1)})
        self._MustUse__silence = False

    @staticmethod
    def _tree_shape(n):
        """Group sizes of each XOR level: a list of lists of ints (inputs per LUT)."""
        levels = []
        while True:
            groups = [min(4, n - i) for i in range(0, n, 4)]
            levels.append(groups)
            n = len(groups)
            if n == 1:
                return levels

    @property
    def dut(self):
        return self._dut

    @property
    def in_bits(self):
        """Input bits of the design under test (= flip-flops in the input chain)."""
        return self._in_bits

    @property
    def out_bits(self):
        """Output bits of the design under test (= leaves of the XOR tree)."""
        return self._out_bits

    @property
    def xor_levels(self):
        """Register stages between the design's outputs and ``so``."""
        return len(self._levels)

    @property
    def cost(self):
        """The harness's own resources: ``ffs`` (chain plus tree registers), ``luts`` (XOR gates
        with two or more inputs: the chain's, all but its first bit, and the tree's), and
        ``ice40_cells``: on iCE40 every flip-flop takes a logic cell (with the LUT before it, or
        a pass-through), so this equals ``ffs``."""
        tree_regs = sum(len(groups) for groups in self._levels)
        chain_xors = max(0, self._in_bits - 1)
        luts = chain_xors + sum(1 for groups in self._levels for g in groups if g > 1)
        ffs = self._in_bits + tree_regs
        return {"ffs": ffs, "luts": luts, "ice40_cells": ffs}

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._dut

        # Plain registers with no reset: the harness must not add a reset net to the design.
        if self._in_bits:
            chain = Signal(self._in_bits, reset_less=True)
            shifted = Cat(self.si, chain[:-1])          # what a plain shift chain would take
            m.d.sync += chain.eq(shifted ^ Cat(Const(0, 1), shifted[:-1]))
            offset = 0
            for v in self._ins:
                m.d.comb += v.eq(chain[offset:offset + len(v)])
                offset += len(v)

        level = list(Cat(*self._outs))
        for groups in self._levels:
            nxt = []
            i = 0
            for g in groups:
                r = Signal(reset_less=True)
                acc = level[i]
                for b in level[i + 1:i + g]:
                    acc = acc ^ b
                m.d.sync += r.eq(acc)
                nxt.append(r)
                i += g
            level = nxt
        m.d.comb += self.so.eq(level[0])
        return m
