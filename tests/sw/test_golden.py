"""The golden model against plain-loop int64 formulations and its stated properties."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from addershift.sw import golden
from addershift.sw.examples import digits_net
from addershift.sw.model import Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, QModel, ReLU
from addershift.sw.numerics import RequantMode, acc_range, requantize


def _loop_op(op, x, weights, p_min=0):
    """One output at a time, with Python ints: the definitions, literally."""
    n, k = x.shape
    w = weights["weight"] if op != "shift" else weights["sign"]
    out = np.zeros((n, w.shape[0]), dtype=np.int64)
    for i in range(n):
        for o in range(w.shape[0]):
            total = 0
            for j in range(k):
                xv = int(x[i, j])
                if op == "adder":
                    total -= abs(xv - int(weights["weight"][o, j]))
                elif op == "mul":
                    total += xv * int(weights["weight"][o, j])
                else:
                    total += int(weights["sign"][o, j]) * (xv << (int(weights["exponent"][o, j]) - p_min))
            out[i, o] = total
    return out


def _weights(rng, op, o, k, p_min=-3, p_max=4):
    if op == "shift":
        return {"sign": rng.integers(-1, 2, (o, k)), "exponent": rng.integers(p_min, p_max + 1, (o, k))}
    return {"weight": rng.integers(-128, 128, (o, k))}


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
@pytest.mark.parametrize("seed", range(4))
def test_array_op_matches_loops(op, seed):
    rng = np.random.default_rng(seed)
    n, k, o = rng.integers(1, 9), rng.integers(1, 80), rng.integers(1, 9)
    x = rng.integers(-128, 128, (n, k))
    weights = _weights(rng, op, o, k)
    np.testing.assert_array_equal(golden.array_op(op, x, weights, p_min=-3), _loop_op(op, x, weights, -3))


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
def test_array_op_corners(op):
    """All-minimum and all-maximum operands at the longest reduction tested here."""
    k = 300
    for xv in (-128, 127):
        x = np.full((1, k), xv)
        if op == "shift":
            weights = {"sign": np.array([[1] * k, [-1] * k, [0] * k]),
                       "exponent": np.array([[4] * k, [4] * k, [-3] * k])}
        else:
            weights = {"weight": np.array([[-128] * k, [127] * k, [0] * k])}
        got = golden.array_op(op, x, weights, p_min=-3)
        np.testing.assert_array_equal(got, _loop_op(op, x, weights, -3))
        widths = {"x_bits": 8, "p_min": -3, "p_max": 4} if op == "shift" else {"x_bits": 8, "w_bits": 8}
        lo, hi = acc_range(op, k, **widths)
        assert lo <= got.min() and got.max() <= hi


@settings(max_examples=200)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 40)), elements=st.integers(-128, 127)),
       st.data())
def test_adder_outputs_are_never_positive(x, data):
    w = data.draw(hnp.arrays(np.int64, (data.draw(st.integers(1, 5)), x.shape[1]),
                             elements=st.integers(-128, 127)))
    y = golden.adder_op(x, w)
    assert (y <= 0).all()
    assert ((y == 0) == (x[:, None, :] == w[None, :, :]).all(axis=-1)).all()


@settings(max_examples=200)
@given(st.integers(-128, 127), st.integers(-1, 1), st.integers(-8, 8), st.integers(-8, 0))
def test_shift_is_sign_times_power_of_two_at_scale(x, sign, p, p_min):
    """shift_op(x) * 2**p_min equals sign * 2**p * x exactly (p may be negative)."""
    from fractions import Fraction
    p = max(p, p_min)
    y = golden.shift_op(np.array([[x]]), np.array([[sign]]), np.array([[p]]), p_min)[0, 0]
    assert Fraction(int(y)) * Fraction(2) ** p_min == sign * Fraction(2) ** p * x


def _direct_conv(x, op, weights, kernel, stride, padding, p_min=0):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    o = next(iter(weights.values())).shape[0]
    kh, kw = kernel
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            flat = {name: a.reshape(o, -1) for name, a in weights.items()}
            out[:, :, i, j] = _loop_op(op, window.reshape(n, -1), flat, p_min)
    return out


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), 1, 1), ((3, 3), 2, 0), ((2, 3), 1, 2),
                                                   ((1, 1), 1, 0), ((5, 5), 3, 2)])
def test_conv_as_im2col_equals_direct(op, kernel, stride, padding):
    rng = np.random.default_rng(zlib.crc32(repr((op, kernel, stride, padding)).encode()))
    x = rng.integers(-128, 128, (2, 3, 7, 6))
    weights = {name: a.reshape(4, 3, *kernel) for name, a in _weights(rng, op, 4, 3 * kernel[0] * kernel[1]).items()}
    got = golden.conv2d(x, op, weights, kernel=kernel, stride=stride, padding=padding, p_min=-3)
    np.testing.assert_array_equal(got, _direct_conv(x, op, weights, kernel, stride, padding, -3))


def test_pooling_and_flatten_against_loops():
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (2, 3, 7, 8))
    mp = golden.max_pool2d(x, kernel=2, stride=2)
    assert mp.shape == (2, 3, 3, 4)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(mp[:, :, i, j], x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3)))
    gap = golden.global_avg_pool(x[:, :, :4, :4], shift=4, out_bits=8)
    expect = np.floor(x[:, :, :4, :4].sum(axis=(2, 3)) / 16 + 0.5).astype(np.int64)
    np.testing.assert_array_equal(gap, expect)
    np.testing.assert_array_equal(golden.flatten(x)[1], x[1].reshape(-1))
    # Saturation of a sum that does not fit: 16 x 127 >> 2 = 508 -> 127.
    assert golden.global_avg_pool(np.full((1, 1, 4, 4), 127), shift=2, out_bits=8)[0, 0] == 127


@pytest.mark.parametrize("op", ["adder", "shift", "mul"])
@pytest.mark.parametrize("mode", [m.value for m in RequantMode])
def test_trace_composes_layers(op, mode):
    model = digits_net(op, mode=mode, seed=3)
    x = np.random.default_rng(0).integers(0, 128, (5, 1, 8, 8))
    outputs = golden.trace(model, x)
    assert len(outputs) == len(model.layers)
    np.testing.assert_array_equal(outputs[-1], golden.predict(model, x))
    conv1 = model.layers[0]
    acc = golden.conv2d(x, op, conv1.weights, kernel=conv1.kernel, stride=1, padding=1, p_min=conv1.p_min)
    rq = conv1.requant
    np.testing.assert_array_equal(outputs[0], requantize(acc, rq.bias, rq.mode, rq.params, out_bits=8))
    np.testing.assert_array_equal(outputs[1], np.maximum(outputs[0], 0))
    for y, shape in zip(outputs, model.shapes()):
        assert y.shape == (5, *shape)
        assert y.min() >= -128 and y.max() <= 127


def test_predict_rejects_bad_inputs():
    model = digits_net("adder")
    with pytest.raises(ValueError, match=r"Inputs must have shape \(N, 1, 8, 8\), not \(2, 8, 8\)"):
        golden.predict(model, np.zeros((2, 8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"Inputs must be integers, not float64"):
        golden.predict(model, np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"Inputs must lie in \[-128, 127\]"):
        golden.predict(model, np.full((1, 1, 8, 8), 200))


def test_every_layer_kind_in_one_model():
    rng = np.random.default_rng(1)
    from addershift.sw.examples import random_conv, random_linear
    layers = [random_conv(rng, "c", "shift", 2, 4, stride=2, padding=1, mode="pow2x2"), ReLU("r"),
              GlobalAvgPool("g", shift=4), random_linear(rng, "l", "shift", 4, 3, mode="mul")]
    model = QModel(input_shape=(2, 8, 8), layers=layers)
    assert model.shapes() == [(4, 4, 4), (4, 4, 4), (4,), (3,)]
    y = golden.predict(model, rng.integers(0, 128, (3, 2, 8, 8)))
    assert y.shape == (3, 3)
    assert isinstance(layers[0], Conv2d) and isinstance(layers[-1], Linear)
    assert MaxPool2d("m").out_shape((4, 5, 5)) == (4, 2, 2) and Flatten("f").out_shape((4, 2, 2)) == (16,)


def test_adder_wide_operands_take_the_int64_path():
    x = np.array([[-(1 << 15), (1 << 15) - 1, 5]])
    w = np.array([[(1 << 15) - 1, -(1 << 15), -7], [0, 0, 0]])
    np.testing.assert_array_equal(golden.adder_op(x, w), _loop_op("adder", x, {"weight": w}))
