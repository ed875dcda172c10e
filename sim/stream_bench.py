"""cocotb side of a bench for a design with one input and one output ``amaranth.lib.stream``.

:class:`StreamTB` drives the clock and reset and runs a source and a sink in one loop per clock
cycle, with verilog-axis style pause generators (``itertools.cycle([0, 1, 1, 0])``: 1 pauses the
source's ``valid`` or the sink's ``ready`` that cycle). Ports are Amaranth's Verilog names:
``<name>__payload``, ``<name>__valid``, ``<name>__ready``, ``clk`` and ``rst``. Payloads are
packed integers; the bench packs and unpacks them.
"""

from __future__ import annotations

import itertools

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamTB"]


class StreamTB:
    def __init__(self, dut, *, i="i", o="o", period_ns=10):
        self.dut = dut
        self.i_payload, self.i_valid, self.i_ready = (getattr(dut, f"{i}__{n}")
                                                      for n in ("payload", "valid", "ready"))
        self.o_payload, self.o_valid, self.o_ready = (getattr(dut, f"{o}__{n}")
                                                      for n in ("payload", "valid", "ready"))
        self.cycles = 0
        self.in_stalls = 0       # cycles the source offered a payload that was refused
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
        self.i_valid.value = 0
        self.i_payload.value = 0
        self.o_ready.value = 0

    async def reset(self, cycles=3):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await FallingEdge(self.dut.clk)

    async def run(self, words, expected, *, pause_source=None, pause_sink=None, limit=None):
        """Send ``words`` and receive ``expected`` output payloads (packed integers, in order).

        ``pause_source`` / ``pause_sink`` are zero-argument callables returning a fresh pause
        generator (or ``None``: never pause). Inputs change on the falling edge; once they settle
        (ReadOnly) both handshakes are read, so the transfers recorded are the ones the next
        rising edge performs, on Icarus and Verilator alike. Checks the output stream rule: a
        valid payload holds, unchanged, until it is taken. Fails after ``limit`` cycles."""
        src = pause_source() if pause_source else itertools.repeat(0)
        snk = pause_sink() if pause_sink else itertools.repeat(0)
        pending = list(words)
        got = []
        held = None
        limit = limit or 30 * (len(words) + expected) + 500
        for _ in range(limit):
            offer = bool(pending) and not next(src)
            if offer:
                self.i_payload.value = pending[0]
            self.i_valid.value = int(offer)
            self.o_ready.value = int(not next(snk))
            await ReadOnly()
            i_take = offer and int(self.i_ready.value)
            o_valid = int(self.o_valid.value)
            o_take = o_valid and int(self.o_ready.value)
            word = self.o_payload.value.to_unsigned() if o_valid else None
            if held is not None:
                assert o_valid and word == held, "output changed or vanished before it was taken"
            held = word if (o_valid and not o_take) else None
            if offer and not i_take:
                self.in_stalls += 1
            if i_take:
                pending.pop(0)
            if o_take:
                got.append(word)
            self.cycles += 1
            await FallingEdge(self.dut.clk)
            if not pending and len(got) >= expected:
                break
        assert not pending and len(got) == expected, (
            f"after {limit} cycles: {len(words) - len(pending)}/{len(words)} payloads in, "
            f"{len(got)}/{expected} out")
        self.i_valid.value = 0
        return got
