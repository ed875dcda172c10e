"""The accelerator's memories: the weight memory and replicated activation buffers.

- :class:`WeightMemory`: one port (the host writes it while the accelerator is idle; the sequencer
  reads descriptors and weights while it runs). On an iCE40 UltraPlus it is built from
  ``SB_SPRAM256KA`` blocks (16K x 16 bits each; Yosys does not infer them), elsewhere (simulation,
  ECP5) from an :class:`amaranth.lib.memory.Memory` that synthesis maps to block RAM. With
  ``registered`` every access passes a register before the memory and every word one after it
  (a copy of each per slice of its width), so a wide memory's block RAMs need not share one
  address net and their outputs need not cross the die in the cycle they appear; with
  ``relays`` the accesses pass one more register, a copy per group of slices, so that no
  single register reaches every slice's copy either.
- :class:`ReplicatedMemory`: ``banks`` copies of one memory behind one broadcast write port (or
  one per group of banks, fed with copies of one write), with one read port per bank. An activation buffer is ``ArrayConfig.banks`` copies (by default ``rows``, so
  that every array row reads its own im2col address in the same cycle; each write costs no time,
  only memory); bank 0's
  read port is transparent for the write port, so a read-modify-write of the address written in the
  same cycle sees the new value. The requantisation parameters are an instance of one bank, or
  of two with the deep requantiser (the second for host reads: ``hw.accelerator``).
  With ``collisions="undefined"`` the other reads of an address written in the same cycle return
  an undefined word, for users that never make such a read or discard its word: block RAMs give
  one (ECP5, iCE40), and the old word costs two flip-flops and a LUT per bit that Yosys adds.

Every read port is synchronous (data one cycle after the address, three for a registered
:class:`WeightMemory`, four with its relays) and keeps its data until the next read's, so a
stalled pipeline keeps its operands.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .array import REPLICA_SUFFIX
from .config import check_int as _check_int

__all__ = ["WeightMemory", "ReplicatedMemory", "SPRAM_DEPTH", "SPRAM_WIDTH", "SPRAM_BLOCKS",
           "BRAM_WORD_SUFFIX"]

#: One SB_SPRAM256KA: 16384 words of 16 bits; an iCE40UP5K has 4.
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
SPRAM_BLOCKS = 4
#: Registers whose names contain this hold a block RAM's word: nothing depends on their value
#: before the first read into them, so board builds drop their initial value
#: (``boards.report.yosys_input_commands``). With one, an iCE40 build emulates it with a flip-flop
#: and a LUT per bit (a block RAM's output starts undefined): 230 of the iCEBreaker 4x4's LUTs.
BRAM_WORD_SUFFIX = "_bram_word"


def _has_spram(platform):
    device = getattr(platform, "device", "") or ""
    return device.startswith("iCE40UP")


class WeightMemory(wiring.Component):
    """A single-port memory of ``depth`` words of ``width`` bits.

    Parameters
    ----------
    width, depth : int
    spram : bool or None
        Build from ``SB_SPRAM256KA`` blocks: ``None`` (default) when the platform is an iCE40
        UltraPlus, ``False`` never. Raises at elaboration when the blocks needed exceed
        :data:`SPRAM_BLOCKS`.
    registered : bool
        Every access passes a register before the memory, and every word read a free-running
        register after it: ``r_data`` shows the word three cycles after ``r_en``, and a write
        happens a cycle after ``w_en``. Without the first, one address goes to every block
        RAM of a wide memory, which a large array spreads across the die: on a 16x16 ECP5
        accelerator its 10.7 ns of routing set the clock. Without the second, a block RAM's
        5.6 ns from clock to data and then the route to its users across the die set an 8x8
        one's (91-94 MHz).
    slices : int
        Block-RAM memories of ``width // slices`` bits each, side by side, each with its own
        copy of the registers (kept apart in board builds), which the placer can put beside
        its block RAMs. Only with ``registered``.
    relays : int
        With ``registered``: every access passes one more register first, a copy
        per group of ``slices // relays`` slices, which feeds only the group's copies (``0``:
        none). Reads take a cycle more (four), and writes happen two cycles after ``w_en``.
        Without them the port reaches all the slices' copies in one cycle: on a 32x32 ECP5
        accelerator that route across the die, 10.6-11.1 ns, set the clock (49-59 MHz).

    Members
    -------
    addr : ``In(range(depth))``
    r_en : ``In(1)``
        Read ``addr``: ``r_data`` shows the word in the next cycle (three with ``registered``)
        and keeps it until the next read's word arrives.
    r_data : ``Out(width)``
    w_en : ``In(1)``
        Write ``w_data`` to ``addr`` (a write cycle reads nothing).
    w_data : ``In(width)``
    """

    def __init__(self, *, width, depth, spram=None, registered=False, slices=1, relays=0):
        self._width = _check_int("width", width, 1)
        self._depth = _check_int("depth", depth, 1)
        if spram not in (None, False, True):
            raise TypeError(f"spram must be None, False or True, not {spram!r}")
        if not isinstance(registered, bool):
            raise TypeError(f"registered must be a bool, not {registered!r}")
        _check_int("slices", slices, 1)
        if width % slices or (slices > 1 and not registered):
            raise ValueError(f"slices must divide the width ({width}) and needs registered=True, "
                             f"not {slices!r}")
        _check_int("relays", relays, 0, slices)
        if relays and (slices % relays or not registered):
            raise ValueError(f"relays must divide the slices ({slices}) and needs "
                             f"registered=True, not {relays!r}")
        self._spram = spram
        self._registered = registered
        self._slices = slices
        self._relays = relays
        super().__init__({
            "addr": In(range(depth)), "r_en": In(1), "r_data": Out(width),
            "w_en": In(1), "w_data": In(width),
        })

    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    registered = property(lambda self: self._registered)
    slices = property(lambda self: self._slices)
    relays = property(lambda self: self._relays)
    #: Cycles from ``r_en`` to its word on ``r_data``.
    latency = property(lambda self: (3 + bool(self._relays)) if self._registered else 1)

    def _output(self, m, word, suffix):
        """``word`` as ``r_data`` shows it: with ``registered`` a free-running copy, the one
        load of the memory's outputs (so the placer can keep it beside them)."""
        if not self._registered:
            return word
        out = Signal.like(word, name=f"out{suffix}", reset_less=True)
        m.d.sync += out.eq(word)
        return out

    def _inputs(self, m, suffix, ports):
        """The address, enables and write data (``ports``) as the memory sees them: as they
        are, or with ``registered`` a register of each (named with ``suffix``)."""
        if not self._registered:
            return ports
        regs = (Signal.like(self.addr, name=f"addr{suffix}", reset_less=True),
                Signal(name=f"r_en{suffix}"), Signal(name=f"w_en{suffix}"),
                Signal(len(ports[3]), name=f"w_data{suffix}", reset_less=True))
        m.d.sync += [reg.eq(port) for reg, port in zip(regs, ports)]
        return regs

    def spram_blocks(self):
        """SB_SPRAM256KA blocks an iCE40 build uses: (columns of 16 bits, banks of 16K words)."""
        return -(-self._width // SPRAM_WIDTH), -(-self._depth // SPRAM_DEPTH)

    def elaborate(self, platform):
        use_spram = self._spram if self._spram is not None else _has_spram(platform)
        cols, banks = self.spram_blocks()
        if use_spram and cols * banks > SPRAM_BLOCKS:
            raise ValueError(f"A weight memory of {self._depth} x {self._width} bits needs "
                             f"{cols * banks} SB_SPRAM256KA blocks; the iCE40UP5K has "
                             f"{SPRAM_BLOCKS}: use a smaller weight_depth")
        m = Module()
        if not use_spram:
            # A write cycle reads nothing, so no read sees a write: collisions are undefined (as
            # in ReplicatedMemory, which says why a register follows an asynchronous read).
            part = self._width // self._slices
            group = self._slices // max(self._relays, 1)
            # Each group of slices' accesses: the ports, or with relays a register of their own.
            groups = []
            for g in range(max(self._relays, 1)):
                bits = group * part
                ports = (self.addr, self.r_en, self.w_en, self.w_data[g * bits:][:bits])
                groups.append(self._inputs(m, f"_relay{REPLICA_SUFFIX}{g}", ports)
                              if self._relays else ports)
            for i in range(self._slices):
                mem = m.submodules[f"mem{i}" if self._slices > 1 else "mem"] = Memory(
                    shape=unsigned(part), depth=self._depth, init=[], attrs={"no_rw_check": 1})
                wp = mem.write_port()
                rp = mem.read_port(domain="comb")
                *control, w_data = groups[i // group]
                addr, r_en, w_en, w_data = self._inputs(
                    m, f"{REPLICA_SUFFIX}{i}", (*control, w_data[i % group * part:][:part]))
                word = Signal(part, name=f"word{i}", reset_less=True)
                with m.If(r_en & ~w_en):
                    m.d.sync += word.eq(rp.data)
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(w_data), wp.en.eq(w_en), rp.addr.eq(addr),
                             self.r_data[i * part:][:part].eq(
                                 self._output(m, word, f"{REPLICA_SUFFIX}{i}"))]
            return m
        ports = (self.addr, self.r_en, self.w_en, self.w_data)
        if self._relays:                  # (one relay: the blocks are 4 at most, side by side)
            ports = self._inputs(m, "_relay", ports)
        addr, r_en, w_en, w_data = self._inputs(m, "", ports)
        low = SPRAM_DEPTH.bit_length() - 1
        bank = Signal(range(max(2, banks)))
        read_bank = Signal.like(bank)
        m.d.comb += bank.eq(addr[low:] if banks > 1 else 0)
        outs = []
        for b in range(banks):
            select = bank == b
            word = Signal(cols * SPRAM_WIDTH, name=f"bank{b}_out")
            outs.append(word)
            for c in range(cols):
                m.submodules[f"spram_{b}_{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:low], i_DATAIN=w_data[c * SPRAM_WIDTH:][:SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4), i_WREN=w_en & select,
                    i_CHIPSELECT=(w_en | r_en) & select, i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=word[c * SPRAM_WIDTH:][:SPRAM_WIDTH])
        # The blocks' outputs are only trusted in the cycle after a read: hold them otherwise.
        was_read = Signal()
        held, word = Signal(self._width), Signal(self._width)
        m.d.sync += [was_read.eq(r_en & ~w_en), read_bank.eq(bank), held.eq(word)]
        fresh = Signal(cols * SPRAM_WIDTH)
        with m.Switch(read_bank):
            for b in range(banks):
                with m.Case(b):
                    m.d.comb += fresh.eq(outs[b])
        m.d.comb += [word.eq(Mux(was_read, fresh[:self._width], held)),
                     self.r_data.eq(self._output(m, word, ""))]
        return m


def _per_port(shape, ports):
    return shape if ports == 1 else data.ArrayLayout(shape, ports)


class ReplicatedMemory(wiring.Component):
    """``banks`` copies of a ``depth`` x ``width`` memory: one broadcast write port, one read port
    per bank (bank 0 transparent for the write when ``transparent``).

    ``collisions``: what a read of the address written in the same cycle returns (other than
    bank 0's transparent one): ``"old"`` the word before the write, ``"undefined"`` any word
    (simulation still gives the old one).

    With ``write_ports`` > 1 the banks are written in that many groups of consecutive banks (bank
    ``b`` in group ``b * write_ports // banks``), each from its own port: copies of one write, so
    that no single net reaches every bank (the callers' copies are registers of their own).

    Members
    -------
    w_en, w_addr, w_data : ``In``
        One write, to every bank; with ``write_ports`` > 1, arrays of one per group.
    r_en : ``In(banks)``
        Per-bank read enables (bank ``b`` keeps its ``r_data`` while bit ``b`` is low).
    r_addr : ``In(ArrayLayout(range(depth), banks))``
    r_data : ``Out(ArrayLayout(width, banks))``
    """

    COLLISIONS = ("old", "undefined")

    def __init__(self, *, banks, width, depth, transparent=True, collisions="old",
                 write_ports=1):
        self._banks = _check_int("banks", banks, 1)
        self._write_ports = _check_int("write_ports", write_ports, 1, self._banks)
        self._transparent = bool(transparent)
        if collisions not in self.COLLISIONS:
            raise ValueError(f"collisions must be one of {', '.join(self.COLLISIONS)}, "
                             f"not {collisions!r}")
        self._collisions = collisions
        self._width = _check_int("width", width, 1)
        self._depth = _check_int("depth", depth, 1)
        addr = unsigned(max(1, (depth - 1).bit_length()))
        ports = self._write_ports
        super().__init__({
            "w_en": In(ports), "w_addr": In(_per_port(addr, ports)),
            "w_data": In(_per_port(unsigned(width), ports)),
            "r_en": In(banks), "r_addr": In(data.ArrayLayout(addr, banks)),
            "r_data": Out(data.ArrayLayout(unsigned(width), banks)),
        })

    banks = property(lambda self: self._banks)
    width = property(lambda self: self._width)
    depth = property(lambda self: self._depth)
    write_ports = property(lambda self: self._write_ports)

    def elaborate(self, platform):
        m = Module()
        ports = self._write_ports
        for b in range(self._banks):
            transparent = b == 0 and self._transparent
            undefined = self._collisions == "undefined" and not transparent
            # Undefined collisions: an asynchronous read and a register behind it, which Yosys'
            # memory_dff merges into the block RAM's synchronous port honouring `no_rw_check`
            # (it ignores that attribute on a port that is synchronous already).
            mem = m.submodules[f"bank{b}"] = Memory(
                shape=unsigned(self._width), depth=self._depth, init=[],
                attrs={"no_rw_check": 1} if undefined else None)
            wp = mem.write_port()
            if ports == 1:
                w_en, w_addr, w_data = self.w_en, self.w_addr, self.w_data
            else:
                g = b * ports // self._banks
                w_en, w_addr, w_data = self.w_en[g], self.w_addr[g], self.w_data[g]
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data), wp.en.eq(w_en)]
            if undefined:
                rp = mem.read_port(domain="comb")
                word = Signal(self._width, name=f"bank{b}{BRAM_WORD_SUFFIX}", reset_less=True)
                with m.If(self.r_en[b]):
                    m.d.sync += word.eq(rp.data)
                m.d.comb += self.r_data[b].eq(word)
            else:
                rp = mem.read_port(transparent_for=(wp,) if transparent else ())
                m.d.comb += [rp.en.eq(self.r_en[b]), self.r_data[b].eq(rp.data)]
            m.d.comb += rp.addr.eq(self.r_addr[b])
        return m
