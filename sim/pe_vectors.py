"""Test vectors for the processing elements of ``hw/pe.py``: reductions (activations and
weights), the per-cycle inputs that carry them, and the check of a PE's per-cycle outputs against
``golden.array_op``. Shared by the Amaranth tests (``tests/hw/test_pe.py``) and the cocotb bench
of a lone PE's Verilog (``sim/pe/``).

A *reduction* is ``(x, weights)``: ``k`` activations and ``k`` weights (a dict as
``golden.array_op`` takes one output row: ``weight``, or ``sign`` and ``exponent``). A *cycle* is
``(valid, x, w, last, hold)``, ``w`` the integer on the PE's natural-form ``w`` port.
"""

from __future__ import annotations

import numpy as np

from ..sw.golden import array_op
from ..sw.numerics import Op, int_range

__all__ = ["random_weights", "weight_bits", "golden", "extreme_reductions", "corner_reductions",
           "random_reductions", "schedule", "check_samples"]


def random_weights(pe, k, rng, *, zero_fraction=0.2):
    """``k`` weights for ``pe``: a dict as ``golden.array_op`` takes it (one output row)."""
    if pe.kind is Op.SHIFT:
        sign = rng.choice([-1, 0, 1], size=k, p=[(1 - zero_fraction) / 2, zero_fraction,
                                                  (1 - zero_fraction) / 2])
        exponent = rng.integers(pe.p_min, pe.p_max + 1, size=k)
        return {"sign": sign, "exponent": exponent}
    lo, hi = int_range(pe.w_bits)
    return {"weight": rng.integers(lo, hi + 1, size=k)}



def weight_bits(pe, weights, j):
    """The integer to drive on a PE's natural-form ``w`` port for step ``j``."""
    if pe.kind is Op.SHIFT:
        return pe.weight_shape.encode(int(weights["sign"][j]), int(weights["exponent"][j]))
    return int(weights["weight"][j])



def golden(pe, x, weights):
    rows = {name: np.asarray(a)[None, :] for name, a in weights.items()}
    return int(array_op(pe.kind, np.asarray(x)[None, :], rows, p_min=pe.p_min or 0)[0, 0])



def extreme_reductions(pe):
    """Reductions of ``max_length`` steps that reach both ends of ``acc_range`` (overflow shows)."""
    lo_x, hi_x = int_range(pe.x_bits)
    n = pe.max_length
    out = []
    if pe.kind is Op.ADDER:
        lo_w, hi_w = int_range(pe.w_bits)
        out.append(([hi_x] * n, {"weight": [lo_w] * n}))      # -|127 - -128| every step: minimum
        out.append(([lo_x] * n, {"weight": [hi_w] * n}))
        out.append(([lo_x] * n, {"weight": [lo_w] * n}))      # zero
    elif pe.kind is Op.SHIFT:
        out.append(([lo_x] * n, {"sign": [-1] * n, "exponent": [pe.p_max] * n}))   # maximum
        out.append(([lo_x] * n, {"sign": [1] * n, "exponent": [pe.p_max] * n}))    # minimum
        out.append(([hi_x] * n, {"sign": [0] * n, "exponent": [pe.p_max] * n}))    # zero weights
    else:
        lo_w, hi_w = int_range(pe.w_bits)
        out.append(([lo_x] * n, {"weight": [lo_w] * n}))      # maximum
        out.append(([lo_x] * n, {"weight": [hi_w] * n}))      # minimum
        out.append(([hi_x] * n, {"weight": [hi_w] * n}))
    return out



def corner_reductions(pe, rng):
    """Short reductions over every corner operand pair and (shift) every exponent code and sign."""
    lo_x, hi_x = int_range(pe.x_bits)
    xs = [lo_x, lo_x + 1, -1, 0, 1, hi_x]
    out = []
    if pe.kind is Op.SHIFT:
        for p in range(pe.p_min, pe.p_max + 1):
            for s in (-1, 0, 1):
                out.append((xs, {"sign": [s] * len(xs), "exponent": [p] * len(xs)}))
    else:
        lo_w, hi_w = int_range(pe.w_bits)
        for w in (lo_w, lo_w + 1, -1, 0, 1, hi_w):
            out.append((xs, {"weight": [w] * len(xs)}))
    return out



def random_reductions(pe, count, rng):
    out = []
    lo_x, hi_x = int_range(pe.x_bits)
    for _ in range(count):
        k = int(rng.integers(1, pe.max_length + 1))
        out.append((rng.integers(lo_x, hi_x + 1, size=k), random_weights(pe, k, rng)))
    return out



def schedule(pe, reductions, rng, *, idle=0.0, hold=0.0):
    """Per-cycle inputs ``(valid, x, w, last, hold)`` for ``reductions``, with random idle cycles
    (probability ``idle``) between steps and ``hold`` cycles (garbage inputs) anywhere; the step
    after a ``last`` is always idle, as the PE requires."""
    lo_x, hi_x = int_range(pe.x_bits)
    from amaranth.hdl import Shape
    w_width = Shape.cast(pe.w.shape()).width

    def junk(valid=0, h=0):
        return (valid, int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(0, 1 << w_width)),
                int(rng.integers(0, 2)), h)

    cycles = []
    for x, weights in reductions:
        for j in range(len(x)):
            while rng.random() < hold:
                cycles.append(junk(valid=int(rng.integers(0, 2)), h=1))
            while rng.random() < idle:
                cycles.append(junk())
            cycles.append((1, int(x[j]), weight_bits(pe, weights, j), int(j == len(x) - 1), 0))
        cycles.append((0, 0, 0, 1, 0))   # the idle cycle after `last` (last set: it must not count)
    cycles += [(0, 0, 0, 0, 0)] * (pe.latency + 2)
    return cycles



def check_samples(pe, reductions, cycles, samples):
    """Compare the per-cycle ``(done, acc)`` samples a PE gave for ``cycles`` (:func:`schedule` of
    ``reductions``) with the golden model, timing included: ``done`` exactly :attr:`latency`
    effective cycles after each ``last`` step, with that reduction's result in ``acc``. Returns
    the number of reductions compared."""
    # State advances only on cycles without hold: compare in "effective" cycles.
    effective, last_steps = [], []
    n = 0
    for valid, _, _, last, hold in cycles:
        effective.append(n)
        if not hold:
            if valid and last:
                last_steps.append(n)
            n += 1
    expect_at = {e + pe.latency: i for i, e in enumerate(last_steps)}
    expected = [golden(pe, x, w) for x, w in reductions]
    got = {}
    for t, (done, acc) in enumerate(samples):
        e = effective[t]
        assert bool(done) == (e in expect_at), f"done={done} at cycle {t}"
        if done:
            i = expect_at[e]
            assert acc == expected[i], f"reduction {i}: acc {acc}, golden {expected[i]}"
            got[i] = acc
    assert len(got) == len(reductions)
    return len(got)
