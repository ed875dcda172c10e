"""Small random-parameter models, one per layer variant the accelerator runs.

Tests of the compiler, the accelerator model and the hardware run each case on several array shapes
and compare every stage with the golden trace. Cases are tiny (a few hundred k-steps) so that the
cycle-accurate simulations stay fast.
"""

from __future__ import annotations

import numpy as np

from .examples import random_requant, random_weights
from .model import Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, QModel, ReLU
from .numerics import Op, acc_width

__all__ = ["CASES", "layer_case"]

_P_MIN, _P_MAX = -4, 3


def _widths(op, x_bits):
    if Op(op) is Op.SHIFT:
        return {"x_bits": x_bits, "p_min": _P_MIN, "p_max": _P_MAX}
    return {"x_bits": x_bits, "w_bits": x_bits}


def _conv(rng, name, op, mode, cin, cout, kernel, stride, padding, x_bits=8):
    kh, kw = kernel
    weights = random_weights(rng, op, (cout, cin, kh, kw), w_bits=x_bits, p_min=_P_MIN, p_max=_P_MAX)
    acc_bits = acc_width(op, cin * kh * kw, **_widths(op, x_bits))
    return Conv2d(name=name, op=Op(op), weights=weights,
                  requant=random_requant(rng, mode, cout, acc_bits=acc_bits, out_bits=x_bits),
                  w_bits=x_bits, p_min=_P_MIN, p_max=_P_MAX, kernel=(kh, kw), stride=stride,
                  padding=padding)


def _linear(rng, name, op, mode, fin, fout, x_bits=8):
    weights = random_weights(rng, op, (fout, fin), w_bits=x_bits, p_min=_P_MIN, p_max=_P_MAX)
    acc_bits = acc_width(op, fin, **_widths(op, x_bits))
    return Linear(name=name, op=Op(op), weights=weights,
                  requant=random_requant(rng, mode, fout, acc_bits=acc_bits, out_bits=x_bits),
                  w_bits=x_bits, p_min=_P_MIN, p_max=_P_MAX)


def _conv_s1_p1(rng, op, mode):
    return (3, 5, 5), [_conv(rng, "conv", op, mode, 3, 5, (3, 3), 1, 1), ReLU("relu")]


def _conv_s2_p0(rng, op, mode):
    return (2, 7, 7), [_conv(rng, "conv", op, mode, 2, 6, (3, 3), 2, 0)]


def _conv_rect_p2(rng, op, mode):
    # A 2x3 kernel, stride 2, padding 2: padded rows and columns on every side.
    return (3, 4, 5), [_conv(rng, "conv", op, mode, 3, 3, (2, 3), 2, 2), ReLU("relu")]


def _pointwise(rng, op, mode):
    # A 1x1 kernel over two channels: tiles of two steps, so the step after a tile's last one
    # is a last one again a step later (the array's readiness for a `last` changes each step).
    return (2, 4, 4), [_conv(rng, "conv", op, mode, 2, 5, (1, 1), 1, 0), ReLU("relu")]


def _pool(rng, op, mode):
    # 7x7 output: the last row and column of 2x2 windows are dropped, as PyTorch does.
    return (2, 7, 7), [_conv(rng, "conv", op, mode, 2, 5, (3, 3), 1, 1), ReLU("relu"),
                       MaxPool2d("pool", kernel=2, stride=2)]


def _pool_gap_stride(rng, op, mode):
    # kernel 2, stride 3: windows with a gap between them; ReLU after the pool.
    return (1, 8, 8), [_conv(rng, "conv", op, mode, 1, 4, (3, 3), 1, 0),
                       MaxPool2d("pool", kernel=2, stride=3), ReLU("relu")]


def _gap(rng, op, mode):
    return (3, 4, 4), [_conv(rng, "conv", op, mode, 3, 6, (3, 3), 1, 1), ReLU("relu"),
                       GlobalAvgPool("gap", shift=4), _linear(rng, "fc", op, mode, 6, 3)]


def _linear_chain(rng, op, mode):
    return (2, 3, 3), [Flatten("flatten"), _linear(rng, "fc1", op, mode, 18, 7), ReLU("relu"),
                       _linear(rng, "fc2", op, mode, 7, 5)]


#: name -> builder(rng, op, mode) returning (input shape, layers).
CASES = {
    "conv_s1_p1": _conv_s1_p1,
    "conv_s2_p0": _conv_s2_p0,
    "conv_rect_p2": _conv_rect_p2,
    "pointwise": _pointwise,
    "pool": _pool,
    "pool_gap_stride": _pool_gap_stride,
    "gap": _gap,
    "linear_chain": _linear_chain,
}


def layer_case(name, op, *, mode="shift", seed=0):
    """The validated :class:`model.QModel` of case ``name`` for PE kind ``op``."""
    if name not in CASES:
        raise ValueError(f"Case must be one of {', '.join(CASES)}, not {name!r}")
    rng = np.random.default_rng(seed)
    shape, layers = CASES[name](rng, op, mode)
    model = QModel(input_shape=shape, layers=layers)
    model.validate()
    return model
