"""The numeric contract's primitives against independent formulations (exhaustive and Fraction-exact)."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addershift.sw.numerics import (SHIFT_MAX, Op, RequantMode, acc_range, acc_width, int_range,
                                     requant_multiplier, requant_scale, requantize, round_shift,
                                     saturate, signed_width, term_range)


def _term(op, x, w, p_min):
    if op is Op.ADDER:
        return -abs(x - w)
    if op is Op.MUL:
        return x * w
    sign, p = w
    return sign * (x << (p - p_min))


def _all_terms(op, x_bits, w_bits=None, p_min=0, p_max=0):
    xs = range(int_range(x_bits)[0], int_range(x_bits)[1] + 1)
    if op is Op.SHIFT:
        ws = [(s, p) for s in (-1, 0, 1) for p in range(p_min, p_max + 1)]
    else:
        ws = range(int_range(w_bits)[0], int_range(w_bits)[1] + 1)
    return {_term(op, x, w, p_min) for x in xs for w in ws}


def _fits(value, bits):
    lo, hi = int_range(bits)
    return lo <= value <= hi


CASES = ([(Op.ADDER, dict(x_bits=b, w_bits=b)) for b in (2, 3, 4, 5)]
         + [(Op.MUL, dict(x_bits=b, w_bits=c)) for b in (2, 3, 4) for c in (2, 3, 5)]
         + [(Op.SHIFT, dict(x_bits=b, p_min=lo, p_max=hi)) for b in (2, 3, 4)
            for lo, hi in ((0, 0), (0, 3), (-2, 1), (-3, 4))])


@pytest.mark.parametrize("op,widths", CASES)
def test_term_range_is_exhaustive_extremes(op, widths):
    terms = _all_terms(op, **widths)
    assert term_range(op, **widths) == (min(terms), max(terms))


@pytest.mark.parametrize("op,widths", CASES)
@pytest.mark.parametrize("length", [1, 2, 3, 5, 300])
def test_acc_width_is_minimal_and_never_overflows(op, widths, length):
    """Every reachable sum fits acc_width bits; a worst-case sum does not fit one bit fewer."""
    bits = acc_width(op, length, **widths)
    terms = sorted(_all_terms(op, **widths))
    if length <= 3:   # every multiset of terms: the full set of reachable sums
        sums = {sum(c) for c in itertools.combinations_with_replacement(terms, length)}
    else:             # sums are monotone in each term: the extremes come from all-extreme terms
        sums = {length * terms[0], length * terms[-1]}
    assert all(_fits(s, bits) for s in sums)
    assert bits == 1 or not all(_fits(s, bits - 1) for s in sums)
    assert (min(sums), max(sums)) == acc_range(op, length, **widths)


def test_acc_width_examples():
    # 8-bit activations, 9 terms of |x - w| <= 255: -2295 needs 13 bits.
    assert acc_width("adder", 9, x_bits=8, w_bits=8) == 13
    # int8 x int8: the extreme product is (-128)^2 = 16384; 64 of them: 2^20 -> 22 bits.
    assert acc_width("mul", 64, x_bits=8, w_bits=8) == 22
    # shift: |x| <= 128, shifted by up to 7: 2^14 per term.
    assert acc_width("shift", 1, x_bits=8, p_min=0, p_max=7) == 16


def test_width_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"Reduction length must be a positive integer, not 0"):
        acc_width("adder", 0, x_bits=8, w_bits=8)
    with pytest.raises(ValueError, match=r"Integer width must be a positive integer, not 0"):
        int_range(0)
    with pytest.raises(ValueError, match=r"w_bits must be 8, not 4"):
        term_range("adder", x_bits=8, w_bits=4)
    with pytest.raises(ValueError, match=r"p_min <= p_max"):
        term_range("shift", x_bits=8, p_min=3, p_max=1)
    with pytest.raises(ValueError, match=r"'div' is not a valid Op"):
        term_range("div", x_bits=8, w_bits=8)


@given(st.integers(-(1 << 40), 1 << 40), st.integers(0, SHIFT_MAX))
def test_round_shift_is_nearest_ties_up(value, shift):
    exact = Fraction(value, 1 << shift)
    expected = (exact + Fraction(1, 2)).__floor__()
    assert int(round_shift(value, shift)) == expected


def test_round_shift_ties_and_negatives():
    # value / 4 for -10..10: ties (+-0.5, +-1.5, +-2.5) go toward +infinity.
    values = np.arange(-10, 11)
    assert round_shift(values, 2).tolist() == [-2, -2, -2, -2, -1, -1, -1, -1, 0, 0, 0,
                                               0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert round_shift([5, -5, -6], 1).tolist() == [3, -2, -3]
    assert round_shift(7, 0) == 7
    with pytest.raises(ValueError, match=r"Shift must lie in \[0, 40\]"):
        round_shift(1, -1)


def test_saturate():
    assert saturate([-1000, -128, 0, 127, 1000], 8).tolist() == [-128, -128, 0, 127, 127]
    assert saturate([-9, 9], 4).tolist() == [-8, 7]


def _requant_reference(acc, bias, mode, params, out_bits):
    """Fraction arithmetic straight from the definitions in docs/numerics.md."""
    out = []
    for c, (a, b) in enumerate(zip(acc, bias)):
        z = Fraction(int(a) + int(b))
        if mode == "shift":
            scaled = z / 2 ** int(params["shift"][c])
        elif mode == "pow2x2":
            scaled = z * (Fraction(int(params["sign1"][c]), 2 ** int(params["shift1"][c]))
                          + Fraction(int(params["sign2"][c]), 2 ** int(params["shift2"][c])))
        else:
            scaled = z * int(params["multiplier"][c]) / 2 ** int(params["shift"][c])
        lo, hi = int_range(out_bits)
        out.append(min(hi, max(lo, (scaled + Fraction(1, 2)).__floor__())))
    return out


@settings(max_examples=300)
@given(st.data())
def test_requantize_matches_fraction_reference(data):
    mode = data.draw(st.sampled_from([m.value for m in RequantMode]))
    channels = data.draw(st.integers(1, 6))
    ints = lambda lo, hi: np.array(data.draw(st.lists(st.integers(lo, hi), min_size=channels,
                                                      max_size=channels)))
    acc = ints(-(1 << 24), 1 << 24)
    bias = ints(-(1 << 31), (1 << 31) - 1)
    if mode == "shift":
        params = {"shift": ints(0, SHIFT_MAX)}
    elif mode == "pow2x2":
        params = {"sign1": ints(-1, 1), "shift1": ints(0, 30), "sign2": ints(-1, 1), "shift2": ints(0, 30)}
    else:
        params = {"multiplier": ints(-(1 << 15), (1 << 15) - 1), "shift": ints(0, SHIFT_MAX)}
    out_bits = data.draw(st.sampled_from([4, 8, 16]))
    got = requantize(acc[None, :], bias, mode, params, out_bits=out_bits)[0]
    assert got.tolist() == _requant_reference(acc, bias, mode, params, out_bits)


def test_requant_multiplier_forms():
    m, k = requant_multiplier("pow2x2", {"sign1": [1, -1, 0], "shift1": [3, 2, 5],
                                         "sign2": [1, 1, 1], "shift2": [5, 2, 1]})
    assert k.tolist() == [5, 2, 5]
    assert m.tolist() == [1 * 4 + 1, -1 + 1, 0 + 16]
    assert requant_scale("pow2x2", {"sign1": [1], "shift1": [3], "sign2": [-1], "shift2": [5]}).tolist() \
        == [1 / 8 - 1 / 32]


def test_signed_width():
    assert signed_width(0, 0) == 1
    assert signed_width(-1, 0) == 1
    assert signed_width(-128, 127) == 8
    assert signed_width(-129, 0) == 9
    assert signed_width(0, 128) == 9


def test_worked_examples_of_docs_numerics():
    from addershift.sw import golden
    x = np.array([[3, -2]])
    assert golden.adder_op(x, np.array([[1, 1]]))[0, 0] == -5
    assert golden.shift_op(x, np.array([[1, -1]]), np.array([[1, -1]]), -1)[0, 0] == 14
    pow2x2 = {"sign1": [1], "shift1": [4], "sign2": [-1], "shift2": [6]}
    assert requantize([[-300]], [1000], "pow2x2", pow2x2, out_bits=8)[0, 0] == 33
    assert requantize([[-300]], [1000], "mul", {"multiplier": [23000], "shift": [20]}, out_bits=8)[0, 0] == 15
    assert round_shift([10, 6, 2, -2, -6, -10, -104, 9], [2, 2, 2, 2, 2, 2, 5, 2]).tolist() \
        == [3, 2, 1, 0, -1, -2, -3, 2]
