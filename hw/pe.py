"""Processing elements: one operand pair per cycle into a derived-width accumulator.

Three kinds share one interface (:class:`PE`), so :class:`~addershift.hw.array.SystolicArray` is
generic over them:

- :class:`AdderPE` (AdderNet): accumulates ``-|x - w|``;
- :class:`ShiftPE` (DeepShift): accumulates ``sign * (x << (p - p_min))`` with a typed
  :class:`ShiftWeight` (sign, exponent code), zero weights included;
- :class:`MulPE` (the int8 baseline): accumulates ``x * w`` with a plain ``*`` (Yosys maps it to a
  DSP block with ``synth_ice40 -dsp`` / ``synth_ecp5``, to LUTs otherwise).

The accumulator width is :func:`addershift.sw.numerics.acc_width` of the kind, the operand widths and
the longest reduction the PE must support (``max_length``): it never overflows.

Pipeline (``docs/architecture.md`` has the measurements behind it)::

    [x, w, valid, last]  -> (input registers, optional) -> term register -> accumulator
                                                           "t, c"          acc += t + c

Each kind computes its term as ``t + c``: a value ``t`` plus a one-bit carry ``c`` that enters the
accumulator's carry chain as carry-in, so a negation (``-v = ~v + 1``) costs no adder of its own. The
register after the term logic rides in logic cells the term already uses on iCE40, and shortens the
critical path to one carry chain. (On ECP5 the adder PE registers ``x - w - 1`` and its sign instead,
and its accumulator's carry cells, instantiated, take the rest: :class:`AdderPE`.)

After the ``last`` step of a reduction reaches the accumulator, ``done`` rises for one cycle and ``acc``
holds the finished sum; in that cycle the accumulator is cleared for the next reduction. So the step
presented right after a ``last`` step must be idle (``valid`` low): clearing this way uses the
flip-flops' synchronous reset, where starting the next sum in the same cycle would cost one LUT per
accumulator bit (measured in ``docs/architecture.md``). :class:`SystolicArray` inserts that idle cycle.
``hold`` freezes the whole PE (all registers keep their value, ``done`` included).
"""

from __future__ import annotations

import contextlib
import itertools

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from ..sw.numerics import Op, acc_width

__all__ = ["Sign", "ShiftWeight", "PE", "AdderPE", "ShiftPE", "MulPE", "make_pe", "PE_CLASSES",
           "check_params", "rejected", "has_ecp5_carries", "ecp5_carry_chain"]


class Sign(enum.Enum, shape=2):
    """The sign of a shift weight; ``ZERO`` makes the whole weight zero.

    Bit 0 says "non-zero", bit 1 says "negative" (``0b10`` is invalid), so the term logic tests one
    bit for each."""
    ZERO = 0b00
    POS = 0b01
    NEG = 0b11

    @classmethod
    def of(cls, value):
        """The member for an integer sign -1, 0 or 1."""
        try:
            return {-1: cls.NEG, 0: cls.ZERO, 1: cls.POS}[value]
        except (KeyError, TypeError):
            raise ValueError(f"Shift weight sign must be -1, 0 or 1, not {value!r}") from None

    @property
    def value_int(self):
        """The integer sign -1, 0 or 1."""
        return {0b00: 0, 0b01: 1, 0b11: -1}[self.value]


class ShiftWeight(data.StructLayout):
    """A DeepShift weight ``sign * 2**p`` with ``p`` in ``[p_min, p_max]``, as hardware carries it.

    Fields: ``sign`` (:class:`Sign`) and ``exponent``, the *exponent code* ``p - p_min`` (unsigned,
    ``0 .. p_max - p_min``; codes above that are invalid). A zero weight is ``sign = Sign.ZERO``
    with any exponent code.
    """

    def __init__(self, *, p_min, p_max):
        _check_exponents(p_min, p_max)
        self._p_min, self._p_max = p_min, p_max
        super().__init__({"sign": Sign, "exponent": unsigned(max(1, (p_max - p_min).bit_length()))})

    @property
    def p_min(self):
        return self._p_min

    @property
    def p_max(self):
        return self._p_max

    def encode(self, sign, exponent):
        """The integer bit pattern of the weight ``(sign in {-1, 0, 1}, p in [p_min, p_max])``."""
        member = Sign.of(sign)
        if sign == 0:
            exponent = self._p_min
        if not (isinstance(exponent, int) and self._p_min <= exponent <= self._p_max):
            raise ValueError(f"Shift weight exponent must be an integer in [{self._p_min}, "
                             f"{self._p_max}], not {exponent!r}")
        return self.const({"sign": member, "exponent": exponent - self._p_min}).as_value().value

    def __eq__(self, other):
        return (isinstance(other, ShiftWeight) and other._p_min == self._p_min and
                other._p_max == self._p_max)

    def __hash__(self):
        return hash((ShiftWeight, self._p_min, self._p_max))

    def __repr__(self):
        return f"ShiftWeight(p_min={self._p_min}, p_max={self._p_max})"


@contextlib.contextmanager
def rejected(component):
    """Around parameter checks in ``__init__``: a component whose parameters are rejected was
    never meant to be elaborated, so Amaranth must not warn that it was unused."""
    try:
        yield
    except Exception:
        component._MustUse__silence = True
        raise


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_exponents(p_min, p_max):
    if not _is_int(p_min):
        raise TypeError(f"p_min must be an integer, not {p_min!r}")
    if not _is_int(p_max):
        raise TypeError(f"p_max must be an integer, not {p_max!r}")
    if p_max < p_min:
        raise ValueError(f"p_max must be at least p_min ({p_min}), not {p_max}")
    if p_max - p_min > 31:
        raise ValueError(f"p_max - p_min must be at most 31, not {p_max - p_min}")


def _check_bits(name, value):
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not 2 <= value <= 32:
        raise ValueError(f"{name} must be between 2 and 32, not {value}")


def _check_length(max_length):
    if not _is_int(max_length):
        raise TypeError(f"max_length must be an integer, not {max_length!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, not {max_length}")


def check_params(kind, *, x_bits, w_bits, p_min, p_max, max_length):
    """Validate PE parameters; return ``(Op, w_bits, p_min, p_max, widths)`` with defaults filled in.

    ``widths`` is the keyword dict :func:`~addershift.sw.numerics.acc_width` takes for the kind.
    Shared by the PEs and the array so both report the same messages.
    """
    try:
        op = Op(kind)
    except ValueError:
        raise ValueError(f"PE kind must be one of {', '.join(o.value for o in Op)}, "
                         f"not {kind!r}") from None
    _check_bits("x_bits", x_bits)
    _check_length(max_length)
    if op is Op.SHIFT:
        if w_bits is not None:
            raise ValueError(f"w_bits does not apply to shift PEs (their weights are sign and "
                             f"exponent), not {w_bits!r}")
        p_min = 0 if p_min is None else p_min
        p_max = 7 if p_max is None else p_max
        _check_exponents(p_min, p_max)
        return op, None, p_min, p_max, {"x_bits": x_bits, "p_min": p_min, "p_max": p_max}
    if p_min is not None or p_max is not None:
        raise ValueError(f"p_min and p_max apply to shift PEs only, not to {op.value!r} "
                         f"(got p_min={p_min!r}, p_max={p_max!r})")
    w_bits = x_bits if w_bits is None else w_bits
    _check_bits("w_bits", w_bits)
    if op is Op.ADDER and w_bits != x_bits:
        raise ValueError(f"Adder weights share the activations' format: w_bits must equal "
                         f"x_bits ({x_bits}), not {w_bits}")
    return op, w_bits, None, None, {"x_bits": x_bits, "w_bits": w_bits}


def has_ecp5_carries(platform):
    """Whether the build instantiates ECP5 ``CCU2C`` carry cells itself: the platform (a board's
    or a :class:`~addershift.boards.report.Target`) is an ECP5 by its ``device``."""
    return (getattr(platform, "device", "") or "").startswith("LFE5U")


def _ccu2c_init(propagate, generate):
    """A ``CCU2C`` half's 16-bit ``INIT`` with input D tied to 1: its LUT4 is ``propagate(a, b,
    c)`` (entries 8-15) and its carry's generate, a LUT2 of the low four bits, ``generate(a, b)``
    (the carry out is ``generate`` where ``propagate`` is 0, the carry in where it is 1)."""
    init = 0
    for a, b, c in itertools.product((0, 1), repeat=3):
        init |= (propagate(a, b, c) & 1) << (8 + a + 2 * b + 4 * c)
    for a, b in itertools.product((0, 1), repeat=2):
        init |= (generate(a, b) & 1) << (a + 2 * b)
    return init


#: Half cells of a chain: a bit of ``a + b`` (B XOR NOT C: ``b`` inverted where C is 0), a bit
#: of ``a + 1`` (``b`` is 1 above its top bit), and a section's start, whose carry out is A
#: whatever the carry into it (its LUT output is 0).
_INIT_XNOR_C = _ccu2c_init(lambda a, b, c: a ^ b ^ (1 - c), lambda a, b: a)
_INIT_ONE = _ccu2c_init(lambda a, b, c: 1 - a, lambda a, b: a)
_INIT_START = _ccu2c_init(lambda a, b, c: 0, lambda a, b: a)


def ecp5_carry_chain(m, name, sections):
    """Sums on one chain of ECP5 ``CCU2C`` cells: for each section ``(a, b, c, carry_in)`` the
    ``len(a)`` bits of ``a + (b XOR NOT c) + carry_in``, ``b`` taken as ones above its top bit
    and ``c`` (a bit, or a constant) the inversion of ``b``. Returns the sections' sums.

    Written out here because Yosys' ``$alu`` mapping (``techlibs/lattice/arith_map_ccu2c.v``)
    can take no per-signal inversion of ``b`` (only one shared by all bits), and no library
    offers a carry chain with LUT contents of one's own. nextpnr adds a cell before every chain
    (its carry in comes from logic or a constant), and one after it unless the build leaves its
    unread carry out unconnected (``boards/carry_ends.py``): sections that share a chain share
    those cells. The first section's ``carry_in`` must be 0 (the chain's carry in, which
    nextpnr's first cell makes); each later one begins with a start half cell, whose carry out
    is ``carry_in``. Amaranth's simulator cannot run ``CCU2C``: these builds are checked as
    Verilog with Yosys' model of the cell (``sim/array``)."""
    from amaranth.hdl import Instance
    halves, sums = [], []
    for k, (a, b, c, carry_in) in enumerate(sections):
        if k == 0:
            if not (isinstance(carry_in, int) and carry_in == 0):
                raise ValueError(f"The first section's carry in must be 0, not {carry_in!r}")
        else:
            halves.append((_INIT_START, (carry_in, 0, 0), None))
        out = [Signal(name=f"{name}_s{k}_{i}") for i in range(len(a))]
        sums.append(Cat(*out))
        halves += [(_INIT_XNOR_C, (a[i], b[i], c), bit) if i < len(b) else
                   (_INIT_ONE, (a[i], 0, 0), bit) for i, bit in enumerate(out)]
    carry = 0
    for k in range(0, len(halves), 2):
        ports = {"i_CIN": carry}
        for half, (init, (pa, pb, pc), bit) in enumerate(halves[k:k + 2]):
            ports.update({f"p_INIT{half}": Const(init, 16), f"p_INJECT1_{half}": "NO",
                          f"i_A{half}": pa, f"i_B{half}": pb, f"i_C{half}": pc, f"i_D{half}": 1})
            if bit is not None:
                ports[f"o_S{half}"] = bit
        if k + 2 < len(halves):
            carry = ports["o_COUT"] = Signal(name=f"{name}_carry{k // 2}")
        m.submodules[f"{name}{k // 2}"] = Instance("CCU2C", **ports)
    return sums


class PE(wiring.Component):
    """The interface every processing element shares (an abstract base; see :func:`make_pe`).

    Parameters
    ----------
    x_bits : int
        Width of the signed activations ``x``.
    max_length : int
        The longest reduction the PE must sum without overflow; sets :attr:`acc_bits`.
    register_inputs : bool
        With ``True`` (a PE on its own) the PE registers ``x``, ``w``, ``valid`` and ``last`` and
        takes ``w`` in its natural form (:attr:`weight_shape`). With ``False`` (inside an array,
        which registers operands once per row and column) the inputs feed the term logic directly
        and ``w`` must already be in the operand form :meth:`encode_weight` gives
        (:attr:`operand_shape`).
    acc_control : str
        ``"internal"`` (the default): the PE derives its accumulator's clear and enable from
        ``hold``, ``valid`` and ``last``. ``"external"`` (an array, which registers them a cycle
        ahead for a whole tile of PEs): they come from the ``acc_clear`` and ``acc_enable``
        inputs, which must equal ``~hold & done`` and ``~hold & (done | v)``, where ``v`` is
        ``valid`` as it reaches the accumulator (through the PE's input and term registers).
        The accumulator then has no reset: after a reset, ``acc_clear`` must be set after the
        last stale ``acc_enable`` and before the first term arrives.

    Members
    -------
    x : ``In(signed(x_bits))``
    w : ``In(weight_shape)`` or ``In(operand_shape)`` (see ``register_inputs``)
    valid : ``In(1)``
        ``x`` and ``w`` are a step of the reduction (else an idle cycle: nothing accumulates).
    last : ``In(1)``
        With ``valid``: the final step of the reduction. The next step must be idle.
    hold : ``In(1)``
        Freeze every register of the PE this cycle (inputs are ignored).
    acc : ``Out(signed(acc_bits))``
        The accumulator.
    done : ``Out(1)``
        ``acc`` holds a finished reduction (for one cycle, longer while ``hold``); :attr:`latency`
        cycles after the ``last`` step was presented.
    acc_clear, acc_enable : ``In(1)``
        Only with ``acc_control="external"`` (see there).
    """

    _KIND: Op

    def __init__(self, *, x_bits=8, w_bits=None, p_min=None, p_max=None, max_length=128,
                 register_inputs=True, acc_control="internal"):
        with rejected(self):
            op, w_bits, p_min, p_max, widths = check_params(
                self._KIND, x_bits=x_bits, w_bits=w_bits, p_min=p_min, p_max=p_max,
                max_length=max_length)
            if not isinstance(register_inputs, bool):
                raise TypeError(f"register_inputs must be a bool, not {register_inputs!r}")
            if acc_control not in ("internal", "external"):
                raise ValueError(f"acc_control must be 'internal' or 'external', not "
                                 f"{acc_control!r}")
        self._external = acc_control == "external"
        self._x_bits, self._w_bits, self._p_min, self._p_max = x_bits, w_bits, p_min, p_max
        self._max_length = max_length
        self._register_inputs = register_inputs
        self._acc_bits = acc_width(op, max_length, **widths)
        w_shape = self.weight_shape if register_inputs else self.operand_shape
        members = {
            "x": In(signed(x_bits)),
            "w": In(w_shape),
            "valid": In(1),
            "last": In(1),
            "hold": In(1),
            "acc": Out(signed(self._acc_bits)),
            "done": Out(1),
        }
        if self._external:
            members.update(acc_clear=In(1), acc_enable=In(1))
        super().__init__(members)

    # -- parameters (read-only) ---------------------------------------------------------------

    @property
    def kind(self):
        """The :class:`~addershift.sw.numerics.Op` this PE computes."""
        return self._KIND

    @property
    def x_bits(self):
        return self._x_bits

    @property
    def w_bits(self):
        """Width of a signed weight (``None`` for shift PEs)."""
        return self._w_bits

    @property
    def p_min(self):
        """Smallest weight exponent (shift PEs; ``None`` otherwise)."""
        return self._p_min

    @property
    def p_max(self):
        """Largest weight exponent (shift PEs; ``None`` otherwise)."""
        return self._p_max

    @property
    def max_length(self):
        return self._max_length

    @property
    def register_inputs(self):
        return self._register_inputs

    @property
    def acc_bits(self):
        """Accumulator width: ``acc_width(kind, max_length, ...)``."""
        return self._acc_bits

    @property
    def latency(self):
        """Cycles from presenting a ``last`` step to ``done`` (with no ``hold``)."""
        return 2 + int(self._register_inputs)

    @property
    def idle_after_last(self):
        """Idle steps (``valid`` low) the PE needs after each ``last`` step."""
        return 1

    @property
    def weight_shape(self):
        """The natural form of one weight (what the array's input stream carries)."""
        raise NotImplementedError  # pragma: no cover

    @property
    def operand_shape(self):
        """The form the term logic takes a weight in (see :meth:`encode_weight`)."""
        return self.weight_shape

    def encode_weight(self, w):
        """Convert a weight value of :attr:`weight_shape` to :attr:`operand_shape` (a Value).

        Cheap enough to sit in front of a register, where it costs no extra logic cell."""
        return w

    def params(self):
        """The parameters as a plain dict (for reports and the generator's JSON sidecar)."""
        out = {"kind": self.kind.value, "x_bits": self._x_bits, "max_length": self._max_length,
               "acc_bits": self._acc_bits}
        if self.kind is Op.SHIFT:
            out.update(p_min=self._p_min, p_max=self._p_max)
        else:
            out.update(w_bits=self._w_bits)
        return out

    # -- the hardware -------------------------------------------------------------------------

    def _term(self, m, x, w, platform):
        """Return ``(t, c)``, the term register's contents for operands ``x`` and ``w`` (operand
        form): ``t + c`` is the term unless the kind's :meth:`_accumulate` says otherwise."""
        raise NotImplementedError  # pragma: no cover

    def _accumulate(self, m, acc, t, c, platform):
        """The accumulator's next value from the term register ``(t, c)``."""
        return acc + t + c

    def _inputs(self, m, run):
        """``(x, w, valid, last)`` for the term logic: the ports, or registers of them (with the
        weight in operand form) when ``register_inputs``."""
        if not self._register_inputs:
            return self.x, self.w, self.valid, self.last
        x = Signal(signed(self._x_bits), reset_less=True)
        w = Signal(self.operand_shape, reset_less=True)
        valid0, last0 = Signal(), Signal()
        with m.If(run):
            m.d.sync += [x.eq(self.x), w.eq(self.encode_weight(self.w)),
                         valid0.eq(self.valid), last0.eq(self.last)]
        return x, w, valid0, last0

    def elaborate(self, platform):
        m = Module()
        run = ~self.hold
        x, w, valid0, last0 = self._inputs(m, run)
        t_comb, c_comb = self._term(m, x, w, platform)
        # Data registers need no reset: `valid1` says when they matter.
        t = Signal(t_comb.shape(), name="t", reset_less=True)
        c = Signal(name="c", reset_less=True)
        valid1, last1 = Signal(), Signal()
        with m.If(run):
            m.d.sync += [t.eq(t_comb), c.eq(c_comb), valid1.eq(valid0), last1.eq(last0)]
            m.d.sync += self.done.eq(valid1 & last1)
        # Clearing on `done` is the accumulator flip-flops' synchronous reset (no LUT), written as
        # a reset that overrides the clock enable: ECP5 flip-flops have only that kind (one gated
        # by the enable cost a LUT per bit there), and on iCE40 it folds into the enable. Reset
        # and enable are each one LUT of registers shared by all PEs, or registers of the array.
        if self._external:
            clear, enable = self.acc_clear, self.acc_enable
            # The array clears the accumulators after a reset, so they need no reset of their own
            # (a reset net to every accumulator would span the array).
            acc = Signal.like(self.acc, name="acc_reg", reset_less=True)
            m.d.comb += self.acc.eq(acc)
        else:
            clear, enable = self.done & run, valid1 & run
            acc = self.acc
        # (outside the conditions below: _accumulate may add combinational logic of its own)
        acc_next = self._accumulate(m, acc, t, c, platform)
        with m.If(clear):
            m.d.sync += acc.eq(0)
        with m.Elif(enable):
            m.d.sync += acc.eq(acc_next)
        return m


class AdderPE(PE):
    """AdderNet PE: accumulates ``-|x - w|`` (``w_bits`` equals ``x_bits``).

    The operand form of a weight is its one's complement ``~w``: then ``e = x + ~w = x - w - 1`` is
    one carry chain with no inverter in front of it (on iCE40 the carry cell sees the LUT's raw
    inputs, so an inverted operand would cost a LUT per bit). With ``s`` the sign of ``e``,
    ``-|x - w|`` is ``t + s`` where ``t = e`` if ``s`` else ``~e``, and ``s`` enters the
    accumulator as carry-in. On iCE40 the XOR folds into the LUTs of the ``e`` chain (a sum LUT
    has a free input). An ECP5 carry cell's sum is its LUT's output XOR the carry, so there
    it cannot: there the term register holds ``e`` and the XOR happens in the LUTs of the
    accumulator's carry cells, 8 LUTs fewer per PE; ``x + ~w`` and the accumulator are then
    two sections of one chain of carry cells (:func:`ecp5_carry_chain`).
    """
    _KIND = Op.ADDER

    @property
    def weight_shape(self):
        return signed(self._w_bits)

    def encode_weight(self, w):
        return ~w

    def _term(self, m, x, w_n, platform):
        xb = self._x_bits
        e = Signal(signed(xb + 1))
        s = e[-1]
        if has_ecp5_carries(platform):
            # `x + ~w` is the first section of the PE's carry chain, built with the second,
            # the accumulator (_accumulate): nextpnr's cells at a chain's ends are then shared.
            self._term_section = (Cat(x, x[-1]), Cat(w_n, w_n[-1]), 1, 0), e
            return e[:xb], s
        m.d.comb += e.eq(x + w_n)
        # t = e if s else ~e lies in [-2**x_bits, -1]: its top bit is always 1, so only the low
        # x_bits bits are registered (_accumulate puts the 1 back).
        t = Signal(xb)
        m.d.comb += t.eq(e[:xb] ^ Mux(s, 0, -1))
        return t, s

    def _accumulate(self, m, acc, t, s, platform):
        if has_ecp5_carries(platform):
            # acc + (t if s else ~t) + s, t widened with ones: each carry cell's LUT computes
            # acc_i XOR t_i XOR NOT s itself, where Yosys would leave the XOR a LUT per bit in
            # front of its chain.
            term, e = self._term_section
            e_sum, acc_sum = ecp5_carry_chain(m, "carry", [term, (acc, t, s, s)])
            m.d.comb += e.eq(e_sum)
            return acc_sum.as_signed()
        return acc + Cat(t, Const(1, 1)).as_signed() + s


class ShiftPE(PE):
    """DeepShift PE: accumulates ``sign * (x << (p - p_min))`` for a :class:`ShiftWeight`.

    A barrel shifter over the exponent codes, then ``t = v`` (positive), ``~v`` (negative) or 0, with
    the negative case's ``+1`` entering the accumulator as carry-in.
    """
    _KIND = Op.SHIFT

    @property
    def weight_shape(self):
        return ShiftWeight(p_min=self._p_min, p_max=self._p_max)

    def _term(self, m, x, w, platform):
        span = self._p_max - self._p_min
        v = Signal(signed(self._x_bits + span))
        m.d.comb += v.eq(x << w.exponent)
        bits = w.sign.as_value()
        neg, zero = bits[1] & bits[0], ~bits[0]   # the invalid code 0b10 acts as zero
        t = Signal(signed(self._x_bits + span))
        m.d.comb += t.eq(Mux(zero, 0, v ^ Mux(neg, -1, 0)))
        return t, neg


class MulPE(PE):
    """Baseline PE: accumulates ``x * w`` (a plain ``*``: a DSP block where synthesis maps one)."""
    _KIND = Op.MUL

    @property
    def weight_shape(self):
        return signed(self._w_bits)

    def _term(self, m, x, w, platform):
        t = Signal(signed(self._x_bits + self._w_bits))
        m.d.comb += t.eq(x * w)
        return t, Const(0)


PE_CLASSES = {Op.ADDER: AdderPE, Op.SHIFT: ShiftPE, Op.MUL: MulPE}


def make_pe(kind, **params):
    """The PE of ``kind`` (``"adder"``, ``"shift"``, ``"mul"`` or an :class:`Op`) with ``params``
    (keyword arguments of :class:`PE`)."""
    try:
        op = Op(kind)
    except ValueError:
        raise ValueError(f"PE kind must be one of {', '.join(o.value for o in Op)}, "
                         f"not {kind!r}") from None
    return PE_CLASSES[op](**params)
