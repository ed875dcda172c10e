"""Test vectors for :class:`~addershift.hw.array.SystolicArray`: tiles, their golden results, and
the stream words that carry them (Amaranth payload dicts or packed integers for Verilog benches).

A *tile* is ``(X, weights)``: X is ``rows x K`` activations and ``weights`` is the golden model's
weight dict for ``cols x K`` weights (``weight``, or ``sign`` and ``exponent`` for shift). Shared by
the Amaranth tests (``tests/hw/test_array.py``) and the cocotb bench (``sim/array/``).
"""

from __future__ import annotations

import numpy as np

from ..sw.golden import array_op
from ..sw.numerics import Op, int_range

__all__ = ["random_tile", "extreme_tiles", "exponent_tile", "operand_corner_tiles", "golden_tile",
           "step_payloads", "step_words", "unpack_row"]


def random_tile(arr, k, rng, *, zero_fraction=0.2):
    """Uniformly random operands over their whole ranges; shift weights are zero with
    probability ``zero_fraction``."""
    lo, hi = int_range(arr.x_bits)
    x = rng.integers(lo, hi + 1, size=(arr.rows, k))
    if arr.kind is Op.SHIFT:
        nz = (1 - zero_fraction) / 2
        return x, {"sign": rng.choice([-1, 0, 1], size=(arr.cols, k), p=[nz, zero_fraction, nz]),
                   "exponent": rng.integers(arr.p_min, arr.p_max + 1, size=(arr.cols, k))}
    lo, hi = int_range(arr.w_bits)
    return x, {"weight": rng.integers(lo, hi + 1, size=(arr.cols, k))}


def extreme_tiles(arr, length=None):
    """Tiles of ``length`` (default ``max_length``) steps whose results reach both ends of the
    accumulator's range (an accumulator one bit narrower would overflow)."""
    lo, hi = int_range(arr.x_bits)
    n, r, c = length or arr.max_length, arr.rows, arr.cols
    # Row and column parity pick the operands, so one tile holds several corners.
    x = np.array([[lo if i % 2 == 0 else hi] * n for i in range(r)])
    if arr.kind is Op.SHIFT:
        sign = np.array([[(-1, 1, 0)[j % 3]] * n for j in range(c)])
        yield np.full((r, n), lo), {"sign": sign, "exponent": np.full((c, n), arr.p_max)}
        yield x, {"sign": sign, "exponent": np.full((c, n), arr.p_min)}
    else:
        wlo, whi = int_range(arr.w_bits)
        w = np.array([[wlo if j % 2 == 0 else whi] * n for j in range(c)])
        yield x, {"weight": w}
        yield np.full((r, n), hi), {"weight": np.full((c, n), wlo)}


def operand_corner_tiles(arr, length):
    """All-minimum and all-maximum operands (every x and w at one end of its range), and zero
    weights (random weights are zero one time in 2**w_bits only)."""
    lo, hi = int_range(arr.x_bits)
    r, c, n = arr.rows, arr.cols, length
    for xv in (lo, hi):
        if arr.kind is Op.SHIFT:
            for s, p in ((-1, arr.p_min), (1, arr.p_max), (-1, arr.p_max), (0, arr.p_max)):
                yield np.full((r, n), xv), {"sign": np.full((c, n), s),
                                            "exponent": np.full((c, n), p)}
        else:
            wlo, whi = int_range(arr.w_bits)
            for wv in (wlo, whi, 0):
                yield np.full((r, n), xv), {"weight": np.full((c, n), wv)}


def exponent_tile(arr):
    """Shift: every exponent code with every sign (zero weights included) against x extremes."""
    lo, hi = int_range(arr.x_bits)
    codes = [(s, p) for p in range(arr.p_min, arr.p_max + 1) for s in (-1, 0, 1)]
    k = len(codes)
    x = np.array([[(lo, hi, -1, 1)[(i + j) % 4] for j in range(k)] for i in range(arr.rows)])
    sign = np.array([[codes[(j + c) % k][0] for j in range(k)] for c in range(arr.cols)])
    exponent = np.array([[codes[(j + c) % k][1] for j in range(k)] for c in range(arr.cols)])
    return x, {"sign": sign, "exponent": exponent}


def golden_tile(arr, tile):
    """The ``rows x cols`` result the array must produce for ``tile``."""
    x, weights = tile
    return array_op(arr.kind, x, weights, p_min=arr.p_min or 0)


def _weight_ints(arr, weights, j):
    if arr.kind is Op.SHIFT:
        layout = arr.weight_shape
        return [layout.encode(int(weights["sign"][c, j]), int(weights["exponent"][c, j]))
                for c in range(arr.cols)]
    return [int(v) for v in weights["weight"][:, j]]


def step_payloads(arr, tile):
    """The input stream's payloads for ``tile`` as values ``ctx.set`` takes (Amaranth sim)."""
    from amaranth.lib import data
    x, weights = tile
    k = x.shape[1]
    out = []
    for j in range(k):
        w = _weight_ints(arr, weights, j)
        if arr.kind is Op.SHIFT:
            w = [data.Const(arr.weight_shape, v) for v in w]
        out.append({"x": [int(v) for v in x[:, j]], "w": w, "last": int(j == k - 1)})
    return out


def _put(word, value, offset, width):
    return word | ((int(value) & ((1 << width) - 1)) << offset)


def step_words(arr, tile):
    """The input stream's payloads for ``tile`` as packed integers (the Verilog port's bits)."""
    from amaranth.hdl import Shape
    x, weights = tile
    k = x.shape[1]
    fx, fw, fl = arr.in_layout["x"], arr.in_layout["w"], arr.in_layout["last"]
    xw = Shape.cast(fx.shape.elem_shape).width
    ww = Shape.cast(fw.shape.elem_shape).width
    words = []
    for j in range(k):
        word = 0
        for r in range(arr.rows):
            word = _put(word, x[r, j], fx.offset + r * xw, xw)
        for c, v in enumerate(_weight_ints(arr, weights, j)):
            word = _put(word, v, fw.offset + c * ww, ww)
        words.append(_put(word, j == k - 1, fl.offset, 1))
    return words


def unpack_row(arr, word):
    """``(acc list, last)`` from the output port's bits."""
    fa, fl = arr.out_layout["acc"], arr.out_layout["last"]
    n = arr.acc_bits
    accs = []
    for c in range(arr.cols):
        v = (word >> (fa.offset + c * n)) & ((1 << n) - 1)
        accs.append(v - (1 << n) if v >> (n - 1) else v)
    return accs, (word >> fl.offset) & 1
