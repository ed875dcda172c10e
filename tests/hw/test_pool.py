# amaranth: UnusedElaboratable=no
"""Pooling units against the golden model: ``golden.max_pool2d`` and ``golden.global_avg_pool``.

Frames of random sizes (the smallest and the largest the build takes included), extreme values,
every kernel/stride relation (non-overlapping, overlapping, gaps, 1x1), back-to-back frames under
idle and back-pressure patterns, the digits network's own pooling layer, every shift of the
average; throughput, latency and parameter errors.
"""

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from addershift.hw.pool import GlobalAvgPool, MaxPool
from addershift.sim.pool_vectors import (avg_pool_batches, avg_pool_extremes, max_pool_batches,
                                         max_pool_sizes, pixels)
from addershift.sim.streams import (deadlock_watchdog, stream_check_holds, stream_receive,
                                    stream_send, transfer_cycles)
from addershift.sw.examples import digits_net
from addershift.sw.golden import trace
from addershift.sw.model import MaxPool2d
from addershift.sw.numerics import SHIFT_MAX, signed_width


def run_batches(dut, batches, **patterns):
    """:func:`run` on ``(settings, transfers, expected)`` batches; the results of each batch."""
    config, transfers, expected = zip(*batches)
    return run(dut, config, transfers, [len(e) for e in expected], **patterns)


def run(dut, config, batches, counts, *, idle=(0,), stall=(0,)):
    """Stream each batch of transfers under its configuration (``{port: value}``), changing the
    configuration only once the previous batch's ``counts`` results are out; check the stream
    rules on ``o``. Returns the results of each batch."""
    outputs = [[] for _ in batches]
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def send(ctx):
        for b, (settings, transfers) in enumerate(zip(config, batches)):
            while b and len(outputs[b - 1]) < counts[b - 1]:
                await ctx.tick()
            for port, value in settings.items():
                ctx.set(getattr(dut, port), value)
            await stream_send(ctx, dut.i, transfers, idle=idle)

    async def receive(ctx):
        for b, count in enumerate(counts):
            for p in await stream_receive(ctx, dut.o, count, stall=stall):
                outputs[b].append([int(v) for v in p])

    async def check_holds(ctx):
        await stream_check_holds(ctx, dut.o)

    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.add_process(check_holds)
    sim.add_process(deadlock_watchdog(20 * (sum(map(len, batches)) + sum(counts)) + 1000))
    sim.run()
    return outputs


# -- max pooling ---------------------------------------------------------------------------------

#: kernel, stride: non-overlapping, overlapping, with gaps, 1x1 and subsampling.
KERNELS = [(2, 2), (3, 3), (3, 2), (2, 1), (1, 1), (1, 2), (2, 3), (3, 1)]


@pytest.mark.parametrize("kernel, stride", KERNELS)
def test_max_pool_matches_golden(kernel, stride):
    """Frames of the smallest and largest size the build takes and random sizes between, two
    frames back to back per size, under idle and back-pressure patterns."""
    rng = np.random.default_rng(kernel * 10 + stride)
    dut = MaxPool(lanes=3, kernel=kernel, stride=stride, max_width=11, max_height=9)
    sizes = max_pool_sizes(rng, dut)
    batches = max_pool_batches(rng, dut, sizes)
    got = run_batches(dut, batches, idle=(0, 1, 0, 0, 2), stall=(0, 0, 3, 1))
    for size, g, (_, _, e) in zip(sizes, got, batches):
        assert g == e, f"frame size {size}"


def test_max_pool_wide_values_one_lane():
    rng = np.random.default_rng(7)
    dut = MaxPool(lanes=1, bits=16, kernel=2, stride=2, max_width=6, max_height=6)
    batches = max_pool_batches(rng, dut, [(6, 6), (2, 2), (5, 3)], frames=3)
    assert run_batches(dut, batches) == [e for _, _, e in batches]


def test_max_pool_on_the_digits_network():
    """The digits network's own pooling layers, fed with the traced output of the layer before
    them, one lane per channel: the pooled outputs equal the trace."""
    model = digits_net("shift", seed=3)
    x = np.random.default_rng(3).integers(0, 128, (2, 1, 8, 8))
    outputs = trace(model, x)
    checked = 0
    for n, layer in enumerate(model.layers):
        if not isinstance(layer, MaxPool2d):
            continue
        before, after = outputs[n - 1], outputs[n]
        _, c, h, w = before.shape
        dut = MaxPool(lanes=c, kernel=layer.kernel, stride=layer.stride, max_width=w,
                      max_height=h)
        got = run(dut, [{"width": w, "height": h}], [pixels(before)], [after.size // c])
        assert got == [pixels(after)], layer.name
        checked += 1
    assert checked == 2


def test_max_pool_throughput_and_latency():
    """A pixel per cycle with no stall; a window's result two cycles after its last pixel."""
    dut = MaxPool(lanes=1, kernel=2, stride=2, max_width=4, max_height=4)
    transfers = [[v] for v in range(16)]
    taken_in, taken_out = transfer_cycles(dut, transfers, settings={"width": 4, "height": 4})
    assert taken_in == list(range(16))
    last_pixels = [4 + 1, 4 + 3, 12 + 1, 12 + 3]            # (y, x) = (1, 1), (1, 3), (3, 1), (3, 3)
    assert taken_out == [taken_in[p] + dut.latency for p in last_pixels]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kernel=0), ValueError, "kernel must be an integer >= 1, not 0"),
    (dict(stride=0), ValueError, "stride must be an integer >= 1, not 0"),
    (dict(kernel=3, max_width=2), ValueError, "max_width must be an integer >= 3, not 2"),
    (dict(kernel=3, max_height=2), ValueError, "max_height must be an integer >= 3, not 2"),
    (dict(lanes=0), ValueError, "lanes must be an integer >= 1, not 0"),
    (dict(bits=33), ValueError, "bits must be an integer in [1, 32], not 33"),
    (dict(kernel=2.0), TypeError, "kernel must be an integer, not 2.0"),
])
def test_max_pool_parameter_errors(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        MaxPool(**{"max_width": 8, "max_height": 8, **kwargs})


def test_max_pool_properties():
    dut = MaxPool(lanes=4, bits=6, kernel=3, stride=2, max_width=12, max_height=10)
    assert (dut.lanes, dut.bits, dut.kernel, dut.stride, dut.max_width, dut.max_height,
            dut.line_depth, dut.latency) == (4, 6, 3, 2, 12, 10, 5, 2)
    with pytest.raises(AttributeError):
        dut.kernel = 2


# -- global average pooling ----------------------------------------------------------------------

def test_global_avg_pool_every_shift():
    """Every shift the build allows, frame sizes from one pixel to the largest, two frames per
    batch back to back, under idle and back-pressure patterns."""
    rng = np.random.default_rng(11)
    dut = GlobalAvgPool(lanes=2, max_pixels=64)
    sizes = [(1, 1), (8, 8), (3, 5), (7, 2), (4, 4)]
    batches = avg_pool_batches(rng, dut, sizes, range(SHIFT_MAX + 1))
    got = run_batches(dut, batches, idle=(0, 0, 2), stall=(0, 4, 0))
    for shift, (g, (_, _, e)) in enumerate(zip(got, batches)):
        assert g == e, f"shift {shift}"


def test_global_avg_pool_extremes_and_ties():
    """Sums at both ends (saturating to 8 bits, exact in 16), and sums exactly halfway between
    two outputs, positive and negative (ties toward +infinity)."""
    for out_bits, shifts in [(8, [0, 1]), (16, [0, 6])]:
        dut = GlobalAvgPool(lanes=1, out_bits=out_bits, max_pixels=64)
        batches = avg_pool_extremes(dut, shifts)
        assert run_batches(dut, batches) == [e for _, _, e in batches], out_bits
    # 64 * -128 and 64 * 127 halved; the ties: 3 >> 1 = 1.5 -> 2, -3 >> 1 = -1.5 -> -1.
    assert [e for _, _, e in avg_pool_extremes(dut, [1])] == [[[-4096], [4064], [2], [-1]]]


def test_global_avg_pool_backpressure_between_frames():
    """Frames of one and two pixels back to back while the output stalls: a finished sum waits
    for the requantiser and the next frame waits for it."""
    rng = np.random.default_rng(13)
    dut = GlobalAvgPool(lanes=2, max_pixels=4, shift_max=3)
    batches = [avg_pool_batches(rng, dut, [(n, 1)], [shift], frames=16)[0]
               for n, shift in [(1, 0), (2, 1), (4, 3)]]
    assert run_batches(dut, batches, stall=(3, 0, 6, 1)) == [e for _, _, e in batches]


def test_global_avg_pool_latency():
    dut = GlobalAvgPool(lanes=1, max_pixels=16, shift_max=4)
    transfers = [[v] for v in range(-8, 8)] * 2
    taken_in, taken_out = transfer_cycles(dut, transfers, settings={"pixels": 16, "shift": 4})
    assert taken_in == list(range(32))
    assert taken_out == [taken_in[15] + dut.latency, taken_in[31] + dut.latency]
    assert dut.latency == 1 + 5 and dut.sum_bits == signed_width(16 * -128, 16 * 127)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(max_pixels=0), ValueError, "max_pixels must be an integer >= 1, not 0"),
    (dict(max_pixels=2 ** 41), ValueError,
     "max_pixels must keep the 8-bit sums within 48 bits, not 2199023255552"),
    (dict(shift_max=41), ValueError, "shift_max must be an integer in [0, 40], not 41"),
    (dict(out_bits=1), ValueError, "out_bits must be an integer in [2, 16], not 1"),
    (dict(lanes=1.5), TypeError, "lanes must be an integer, not 1.5"),
])
def test_global_avg_pool_parameter_errors(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        GlobalAvgPool(**{"max_pixels": 64, **kwargs})
