"""The skid register passes every item once and in order under random stalls, with its parts
chosen by copies of its flag it makes or is given."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from addershift.hw.skid import skid

PARTS = (lambda v: v[:4], lambda v: v[4:])


def _run(given_copies, *, corrupt=False):
    """Stream 200 bytes through a skid whose two nibbles are parts, the consumer ready at
    random; with ``given_copies`` the copies of ``held`` are registers the bench keeps equal
    to it (``corrupt``: the second stuck at 0). The bytes the consumer takes."""
    m = Module()
    valid, data, ready = Signal(), Signal(8), Signal()
    copies = None
    if given_copies:
        copies = [Signal(name=f"copy{k}") for k in range(2)]
    out = skid(m, valid, data, ready, "s", PARTS, held_copies=copies)
    if given_copies:
        m.d.sync += copies[0].eq(out.held_next)
        m.d.sync += copies[1].eq(0 if corrupt else out.held_next)
    sent = list(range(200))
    taken = []

    async def bench(ctx):
        rng, i = random.Random(1), 0
        while len(taken) < len(sent):
            ctx.set(valid, i < len(sent))
            ctx.set(data, sent[i] if i < len(sent) else 0)
            ctx.set(ready, rng.random() < 0.5)
            producer_ready, out_valid, out_data, consumer_ready = (
                ctx.get(out.ready), ctx.get(out.valid), ctx.get(out.payload), ctx.get(ready))
            if out_valid and consumer_ready:
                taken.append(out_data)
            if producer_ready and i < len(sent):
                i += 1
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return sent, taken


@pytest.mark.parametrize("given_copies", [False, True])
def test_every_item_passes_once_in_order(given_copies):
    sent, taken = _run(given_copies)
    assert taken == sent


def test_a_wrong_copy_picks_the_wrong_part():
    sent, taken = _run(True, corrupt=True)
    assert taken != sent


def test_copies_must_match_the_parts():
    with pytest.raises(ValueError, match="^2 parts need as many copies of held, not 1$"):
        skid(Module(), Signal(), Signal(8), Signal(), "s", PARTS, held_copies=[Signal()])
