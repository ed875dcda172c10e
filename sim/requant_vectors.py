"""Test vectors for :class:`~addershift.hw.requant.Requantiser`: cases, the exact reference, and
the stream transfers that carry them (Amaranth payload dicts, or packed integers for Verilog).

A *case* is one value: ``(acc, bias, params, relu)`` with ``params`` the mode's fields
(``numerics.requant_multiplier``). A transfer carries ``lanes`` cases; its ReLU bit is its first
case's. Shared by the Amaranth tests (``tests/hw/test_requant.py``) and the cocotb bench
(``sim/requant/``).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..sw.numerics import MULTIPLIER_BITS, int_range, signed_width

__all__ = ["SIGNS", "multiplier", "exact", "random_cases", "corner_cases", "tie_cases",
           "transfers", "expected", "pack", "unpack"]

SIGNS = (-1, 0, 1)


def multiplier(mode, p):
    """``(M, k)`` of ``numerics.requant_multiplier`` for one channel, in Python integers."""
    if mode == "shift":
        return 1, p["shift"]
    if mode == "pow2x2":
        k = max(p["shift1"], p["shift2"])
        return p["sign1"] * 2 ** (k - p["shift1"]) + p["sign2"] * 2 ** (k - p["shift2"]), k
    return p["multiplier"], p["shift"]


def exact(mode, acc, bias, p, out_bits, relu=0):
    """``saturate(round_shift((acc + bias) * M, k))`` (then ReLU) with no width limit."""
    m, k = multiplier(mode, p)
    y = (acc + bias) * m
    r = (y + (2 ** (k - 1) if k else 0)) >> k
    lo, hi = int_range(out_bits)
    return min(max(r, 0 if relu else lo), hi)


def random_cases(rng, dut, n):
    """Accumulators and biases of every magnitude; shifts mostly near the one that maps the
    product onto the output range (so outputs are not all saturated), sometimes anywhere."""
    w, mode, smax = dut.widths, dut.mode.value, dut.shift_max

    def value(lo, hi):
        bits = int(rng.integers(0, signed_width(lo, hi) + 1))
        return int(np.clip(int(rng.integers(-2 ** bits, 2 ** bits + 1)), lo, hi))

    def near(magnitude):
        k = max(0, abs(magnitude).bit_length() - dut.out_bits + int(rng.integers(-2, 4)))
        return min(k, smax) if rng.random() < 0.8 else int(rng.integers(0, smax + 1))

    cases = []
    for _ in range(n):
        acc, bias = value(*w.acc), value(*w.bias)
        z = acc + bias
        if mode == "shift":
            p = {"shift": near(z)}
        elif mode == "pow2x2":
            k1 = near(z)
            k2 = min(smax, k1 + int(rng.integers(0, 4))) if rng.random() < 0.5 else near(z)
            p = {"sign1": int(rng.choice(SIGNS)), "shift1": k1,
                 "sign2": int(rng.choice(SIGNS)), "shift2": k2}
        else:
            m = value(*int_range(MULTIPLIER_BITS))
            p = {"multiplier": m, "shift": near(z * m)}
        cases.append((acc, bias, p, int(rng.integers(0, 2))))
    return cases


def corner_cases(dut):
    """Extreme accumulators and biases with every shift the build allows (every shift pair for
    ``pow2x2``, with all nine sign pairs), extreme multipliers, with and without ReLU."""
    w, mode = dut.widths, dut.mode.value
    (a_lo, a_hi), (b_lo, b_hi) = w.acc, w.bias
    accs = [a for a in (a_lo, a_lo + 1, -1, 0, 1, a_hi) if a_lo <= a <= a_hi]
    biases = [b for b in (b_lo, -1, 0, 1, b_hi) if b_lo <= b <= b_hi]
    extremes = list(itertools.product(accs, biases))
    shifts = range(dut.shift_max + 1)
    m_lo, m_hi = int_range(MULTIPLIER_BITS)
    cases = []
    if mode == "shift":
        for n, (k, (acc, bias)) in enumerate(itertools.product(shifts, extremes)):
            cases.append((acc, bias, {"shift": k}, n % 2))
    elif mode == "pow2x2":
        pairs = list(itertools.product(shifts, shifts))
        signs = list(itertools.product(SIGNS, SIGNS))
        for n, (k1, k2) in enumerate(pairs):
            (s1, s2), (acc, bias) = signs[n % 9], extremes[n % len(extremes)]
            cases.append((acc, bias, {"sign1": s1, "shift1": k1, "sign2": s2, "shift2": k2}, n % 2))
        top = dut.shift_max
        for n, ((s1, s2), (acc, bias), (k1, k2)) in enumerate(itertools.product(
                signs, extremes, [(0, top), (top // 2, top // 2), (top, 0)])):
            cases.append((acc, bias, {"sign1": s1, "shift1": k1, "sign2": s2, "shift2": k2}, n % 2))
    else:
        multipliers = list(itertools.product((m_lo, m_lo + 1, -1, 0, 1, m_hi), shifts))
        for n, (m, k) in enumerate(multipliers):
            for acc, bias in extremes[n % 5::5]:
                cases.append((acc, bias, {"multiplier": m, "shift": k}, n % 2))
    return cases


def tie_cases(dut):
    """``z * M`` exactly halfway between two integers after the shift, positive and negative,
    for every shift from 1: ``z * M = (2j + 1) * 2**(k - 1)``. ``M`` is 1 (``pow2x2``: one term)
    or -1, 3 and -2**15 (``mul``: the last reaches every shift)."""
    mode, (z_lo, z_hi) = dut.mode.value, dut.widths.z
    (a_lo, a_hi), (b_lo, b_hi) = dut.widths.acc, dut.widths.bias
    cases = []
    for k in range(1, dut.shift_max + 1):
        for j in (-3, -2, -1, 0, 1, 2):
            for m in ((1,) if mode != "mul" else (1, -1, 3, -2 ** 15)):
                y = (2 * j + 1) * 2 ** (k - 1)
                if y % m or not z_lo <= y // m <= z_hi:
                    continue
                z = y // m
                acc = min(max(z, a_lo), a_hi)
                bias = z - acc
                if not b_lo <= bias <= b_hi:
                    continue
                p = {"shift": {"shift": k},
                     "pow2x2": {"sign1": 1, "shift1": k, "sign2": 0, "shift2": j % (k + 1)},
                     "mul": {"multiplier": m, "shift": k}}[mode]
                cases.append((acc, bias, p, 0))
    return cases


def _groups(cases, lanes):
    """The cases in transfers of ``lanes`` (the last one padded with its last case; none for no
    cases: a build without shifts has no ties)."""
    cases = list(cases)
    cases += cases[-1:] * (-len(cases) % lanes)
    return [cases[t:t + lanes] for t in range(0, len(cases), lanes)]


def transfers(cases, lanes):
    """Input payloads (dicts for ``ctx.set`` or :func:`pack`) carrying ``cases``."""
    return [{"acc": [c[0] for c in group], "relu": group[0][3],
             "param": [{"bias": c[1], **c[2]} for c in group]} for group in _groups(cases, lanes)]


def expected(dut, cases):
    """The output payloads (lists of ints) :func:`transfers` of ``cases`` must give."""
    mode = dut.mode.value
    return [[exact(mode, acc, bias, p, dut.out_bits, group[0][3]) for acc, bias, p, _ in group]
            for group in _groups(cases, dut.lanes)]


def pack(dut, payload):
    """An input payload dict as the integer on the Verilog port ``i__payload``."""
    return dut.i.payload.shape().const(payload).as_value().value


def unpack(dut, word):
    """The integer on ``o__payload`` as a list of ints, one per lane."""
    from amaranth.lib import data
    return [int(v) for v in data.Const(dut.o.payload.shape(), word)]
