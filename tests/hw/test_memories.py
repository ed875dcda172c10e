"""Memories: broadcast writes, per-bank reads that hold while disabled, bank 0's transparency,
random vectors against a model, undefined collisions left to bare block RAMs, and the
SB_SPRAM256KA instantiation for iCE40 UltraPlus builds."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Fragment, UnusedElaboratable
from amaranth.sim import Simulator

from addershift.hw.memories import ReplicatedMemory, WeightMemory


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("collisions", ReplicatedMemory.COLLISIONS)
def test_replicated_memory_broadcast_hold_and_transparency(collisions):
    # (With undefined collisions simulation still gives banks 1 and 2 the old word.)
    dut = ReplicatedMemory(banks=3, width=12, depth=20, collisions=collisions)

    async def bench(ctx):
        for addr in range(20):                       # one write reaches every bank
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_addr, addr)
            ctx.set(dut.w_data, 100 + addr)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.r_en, 0b111)
        for b, addr in enumerate((3, 7, 19)):
            ctx.set(dut.r_addr[b], addr)
        await ctx.tick()
        assert [ctx.get(dut.r_data[b]) for b in range(3)] == [103, 107, 119]
        ctx.set(dut.r_en, 0b010)                     # banks 0 and 2 hold their data
        for b in range(3):
            ctx.set(dut.r_addr[b], 5)
        await ctx.tick()
        assert [ctx.get(dut.r_data[b]) for b in range(3)] == [103, 105, 119]
        # A read of the address written in the same cycle: bank 0 sees the new word.
        ctx.set(dut.r_en, 0b111)
        ctx.set(dut.w_en, 1)
        ctx.set(dut.w_addr, 5)
        ctx.set(dut.w_data, 999)
        await ctx.tick()
        assert [ctx.get(dut.r_data[b]) for b in range(3)] == [999, 105, 105]

    _run(dut, bench)


def test_replicated_memory_write_ports_write_their_groups_of_banks():
    # Five banks from two ports: banks 0-2 from port 0, banks 3-4 from port 1, each port on its
    # own address and word in the same cycle.
    dut = ReplicatedMemory(banks=5, width=8, depth=4, transparent=False, write_ports=2)

    async def bench(ctx):
        ctx.set(dut.w_en, 0b11)
        ctx.set(dut.w_addr[0], 1)
        ctx.set(dut.w_data[0], 11)
        ctx.set(dut.w_addr[1], 2)
        ctx.set(dut.w_data[1], 22)
        await ctx.tick()
        ctx.set(dut.w_en, 0b01)                      # port 1 writes nothing
        ctx.set(dut.w_addr[1], 1)
        ctx.set(dut.w_data[1], 99)
        ctx.set(dut.w_addr[0], 2)
        ctx.set(dut.w_data[0], 33)
        await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.r_en, 0b11111)
        for addr, expected in ((1, [11, 11, 11, 0, 0]), (2, [33, 33, 33, 22, 22])):
            for b in range(5):
                ctx.set(dut.r_addr[b], addr)
            await ctx.tick()
            assert [ctx.get(dut.r_data[b]) for b in range(5)] == expected

    _run(dut, bench)
    with pytest.raises(ValueError, match=r"write_ports must be an integer in \[1, 3\], not 4"):
        ReplicatedMemory(banks=3, width=8, depth=4, write_ports=4)._MustUse__silence = True


@pytest.mark.parametrize("banks, write_ports, transparent, collisions", [
    (1, 1, True, "old"), (3, 1, True, "undefined"), (4, 2, False, "old"),
    (5, 3, True, "undefined"), (2, 2, False, "undefined"),
    (65, 1, True, "undefined")])        # a 64-row accelerator's buffers: rows + 1 banks
def test_replicated_memory_random_against_a_model(banks, write_ports, transparent, collisions):
    # Random writes (each group's port its own) and reads with random enables, over a small
    # address range so that reads often hit the address being written, against a list per bank:
    # an enabled read gives the word before this cycle's write (bank 0's transparent read the new
    # one), a disabled one holds. Undefined collisions are not checked (any word is allowed).
    depth, width, cycles = 6, 10, 400
    dut = ReplicatedMemory(banks=banks, width=width, depth=depth, transparent=transparent,
                           collisions=collisions, write_ports=write_ports)
    rng = np.random.default_rng(banks * 10 + write_ports)
    group = [b * write_ports // banks for b in range(banks)]
    sets = lambda port, name: getattr(dut, name) if write_ports == 1 else getattr(dut, name)[port]

    async def bench(ctx):
        words = [[0] * depth for _ in range(banks)]
        seen = [None] * banks                        # r_data expected (None: not yet defined)
        checked = 0
        for _ in range(cycles):
            w_en = rng.integers(0, 2, write_ports)
            w_addr = rng.integers(0, depth, write_ports)
            w_data = rng.integers(0, 1 << width, write_ports)
            r_en = rng.integers(0, 2, banks)
            r_addr = rng.integers(0, depth, banks)
            ctx.set(dut.w_en, int(sum(int(e) << p for p, e in enumerate(w_en))))
            for p in range(write_ports):
                ctx.set(sets(p, "w_addr"), int(w_addr[p]))
                ctx.set(sets(p, "w_data"), int(w_data[p]))
            ctx.set(dut.r_en, int(sum(int(e) << b for b, e in enumerate(r_en))))
            for b in range(banks):
                ctx.set(dut.r_addr[b], int(r_addr[b]))
            for b in range(banks):
                g = group[b]
                hit = w_en[g] and w_addr[g] == r_addr[b]
                if r_en[b]:
                    if hit and b == 0 and transparent:
                        seen[b] = int(w_data[g])
                    elif hit and collisions == "undefined":
                        seen[b] = None
                    else:
                        seen[b] = words[b][r_addr[b]]
            for b in range(banks):
                if w_en[group[b]]:
                    words[b][w_addr[group[b]]] = int(w_data[group[b]])
            await ctx.tick()
            for b in range(banks):
                if seen[b] is not None:
                    assert ctx.get(dut.r_data[b]) == seen[b], (b, seen[b])
                    checked += 1
        assert checked > cycles * banks // 2

    _run(dut, bench)


def test_weight_memory_holds_its_output():
    dut = WeightMemory(width=20, depth=64)

    async def bench(ctx):
        ctx.set(dut.w_en, 1)
        for addr in (9, 10):
            ctx.set(dut.addr, addr)
            ctx.set(dut.w_data, addr * 1000)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.r_en, 1)
        ctx.set(dut.addr, 9)
        await ctx.tick()
        assert ctx.get(dut.r_data) == 9000
        ctx.set(dut.r_en, 0)
        ctx.set(dut.addr, 10)
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.r_data) == 9000

    _run(dut, bench)


@pytest.mark.parametrize("slices, relays", [(1, 0), (4, 0), (1, 1), (4, 2), (4, 4)])
def test_registered_weight_memory_reads_in_three_cycles_four_with_relays(slices, relays):
    dut = WeightMemory(width=20, depth=64, registered=True, slices=slices, relays=relays)
    assert dut.latency == (4 if relays else 3)

    async def bench(ctx):
        ctx.set(dut.w_en, 1)
        for addr in (9, 10):
            ctx.set(dut.addr, addr)
            ctx.set(dut.w_data, addr * 1000 + 0xF000F)    # a bit in the first and last slice
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.r_en, 1)
        ctx.set(dut.addr, 10)          # the write to 10 happens in this cycle: read after it
        await ctx.tick()
        ctx.set(dut.addr, 9)
        await ctx.tick()
        ctx.set(dut.r_en, 0)
        ctx.set(dut.addr, 10)
        for _ in range(dut.latency - 2):
            assert ctx.get(dut.r_data) == 0
            await ctx.tick()
        assert ctx.get(dut.r_data) == 10000 + 0xF000F
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.r_data) == 9000 + 0xF000F

    _run(dut, bench)


def test_weight_memory_slices_and_relays_need_registers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"^slices must divide the width \(20\) and needs "
                                             r"registered=True, not 3$"):
            WeightMemory(width=20, depth=8, registered=True, slices=3)
        with pytest.raises(ValueError, match=r"needs registered=True, not 2$"):
            WeightMemory(width=20, depth=8, slices=2)
        with pytest.raises(ValueError, match=r"^relays must divide the slices \(4\) and needs "
                                             r"registered=True, not 3$"):
            WeightMemory(width=20, depth=8, registered=True, slices=4, relays=3)
        with pytest.raises(ValueError, match=r"needs registered=True, not 1$"):
            WeightMemory(width=20, depth=8, relays=1)
        with pytest.raises(ValueError, match=r"^relays must be an integer in \[0, 4\], not 5$"):
            WeightMemory(width=20, depth=8, registered=True, slices=4, relays=5)
        gc.collect()


class _UltraPlus:
    device = "iCE40UP5K"


def _instances(fragment, kind):
    count = 0
    for sub, *_ in fragment.subfragments:
        if getattr(sub, "type", None) == kind:
            count += 1
        count += _instances(sub, kind)
    return count


@pytest.mark.parametrize("width, depth, blocks", [(32, 4096, 2), (64, 16384, 4), (20, 32768, 4)])
def test_spram_blocks_on_ultraplus(width, depth, blocks):
    mem = WeightMemory(width=width, depth=depth)
    assert mem.spram_blocks()[0] * mem.spram_blocks()[1] == blocks
    fragment = Fragment.get(mem, _UltraPlus())
    assert _instances(fragment, "SB_SPRAM256KA") == blocks
    # Registered (a deep read pipeline on an iCE40): the same blocks behind the registers.
    for relays in (0, 1):
        assert _instances(Fragment.get(WeightMemory(width=width, depth=depth, registered=True,
                                                    relays=relays),
                                       _UltraPlus()), "SB_SPRAM256KA") == blocks
    assert _instances(Fragment.get(WeightMemory(width=width, depth=depth), None),
                      "SB_SPRAM256KA") == 0


def test_weight_memory_too_large_for_spram():
    mem = WeightMemory(width=64, depth=32768)
    mem._MustUse__silence = True          # it never elaborates
    with pytest.raises(ValueError) as e:
        Fragment.get(mem, _UltraPlus())
    assert str(e.value) == ("A weight memory of 32768 x 64 bits needs 8 SB_SPRAM256KA blocks; the "
                            "iCE40UP5K has 4: use a smaller weight_depth")
    with warnings.catch_warnings():
        # An Elaboratable whose __init__ raises is never used: collect it here, quietly.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="^depth must be an integer >= 1, not 0$"):
            WeightMemory(width=8, depth=0)
        with pytest.raises(TypeError, match="^spram must be None, False or True, not 'yes'$"):
            WeightMemory(width=8, depth=8, spram="yes")
        gc.collect()


@pytest.mark.parametrize("target", ["ecp5-85f", "ice40-up5k"])
def test_undefined_collisions_leave_bare_block_rams(tmp_path, target):
    # Yosys gives a read of the word written in the same cycle its old value with two
    # flip-flops and a LUT per bit behind each block RAM; collisions="undefined" leaves the
    # block RAMs alone (bank 0, transparent, keeps its forwarding).
    from addershift.boards.report import synthesize

    def count(name, **kwargs):
        r = synthesize(ReplicatedMemory(banks=2, width=36, depth=512, **kwargs), target=target,
                       build_dir=tmp_path / name, harness=False, place=False)
        return r.used("lut4"), r.used("ff"), r.used("bram")

    lut, ff, bram = count("old", transparent=False)
    assert bram >= 2 and lut >= 2 * 36 and ff >= 2 * 36
    bare = count("undefined", transparent=False, collisions="undefined")
    # iCE40 block RAMs power up with an undefined output: Yosys would give the word register's
    # initial 0 a flag per bank and an AND per bit until its first read; board builds drop that
    # initial value (BRAM_WORD_SUFFIX), which nothing reads.
    assert bare == (0, 0, bram)
    if target.startswith("ecp5"):
        # The weight memory reads nothing in a write cycle: its block RAM stands alone too, with
        # one LUT for its read enable (`r_en & ~w_en`).
        r = synthesize(WeightMemory(width=36, depth=512, spram=False), target=target,
                       build_dir=tmp_path / "weights", harness=False, place=False)
        assert (r.used("lut4"), r.used("ff"), r.used("bram")) == (1, 0, 1)
    lut_t, ff_t, _ = count("transparent", collisions="undefined")
    assert bare[0] < lut_t < lut and bare[1] < ff_t < ff     # bank 0's forwarding only
    with pytest.raises(ValueError, match=r"collisions must be one of old, undefined, not 'x'"):
        ReplicatedMemory(banks=1, width=8, depth=4, collisions="x")._MustUse__silence = True
