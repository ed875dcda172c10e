"""Amaranth-simulator helpers for ``amaranth.lib.stream`` interfaces: put, get, idle and stall.

For async testbenches (``sim.add_testbench``). Gaps come from iterables of cycle counts, e.g.
``itertools.cycle([0, 0, 1, 3])``: before each transfer the sender stays idle (valid low) and the
receiver stalls (ready low) for the next count, which exercises bubbles and back-pressure.
"""

from __future__ import annotations

import itertools

__all__ = ["stream_put", "stream_get", "stream_send", "stream_receive", "stream_check_holds",
           "deadlock_watchdog", "transfer_cycles"]


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` (valid high) until it is taken."""
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one payload from ``stream`` (ready high until valid) and return it."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stream_send(ctx, stream, payloads, *, idle=(0,)):
    """Put every payload in order, idling ``next(idle)`` cycles before each (cycled)."""
    gaps = itertools.cycle(idle)
    for payload in payloads:
        for _ in range(next(gaps)):
            await ctx.tick()
        await stream_put(ctx, stream, payload)


async def stream_receive(ctx, stream, count, *, stall=(0,)):
    """Get ``count`` payloads, stalling ``next(stall)`` cycles before each (cycled)."""
    gaps = itertools.cycle(stall)
    received = []
    for _ in range(count):
        for _ in range(next(gaps)):
            await ctx.tick()
        received.append(await stream_get(ctx, stream))
    return received


async def stream_check_holds(ctx, stream):
    """A process (``sim.add_process``) that asserts the stream rule on ``stream`` every cycle:
    once valid, valid and the payload hold until the transfer is taken."""
    held = None
    while True:
        _, _, valid, ready, payload = await ctx.tick().sample(stream.valid, stream.ready,
                                                              stream.payload)
        bits = payload.as_value().value if hasattr(payload, "as_value") else payload
        if held is not None:
            assert valid and bits == held, "stream payload or valid changed before it was taken"
        held = bits if valid and not ready else None


def deadlock_watchdog(cycles):
    """A process (``sim.add_process``) that fails the simulation after ``cycles`` clock cycles,
    so a stream that never delivers stops the test instead of hanging it; processes do not keep
    a simulation running, so it costs nothing when the testbenches finish."""
    async def watchdog(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"the testbenches did not finish in {cycles} cycles: deadlock?")
    return watchdog


def transfer_cycles(dut, payloads, *, settings=None, extra=20):
    """Run ``payloads`` through ``dut`` (streams ``i`` and ``o``) with the input always valid
    and the output always ready; return the cycles of every input and output transfer.
    ``settings`` maps other input ports to constant values. For latency and throughput tests."""
    from amaranth.sim import Simulator
    taken_in, taken_out = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for port, value in (settings or {}).items():
            ctx.set(getattr(dut, port), value)
        ctx.set(dut.o.ready, 1)
        for cycle in range(len(payloads) + extra):
            sending = len(taken_in) < len(payloads)
            ctx.set(dut.i.valid, sending)
            if sending:
                ctx.set(dut.i.payload, payloads[len(taken_in)])
            _, _, i_ready, o_valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            if sending and i_ready:
                taken_in.append(cycle)
            if o_valid:
                taken_out.append(cycle)

    sim.add_testbench(bench)
    sim.run()
    return taken_in, taken_out
