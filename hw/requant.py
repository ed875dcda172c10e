"""The requantiser: accumulators back to activations, bit-exact with ``numerics.requantize``.

Per value ``saturate(round_shift((acc + bias) * M, k), out_bits)`` with ties toward +infinity and
the bias added in the accumulator domain before any scaling, in the three modes of
:class:`numerics.RequantMode`. The hardware never forms the wide product ``z * M`` of the
``pow2x2`` mode and never adds the rounding constant ``2**(k-1)`` at a variable position. With
``z = acc + bias`` and ``q = floor(2 * z * M / 2**k)`` it computes::

    round_shift(z * M, k) == (q + 1) >> 1          # floor(floor(y) / 2) == floor(y / 2)

    shift:  q = (2 * z) >> k
    pow2x2: q = (s_a * 2 * z + ((s_b * 2 * z) >> d)) >> k_a
            (k_a <= k_b the two shifts in order, s_a, s_b their signs, d = k_b - k_a)
    mul:    q = (m * 2 * z) >> k

``(-2 * z) >> d`` is ``~((2 * z - 1) >> d)`` and ``-2 * z`` is ``~(2 * z - 1)``, so the ``pow2x2``
signs cost inverters, given ``z - 1`` beside ``z``: two right shifts and one add, no negation and
no multiplier. The last shift saturates ``q`` to ``out_bits + 1`` bits as it narrows (a
saturation before a monotonic map that is constant beyond it changes nothing), after which only
``q == 2**out_bits - 1`` rounds above the output range. ``tests/hw/test_requant.py`` proves these
identities over every shift; ``docs/postproc.md`` describes the interface, the pipeline and the
costs.
"""

from __future__ import annotations

import dataclasses

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import check_int
from ..sw.numerics import (BIAS_BITS, MULTIPLIER_BITS, SHIFT_MAX, RequantMode, int_range,
                           signed_width)

__all__ = ["ACC_BITS_MAX", "PIPELINES", "RequantWidths", "requant_widths", "requant_param_layout",
           "Requantiser"]

#: The ``mul`` mode splits ``2 * z`` here: two partial products that fit 16 x 16 multipliers.
_MUL_SPLIT = 16
#: Levels of a log shifter for shifts up to ``SHIFT_MAX`` (1, 2, 4, ... 32).
_SHIFT_LEVELS = max(1, SHIFT_MAX.bit_length())
#: Default levels per pipeline stage of a log shifter: two, so at most four LUT4 levels with the
#: overflow check (iCE40UP5K at 60 MHz leaves room for about four, measured).
_SHIFT_LEVELS_PER_STAGE = 2
#: Default longest carry chain of one stage: wider adders take two stages (a 0.28 ns carry per
#: bit on iCE40UP5K, measured).
_CARRY_MAX = 24
#: Widest accumulator: z = acc + bias then splits into two carry chains of at most 25 bits.
ACC_BITS_MAX = 48
#: The pipeline depths a build chooses from (``ArrayConfig.requant_pipeline``): ``deep`` keeps
#: the requantiser above 60 MHz on an iCE40UP5K; ``short`` has a quarter fewer cells and runs
#: above 50 MHz (measured: ``docs/postproc.md``).
PIPELINES = {"deep": {"carry_max": _CARRY_MAX, "shift_levels": _SHIFT_LEVELS_PER_STAGE,
                      "register_input": True},
             "short": {"carry_max": 48, "shift_levels": 3, "register_input": False}}


def _check_mode(mode):
    try:
        return RequantMode(mode)
    except ValueError:
        known = ", ".join(repr(m.value) for m in RequantMode)
        raise ValueError(f"mode must be one of {known}, not {mode!r}") from None


def _sign_range(lo, hi):
    """The range of ``s * v`` for ``v`` in ``[lo, hi]`` and ``s`` in {-1, 0, +1}."""
    return min(lo, -hi, 0), max(hi, -lo, 0)


def _product_range(a, b):
    corners = [x * y for x in a for y in b]
    return min(corners), max(corners)


@dataclasses.dataclass(frozen=True)
class RequantWidths:
    """The exact worst-case ranges of a requantiser's intermediates, derived from its build.

    Every range is inclusive ``(lo, hi)``, or ``None`` where the mode has no such value;
    :meth:`bits` is the signed width the hardware gives it.

    Members
    -------
    acc, bias : the input ranges (``acc_bits``, ``bias_bits`` two's complement).
    z : ``acc + bias``.
    z_minus_1 : ``z - 1`` (``pow2x2``).
    shifted : ``pow2x2``: the operand of the shift by ``d``, ``2 * z`` or ``2 * z - 1``.
    term : ``pow2x2``: ``s_a * 2 * z`` and ``(s_b * 2 * z) >> d`` (``s`` in {-1, 0, +1}).
    partial_lo, partial_hi : ``mul``: ``m * (2 * z mod 2**16)`` and ``m * (2 * z >> 16)``.
    scaled : the value the last right shift applies to: ``2 * z``, the sum of the two terms, or
        ``m * 2 * z``.
    q : the last shift's result, saturated to ``out_bits + 1`` bits (exact for the output)
    out : the output range (``out_bits``).
    shift_bits : width of every shift field (``shift_max`` fits).
    """
    mode: RequantMode
    acc: tuple
    bias: tuple
    z: tuple
    z_minus_1: tuple | None
    shifted: tuple | None
    term: tuple | None
    partial_lo: tuple | None
    partial_hi: tuple | None
    scaled: tuple
    q: tuple
    out: tuple
    shift_bits: int

    @staticmethod
    def bits(value_range):
        return signed_width(*value_range)


def requant_widths(mode, *, acc_bits, bias_bits=BIAS_BITS, shift_max=SHIFT_MAX, out_bits=8):
    """Derive every intermediate range of a requantiser build (see :class:`RequantWidths`).

    Interval arithmetic on the input ranges, so the widths hold for every accumulator, bias,
    shift (``0..shift_max``), sign and multiplier the payload can carry; a right shift never
    leaves its operand's range.
    """
    mode = _check_mode(mode)
    check_int("acc_bits", acc_bits, 1, ACC_BITS_MAX)
    check_int("bias_bits", bias_bits, 1, BIAS_BITS)
    check_int("shift_max", shift_max, 0, SHIFT_MAX)
    check_int("out_bits", out_bits, 2, 16)
    acc, bias = int_range(acc_bits), int_range(bias_bits)
    z = (acc[0] + bias[0], acc[1] + bias[1])
    z2 = (2 * z[0], 2 * z[1])
    z_minus_1 = shifted = term = partial_lo = partial_hi = None
    if mode is RequantMode.SHIFT:
        scaled = z2
    elif mode is RequantMode.POW2X2:
        z_minus_1 = (z[0] - 1, z[1] - 1)
        shifted = (z2[0] - 1, z2[1])
        term = _sign_range(*z2)
        scaled = (2 * term[0], 2 * term[1])
    else:
        m = int_range(MULTIPLIER_BITS)
        partial_lo = _product_range(m, (0, (1 << _MUL_SPLIT) - 1))
        partial_hi = _product_range(m, (z2[0] >> _MUL_SPLIT, z2[1] >> _MUL_SPLIT))
        scaled = _product_range(m, z2)
    out = int_range(out_bits)
    return RequantWidths(mode=mode, acc=acc, bias=bias, z=z, z_minus_1=z_minus_1, shifted=shifted,
                         term=term,
                         partial_lo=partial_lo, partial_hi=partial_hi, scaled=scaled,
                         q=int_range(out_bits + 1), out=out,
                         shift_bits=max(1, shift_max.bit_length()))


def requant_param_layout(mode, *, bias_bits=BIAS_BITS, shift_max=SHIFT_MAX):
    """The per-channel parameters of one lane, named as in ``model.Requant`` (``bias`` and the
    mode's fields), so a compiler copies a layer's arrays field by field.

    Signs are ``signed(2)`` holding -1, 0 or +1 (-2 is outside the contract and acts as -1);
    shifts are unsigned and at most ``shift_max`` (larger values are outside the contract).
    """
    mode = _check_mode(mode)
    check_int("bias_bits", bias_bits, 1, BIAS_BITS)
    check_int("shift_max", shift_max, 0, SHIFT_MAX)
    shift = unsigned(max(1, shift_max.bit_length()))
    fields = {"bias": signed(bias_bits)}
    if mode is RequantMode.SHIFT:
        fields["shift"] = shift
    elif mode is RequantMode.POW2X2:
        fields.update(sign1=signed(2), shift1=shift, sign2=signed(2), shift2=shift)
    else:
        fields.update(multiplier=signed(MULTIPLIER_BITS), shift=shift)
    return data.StructLayout(fields)


def _pipeline(m, depth, i, o):
    """Valid bits and the load enable of a ``depth``-stage pipeline between streams ``i`` and
    ``o``: every stage loads unless the output holds a transfer that is not taken. One enable
    for all: a per-stage enable that lets bubbles collapse ripples through every stage and set
    the clock (measured). The last stage's registers are ``o.payload``.
    """
    valid = [Signal(name=f"stage{s}_valid") for s in range(depth)]
    load = Signal()
    m.d.comb += load.eq(~valid[-1] | o.ready)
    with m.If(load):
        m.d.sync += [valid[s].eq(i.valid if s == 0 else valid[s - 1]) for s in range(depth)]
    m.d.comb += [i.ready.eq(load), o.valid.eq(valid[-1])]
    return load


def _extend(x, width):
    """``x`` sign- (or zero-) extended or truncated to ``width`` bits."""
    if len(x) >= width:
        return x[:width]
    fill = x[-1] if x.shape().signed else Const(0, 1)
    return Cat(x, fill.replicate(width - len(x)))


def _fits(x, bits):
    """Whether signed ``x`` fits in ``bits`` bits: its bits from ``bits - 1`` up are all equal."""
    if bits >= len(x):
        return Const(1)
    high = x[bits - 1:]
    return (high == 0) | (high == (1 << len(high)) - 1)


def _shift_levels(x, overflow, amount, levels, width):
    """Levels ``levels`` of a log shifter computing ``x >> amount`` saturated to ``width`` bits.

    Level ``j`` shifts by ``2**j``, from the largest down. After level ``j`` the shifts still to
    come sum to at most ``2**j - 1``, so a value outside ``width + 2**j - 1`` bits ends outside
    the ``width``-bit range whatever they are: its high bits are dropped after the last level
    given and ``overflow`` remembers it. The check reads the levels' input for each value of
    their shift bits, beside the multiplexers rather than after them. The sign never changes and
    stays the top bit (no register of its own): a value that fits keeps it there anyway.
    """
    if not levels:
        return x, overflow
    keep = width + (1 << levels[-1]) - 1
    if keep < len(x):
        # x >> shift fits in keep bits iff x fits in keep + shift bits: one flag per value of
        # the levels' shift bits, and those bits choose.
        fits = Cat(_fits(x, keep + sum(1 << j for n, j in enumerate(levels) if choice >> n & 1))
                   for choice in range(1 << len(levels)))
        overflow = overflow | ~fits.bit_select(Cat(amount[j] for j in levels), 1)
    for j in levels:
        x = Mux(amount[j], x >> (1 << j), x)
    if keep < len(x):
        x = Cat(x[:keep - 1], x[-1]).as_signed()
    return x, overflow


def _level_groups(shift_bits, per_stage):
    """The log shifter's levels, ``per_stage`` per pipeline stage from the largest down: two give
    ``[[5, 4], [3, 2], [1, 0]]`` (levels a narrow build lacks are left out, so that the stage
    count stays the same)."""
    levels = list(range(_SHIFT_LEVELS - 1, -1, -1))
    return [[j for j in levels[n:n + per_stage] if j < shift_bits]
            for n in range(0, _SHIFT_LEVELS, per_stage)]


def _shift_stages(per_stage):
    return -(-_SHIFT_LEVELS // per_stage)


def _add_stages(width, carry_max):
    return 1 if width <= carry_max else 2


class _Lane:
    """Builds one lane's registers; ``stage`` arguments count the pipeline stages (the latency)."""

    def __init__(self, m, load, prefix, *, carry_max, shift_levels):
        self.m, self.load, self.prefix = m, load, prefix
        self.carry_max, self.shift_levels = carry_max, shift_levels

    def reg(self, stage, value, shape, name):
        # Data only (the stages' valid bits say when it counts): no reset, whose net reaches
        # every register and, on a large ECP5 accelerator, set the clock.
        reg = Signal(shape, name=f"{self.prefix}{name}{stage}", reset_less=True)
        with self.m.If(self.load):
            self.m.d.sync += reg.eq(value)
        return reg

    def delay(self, value, shape, first, last, name):
        """``value`` registered in stages ``first`` to ``last``; the last register."""
        for stage in range(first, last + 1):
            value = self.reg(stage, value, shape, name)
        return value

    def add(self, stage, a, b, width, name):
        """``a + b`` modulo ``2**width`` (the caller knows it fits): one stage, or two when the
        carry chain would be longer than ``carry_max`` bits (halves, then the halves' carry).
        Returns the sum's register and its stage."""
        a, b = _extend(a, width), _extend(b, width)
        if _add_stages(width, self.carry_max) == 1:
            return self.reg(stage, a + b, signed(width), name), stage
        half = (width + 1) // 2
        low = self.reg(stage, a[:half] + b[:half], unsigned(half + 1), f"{name}_low")
        high = self.reg(stage, a[half:] + b[half:], unsigned(width - half), f"{name}_high")
        return self.reg(stage + 1, Cat(low[:half], high + low[half]), signed(width), name), stage + 1

    def log_shift(self, stage, x, amount, width, name, *, carry=None, finish=None):
        """``x >> amount`` saturated to ``width`` bits over ``_shift_stages`` stages after
        ``stage`` (``x`` and ``amount`` are that stage's values).

        Returns the low bits (their top bit the sign, also when they overflowed), the overflow
        flag (last stage's registers), the ``carry`` values (name -> (value, shape)) delayed
        alongside, and the last stage. ``finish(x, carried)`` may transform the result before its
        last register.
        """
        carry = carry or {}
        overflow = Const(0)
        groups = _level_groups(len(amount), self.shift_levels)
        for n, levels in enumerate(groups):
            x, overflow = _shift_levels(x, overflow, amount, levels, width)
            stage += 1
            if finish is not None and n == len(groups) - 1:
                x = finish(x, {k: v for k, (v, _) in carry.items()})
            x = self.reg(stage, x, signed(len(x)), name)
            overflow = self.reg(stage, overflow, 1, f"{name}_overflow")
            amount = self.reg(stage, amount, unsigned(len(amount)), f"{name}_amount")
            carry = {k: (self.reg(stage, v, shape, k), shape) for k, (v, shape) in carry.items()}
        return x, overflow, {k: v for k, (v, _) in carry.items()}, stage


class Requantiser(wiring.Component):
    """Requantises ``lanes`` accumulators per transfer, each with its own channel parameters.

    ``out[j] = saturate(round_shift((acc[j] + bias[j]) * M[j], k[j]), out_bits)``, clamped at 0
    too when the transfer's ``relu`` bit is set: exactly ``numerics.requantize`` (followed by
    ``golden.relu``). A pipelined stream component: one transfer per cycle and :attr:`latency`
    cycles from input to output; a stalled output holds every stage (one enable for all).

    Parameters
    ----------
    mode : :class:`numerics.RequantMode` or str
        ``shift`` and ``pow2x2`` build no multiplier; ``mul`` builds per lane two
        ``MULTIPLIER_BITS``-bit multipliers (by the low 16 bits of ``2 * z`` and by the rest).
    acc_bits : int
        Width of the signed accumulators (``numerics.acc_width`` of the array), 1 to 48.
    out_bits : int
        Width of the signed outputs, 2 to 16.
    lanes : int
        Values per transfer (the array's columns for one output row per transfer).
    bias_bits : int
        Width of the signed per-channel bias, 1 to ``BIAS_BITS``.
    shift_max : int
        Largest shift the build handles, 0 to ``SHIFT_MAX``; sets the shift fields' width.
    carry_max : int
        Longest carry chain in one pipeline stage, at least 1 (default 24: iCE40UP5K at 60 MHz);
        a wider adder takes two stages (halves, then the halves' carry). 48 puts every adder of
        the ``shift`` and ``pow2x2`` modes in one stage: fewer registers for a slower clock.
    shift_levels : int
        Levels (shifts by 1, 2, 4, ...) of each log shifter per pipeline stage, 1 to 6 (default
        2, so three stages per shifter); 3 gives two stages per shifter. Neither this nor
        ``carry_max`` changes the results, only :attr:`latency` and the cost.
    register_input : bool
        Register ``i`` before any logic (one more stage). The accelerator's parameters come
        straight from a block RAM, whose clock-to-output (5.6 ns on an ECP5) then leaves a
        whole cycle to the first adder's carry chain.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"acc": ArrayLayout(signed(acc_bits), lanes),
        "param": ArrayLayout(param_layout, lanes), "relu": 1})))``
    o : ``Out(stream.Signature(ArrayLayout(signed(out_bits), lanes)))``

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and shows it.
    """

    def __init__(self, *, mode, acc_bits, out_bits=8, lanes=1, bias_bits=BIAS_BITS,
                 shift_max=SHIFT_MAX, carry_max=_CARRY_MAX,
                 shift_levels=_SHIFT_LEVELS_PER_STAGE, register_input=False):
        # A rejected build is never elaborated: no "created but never used" warning for it.
        self._MustUse__silence = True
        self._mode = _check_mode(mode)
        self._acc_bits = check_int("acc_bits", acc_bits, 1, ACC_BITS_MAX)
        self._out_bits = check_int("out_bits", out_bits, 2, 16)
        self._lanes = check_int("lanes", lanes, 1)
        self._bias_bits = check_int("bias_bits", bias_bits, 1, BIAS_BITS)
        self._shift_max = check_int("shift_max", shift_max, 0, SHIFT_MAX)
        self._carry_max = check_int("carry_max", carry_max, 1)
        self._shift_levels = check_int("shift_levels", shift_levels, 1, _SHIFT_LEVELS)
        if not isinstance(register_input, bool):
            raise TypeError(f"register_input must be a bool, not {register_input!r}")
        self._register_input = register_input
        self._widths = requant_widths(mode, acc_bits=acc_bits, bias_bits=bias_bits,
                                      shift_max=shift_max, out_bits=out_bits)
        self._param_layout = requant_param_layout(mode, bias_bits=bias_bits, shift_max=shift_max)
        in_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(acc_bits), lanes),
            "param": data.ArrayLayout(self._param_layout, lanes),
            "relu": unsigned(1),
        })
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_bits), lanes))),
        })
        self._MustUse__silence = False

    mode = property(lambda self: self._mode)
    acc_bits = property(lambda self: self._acc_bits)
    out_bits = property(lambda self: self._out_bits)
    lanes = property(lambda self: self._lanes)
    bias_bits = property(lambda self: self._bias_bits)
    shift_max = property(lambda self: self._shift_max)
    carry_max = property(lambda self: self._carry_max)
    shift_levels = property(lambda self: self._shift_levels)
    register_input = property(lambda self: self._register_input)
    widths = property(lambda self: self._widths, doc="The derived :class:`RequantWidths`.")
    param_layout = property(lambda self: self._param_layout,
                            doc="One lane's parameters (:func:`requant_param_layout`).")

    @property
    def multiplier_free(self):
        """Whether the build contains no multiplier (``shift`` and ``pow2x2``)."""
        return self._mode is not RequantMode.MUL

    @property
    def latency(self):
        """Cycles from a transfer on ``i`` to its result on ``o`` when ``o`` is not stalled:
        the input register (with ``register_input``), the ``z`` adder (one stage, two when
        wide), the mode's stages, the last shift's shifter stages and the rounding stage."""
        w, c = self._widths, self._carry_max
        shifter = _shift_stages(self._shift_levels)
        z = _add_stages(max(w.bits(w.z), w.bits(w.z_minus_1 or w.z)), c)
        if self._mode is RequantMode.SHIFT:
            body = 0
        elif self._mode is RequantMode.MUL:
            body = 1 + _add_stages(w.bits(w.scaled), c)
        else:
            body = shifter + _add_stages(w.bits(w.scaled), c)
        return int(self._register_input) + z + body + shifter + 1

    def elaborate(self, platform):
        m = Module()
        load = _pipeline(m, self.latency, self.i, self.o)
        knobs = dict(carry_max=self._carry_max, shift_levels=self._shift_levels)
        payload = self.i.payload
        last = self.latency - 2 - int(self._register_input)
        # The ReLU bit travels beside the lanes to the last stage.
        relu = _Lane(m, load, "", **knobs).delay(payload.relu, 1, 0, self.latency - 2, "relu")
        for n in range(self._lanes):
            lane = _Lane(m, load, f"lane{n}_", **knobs)
            acc, param = payload.acc[n], payload.param[n]
            if self._register_input:
                # A register per lane and field, named like the stages' registers.
                acc = lane.reg("_in", acc, acc.shape(), "acc")
                param = lane.reg("_in", param, param.shape(), "param")
            q, overflow, sign, stage = self._scaled(lane, acc, param)
            assert stage == last
            with m.If(load):
                m.d.sync += self.o.payload[n].eq(self._round(q, overflow, sign, relu))
        return m

    def _round(self, q, overflow, sign, relu):
        """The last stage: ``saturate((q + 1) >> 1)``, clamped at 0 with ReLU. ``q`` holds
        ``out_bits + 1`` bits, so only ``q == 2**out_bits - 1`` rounds above ``hi`` and nothing
        below ``lo``; an overflowed ``q`` saturates by its sign."""
        lo, hi = self._widths.out
        too_high = Mux(overflow, ~sign, q == self._widths.q[1])
        # (q + 1) >> 1 < 0, i.e. q < -1: negative and not all ones, as logic (Yosys makes a
        # carry chain of a comparison with a constant).
        negative = Mux(overflow, sign, q[-1] & ~q.all())
        return Mux(too_high, hi, Mux(relu & negative, 0, Mux(overflow, lo, (q + 1) >> 1)))

    def _scaled(self, lane, acc, param):
        """Stages 0 .. latency-2 of one lane: ``q = floor(2 * z * M / 2**k)`` as its low
        ``out_bits + 1`` bits, an overflow flag and the sign, which saturate it exactly."""
        w = self._widths
        shift = unsigned(w.shift_bits)
        z_width = max(w.bits(w.z), w.bits(w.z_minus_1 or w.z))
        z, stage = lane.add(0, acc, param.bias, z_width, "z")
        delay = lambda value, shape, name: lane.delay(value, shape, 0, stage, name)
        if self._mode is RequantMode.SHIFT:
            k, scaled = delay(param.shift, shift, "k"), z << 1
        elif self._mode is RequantMode.MUL:
            mult, k = delay(param.multiplier, signed(MULTIPLIER_BITS), "m"), delay(param.shift, shift, "k")
            stage += 1
            z2 = _extend(z << 1, max(len(z) + 1, _MUL_SPLIT + 1)).as_signed()
            low = lane.reg(stage, mult * z2[:_MUL_SPLIT], signed(w.bits(w.partial_lo)), "partial_lo")
            high = lane.reg(stage, mult * (z2 >> _MUL_SPLIT), signed(w.bits(w.partial_hi)), "partial_hi")
            k = lane.reg(stage, k, shift, "k")
            scaled, end = lane.add(stage + 1, high << _MUL_SPLIT, low, w.bits(w.scaled), "product")
            k = lane.delay(k, shift, stage + 1, end, "k")
            stage = end
        else:
            scaled, k, stage = self._pow2x2_sum(lane, acc, param, z, stage, delay)
        q, overflow, _, stage = lane.log_shift(stage, scaled, k, w.bits(w.q), "q")
        return q, overflow, q[-1], stage

    def _pow2x2_sum(self, lane, acc, param, z, stage, delay):
        """``pow2x2`` after ``z``: ``s_a * 2 * z + ((s_b * 2 * z) >> d)`` and ``k_a``."""
        w = self._widths
        shift = unsigned(w.shift_bits)
        term = signed(w.bits(w.term))
        # z - 1 beside z: acc + bias + (-1) as a carry-save sum, then one carry chain.
        width = len(z)
        a, b = _extend(acc, width), _extend(param.bias, width)
        z_minus_1, _ = lane.add(0, ~(a ^ b), (a | b) << 1, width, "z_minus_1")
        # The two terms ordered by shift, so that only right shifts remain: both differences in
        # parallel and the borrow of one of them choosing (a compare, then a subtraction after
        # it, is too deep for one stage).
        d12, d21 = param.shift1 - param.shift2, param.shift2 - param.shift1
        swap = d21[-1]
        sign_a = delay(Mux(swap, param.sign2, param.sign1), signed(2), "sign_a")
        sign_b = delay(Mux(swap, param.sign1, param.sign2), signed(2), "sign_b")
        k_a = delay(Mux(swap, param.shift2, param.shift1), shift, "k_a")
        d = delay(Mux(swap, d12, d21)[:w.shift_bits], shift, "d")
        # -2z == ~(2z - 1) and (-2z) >> d == ~((2z - 1) >> d): the shifter's operand is 2z or
        # 2z - 1 = Cat(1, z - 1), and a negative sign inverts its result.
        two_z = Cat(Const(0, 1), z).as_signed()
        two_z_minus_1 = Cat(Const(1, 1), z_minus_1).as_signed()
        term_a = Mux(sign_a == 0, 0, Mux(sign_a[1], ~two_z_minus_1, two_z))
        # A zero sign zeroes the operand, so that only the inversion is left after the shifter
        # (it joins the last level's multiplexer in one LUT4).
        operand = Mux(sign_b == 0, 0, Mux(sign_b[1], two_z_minus_1, two_z))
        apply_sign = lambda x, c: Mux(c["negative_b"], ~x, x)
        term_b, _, carried, stage = lane.log_shift(
            stage, operand, d, w.bits(w.shifted), "shifted_b",
            carry={"term_a": (term_a, term), "negative_b": (sign_b[1], 1), "k_a": (k_a, shift)},
            finish=apply_sign)
        # The one add.
        total, end = lane.add(stage + 1, carried["term_a"], term_b, w.bits(w.scaled), "sum")
        return total, lane.delay(carried["k_a"], shift, stage + 1, end, "k_a"), end
