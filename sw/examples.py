"""Models with random integer parameters, for tests and benchmarks of every layer and mode.

Trained models come from ``addershift train`` (``models/``); these only exercise the arithmetic.
"""

from __future__ import annotations

import numpy as np

from .model import Conv2d, Flatten, Linear, MaxPool2d, QModel, ReLU, Requant
from .numerics import MULTIPLIER_BITS, Op, RequantMode, int_range

__all__ = ["random_weights", "random_requant", "random_conv", "random_linear", "digits_net"]


def random_weights(rng, op, shape, *, w_bits=8, p_min=-4, p_max=3):
    """Uniform random weights of ``shape`` (O, ...) for ``op`` (zero shift weights included)."""
    op = Op(op)
    if op is Op.SHIFT:
        return {"sign": rng.integers(-1, 2, size=shape).astype(np.int8),
                "exponent": rng.integers(p_min, p_max + 1, size=shape).astype(np.int8)}
    lo, hi = int_range(w_bits)
    dtype = np.int8 if w_bits <= 8 else np.int16
    return {"weight": rng.integers(lo, hi + 1, size=shape).astype(dtype)}


def random_requant(rng, mode, channels, *, acc_bits, out_bits=8):
    """Requantisation that maps a ``acc_bits``-bit accumulator roughly onto ``out_bits``."""
    mode = RequantMode(mode)
    k = max(0, acc_bits - out_bits)
    bias = rng.integers(-(1 << max(0, acc_bits - 2)), 1 << max(0, acc_bits - 2), size=channels)
    shifts = lambda lo, hi: rng.integers(lo, hi + 1, size=channels).astype(np.int8)
    signs = lambda: rng.integers(-1, 2, size=channels).astype(np.int8)
    if mode is RequantMode.SHIFT:
        params = {"shift": shifts(max(0, k - 2), k + 1)}
    elif mode is RequantMode.POW2X2:
        params = {"sign1": signs(), "shift1": shifts(max(0, k - 2), k + 1),
                  "sign2": signs(), "shift2": shifts(k, k + 3)}
    else:
        m_lo, m_hi = int_range(MULTIPLIER_BITS)
        params = {"multiplier": rng.integers(m_lo // 4, m_hi // 4, size=channels).astype(np.int32),
                  "shift": shifts(k + 12, k + 15)}
    return Requant(mode=mode, bias=bias.astype(np.int32), params=params, out_bits=out_bits)


def random_conv(rng, name, op, in_ch, out_ch, *, kernel=3, stride=1, padding=1, mode="shift",
                x_bits=8, p_min=-4, p_max=3):
    from .numerics import acc_width
    k = in_ch * kernel * kernel
    widths = {"x_bits": x_bits, "p_min": p_min, "p_max": p_max} if Op(op) is Op.SHIFT \
        else {"x_bits": x_bits, "w_bits": x_bits}
    return Conv2d(name=name, op=Op(op), weights=random_weights(rng, op, (out_ch, in_ch, kernel, kernel),
                                                               w_bits=x_bits, p_min=p_min, p_max=p_max),
                  requant=random_requant(rng, mode, out_ch, acc_bits=acc_width(op, k, **widths),
                                         out_bits=x_bits),
                  w_bits=x_bits, p_min=p_min, p_max=p_max, kernel=(kernel, kernel), stride=stride,
                  padding=padding)


def random_linear(rng, name, op, in_features, out_features, *, mode="shift", x_bits=8, p_min=-4, p_max=3):
    from .numerics import acc_width
    widths = {"x_bits": x_bits, "p_min": p_min, "p_max": p_max} if Op(op) is Op.SHIFT \
        else {"x_bits": x_bits, "w_bits": x_bits}
    return Linear(name=name, op=Op(op), weights=random_weights(rng, op, (out_features, in_features),
                                                               w_bits=x_bits, p_min=p_min, p_max=p_max),
                  requant=random_requant(rng, mode, out_features,
                                         acc_bits=acc_width(op, in_features, **widths), out_bits=x_bits),
                  w_bits=x_bits, p_min=p_min, p_max=p_max)


def digits_net(op, *, seed=0, mode="shift", channels=(8, 16), classes=10, x_bits=8):
    """The reference topology for 8x8 digits: two 3x3 conv layers with ReLU and 2x2 max pooling,
    then a linear classifier. Parameters are random integers (not trained)."""
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    layers = [
        random_conv(rng, "conv1", op, 1, c1, mode=mode, x_bits=x_bits), ReLU("relu1"),
        MaxPool2d("pool1", kernel=2, stride=2),
        random_conv(rng, "conv2", op, c1, c2, mode=mode, x_bits=x_bits), ReLU("relu2"),
        MaxPool2d("pool2", kernel=2, stride=2),
        Flatten("flatten"),
        random_linear(rng, "fc", op, c2 * 2 * 2, classes, mode=mode, x_bits=x_bits),
    ]
    model = QModel(input_shape=(1, 8, 8), layers=layers, x_bits=x_bits)
    model.validate()
    return model
