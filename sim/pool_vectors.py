"""Test vectors for the pooling units of ``hw/pool.py``: batches of frames, the frame size each
batch is run with, and the golden results, as stream transfers (lists of ints, one per lane, or
packed integers for Verilog).

A *batch* is ``(settings, transfers, expected)``: ``settings`` the unit's frame-size ports
(``{"width": W, "height": H}`` for :class:`~addershift.hw.pool.MaxPool`, ``{"pixels": P,
"shift": S}`` for :class:`~addershift.hw.pool.GlobalAvgPool`), which hold still while the batch's
frames stream through back to back. Shared by the Amaranth tests (``tests/hw/test_pool.py``) and
the cocotb bench (``sim/pool/``).
"""

from __future__ import annotations

import numpy as np

from ..sw.golden import global_avg_pool, max_pool2d
from ..sw.numerics import int_range

__all__ = ["pixels", "max_pool_sizes", "max_pool_batches", "avg_pool_batches",
           "avg_pool_extremes", "pack", "unpack"]


def pixels(x):
    """An (N, C, H, W) batch as transfers: frame after frame, raster order, C lanes each."""
    n, c, h, w = x.shape
    return [[int(v) for v in x[i, :, yy, xx]]
            for i in range(n) for yy in range(h) for xx in range(w)]


def max_pool_sizes(rng, dut, count=3):
    """Frame sizes ``(width, height)``: the smallest and the largest the build takes, the
    narrowest tall and the widest flat one, and ``count`` random ones between."""
    k, w_max, h_max = dut.kernel, dut.max_width, dut.max_height
    sizes = [(k, k), (w_max, h_max), (k, h_max), (w_max, k)]
    return sizes + [(int(rng.integers(k, w_max + 1)), int(rng.integers(k, h_max + 1)))
                    for _ in range(count)]


def max_pool_batches(rng, dut, sizes, frames=2):
    """A batch of ``frames`` random frames per size, each with a channel held at an extreme (the
    minimum and the maximum in turn) and, where a row has two pixels, a channel alternating
    between both extremes."""
    lo, hi = int_range(dut.bits)
    batches = []
    for n, (w, h) in enumerate(sizes):
        x = rng.integers(lo, hi + 1, (frames, dut.lanes, h, w))
        x[0, 0] = lo if n % 2 else hi                       # a constant channel at an extreme
        if w > 1:
            x[-1, -1, :, ::2] = hi                         # extremes next to each other
            x[-1, -1, :, 1::2] = lo
        batches.append(({"width": w, "height": h}, pixels(x),
                        pixels(max_pool2d(x, kernel=dut.kernel, stride=dut.stride))))
    return batches


def _avg_pool_batch(dut, x, shift):
    h, w = x.shape[2:]
    expected = global_avg_pool(x, shift=shift, out_bits=dut.out_bits)
    return {"pixels": w * h, "shift": shift}, pixels(x), [[int(v) for v in row] for row in expected]


def avg_pool_batches(rng, dut, sizes, shifts, frames=2):
    """A batch of ``frames`` random frames per shift, the sizes ``(width, height)`` in turn."""
    lo, hi = int_range(dut.bits)
    batches = []
    for n, shift in enumerate(shifts):
        w, h = sizes[n % len(sizes)]
        batches.append(_avg_pool_batch(dut, rng.integers(lo, hi + 1, (frames, dut.lanes, h, w)),
                                       shift))
    return batches


def avg_pool_extremes(dut, shifts):
    """Frames of ``dut.max_pixels`` pixels per shift: every value at the minimum, every value at
    the maximum (sums at both ends of their range: saturating, or exact in a wide output), and
    sums of 3 and -3 (halfway between two results after a shift of 1: ties toward +infinity)."""
    lo, hi = int_range(dut.bits)
    x = np.zeros((4, dut.lanes, 1, dut.max_pixels), dtype=np.int64)
    x[0], x[1] = lo, hi
    x[2, :, 0, :3], x[3, :, 0, :3] = 1, -1
    return [_avg_pool_batch(dut, x, shift) for shift in shifts]


def pack(dut, transfer):
    """A transfer (one int per lane) as the integer on the Verilog port ``i__payload``."""
    return dut.i.payload.shape().const(transfer).as_value().value


def unpack(dut, word):
    """The integer on ``o__payload`` as a list of ints, one per lane."""
    from amaranth.lib import data
    return [int(v) for v in data.Const(dut.o.payload.shape(), word)]
