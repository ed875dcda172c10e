"""The build configuration of an accelerator: what a bitstream can run.

:class:`ArrayConfig` holds every build parameter (PE kind, array shape, widths, memory sizes,
requantisation mode), validates them first with errors that name the parameter, derives the widths
the hardware is built with (the accumulator from :func:`numerics.acc_width`), and gives a stable hash
so that the device can say which build it is and a program compiled for another build is refused.

This module is pure Python (no Amaranth): the compiler and the host driver read it too.
"""

from __future__ import annotations

import dataclasses
import math

from ..sw.numerics import BIAS_BITS, MULTIPLIER_BITS, SHIFT_MAX, Op, RequantMode, acc_width

__all__ = ["ArrayConfig", "requant_lane_fields", "host_word_bytes", "check_int"]
#: Width of every shift field of a requantiser (``SHIFT_MAX`` fits).
_SHIFT_FIELD_BITS = SHIFT_MAX.bit_length()
#: Both activation buffers share one memory (:attr:`ArrayConfig.act_pingpong`) only while it is
#: this deep at most: an iCE40 block RAM's depth at 16 bits (an ECP5 one's at 36 bits is 512), so
#: its ``rows + 1`` copies take no more block RAMs than two memories' ``2 x rows`` would. (Deeper,
#: the 2x2 of `make demo` with its 512-word buffers took 19 block RAMs where two memories take 15.)
PINGPONG_MAX_WORDS = 256


def requant_lane_fields(mode, bias_bits):
    """One lane's requantisation parameters as ``(name, bits)``, least significant first: the
    order and widths of ``hw.requant.requant_param_layout`` (a test keeps the two equal), written
    here without Amaranth for the compiler."""
    mode = RequantMode(mode)
    fields = [("bias", bias_bits)]
    if mode is RequantMode.SHIFT:
        return fields + [("shift", _SHIFT_FIELD_BITS)]
    if mode is RequantMode.POW2X2:
        return fields + [("sign1", 2), ("shift1", _SHIFT_FIELD_BITS), ("sign2", 2),
                         ("shift2", _SHIFT_FIELD_BITS)]
    return fields + [("multiplier", MULTIPLIER_BITS), ("shift", _SHIFT_FIELD_BITS)]


def host_word_bytes(bits):
    """Bytes a memory word of ``bits`` takes in the host's view: a power of two, so that the host
    interface splits a byte offset into word and byte with no divider. Bytes above
    ``ceil(bits / 8)`` read as 0 and are ignored on writes."""
    return 1 << (math.ceil(bits / 8) - 1).bit_length()


def check_int(name, value, lo, hi=None):
    """``value`` must be an ``int`` (not a ``bool``) in ``[lo, hi]``; the errors name ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{name} must be {bounds}, not {value!r}")
    return value


def _bits(n):
    """Bits of an unsigned counter or address holding ``0 .. n - 1``."""
    return max(1, (n - 1).bit_length())


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayConfig:
    """Every parameter of one accelerator build (keyword-only, validated on construction).

    Parameters
    ----------
    pe : :class:`numerics.Op` or str
        What every PE computes: ``adder``, ``shift`` or ``mul``.
    rows, cols : int
        Array shape: ``rows`` output pixels times ``cols`` output channels per tile.
    x_bits : int
        Activation width (signed), 2 to 16. Adder weights share it.
    w_bits : int
        Weight width of ``mul`` builds (signed); ``adder`` builds must use ``x_bits``; ignored
        (kept at its default) by ``shift`` builds.
    p_min, p_max : int
        Exponent range of ``shift`` builds: a weight stores ``p - p_min`` in ``[0, p_max - p_min]``;
        a layer fits when its own ``p_max - p_min`` is at most the build's.
    max_k : int
        Longest reduction (terms per output) the accumulators hold without overflow; the accumulator
        width is ``acc_width(pe, max_k, ...)``.
    weight_depth : int
        Words of the weight memory (one word: ``cols`` weights); layer descriptors live there too.
    act_depth : int
        Words of each activation bank (one word: ``cols`` activations of one pixel).
    param_depth : int
        Words of the requantisation parameter memory (one word: the parameters of the
        ``lanes`` channels the requantiser takes in one transfer).
    requant_mode : :class:`numerics.RequantMode` or str
        The one requantisation mode the build has.
    bias_bits : int
        Width of the per-channel bias (signed), 2 to 32.
    counter_bits : int
        Width of the performance counters, 16 to 64.
    requant_lanes : int or None
        Values the requantiser takes per cycle (a divisor of ``cols``; ``None``: ``cols``). Fewer
        lanes cost proportionally less logic; a tile's ``rows * cols`` results then take
        ``rows * cols / requant_lanes`` cycles, hidden while that is at most ``K + 1``.
    requant_pipeline : str
        ``"deep"`` or ``"short"``: the requantiser's pipeline (``hw.requant.PIPELINES``). Short
        has a quarter fewer cells and a lower Fmax (above 50 MHz on an iCE40UP5K): for small
        devices, whose clock the rest of the design sets lower anyway.
    writeback_pipeline : str
        ``"deep"`` or ``"short"``: the write-back's pipeline (``hw.writeback``). Deep keeps its
        read address and its counters' ends in registers, registers the old word of a max-pool
        update before the merge (and a copy of it near the merge), writes from registers and
        forwards the words the four rows before it wrote (three more stages, ``8 x cols``
        activations of flip-flops: ``hw.writeback``, ``docs/accelerator.md``); short feeds the
        block RAM's output, through the read's transparency, straight into the merge, which set
        the whole ECP5 accelerator's clock. iCE40 builds use short: the flip-flops cost
        logic cells there and other paths set the clock.
    read_pipeline : str
        ``"deep"`` or ``"short"``: reads of the block RAMs. Deep registers the words before any
        logic uses them: the activation and weight words on their way to the array (two more
        stages: ``rows`` words and ``rows`` activations of flip-flops; the weight memory's
        accesses and words registered, and two words held while the array stalls) and the word
        the host reads before its byte is selected (its address too, and the words copied
        near the select: three more cycles per byte), takes the host's writes and run strobe
        through a register (a word lands two cycles after its last byte, and reads wait for it),
        and keeps the im2col generator's counter ends in registers; short selects from the block RAMs' outputs, which leaves
        little of an ECP5 cycle after their 5.6 ns from clock to data. iCE40 builds use short:
        the flip-flops cost logic cells there.
    act_banks : int or None
        Read banks of each activation buffer, a divisor of ``rows`` (``None``: ``rows``). Every
        bank is a whole copy of the buffer, so that the rows read their pixels' words at once;
        the block RAMs this takes (``2 x act_banks`` copies of ``act_depth`` words of ``cols``
        activations, two more with the deep write-back's bank) bound large arrays first. With
        fewer banks, ``G = rows / act_banks`` rows share one: when the reduction reaches a new
        activation word (every ``L = min(C_in, cols)`` k-steps) its rows' words are fetched, one
        row of each bank per cycle, into registers while the steps before it issue; that stalls
        the array ``max(0, G + 2 - L)`` cycles per word (``G + 2`` for a stage's first) and
        costs two words of flip-flops per row (the current and the next).
    act_entry_lanes : int or None
        Narrow banks (``None``: off): each row's bank holds ``E = act_entry_lanes`` activations
        per block-RAM word (a power of two from ``requant_lanes`` to ``cols``; one bank per
        row, so ``act_banks`` unset), and a step reads only the entry with its lane. A
        whole-word copy of each buffer takes the write-back's and the host's accesses; each word
        written there is copied into the row banks over the next ``ceil(cols / E)`` cycles
        (rows reach the write-back no faster: one per ``cols / requant_lanes`` cycles; host
        words one per ``ceil(cols * x_bits / 8)`` cycles at most, so ``ceil(cols / E)`` may not
        exceed that, which only activations narrower than a byte can make it do). So the
        rows read with no stall and no word registers (the shared banks' two words of
        flip-flops per row), in ``rows`` block RAMs of ``act_depth x`` :attr:`act_entries`
        entries per buffer.
    weight_relays : int or None
        With the deep read pipeline: the weight memory's accesses pass one more register, a
        copy per group of ``cols / weight_relays`` columns, before each column's copy of the
        access registers (``hw.memories.WeightMemory``, ``relays``; ``None``: none, a divisor
        of ``cols`` otherwise). A weight read then takes four cycles, and the read stage holds
        its activations a stage longer (``rows`` activations of flip-flops) and a third weight
        word while the array stalls. Without them one register's route reaches every column's
        copy across the die: a 32x32 ECP5 accelerator's slowest path (49-59 MHz).
    global_pool : bool
        Build the global average pooling unit (per-lane sums and a rounding shifter per lane).
    """
    pe: Op
    rows: int
    cols: int
    x_bits: int = 8
    w_bits: int = 8
    p_min: int = -4
    p_max: int = 3
    max_k: int = 1024
    weight_depth: int = 4096
    act_depth: int = 512
    param_depth: int = 256
    requant_mode: RequantMode = RequantMode.SHIFT
    bias_bits: int = BIAS_BITS
    counter_bits: int = 32
    requant_lanes: int | None = None
    requant_pipeline: str = "deep"
    writeback_pipeline: str = "deep"
    read_pipeline: str = "deep"
    act_banks: int | None = None
    act_entry_lanes: int | None = None
    weight_relays: int | None = None
    global_pool: bool = True

    def __post_init__(self):
        try:
            object.__setattr__(self, "pe", Op(self.pe))
        except ValueError:
            raise ValueError(f"pe must be one of {', '.join(repr(o.value) for o in Op)}, "
                             f"not {self.pe!r}") from None
        try:
            object.__setattr__(self, "requant_mode", RequantMode(self.requant_mode))
        except ValueError:
            raise ValueError(f"requant_mode must be one of "
                             f"{', '.join(repr(m.value) for m in RequantMode)}, "
                             f"not {self.requant_mode!r}") from None
        check_int("rows", self.rows, 1, 64)
        check_int("cols", self.cols, 1, 64)
        check_int("x_bits", self.x_bits, 2, 16)
        check_int("w_bits", self.w_bits, 2, 16)
        if self.pe is Op.ADDER and self.w_bits != self.x_bits:
            raise ValueError(f"w_bits must equal x_bits ({self.x_bits}) for adder PEs (weights share "
                             f"the activations' format), not {self.w_bits!r}")
        check_int("p_min", self.p_min, -32, 32)
        check_int("p_max", self.p_max, self.p_min, self.p_min + 30)
        check_int("max_k", self.max_k, 1, 1 << 20)
        check_int("weight_depth", self.weight_depth, 16, 1 << 20)
        check_int("act_depth", self.act_depth, 16, 1 << 20)
        check_int("param_depth", self.param_depth, 16, 1 << 20)
        check_int("bias_bits", self.bias_bits, 2, BIAS_BITS)
        check_int("counter_bits", self.counter_bits, 16, 64)
        if not isinstance(self.global_pool, bool):
            raise TypeError(f"global_pool must be a bool, not {self.global_pool!r}")
        for name in ("requant_pipeline", "writeback_pipeline", "read_pipeline"):
            if getattr(self, name) not in ("deep", "short"):
                raise ValueError(f"{name} must be 'deep' or 'short', not "
                                 f"{getattr(self, name)!r}")
        if self.act_banks is not None:
            check_int("act_banks", self.act_banks, 1, self.rows)
            if self.rows % self.act_banks:
                raise ValueError(f"act_banks must divide rows ({self.rows}), not "
                                 f"{self.act_banks!r}")
        if self.requant_lanes is not None:
            check_int("requant_lanes", self.requant_lanes, 1, self.cols)
            if self.cols % self.requant_lanes:
                raise ValueError(f"requant_lanes must divide cols ({self.cols}), not "
                                 f"{self.requant_lanes!r}")
        if self.act_entry_lanes is not None:
            check_int("act_entry_lanes", self.act_entry_lanes, 1, self.cols)
            if self.act_entry_lanes < self.lanes:
                raise ValueError(f"act_entry_lanes must be at least the requantiser's lanes "
                                 f"({self.lanes}), not {self.act_entry_lanes!r}")
            if self.act_entry_lanes & (self.act_entry_lanes - 1):
                raise ValueError(f"act_entry_lanes must be a power of two, not "
                                 f"{self.act_entry_lanes!r}")
            if self.banks != self.rows:
                raise ValueError(f"act_entry_lanes needs a bank per row (act_banks {self.rows} "
                                 f"or unset), not act_banks {self.act_banks!r}")
            # A word the host writes is copied into the row banks an entry a cycle, and the
            # host may write a word every ceil(bits / 8) cycles (its used bytes, a byte per
            # cycle): a word of more entries loses its last ones to the next
            # (hw.accelerator._copy_to_rows).
            word_bytes = math.ceil(self.act_word_bits / 8)
            entries = -(-self.cols // self.act_entry_lanes)
            if entries > word_bytes:
                why = (f"a word's copy into the row banks takes a cycle per entry ({entries}), "
                       f"and the host may write the next word after {word_bytes} (a byte per "
                       f"cycle)")
                least = self.act_entry_lanes
                while -(-self.cols // least) > word_bytes and least * 2 <= self.cols:
                    least *= 2
                if -(-self.cols // least) > word_bytes:
                    raise ValueError(
                        f"act_entry_lanes cannot be used with {self.x_bits}-bit activations and "
                        f"{self.cols} columns (even {least} lanes take "
                        f"{-(-self.cols // least)} entries): {why}; leave it unset")
                raise ValueError(
                    f"act_entry_lanes must be at least {least} with {self.x_bits}-bit "
                    f"activations and {self.cols} columns, not {self.act_entry_lanes!r}: {why}")
        if self.weight_relays is not None:
            check_int("weight_relays", self.weight_relays, 1, self.cols)
            if self.cols % self.weight_relays:
                raise ValueError(f"weight_relays must divide cols ({self.cols}), not "
                                 f"{self.weight_relays!r}")
            if self.read_pipeline != "deep":
                raise ValueError("weight_relays needs the deep read pipeline (its registered "
                                 "weight memory), not read_pipeline 'short'")

    # --- derived widths ----------------------------------------------------------------------

    @property
    def lanes(self):
        """Values the requantiser takes per cycle."""
        return self.cols if self.requant_lanes is None else self.requant_lanes

    @property
    def banks(self):
        """Read banks of each activation buffer."""
        return self.rows if self.act_banks is None else self.act_banks

    @property
    def narrow_banks(self):
        """Whether the row banks hold entries of :attr:`act_entry_lanes` (``act_entry_lanes``)."""
        return self.act_entry_lanes is not None

    @property
    def act_pingpong(self):
        """Whether one memory holds both activation buffers (short read and write-back pipelines,
        a bank per row, no narrow banks, both within :data:`PINGPONG_MAX_WORDS`): buffer ``b``
        is its half ``b``, read by the rows' banks and a bank of the write-back's and the
        host's (``hw.accelerator``)."""
        return (self.read_pipeline == "short" and self.writeback_pipeline == "short"
                and self.banks == self.rows and not self.narrow_banks
                and (1 << self.act_addr_bits) + self.act_depth <= PINGPONG_MAX_WORDS)

    @property
    def act_entry_bits(self):
        """One block-RAM word of a row bank: an entry of narrow banks, else a whole word."""
        return (self.act_entry_lanes if self.narrow_banks else self.cols) * self.x_bits

    @property
    def act_entries(self):
        """Row-bank entries per activation word: ``ceil(cols / act_entry_lanes)`` rounded up
        to a power of two (so an entry's address is the word's with the lane's high bits
        below it), 1 without narrow banks."""
        if not self.narrow_banks:
            return 1
        return 1 << (-(-self.cols // self.act_entry_lanes) - 1).bit_length()

    @property
    def pe_count(self):
        return self.rows * self.cols

    @property
    def widths(self):
        """Keyword arguments of :func:`numerics.acc_width` for this build's PEs."""
        if self.pe is Op.SHIFT:
            return {"x_bits": self.x_bits, "p_min": self.p_min, "p_max": self.p_max}
        return {"x_bits": self.x_bits, "w_bits": self.w_bits}

    @property
    def acc_bits(self):
        """Accumulator width: the least that never overflows for ``max_k`` terms."""
        return acc_width(self.pe, self.max_k, **self.widths)

    @property
    def exponent_bits(self):
        """Width of a shift weight's stored exponent ``p - p_min`` (``shift`` builds)."""
        return max(1, (self.p_max - self.p_min).bit_length())

    @property
    def weight_bits(self):
        """Bits of one weight in memory: a value, or a shift weight's sign (2) and exponent."""
        return 2 + self.exponent_bits if self.pe is Op.SHIFT else self.w_bits

    @property
    def weight_word_bits(self):
        return self.cols * self.weight_bits

    @property
    def weight_read_latency(self):
        """Cycles from a weight memory read to its word: the deep read pipeline registers the
        memory's accesses and its words (``hw.memories.WeightMemory``, ``registered``), and
        :attr:`weight_relays` the accesses once more."""
        if self.read_pipeline != "deep":
            return 1
        return 4 if self.weight_relays else 3

    @property
    def act_word_bits(self):
        return self.cols * self.x_bits

    @property
    def param_channel_bits(self):
        """One channel's requantisation parameters (:func:`requant_lane_fields`)."""
        return sum(bits for _, bits in requant_lane_fields(self.requant_mode, self.bias_bits))

    @property
    def param_word_bits(self):
        """One parameter word: ``lanes`` channels, the lowest channel in the lowest bits, so that
        the word read for a transfer is the requantiser's ``param`` operand as it is."""
        return self.lanes * self.param_channel_bits

    @property
    def weight_word_bytes(self):
        """Bytes a weight word takes in the host's view of the weight memory."""
        return host_word_bytes(self.weight_word_bits)

    @property
    def act_word_bytes(self):
        return host_word_bytes(self.act_word_bits)

    @property
    def param_word_bytes(self):
        return host_word_bytes(self.param_word_bits)

    @property
    def weight_bytes(self):
        """Host-visible size of the weight memory in bytes."""
        return self.weight_depth * self.weight_word_bytes

    @property
    def act_bytes(self):
        """Host-visible size of one activation buffer in bytes."""
        return self.act_depth * self.act_word_bytes

    @property
    def param_bytes(self):
        return self.param_depth * self.param_word_bytes

    @property
    def weight_addr_bits(self):
        return _bits(self.weight_depth)

    @property
    def act_addr_bits(self):
        return _bits(self.act_depth)

    @property
    def param_addr_bits(self):
        return _bits(self.param_depth)

    @property
    def count_bits(self):
        """Width of a stage's pixel and tile counts: up to 8 conv output pixels per activation
        word, room for the pixels that max pooling drops (a 2x2 window keeps one in four)."""
        return self.act_addr_bits + 3

    @property
    def memory_bits(self):
        """Total memory bits: weights, two activation buffers of :attr:`banks` copies each (with
        narrow banks, and a whole-word copy; with :attr:`act_pingpong` one memory of both,
        ``rows + 1`` copies), and the requantisation parameters."""
        act = 2 * self.banks * self.act_depth * self.act_entries * self.act_entry_bits
        if self.narrow_banks:
            act += 2 * self.act_depth * self.act_word_bits
        if self.act_pingpong:
            act = (self.rows + 1) * ((1 << self.act_addr_bits) + self.act_depth) \
                * self.act_word_bits
        return (self.weight_depth * self.weight_word_bits + act
                + self.param_depth * self.param_word_bits)

    # --- identity ----------------------------------------------------------------------------

    def to_dict(self):
        """The build parameters as a JSON-ready dict (what :attr:`build_hash` hashes).
        ``act_banks``, ``act_entry_lanes`` and ``weight_relays`` appear only when set: builds
        without them keep the hash (and the compiled programs) they had before they existed."""
        d = dataclasses.asdict(self)
        d["pe"] = self.pe.value
        d["requant_mode"] = self.requant_mode.value
        for name in ("act_banks", "act_entry_lanes", "weight_relays"):
            if d[name] is None:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise TypeError(f"Build parameters must be a dict, not {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown build parameters: {', '.join(sorted(unknown))}")
        return cls(**d)

    @property
    def build_hash(self):
        """``protocol.build_hash`` of :meth:`to_dict`: SHA-256 (hex) of its canonical JSON."""
        from ..sw.protocol import build_hash
        return build_hash(self.to_dict())

    def describe(self):
        """One line for reports."""
        return (f"{self.pe.value} {self.rows}x{self.cols}, {self.x_bits}-bit activations, "
                f"{self.acc_bits}-bit accumulators (max_k {self.max_k}), requant "
                f"{self.requant_mode.value}, weights {self.weight_bytes / 1024:g} KiB, "
                f"activations 2 x {self.banks} x {self.act_bytes / 1024:g} KiB"
                + (f" in entries of {self.act_entry_lanes} lanes, and a whole-word copy"
                   if self.narrow_banks else "")
                + (f", weight reads through {self.weight_relays} relays"
                   if self.weight_relays else ""))
