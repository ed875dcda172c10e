"""The requantiser's feeder: each row of the array split into transfers of ``lanes`` values, each
with the parameter word of its channels, in order under random handshakes, the row taken from
the array with its last transfer."""

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data
from amaranth.sim import Simulator

from addershift.hw.config import ArrayConfig
from addershift.hw.requant import PIPELINES, Requantiser
from addershift.hw.sequencer import RequantFeeder


def _word(addr, bits):
    return (addr * 0x9E3779B1 + 12345) % (1 << bits)


@pytest.mark.parametrize("rows, cols, lanes, pixels", [(3, 4, 1, 6), (4, 4, 2, 5), (2, 3, 3, 2)])
def test_rows_go_out_in_transfers_with_their_parameter_words(rows, cols, lanes, pixels):
    cfg = ArrayConfig(pe="adder", rows=rows, cols=cols, requant_lanes=lanes)
    requant = Requantiser(mode=cfg.requant_mode, acc_bits=cfg.acc_bits, lanes=cfg.lanes,
                          bias_bits=cfg.bias_bits, **PIPELINES["short"])
    array_out = data.StructLayout({"acc": data.ArrayLayout(signed(cfg.acc_bits), cols), "last": 1})
    dut = RequantFeeder(config=cfg, array_out_layout=array_out,
                        requant_in_layout=requant.i.payload.shape())
    chunks, groups, base = cols // lanes, 3, 5
    tiles = -(-pixels // rows)
    n_rows = groups * tiles * rows
    rng = np.random.default_rng(rows * 100 + cols * 10 + lanes)
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    values = rng.integers(lo, hi + 1, (n_rows, cols))
    values[0] = lo                                   # the extremes, in every lane
    values[1] = hi
    expected = []                                    # (lanes' values, parameter word address)
    for r in range(n_rows):
        group = r // (tiles * rows)
        for k in range(chunks):
            expected.append((list(values[r, k * lanes:(k + 1) * lanes]),
                             base + group * chunks + k))
    word_bits = cfg.param_word_bits

    async def bench(ctx):
        ctx.set(dut.desc.pixels, pixels)
        ctx.set(dut.start, 1)
        ctx.set(dut.rq_base, base)
        mem_read, mem_addr = 1, base
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.mem_data, _word(mem_addr, word_bits))
        got, takes, row, cycles = [], [], 0, 0
        while len(got) < len(expected):
            cycles += 1
            assert cycles < 20 * len(expected)
            ctx.set(dut.i.valid, row < n_rows and rng.random() < 0.8)
            if row < n_rows:
                for c in range(cols):
                    ctx.set(dut.i.payload.acc[c], int(values[row, c]))
            ctx.set(dut.o.ready, rng.random() < 0.7)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                acc = [ctx.get(dut.o.payload.acc[j]) for j in range(lanes)]
                got.append((acc, ctx.get(dut.o.payload.param.as_value())))
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                takes.append(len(got) - 1)           # the transfer the row was taken with
                row += 1
            mem_read, mem_addr = ctx.get(dut.mem_read), ctx.get(dut.mem_addr)
            await ctx.tick()
            if mem_read:
                ctx.set(dut.mem_data, _word(mem_addr, word_bits))
        assert [acc for acc, _ in got] == [acc for acc, _ in expected]
        assert [w for _, w in got] == [_word(a, word_bits) for _, a in expected]
        # The array's row leaves it with the row's last transfer.
        assert takes == [r * chunks + chunks - 1 for r in range(n_rows)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
