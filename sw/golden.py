"""The golden model: the numeric contract executed in vectorised NumPy, integer and exact.

Functions are named after the hardware blocks they define. Every tensor is an int64 array in NCHW
order (as PyTorch's), every result is exact: nothing here rounds except :func:`requantize` and
:func:`global_avg_pool`, and they round as ``docs/numerics.md`` says.
"""

from __future__ import annotations

import numpy as np

from .numerics import Op, round_shift, saturate

__all__ = [
    "adder_op", "shift_op", "mul_op", "array_op", "shift_weight_value",
    "im2col", "conv2d", "linear", "relu", "max_pool2d", "global_avg_pool", "flatten",
    "run_layer", "trace", "predict", "check_inputs",
]

# Keeps the adder's (rows, k, cols) temporary near 32 MB whatever the batch.
_ADDER_CHUNK_ELEMENTS = 1 << 22


def _int64(a):
    return np.asarray(a, dtype=np.int64)


def adder_op(x, w):
    """AdderNet: ``y[..., o] = -sum_k |x[..., k] - w[o, k]|`` for ``x`` (..., K) and ``w`` (O, K)."""
    x, w = _int64(x), _int64(w)
    lead, k = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, k)
    out = np.empty((rows.shape[0], w.shape[0]), dtype=np.int64)
    # |x - w| of two 15-bit operands fits int16: a narrower temporary is several times faster.
    narrow = rows.size and w.size and max(np.abs(rows).max(), np.abs(w).max()) < (1 << 14)
    dtype = np.int16 if narrow else np.int64
    rows, w = rows.astype(dtype), w.astype(dtype)
    step = max(1, _ADDER_CHUNK_ELEMENTS // max(1, k * w.shape[0]))
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step, None, :]
        out[start:start + step] = -np.abs(chunk - w[None, :, :]).sum(axis=-1, dtype=np.int64)
    return out.reshape(*lead, w.shape[0])


def shift_weight_value(sign, exponent, p_min):
    """The integer a shift weight stands for at scale ``2**p_min``: ``sign * 2**(p - p_min)``."""
    sign, exponent = _int64(sign), _int64(exponent)
    return sign * np.left_shift(np.int64(1), exponent - p_min)


def shift_op(x, sign, exponent, p_min):
    """DeepShift: ``y[..., o] = sum_k sign[o, k] * (x[..., k] << (p[o, k] - p_min))``.

    Exact at scale ``2**p_min``: a left shift of a two's complement integer is a multiplication by a
    power of two, so the sum equals ``x @ (sign * 2**(p - p_min)).T`` with no rounding at all.
    """
    return _int64(x) @ shift_weight_value(sign, exponent, p_min).T


def mul_op(x, w):
    """The baseline: ``y[..., o] = sum_k x[..., k] * w[o, k]``."""
    return _int64(x) @ _int64(w).T


def array_op(op, x, weights, *, p_min=0):
    """Dispatch on :class:`Op`. ``weights`` is the layer's weight dict (see ``model.Weights``)."""
    op = Op(op)
    if op is Op.ADDER:
        return adder_op(x, weights["weight"])
    if op is Op.SHIFT:
        return shift_op(x, weights["sign"], weights["exponent"], p_min)
    return mul_op(x, weights["weight"])


def im2col(x, kernel, stride, padding):
    """Patches of an NCHW tensor: ``(N, OH * OW, C * KH * KW)``, features in PyTorch's (C, KH, KW)
    order, zero padding. Returns the patches and ``(OH, OW)``."""
    x = _int64(x)
    kh, kw = kernel
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, w = x.shape
    if h < kh or w < kw:
        raise ValueError(f"Kernel {kh}x{kw} is larger than the padded input {h}x{w}")
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]           # (N, C, OH, OW, KH, KW)
    oh, ow = windows.shape[2:4]
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kh * kw)
    return patches, (oh, ow)


def conv2d(x, op, weights, *, kernel, stride=1, padding=0, p_min=0):
    """Accumulators of a 2-D convolution (before requantisation): ``(N, O, OH, OW)``."""
    patches, (oh, ow) = im2col(x, kernel, stride, padding)
    flat = {name: np.reshape(a, (a.shape[0], -1)) for name, a in weights.items()}
    acc = array_op(op, patches, flat, p_min=p_min)          # (N, OH * OW, O)
    return acc.transpose(0, 2, 1).reshape(x.shape[0], -1, oh, ow)


def linear(x, op, weights, *, p_min=0):
    """Accumulators of a fully connected layer (before requantisation): ``(N, O)``."""
    return array_op(op, x, weights, p_min=p_min)


def relu(x):
    return np.maximum(_int64(x), 0)


def max_pool2d(x, *, kernel, stride):
    """Max over ``kernel x kernel`` windows, no padding (partial windows at the edge are dropped)."""
    windows = np.lib.stride_tricks.sliding_window_view(_int64(x), (kernel, kernel), axis=(2, 3))
    return windows[:, :, ::stride, ::stride].max(axis=(-2, -1))


def global_avg_pool(x, *, shift, out_bits):
    """Sum over H and W, then :func:`round_shift` by ``shift`` and saturate: ``(N, C)``.

    An exact average when ``H * W == 2**shift``; otherwise a scale of ``H * W / 2**shift`` that the
    quantiser folds into the next layer.
    """
    return saturate(round_shift(_int64(x).sum(axis=(2, 3)), shift), out_bits)


def flatten(x):
    """``(N, C, H, W) -> (N, C * H * W)`` in PyTorch's order."""
    x = _int64(x)
    return x.reshape(x.shape[0], -1)


def check_inputs(x, *, input_shape, x_bits):
    """``x`` as int64 if it is a batch the model takes: integers, shape ``(N, *input_shape)``,
    values within ``x_bits``-bit activations; else a ValueError that says which. The golden model
    and the host driver both check with it (a board would silently wrap a value too wide)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ValueError(f"Inputs must be integers, not {x.dtype}")
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"Inputs must have shape (N, {', '.join(map(str, input_shape))}), "
                         f"not {x.shape}")
    lo, hi = -(1 << (x_bits - 1)), (1 << (x_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"Inputs must lie in [{lo}, {hi}] ({x_bits}-bit activations), "
                         f"found [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def run_layer(layer, x, x_bits):
    """One layer of a ``model.QModel`` on a batch: its integer output."""
    from .model import Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, ReLU
    from .numerics import acc_range, requantize
    if isinstance(layer, (Conv2d, Linear)):
        if isinstance(layer, Conv2d):
            acc = conv2d(x, layer.op, layer.weights, kernel=layer.kernel, stride=layer.stride,
                         padding=layer.padding, p_min=layer.p_min)
        else:
            acc = linear(x, layer.op, layer.weights, p_min=layer.p_min)
        lo, hi = acc_range(layer.op, layer.reduction_length(x.shape[1:]), **layer.widths(x_bits))
        if acc.size and (acc.min() < lo or acc.max() > hi):   # would mean acc_width is wrong
            raise ArithmeticError(f"layer {layer.name!r}: accumulator outside its derived range "
                                  f"[{lo}, {hi}]")
        rq = layer.requant
        return requantize(acc, rq.bias, rq.mode, rq.params, out_bits=rq.out_bits)
    if isinstance(layer, ReLU):
        return relu(x)
    if isinstance(layer, MaxPool2d):
        return max_pool2d(x, kernel=layer.kernel, stride=layer.stride)
    if isinstance(layer, GlobalAvgPool):
        return global_avg_pool(x, shift=layer.shift, out_bits=x_bits)
    if isinstance(layer, Flatten):
        return flatten(x)
    raise TypeError(f"Unknown layer {layer!r}")


def trace(model, x):
    """Every layer's integer output for inputs ``x`` (N, C, H, W): a list, one array per layer."""
    x = check_inputs(x, input_shape=model.input_shape, x_bits=model.x_bits)
    outputs = []
    for layer in model.layers:
        x = run_layer(layer, x, model.x_bits)
        outputs.append(x)
    return outputs


def predict(model, x):
    """The model's integer output for inputs ``x`` (N, C, H, W)."""
    return trace(model, x)[-1]
