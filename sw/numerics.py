"""The numeric contract's primitives: integer ranges, accumulator widths, rounding and requantisation.

Everything here is exact integer arithmetic. The hardware generator and the golden model both call
:func:`acc_width`, so the accumulators the hardware builds are the ones this module proves cannot
overflow. ``docs/numerics.md`` is the prose form of this module.
"""

from __future__ import annotations

import enum
import numpy as np

__all__ = [
    "Op", "RequantMode", "int_range", "signed_width", "term_range", "acc_range", "acc_width",
    "round_shift", "saturate", "requant_multiplier", "requantize", "requant_scale",
    "SHIFT_MAX", "MULTIPLIER_BITS", "BIAS_BITS",
]

#: Largest right shift a requantiser applies (the hardware's shift field is 6 bits).
SHIFT_MAX = 40
#: Width of the integer multiplier in the ``mul`` requantisation mode (signed).
MULTIPLIER_BITS = 16
#: Width of a per-channel bias (signed); it is added in the accumulator domain.
BIAS_BITS = 32


class Op(str, enum.Enum):
    """What one processing element computes for an operand pair ``(x, w)``."""
    ADDER = "adder"   #: ``-|x - w|`` (AdderNet, L1 distance)
    SHIFT = "shift"   #: ``sign * (x << (p - p_min))`` (DeepShift)
    MUL = "mul"       #: ``x * w`` (the int8 baseline)


class RequantMode(str, enum.Enum):
    """How an accumulator is scaled back to the activation grid (see :func:`requant_multiplier`)."""
    SHIFT = "shift"      #: ``2**-k``: one power of two, multiplier-free
    POW2X2 = "pow2x2"    #: ``s1 * 2**-k1 + s2 * 2**-k2``: two signed powers of two, multiplier-free
    MUL = "mul"          #: ``m * 2**-k`` with a signed ``MULTIPLIER_BITS``-bit integer ``m``


def int_range(bits, *, signed=True):
    """The inclusive range ``(lo, hi)`` of a two's complement (or unsigned) ``bits``-bit integer."""
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"Integer width must be a positive integer, not {bits!r}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def signed_width(lo, hi):
    """The fewest bits of a two's complement integer that hold every value in ``[lo, hi]``."""
    if lo > hi:
        raise ValueError(f"Empty range [{lo}, {hi}]")
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def term_range(op, *, x_bits, w_bits=None, p_min=None, p_max=None):
    """The inclusive range of one PE term for signed ``x_bits``-bit activations.

    ``w_bits`` is the signed weight width of ``adder`` and ``mul`` (an adder's weights share the
    activations' format, so ``w_bits`` must equal ``x_bits``). ``shift`` weights are
    ``(sign, p)`` with ``sign`` in {-1, 0, +1} and ``p`` in ``[p_min, p_max]``.
    """
    op = Op(op)
    x_lo, x_hi = int_range(x_bits)
    if op is Op.SHIFT:
        if not (isinstance(p_min, int) and isinstance(p_max, int) and p_min <= p_max):
            raise ValueError(f"Shift exponents need integers p_min <= p_max, not {p_min!r}, {p_max!r}")
        magnitude = max(x_hi, -x_lo) << (p_max - p_min)
        return -magnitude, magnitude
    if w_bits is None:
        raise ValueError(f"Operation {op.value!r} needs w_bits")
    w_lo, w_hi = int_range(w_bits)
    if op is Op.ADDER:
        if w_bits != x_bits:
            raise ValueError(f"Adder weights share the activations' format: w_bits must be {x_bits}, "
                             f"not {w_bits}")
        return -max(x_hi - w_lo, w_hi - x_lo), 0
    corners = [x_lo * w_lo, x_lo * w_hi, x_hi * w_lo, x_hi * w_hi]
    return min(corners), max(corners)


def acc_range(op, length, **widths):
    """The inclusive range of a sum of ``length`` PE terms (see :func:`term_range`)."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"Reduction length must be a positive integer, not {length!r}")
    lo, hi = term_range(op, **widths)
    return length * lo, length * hi


def acc_width(op, length, **widths):
    """The accumulator width (signed bits) for ``length`` terms of ``op``: the least that never
    overflows for any operands. The hardware sizes its accumulators with this function."""
    return signed_width(*acc_range(op, length, **widths))


def round_shift(value, shift):
    """``value * 2**-shift`` rounded to the nearest integer, ties toward +infinity.

    This is ``(value + 2**(shift-1)) >> shift`` with an arithmetic shift, the cheapest rounding in
    hardware: 2.5 -> 3, -2.5 -> -2, -2.6 -> -3. ``shift == 0`` returns ``value`` unchanged.
    Works elementwise on int64 arrays (``shift`` broadcasts).
    """
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 0) or np.any(shift > SHIFT_MAX):
        raise ValueError(f"Shift must lie in [0, {SHIFT_MAX}], not {shift!r}")
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (value + half) >> shift


def saturate(value, bits):
    """Clamp to the signed ``bits``-bit range."""
    lo, hi = int_range(bits)
    return np.clip(np.asarray(value, dtype=np.int64), lo, hi)


def requant_multiplier(mode, params):
    """Every requantisation mode is ``round_shift(z * M, k)``; return ``(M, k)`` per channel.

    - ``shift``: ``M = 1``, ``k = params["shift"]``.
    - ``pow2x2``: ``k = max(k1, k2)``, ``M = s1 * 2**(k - k1) + s2 * 2**(k - k2)``; the hardware
      forms ``z * M`` with two shifts and one add, so no multiplier is needed.
    - ``mul``: ``M = params["multiplier"]``, ``k = params["shift"]``.
    """
    mode = RequantMode(mode)
    if mode is RequantMode.SHIFT:
        k = np.asarray(params["shift"], dtype=np.int64)
        return np.ones_like(k), k
    if mode is RequantMode.POW2X2:
        s1, k1 = (np.asarray(params[n], dtype=np.int64) for n in ("sign1", "shift1"))
        s2, k2 = (np.asarray(params[n], dtype=np.int64) for n in ("sign2", "shift2"))
        k = np.maximum(k1, k2)
        return s1 * (np.int64(1) << (k - k1)) + s2 * (np.int64(1) << (k - k2)), k
    return (np.asarray(params["multiplier"], dtype=np.int64),
            np.asarray(params["shift"], dtype=np.int64))


def requantize(acc, bias, mode, params, *, out_bits, channel_axis=1):
    """Requantise accumulators per output channel: ``saturate(round_shift((acc + bias) * M, k))``.

    The bias is added in the accumulator domain, before any scaling (adder accumulators carry a
    large offset that only the bias cancels). ``acc`` has its channels on ``channel_axis``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    multiplier, shift = requant_multiplier(mode, params)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    z = acc + np.asarray(bias, dtype=np.int64).reshape(shape)
    return saturate(round_shift(z * multiplier.reshape(shape), shift.reshape(shape)), out_bits)


def requant_scale(mode, params):
    """The real factor each channel's ``acc + bias`` is scaled by (for quantisers and reports)."""
    multiplier, shift = requant_multiplier(mode, params)
    return multiplier.astype(np.float64) * np.exp2(-shift.astype(np.float64))

