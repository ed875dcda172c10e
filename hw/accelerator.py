"""The accelerator core: memories, im2col, the array, requantiser, write-back and sequencer.

Data path of one stage (``docs/accelerator.md`` has the picture and the cycle accounting)::

    Im2colGenerator --steps--> read stage --x, w, last--> SystolicArray --rows--> RequantFeeder
         |  (addresses)          |  (activation banks + weight memory: one cycle, three   |
         |                       |   with the deep read pipeline; rows sharing a bank      |
         |                       |   fetch each new word ahead into word registers; narrow |
         |                       |   banks read the entry with the step's lane)            |
         |                       |                                                 Requantiser
     weight memory      activation buffer stage % 2                                          |
                                               activation buffer (stage + 1) % 2 <-- Writeback

Host interface: the device side of ``hw.framer.DeviceSignature`` (the host link's command framer
plugs straight in; ``sw.compiler.REGIONS`` numbers the regions): byte writes, byte reads (two cycles
from address to byte, six with the deep read pipeline), the run strobe with its 32-bit argument,
``busy``/``done``/``error`` and the counters (total, busy PE and stall cycles). Memories are
word-wide:
a region shows word ``i`` at bytes ``i * stride .. i * stride + stride - 1`` (``stride`` a power of
two, ``hw.config.host_word_bytes``), least significant byte first. A word is written when its last
used byte is written, with the bytes written just before it as its lower bytes (so write words
whole, in order). Memory
regions are for use while the accelerator is idle: writes are ignored and reads undefined while it
runs; the ``counters`` region may be read at any time.

Run argument: bits 0-7 the first stage, bits 8-15 the number of stages (0: up to the last one).
"""

from __future__ import annotations

import itertools
import typing

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect

from ..sw import protocol as P
from ..sw.compiler import PERF_STAGES, REGIONS
from ..sw.numerics import Op
from .array import REPLICA_SUFFIX, TILE, SystolicArray
from .config import ArrayConfig, host_word_bytes
from .framer import DeviceSignature, WriteLayout
from .im2col import Im2colGenerator
from .memories import ReplicatedMemory, WeightMemory
from .requant import PIPELINES, Requantiser
from .sequencer import RequantFeeder, Sequencer
from .skid import skid
from .writeback import Writeback

__all__ = ["Accelerator", "AcceleratorTop", "accelerator_regions", "accelerator_identity"]


class _ReadStage(typing.NamedTuple):
    """What a read stage gives the core: ``adv`` (driven by the core: the issued step is taken,
    by the array or the deep pipeline's skid register, or none is issued), the source buffer's
    bank read enables, the weight memory's read for the array (address, enable), ``in_flight``
    (steps between the generator and the array) and the step issued: valid, last, busy PEs,
    per-row activations (0 in a row that is not valid: padding), weights.

    With the deep read pipeline also ``row_adv_next`` (driven by the core: ``adv``'s value in
    the next cycle, one per row, for the row's registered copy of ``adv``), ``col_take_next``
    (driven by the core: whether the last stage's step is taken in the next cycle, one per
    column, for the column's registered copy), ``issue_last_next`` (the issued step's last in
    the next cycle) and ``issue_feed`` (the valid the last stage takes as it advances); None
    otherwise."""
    adv: Signal
    src_read: object
    w_addr: object
    w_read: object
    in_flight: object
    issue: tuple
    row_adv_next: tuple = None
    col_take_next: tuple = None
    issue_last_next: object = None
    issue_feed: object = None


def accelerator_regions(config):
    """The core's host-visible memory regions (``protocol.Region``), for the identify block."""
    sizes = {"weights": config.weight_bytes, "params": config.param_bytes,
             "act0": config.act_bytes, "act1": config.act_bytes,
             "counters": 4 * PERF_STAGES * host_word_bytes(config.counter_bits)}
    # The memory regions' ports belong to a run while it goes (the host is served only while idle,
    # so a READ then is refused); the counters are registers the host may watch live.
    return tuple(P.Region(REGIONS[name], name, size,
                          P.Access.READ | P.Access.LIVE if name == "counters" else P.Access.RW)
                 for name, size in sizes.items())


def accelerator_identity(config, *, clk_hz, baud, max_payload):
    """The identify block of a device built around the core: its regions and the build parameters
    (``ArrayConfig.to_dict``; programs carry the same ``build_hash``)."""
    return P.Identity(max_payload=max_payload, clk_hz=int(clk_hz), baud=int(baud),
                      regions=accelerator_regions(config), build=config.to_dict(),
                      counter_width=config.counter_bits)


class Accelerator(wiring.Component):
    """The accelerator core for one build (:class:`hw.config.ArrayConfig`).

    Members
    -------
    bus : ``In(hw.framer.DeviceSignature(counter_width=counter_bits))``
        Memory access, run control, status and counters (see the module docstring).
    issue_steps : ``Out(counter_bits)``
        k-steps the array took in the current run (the fourth counter; per stage in the
        ``counters`` region).
    """

    def __init__(self, *, config):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        self._config = config
        cb = config.counter_bits
        super().__init__({
            "bus": In(DeviceSignature(counter_width=cb)),
            "issue_steps": Out(cb),
        })

    config = property(lambda self: self._config)


    def make_array(self):
        c = self._config
        # The deep read pipeline keeps a register of the array's ready (its issued step's skid).
        ready_next = c.read_pipeline == "deep"
        if c.pe is Op.SHIFT:
            return SystolicArray(kind=c.pe, rows=c.rows, cols=c.cols, x_bits=c.x_bits,
                                 p_min=c.p_min, p_max=c.p_max, max_length=c.max_k,
                                 ready_next=ready_next)
        return SystolicArray(kind=c.pe, rows=c.rows, cols=c.cols, x_bits=c.x_bits,
                             w_bits=c.w_bits, max_length=c.max_k, ready_next=ready_next)

    def _issued_weights(self, m, wmem, w_read, col_take):
        """The deep read pipeline's weights for the step in its last stage.

        The registered weight memory delivers a step's word ``L = wmem.latency`` cycles (three,
        four with relays) after its read (``w_read``), when the step reaches the last of the
        ``L`` stages if nothing stalled it. While the stages wait (the step not taken), the
        words of the ``L`` steps in them may still arrive (the stall can begin with the last
        stage's step as its word arrives: the skid register in front of the array takes one
        step more): the oldest ``L - 1`` wait in registers, the newest stays on the memory's
        output (no read happens while the stages wait), until the step before theirs is taken.

        Each column's words wait in registers of their own, enabled by the column's copy of
        the take (``col_take``, `_take_copies`) and its own arrival flag and count of waiting
        words, which it keeps from these: one enable per held word reached all 256 of its
        flip-flops across a 32x32 ECP5 accelerator (485 endpoints late for 100 MHz, `addershift
        build --late-endpoints`), and one count shared by the columns was late at 1987978."""
        C, L = self._config.cols, wmem.latency
        # A read's word reaches r_data L cycles later: its flag, L - 1 cycles late, is the
        # columns' next arrival.
        arrives_next = w_read
        for _ in range(L - 1):
            earlier, arrives_next = arrives_next, Signal()
            m.d.sync += arrives_next.eq(earlier)
        part = len(wmem.r_data) // C
        issued = []
        for c, take in enumerate(col_take):
            copy = f"{REPLICA_SUFFIX}{c}"
            col_arriving = Signal(name=f"arriving{copy}")
            count = Signal(range(L + 1), name=f"count{copy}")        # words waiting
            count_next = Signal.like(count, name=f"count_next{copy}")
            waiting = Signal(name=f"waiting{copy}")
            m.d.comb += count_next.eq(count + col_arriving - take)
            m.d.sync += [col_arriving.eq(arrives_next), count.eq(count_next),
                         waiting.eq(count_next != 0)]
            word = wmem.r_data[c * part:][:part]
            held = [Signal(part, name=f"held_weights{i}_{c}", reset_less=True)
                    for i in range(L - 1)]
            # The waiting words in order are the held ones, then r_data's (arriving, or the L-th).
            with m.If(take):
                # (below `count` the held words move down; the one at `count - 1` takes r_data's)
                m.d.sync += [reg.eq(Mux(i + 1 < count, held[i + 1], word)
                                    if i + 1 < L - 1 else word)
                             for i, reg in enumerate(held)]
            with m.Elif(col_arriving):
                with m.Switch(count):
                    for i, reg in enumerate(held):
                        with m.Case(i):
                            m.d.sync += reg.eq(word)
            issued.append(Mux(waiting, held[0], word))
        return Cat(*issued)

    @staticmethod
    def _take_copies(m, col_take_next):
        """Registers equal in every cycle to whether the deep read pipeline's last stage's step
        is taken (its valid and ``adv``), one per column for the column's held weights, each
        loaded with its column's next value (``col_take_next``; after a reset no step is
        issued): from the central ``adv``'s next value (behind the last stage's valid) they
        were a 32x32 ECP5 accelerator's slowest path at 1987978 (12.4 ns, seeds 2 and 3)."""
        copies = [Signal(name=f"take{REPLICA_SUFFIX}{c}") for c in range(len(col_take_next))]
        m.d.sync += [c.eq(take_next) for c, take_next in zip(copies, col_take_next)]
        return copies

    @staticmethod
    def _adv_copies(m, row_adv_next):
        """Registers equal to the read stages' ``adv`` in every cycle, one per row for the row's
        stage registers and block RAM read enables, each loaded with its row's ``adv``'s next
        value (``row_adv_next``; after a reset no step is issued and ``adv`` is 1): ``adv``, a
        LUT of the last stage's valid and the skid register's, reached thousands of enables
        across a 32x32 ECP5 accelerator (13.3 ns to the farthest)."""
        copies = [Signal(init=1, name=f"adv{REPLICA_SUFFIX}{k}")
                  for k in range(len(row_adv_next))]
        m.d.sync += [c.eq(adv_next) for c, adv_next in zip(copies, row_adv_next)]
        return copies

    @staticmethod
    def _register_step(m, adv, step, name, row_adv):
        """One more stage of the read pipeline: a step (valid, last, busy PEs, per-row
        activations) registered, advancing with ``adv`` as every stage does (each row's
        activation with the row's copy of it, ``row_adv``). Data registers (here and below) have
        no reset: its net reaches every register that has one, and on a 16x16 ECP5 accelerator
        it set the clock (57.6 MHz). Returns the stage's step and its valid and last in the
        next cycle and its valid as it advances."""
        valid, last, busy, x = step
        regs = (Signal(name=f"{name}_valid"), Signal(name=f"{name}_last"),
                Signal.like(busy, name=f"{name}_busy", reset_less=True))
        xs = [Signal.like(v, name=f"{name}_x{r}", reset_less=True) for r, v in enumerate(x)]
        with m.If(adv):
            m.d.sync += [reg.eq(v) for reg, v in zip(regs, (valid, last, busy))]
        for reg, v, enable in zip(xs, x, row_adv):
            with m.If(enable):
                m.d.sync += reg.eq(v)
        return (*regs, xs), (Mux(adv, valid, regs[0]), Mux(adv, last, regs[1])), valid

    def _later_stages(self, m, adv, step, wmem, step_next, feed, row_adv):
        """The deep read pipeline's stages after the third, one per cycle the weight memory's
        read takes beyond three (its relays), so that the step and its weights still meet.
        Returns the last stage's step, its valid and last in the next cycle and its valid as it
        advances (``step_next`` and ``feed``, the third stage's, when there are none) and
        whether any of these stages holds one."""
        valids = []
        for k in range(4, wmem.latency + 1):
            step, step_next, feed = self._register_step(m, adv, step, f"s{k}", row_adv)
            valids.append(step[0])
        return step, step_next, feed, Cat(*valids).any() if valids else 0

    def _replicated_read(self, m, gen, bufs, wmem, src, lanes):
        """The read stage with a bank per row: every row's word read in the cycle the step
        leaves the generator. With narrow banks (``ArrayConfig.act_entry_lanes``) a row reads
        the entry that holds the step's lane (``lanes`` is an entry's): the lane's high bits
        go below the word's address, its low bits select the activation from the entry."""
        cfg = self._config
        R = cfg.rows
        entry_bits = (lanes.length - 1).bit_length() if cfg.narrow_banks else 0
        address_bits = (cfg.act_entries - 1).bit_length()

        def in_entry(lane):
            """The lane's place in its entry (its entry's index is above the bits)."""
            return lane[:entry_bits] if cfg.narrow_banks else lane
        # One cycle: the block RAMs' outputs go through the buffer and lane selects into the
        # array. With the deep read pipeline three: the words are registered first (a block
        # RAM's 5.6 ns from clock to data, then the selects, set the ECP5 accelerator's clock).
        # The stages advance together, so a stalled array keeps every step in place (the
        # memories keep their outputs while their read enable is low).
        adv = Signal()
        m.d.comb += gen.o.ready.eq(adv)
        step_valid, step = gen.o.valid, gen.o.payload
        s1_valid, s1_last = Signal(), Signal()
        # (Data: no reset. A step's rows, lane and busy PEs matter only while it is valid.)
        s1_rows = Signal(R, reset_less=True)
        s1_busy = Signal.like(step.busy, reset_less=True)
        deep_pipeline = cfg.read_pipeline == "deep"
        if deep_pipeline:
            row_adv_next = tuple(Signal(name=f"adv_next_row{r}") for r in range(R))
            row_adv = self._adv_copies(m, row_adv_next)
        else:
            row_adv = [adv] * R
        with m.If(adv):
            m.d.sync += [s1_valid.eq(step_valid), s1_last.eq(step.last), s1_busy.eq(step.busy)]
        # (Each row's valid bit with the row's copy of `adv`: the central `adv` reaching the
        # 32 rows' bits was late on a 32x32 ECP5 accelerator at 1987978, 10.6 ns.)
        for r in range(R):
            with m.If(row_adv[r]):
                m.d.sync += s1_rows[r].eq(step.valid[r])
        # (Deep: each row's entry from its own copy of the lane, `step_layout`.)
        entries = [(step.row_lane[r] if deep_pipeline else step.lane)[entry_bits:][:address_bits]
                   for r in range(R)]
        if cfg.act_pingpong:
            # (One memory of both buffers: a row reads its bank, 1 + r, in the source's half.)
            act, = bufs
            m.d.comb += [act.r_addr[1 + r].eq(Cat(step.addr[r], src)) for r in range(R)]
        else:
            for buf in bufs:
                m.d.comb += [buf.r_addr[r].eq(Cat(entries[r], step.addr[r])) for r in range(R)]
        if deep_pipeline:
            # Then each buffer's words registered before the buffer select, and the selected
            # activations once more, as the weight memory's word is (`_issued_weights`). A
            # register that is a block RAM output's only load moves into the block RAM in ECP5
            # builds (boards.outreg), where it takes 1 ns from clock to data instead of 5.8 ns.
            # The buffer and lane select is one-hot (2 * cols bits), a copy per row: one
            # binary select register reached every select of every row (5.2 ns across the die
            # on a 16x12 ECP5 accelerator), and a binary select of a buffer and 12 lanes took
            # five LUT levels after the block RAMs' route (that build's next slowest path).
            # A row that is not valid chooses nothing (its activation is 0). Each buffer's
            # choice goes into a register of its own, and the two are ORed as the step issues
            # (one of them is 0): one select tree over both buffers' words, the two buffers'
            # block RAMs far apart, took 6.8 ns of routing on a 16x12 ECP5 accelerator (99.4
            # MHz, seed 2).
            # The choice is a register of stage 1, set as the step enters it: chosen at stage 1
            # from the lane's register and the buffer select (the sequencer's `stage`, 5.4 ns
            # of routing away), one LUT reaching the 32 rows' registers was a 32x32 ECP5
            # accelerator's slowest path (11.0 ns). `src` holds still while a stage's steps
            # are read.
            C = lanes.length
            choice = Signal(2 * C, name="s1_choice", reset_less=True)
            with m.If(adv):
                m.d.sync += choice.eq(Mux(src, 1 << C, 1) << in_entry(step.lane))
            s2_choice = [Signal(2 * C, name=f"s2_choice{REPLICA_SUFFIX}{r}", reset_less=True)
                         for r in range(R)]
            s2_words = [[Signal(len(buf.r_data[r]), name=f"s2_act{b}_word{r}", reset_less=True)
                         for r in range(R)] for b, buf in enumerate(bufs)]
            for r in range(R):
                with m.If(row_adv[r]):
                    m.d.sync += s2_choice[r].eq(Mux(s1_rows[r], choice, 0))
                    m.d.sync += [s2_words[b][r].eq(buf.r_data[r]) for b, buf in enumerate(bufs)]
            xb = Shape.cast(lanes.elem_shape).width
            s3_picked = [[Signal(xb, name=f"s3_act{b}_x{r}", reset_less=True) for r in range(R)]
                         for b in range(2)]
            for b, r in itertools.product(range(2), range(R)):
                picked = 0
                for k in range(C):
                    picked |= Mux(s2_choice[r][b * C + k], s2_words[b][r][k * xb:][:xb], 0)
                with m.If(row_adv[r]):
                    m.d.sync += s3_picked[b][r].eq(picked)
            s2, _, _ = self._register_step(m, adv, (s1_valid, s1_last, s1_busy, []), "s2", [])
            s3, step_next, feed = self._register_step(m, adv, s2, "s3", [])
            x = [s3_picked[0][r] | s3_picked[1][r] for r in range(R)]
            last, step_next, feed, later = self._later_stages(m, adv, (*s3[:3], x), wmem,
                                                              step_next, feed, row_adv)
            col_take_next = tuple(Signal(name=f"take_next_col{c}") for c in range(cfg.cols))
            col_take = self._take_copies(m, col_take_next)
            issue = (*last, self._issued_weights(m, wmem, adv & step_valid, col_take))
            in_flight = s1_valid | s2[0] | s3[0] | later
            deep = {"row_adv_next": row_adv_next, "col_take_next": col_take_next,
                    "issue_last_next": step_next[1], "issue_feed": feed}
        else:
            s1_lane = Signal.like(step.lane, reset_less=True)
            with m.If(adv):
                m.d.sync += s1_lane.eq(step.lane)
            act_words = [lanes(bufs[0].r_data[1 + r] if cfg.act_pingpong else
                               Mux(src, bufs[1].r_data[r], bufs[0].r_data[r]))
                         for r in range(R)]
            x = [Mux(s1_rows[r], w[in_entry(s1_lane)] if lanes.length > 1 else w[0], 0)
                 for r, w in enumerate(act_words)]
            issue = (s1_valid, s1_last, s1_busy, x, wmem.r_data)
            in_flight = s1_valid
            deep = {}
        return _ReadStage(adv=adv, src_read=Cat(*row_adv), w_addr=step.w_addr, w_read=adv,
                          in_flight=in_flight, issue=issue, **deep)

    def _shared_read(self, m, gen, bufs, wmem, src, lanes):
        """The read stage with ``rows / banks`` rows per bank (``ArrayConfig.act_banks``).

        A step that starts a new activation word (lane 0; the other lanes' steps use the same
        words) hands its rows' addresses to the fetcher as it enters a queue of steps; once the
        ``next`` word registers are free, the fetcher reads one row of each bank's group per
        cycle into them, and the step, at the queue's head, swaps them into the ``current``
        ones the array's operands are selected from. The queue (``G + 3`` steps, ``G`` the rows
        per bank: a full queue takes no write in the cycle it is read) lets a fetch run while
        the steps before it issue: a word of at least ``G + 2`` lanes costs no stall. With the
        deep read pipeline the queue's head is a register (``SyncFIFOBuffered``; a step then
        takes a cycle more through an empty queue, hidden behind its word's fetch): the head
        read from the queue's LUT RAM, through the pop into the weight memory's read enables
        across the die, set a 16x16 ECP5 accelerator's clock (97.5 MHz).

        The swap happens in the cycle after that step leaves the queue, on a register copied per
        row (on a 16x16 ECP5 accelerator the swap's enable, the array's ``i.ready`` through the
        queue's pop to all 2,048 word flip-flops, set the clock: 51.6 MHz). In that cycle the
        step, the only one that may be past the queue, takes lane 0 of the ``next`` words."""
        cfg = self._config
        R, G = cfg.rows, cfg.rows // cfg.banks
        # With the deep read pipeline the generator's steps come through its skid register, so
        # its counters step on registers, not on the queue's level and the fetcher's state:
        # that handshake through the generator's step into its registers copied per row
        # (8.4-8.7 ns of routing) set the clock of 16x16 and 16x32 ECP5 accelerators (93.8 and
        # 94.2 MHz).
        offer_valid, p, offer_ready = gen.o.valid, gen.o.payload, gen.o.ready
        step = data.StructLayout({"rows": R, "lane": len(p.lane), "first": 1, "last": 1,
                                  "busy": len(p.busy), "w_addr": len(p.w_addr)})
        queue = SyncFIFOBuffered if cfg.read_pipeline == "deep" else SyncFIFO
        m.submodules.steps = steps = queue(width=step.size, depth=G + 3)
        head = step(steps.r_data)

        # --- fetcher: one lane-0 step's words into the `next` registers --------------------
        # `armed`: fetch_addr holds a lane-0 step's addresses whose words are not all read. The
        # reads wait while `next` still holds words the queue's head has not swapped in, so a
        # step can be admitted (and its addresses taken) before the previous swap.
        armed, next_full = Signal(), Signal()
        fetch_addr = [Signal.like(p.addr[r], name=f"fetch_addr{r}", reset_less=True)
                      for r in range(R)]
        phase = Signal(range(G + 1))      # rows of each group read so far
        # One-hot: the row of each group whose word is read, then the one whose word arrives (a
        # copy per bank: each bit of `fill` enables a word's flip-flops).
        read_row = [Signal(G, name=f"read_row{REPLICA_SUFFIX}{bank}") for bank in range(cfg.banks)]
        fill = [Signal(G, name=f"fill{REPLICA_SUFFIX}{bank}") for bank in range(cfg.banks)]
        current = [Signal(lanes, name=f"word{r}", reset_less=True) for r in range(R)]
        upcoming = [Signal(lanes, name=f"next_word{r}", reset_less=True) for r in range(R)]
        new_word = p.first
        tail = step(steps.w_data)
        m.d.comb += [
            offer_ready.eq(steps.w_rdy & (~new_word | ~armed)),
            steps.w_en.eq(offer_valid & offer_ready),
            tail.rows.eq(p.valid.as_value()), tail.lane.eq(p.lane), tail.first.eq(p.first),
            tail.last.eq(p.last),
            tail.busy.eq(p.busy), tail.w_addr.eq(p.w_addr),
        ]
        fetching, read = Signal(), Signal()
        m.d.comb += [fetching.eq(armed & ~next_full), read.eq(fetching & (phase != G))]
        with m.If(steps.w_en & new_word):
            m.d.sync += [armed.eq(1), phase.eq(0)]
            m.d.sync += [reg.eq(addr) for reg, addr in zip(fetch_addr, p.addr)]
        with m.Elif(read):
            # Each group's addresses shift toward its first row's register, the bank's read
            # address: no select between register and block RAM (on a 16x16 ECP5 accelerator
            # `phase` through a select of the group's addresses into a block RAM 7.4 ns across
            # the die set the clock: 66.5 MHz).
            m.d.sync += [fetch_addr[bank * G + g].eq(fetch_addr[bank * G + g + 1])
                         for bank in range(cfg.banks) for g in range(G - 1)]
        with m.If(fetching):
            m.d.sync += phase.eq(phase + 1)
            with m.If(phase == G):
                m.d.sync += [armed.eq(0), next_full.eq(1)]
        # Each bank's word passes a free-running register per buffer before the buffer select,
        # its block RAM's output register in ECP5 builds (boards.outreg): the select straight
        # behind the block RAM (5.6 ns from clock to data) set a 16x16 ECP5 accelerator's clock
        # (97.6 MHz). The words land a cycle later, `fill` a cycle later with them: the last one
        # still lands in the cycle before the swap that takes it (`next_full` is set as it is
        # read), and a fetch begins only after the swap.
        m.d.sync += [f.eq(Mux(read, 1 << phase, 0)) for f in read_row]
        m.d.sync += [f.eq(r) for f, r in zip(fill, read_row)]
        for bank in range(cfg.banks):
            m.d.comb += [buf.r_addr[bank].eq(fetch_addr[bank * G]) for buf in bufs]
            fetched = [Signal(len(buf.r_data[bank]), name=f"fetched_act{b}_{bank}",
                              reset_less=True) for b, buf in enumerate(bufs)]
            m.d.sync += [reg.eq(buf.r_data[bank]) for reg, buf in zip(fetched, bufs)]
            word = Mux(src, fetched[1], fetched[0])
            for g in range(G):
                with m.If(fill[bank][g]):
                    m.d.sync += upcoming[bank * G + g].eq(word)

        # --- issue: the queue's head, its weights read as it leaves ------------------------
        adv, pop = Signal(), Signal()
        m.d.comb += [pop.eq(adv & steps.r_rdy & (~head.first | next_full)),
                     steps.r_en.eq(pop)]
        # `next` is free once the step leaves (the fetcher's first word arrives three cycles
        # later, after the swap has copied it).
        with m.If(pop & head.first):
            m.d.sync += next_full.eq(0)
        # Per row: the swap's enable, and the lane that selects the row's operand (each lane bit
        # reaches every select of the row's word), copies kept apart in board builds.
        swap = [Signal(name=f"swap{REPLICA_SUFFIX}{r}") for r in range(R)]
        m.d.sync += [s.eq(pop & head.first) for s in swap]
        for r in range(R):
            with m.If(swap[r]):
                m.d.sync += current[r].eq(upcoming[r])
        s1_valid, s1_last = Signal(), Signal()
        s1_rows, s1_busy = Signal(R, reset_less=True), Signal.like(p.busy, reset_less=True)
        s1_lane = [Signal.like(p.lane, name=f"s1_lane{REPLICA_SUFFIX}{r}", reset_less=True)
                   for r in range(R)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(pop), s1_last.eq(head.last), s1_rows.eq(head.rows),
                         s1_busy.eq(head.busy)]
            m.d.sync += [lane.eq(head.lane) for lane in s1_lane]
        x = [Mux(s1_rows[r], Mux(swap[r], upcoming[r][0], current[r][s1_lane[r]]), 0)
             for r in range(R)]
        in_flight = steps.r_rdy | armed | s1_valid
        deep = {}
        if cfg.read_pipeline == "deep":
            # The lane selects registered, then once more, as the weight memory's word is
            # (`_issued_weights`).
            row_adv_next = tuple(Signal(name=f"adv_next_row{r}") for r in range(R))
            row_adv = self._adv_copies(m, row_adv_next)
            s2, _, _ = self._register_step(m, adv, (s1_valid, s1_last, s1_busy, x), "s2",
                                           row_adv)
            s3, step_next, feed = self._register_step(m, adv, s2, "s3", row_adv)
            last, step_next, feed, later = self._later_stages(m, adv, s3, wmem, step_next, feed,
                                                              row_adv)
            col_take_next = tuple(Signal(name=f"take_next_col{c}") for c in range(cfg.cols))
            col_take = self._take_copies(m, col_take_next)
            issue = (*last, self._issued_weights(m, wmem, pop, col_take))
            in_flight |= s2[0] | s3[0] | later
            deep = {"row_adv_next": row_adv_next, "col_take_next": col_take_next,
                    "issue_last_next": step_next[1], "issue_feed": feed}
        else:
            issue = (s1_valid, s1_last, s1_busy, x, wmem.r_data)
        return _ReadStage(adv=adv, src_read=Mux(read, (1 << cfg.banks) - 1, 0),
                          w_addr=head.w_addr, w_read=pop, in_flight=in_flight, issue=issue,
                          **deep)

    def _copy_to_rows(self, m, wb, row_bufs):
        """Narrow banks: each word written to a whole-word buffer (by the write-back or the
        host) is copied into that buffer's row banks, one entry per cycle from two cycles on,
        the lowest lanes first. Returns whether a copy is under way.

        No word is written before the previous one's copy ends: the write-back writes at most
        one row per ``cols / requant_lanes`` cycles (a row's requantiser transfers), the host
        one word per ``ceil(act_word_bits / 8)`` byte writes (its used bytes; the padding up to
        ``act_word_bytes`` may be skipped), and an entry holds at least ``requant_lanes``
        lanes, a word at most that many entries (``ArrayConfig`` checks both). The copy
        counts as the write side's work (a stage ends when its last word is copied). Reads
        never overtake it: they walk a word's lanes in order, at most one per cycle, and the
        earliest read of a word (the next stage's, or a run's after the host's last write)
        comes cycles after its copy's first entry.

        The copy starts from registers of the write (its word, buffers and address) with
        registered copies of "a word was written": the choice between a new word and the next
        entry, one LUT of the write's enables, reached every bit of the copy (12.7 ns of
        routing on a 32x32 ECP5 accelerator). Each group of row banks (a port of
        ``row_bufs``) takes the entry, enables and address from registers of its own."""
        cfg = self._config
        entry_bits = cfg.act_entry_bits
        n = -(-cfg.cols // cfg.act_entry_lanes)       # entries written per word
        groups = row_bufs[0].write_ports
        pending = Signal(cfg.act_word_bits, name="row_copy_pending", reset_less=True)
        pending_en = Signal(2, name="row_copy_pending_en", reset_less=True)
        pending_addr = Signal(cfg.act_addr_bits, name="row_copy_pending_addr", reset_less=True)
        # A copy of `start` per later entry of the word and per group.
        start = [Signal(name=f"row_copy_start{REPLICA_SUFFIX}{k}") for k in range(n - 1 + groups)]
        m.d.sync += [pending.eq(wb.w_data), pending_en.eq(wb.w_en), pending_addr.eq(wb.w_addr)]
        m.d.sync += [copy.eq(wb.w_en.any()) for copy in start]

        def pending_entry(k):
            return pending[k * entry_bits:(k + 1) * entry_bits]

        # Entries 1 .. n - 1 of the word under copy, shifting toward entry 0 (no select by the
        # entry's index); each group's entry 0 is its banks' data.
        later = [Signal(entry_bits, name=f"row_copy_entry{k}", reset_less=True)
                 for k in range(1, n)]
        for k, reg in enumerate(later):
            m.d.sync += reg.eq(Mux(start[k], pending_entry(k + 1),
                                   later[k + 1] if k + 1 < len(later) else 0))
        writing = Signal(2, name="row_copy_writing")   # per buffer: an entry goes in this cycle
        entry = Signal(range(max(n, 2)), name="row_copy_entry")
        addr = Signal(cfg.act_addr_bits, name="row_copy_addr", reset_less=True)
        writing_next, entry_next, addr_next = Signal(2), Signal.like(entry), Signal.like(addr)
        m.d.comb += [writing_next.eq(writing), entry_next.eq(entry), addr_next.eq(addr)]
        with m.If(start[0]):
            m.d.comb += [writing_next.eq(pending_en), entry_next.eq(0),
                         addr_next.eq(pending_addr)]
        with m.Elif(writing.any()):
            m.d.comb += entry_next.eq(entry + 1)
            with m.If(entry == n - 1):
                m.d.comb += writing_next.eq(0)
        m.d.sync += [writing.eq(writing_next), entry.eq(entry_next), addr.eq(addr_next)]
        address_bits = (cfg.act_entries - 1).bit_length()
        for g in range(groups):
            data = Signal(entry_bits, name=f"row_copy_data{REPLICA_SUFFIX}{g}", reset_less=True)
            en = Signal(2, name=f"row_copy_writing{REPLICA_SUFFIX}{g}")
            address = Signal(cfg.act_addr_bits + address_bits,
                             name=f"row_copy_address{REPLICA_SUFFIX}{g}", reset_less=True)
            m.d.sync += [data.eq(Mux(start[n - 1 + g], pending_entry(0),
                                     later[0] if later else 0)),
                         en.eq(writing_next),
                         address.eq(Cat(entry_next[:address_bits], addr_next))]
            for b, buf in enumerate(row_bufs):
                port = (buf.w_en, buf.w_addr, buf.w_data)
                if groups > 1:
                    port = (p[g] for p in port)
                m.d.comb += [p.eq(v) for p, v in zip(port, (en[b], address, data))]
        return writing.any() | start[0]

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C = cfg.rows, cfg.cols

        registered = cfg.read_pipeline == "deep"
        m.submodules.wmem = wmem = WeightMemory(width=cfg.weight_word_bits, depth=cfg.weight_depth,
                                                registered=registered,
                                                slices=C if registered else 1,
                                                relays=cfg.weight_relays or 0)
        if wmem.latency != cfg.weight_read_latency:
            raise AssertionError("the weight memory's latency differs from the sequencer's")
        # No memory here needs the word before a write from a read in the cycle of that write
        # (`collisions="undefined"` saves the logic that gives it): the host writes the
        # parameters while idle and the feeder reads them while busy; a stage only reads its
        # source buffer, and the write-back reads its destination buffer (bank 0, transparent
        # for the short pipeline; it reads a word in the cycle it may be written), while the
        # deep one (a bank of its own) forwards the words written in the cycle of its read and
        # the two after.
        # A requantiser that registers its input (the deep pipeline) has a parameter bank of
        # its own, and host reads another: a register that is a block RAM output's only load
        # moves into the block RAM in ECP5 builds (boards.outreg).
        param_host_bank = 1 if PIPELINES[cfg.requant_pipeline]["register_input"] else 0
        m.submodules.pmem = pmem = ReplicatedMemory(banks=1 + param_host_bank,
                                                    width=cfg.param_word_bits,
                                                    depth=cfg.param_depth, transparent=False,
                                                    collisions="undefined")
        # The deep write-back reads a bank of its own, which the host reads too (while idle):
        # then every bank's word has one register as its only load, which moves into the block
        # RAM in ECP5 builds (bank 0 fed the read stage, the write-back and the host; its
        # 5.8 ns from clock to data, then routing to the write-back's old word, set a 16x8
        # ECP5 accelerator's clock: 88 MHz).
        # With narrow banks these whole-word buffers are the write-back's and the host's alone
        # (one bank each) and the rows read copies of entries (`_copy_to_rows`).
        deep_wb = cfg.writeback_pipeline == "deep"
        narrow = cfg.narrow_banks
        wb_bank = cfg.banks if deep_wb and not narrow else 0
        if cfg.act_pingpong:
            # Both buffers in one memory, buffer b in half b (the address's top bit): a row's
            # word then needs no buffer select (on an iCE40 5x4 the select took 111 logic
            # cells), and rows + 1 copies of the pair take the block RAMs that 2 x rows copies
            # took (an iCE40 block RAM has 256 words of 16 bits, the 128-word buffers of a
            # digits build half of one each). The
            # write-back and the host read bank 0; the rows read banks 1 to `rows`.
            bufs = [ReplicatedMemory(banks=1 + R, width=cfg.act_word_bits,
                                     depth=(1 << cfg.act_addr_bits) + cfg.act_depth,
                                     collisions="undefined")]
            m.submodules.act = bufs[0]
        else:
            bufs = [ReplicatedMemory(banks=1 if narrow else cfg.banks + deep_wb,
                                     width=cfg.act_word_bits, depth=cfg.act_depth,
                                     transparent=not deep_wb, collisions="undefined")
                    for _ in range(2)]
            m.submodules.act0, m.submodules.act1 = bufs
        read_bufs = bufs
        if narrow:
            read_bufs = [ReplicatedMemory(banks=R, width=cfg.act_entry_bits,
                                          depth=cfg.act_depth * cfg.act_entries,
                                          transparent=False, collisions="undefined",
                                          write_ports=-(-R // TILE))
                         for _ in range(2)]
            m.submodules.act0_rows, m.submodules.act1_rows = read_bufs
        # The counters are LIVE: the host may read one while the sequencer writes them. A read
        # of the word written in its cycle is undefined in a block RAM. With the deep read
        # pipeline the written value replaces it (`written_word`), so the host read's register
        # stays the block RAM's only load (boards.outreg moves it inside); with the short one
        # (iCE40 builds) no host read is taken in a cycle of a write (the write comes from
        # registers, below): Yosys' logic for the old word took 75 logic cells of an iCE40 5x4.
        deep_read = cfg.read_pipeline == "deep"
        perf = m.submodules.perf = ReplicatedMemory(
            banks=1, width=cfg.counter_bits, depth=4 * PERF_STAGES, transparent=False,
            collisions="undefined")

        m.submodules.seq = seq = Sequencer(config=cfg)
        # (With a bank per row the read stage's ready is a register's: the generator's rows
        # keep its handshake themselves, `Im2colGenerator`.)
        m.submodules.gen = gen = Im2colGenerator(config=cfg,
                                                 ready_ahead=deep_read and cfg.banks == R)
        m.submodules.array = array = self.make_array()
        if array.acc_bits != cfg.acc_bits:
            raise AssertionError("the array's accumulator width differs from the build's")
        m.submodules.requant = requant = Requantiser(
            mode=cfg.requant_mode, acc_bits=array.acc_bits, out_bits=cfg.x_bits, lanes=cfg.lanes,
            bias_bits=cfg.bias_bits, **PIPELINES[cfg.requant_pipeline])
        m.submodules.feeder = feeder = RequantFeeder(
            config=cfg, array_out_layout=array.out_layout,
            requant_in_layout=requant.i.payload.shape())
        m.submodules.wb = wb = Writeback(config=cfg)

        busy = seq.busy
        # Stage s reads buffer s % 2 and writes the other one; the generator's stage and the
        # write side's stage differ while one stage drains and the next one waits.
        src = seq.stage[0]
        dst = ~seq.wb_stage[0]
        # The host's writes and run strobe, through a register with the deep read pipeline
        # (both together, so that a run never overtakes a write): the writes' valid, a LUT of
        # the framer's state, enabled the ~280 flip-flops of the host's staging and offset
        # registers, and the placer pulled that LUT, and the framer's state logic with it,
        # across the die toward them (the slowest path of two 16x8 ECP5 builds placed by
        # nextpnr's static placer).
        bus = self.bus
        wr, w_valid, run, run_arg = (bus.write.payload, bus.write.valid, bus.run, bus.run_arg)
        if deep_read:
            wr = Signal(WriteLayout, name="host_write", reset_less=True)
            run_arg = Signal.like(bus.run_arg, name="host_run_arg", reset_less=True)
            w_valid, run = Signal(name="host_write_valid"), Signal(name="host_run")
            m.d.sync += [wr.eq(bus.write.payload), w_valid.eq(bus.write.valid), run.eq(bus.run),
                         run_arg.eq(bus.run_arg)]
        m.d.comb += [
            seq.run.eq(run), seq.run_start.eq(run_arg[:8]), seq.run_count.eq(run_arg[8:16]),
            # (a run strobe in the register is a run: busy and not done from the next cycle)
            bus.busy.eq(seq.busy | (run if deep_read else 0)),
            bus.done.eq(seq.done & ~(run if deep_read else 0)), bus.error.eq(seq.error),
            bus.counters[0].eq(seq.total), bus.counters[1].eq(seq.busy_pe),
            bus.counters[2].eq(seq.stall), self.issue_steps.eq(seq.issue),
            gen.desc.eq(seq.desc), gen.start.eq(seq.gen_start), gen.release.eq(seq.gen_release),
            feeder.desc.eq(seq.wb_desc), wb.desc.eq(seq.wb_desc),
            feeder.start.eq(seq.wb_start), wb.start.eq(seq.wb_start),
            # At the write side's start the generator's descriptor is still the stage's.
            feeder.rq_base.eq(seq.desc.rq_base),
        ]
        # A stage's record reaches the counters' block RAM a cycle after the sequencer offers
        # it, from registers: the count's adder and the write side's end, routed to the block
        # RAM, were late on a 32x32 ECP5 accelerator, and with the short read pipeline the
        # host's reads wait out the write's cycle from its enable's register. The host reads
        # the record long after (the run's end is read first).
        perf_write = [Signal(1, name="perf_en"), Signal.like(seq.perf_addr, name="perf_addr"),
                      Signal.like(seq.perf_data, name="perf_data")]
        record = [seq.perf_en, seq.perf_addr, seq.perf_data]
        m.d.sync += [reg.eq(v) for reg, v in zip(perf_write, record)]
        perf_en, perf_addr, perf_data = perf_write
        m.d.comb += [perf.w_en.eq(perf_en), perf.w_addr.eq(perf_addr), perf.w_data.eq(perf_data)]

        # --- read stage: a step's addresses to the array's operands --------------------------
        lanes = data.ArrayLayout(array.in_layout["x"].shape.elem_shape,
                                 cfg.act_entry_lanes if narrow else C)
        if cfg.banks == R:
            read = self._replicated_read(m, gen, read_bufs, wmem, src, lanes)
        else:
            read = self._shared_read(m, gen, bufs, wmem, src, lanes)
        if gen.ready_ahead:
            # (Each row's bit from the row's copy of the handshake, as its `adv` copy's.)
            m.d.comb += gen.o_ready_next.eq(Cat(*read.row_adv_next))
        i_valid, i_last, i_busy, i_x, i_weights = read.issue
        offered = Signal(data.StructLayout({"step": array.in_layout, "busy": len(i_busy)}))
        m.d.comb += [offered.step.x[r].eq(i_x[r]) for r in range(R)]
        m.d.comb += [offered.step.last.eq(i_last), offered.step.w.as_value().eq(i_weights),
                     offered.busy.eq(i_busy)]
        if deep_read:
            # The issued step reaches the array through a skid register, so the read stages
            # advance on registers, not on the array's `i.ready`: that handshake (the array's
            # `last` check) through every stage's enable to the weight memory's read-enable
            # copies across the die set the clock of 16x12, 16x16 and 8x8 ECP5 accelerators
            # placed by nextpnr's static placer (92.7 MHz at 16x12).
            # Each row's activation and each column's weight leave the skid through a select
            # of their own: one `held` selecting all of them was a 32x32 ECP5 accelerator's
            # slowest path (12.4 ns to the array's input registers, 224 of them on one net).
            parts = ([lambda p, r=r: p.step.x[r] for r in range(R)] +
                     [lambda p, c=c: p.step.w[c] for c in range(C)])
            # The skid's copies take the array's ready from a register equal to it in every
            # cycle, set from the array's two next values by the `last` the array will be
            # offered (what the skid holds next cycle is what it offers now): behind the
            # array's ready logic, the copies' shared next value was 11.6 ns (32x32 ECP5).
            array_ready = Signal(init=1, name="array_ready", reset_less=True)
            issued_skid = skid(m, i_valid, offered, array_ready, "issued_step", parts)
            issue_ready, step_valid, issued, waiting = (issued_skid.ready, issued_skid.valid,
                                                        issued_skid.payload, issued_skid.held)
            last_next = Mux(issued_skid.held_next, issued.step.last, read.issue_last_next)
            m.d.sync += array_ready.eq(Mux(last_next, array.i_ready_next_last,
                                           array.i_ready_next_other))
            # Each row's copy of `adv` (the last stage's valid and the skid's, next cycle) takes
            # its value from the skid's copy of `held` that chooses the row's activation, and
            # each column's copy of the take (the last stage's step taken, next cycle) from the
            # copy that chooses the column's weight (a LUT of four registers each): from the
            # central `held`, three LUTs reaching the 32 rows' copies were a 32x32 ECP5
            # accelerator's slowest path at d994b1e (seed 1: 11.42 ns, 16 late), and from the
            # central `adv`'s next value the columns' copies were at 1987978.
            copies_next = (*read.row_adv_next, *read.col_take_next)
            for k, (copy_next, held) in enumerate(zip(copies_next, issued_skid.held_copies)):
                adv = ~i_valid | ~held
                valid_next = Mux(adv, read.issue_feed, i_valid)
                held_next = Mux(held, ~array_ready, i_valid & ~array_ready)
                m.d.comb += copy_next.eq(~valid_next | ~held_next if k < R
                                         else valid_next & ~held_next)
        else:
            issue_ready, step_valid, issued, waiting = array.i.ready, i_valid, offered, 0
        m.d.comb += [
            read.adv.eq(~i_valid | issue_ready),
            array.i.valid.eq(step_valid), array.i.payload.eq(issued.step),
            seq.step.eq(array.i.valid & array.i.ready), seq.step_busy.eq(issued.busy),
            seq.issuing.eq(gen.busy | read.in_flight | waiting),
        ]

        # --- post-processing ----------------------------------------------------------------
        connect(m, array.o, feeder.i)
        connect(m, feeder.o, requant.i)
        connect(m, requant.o, wb.i)
        m.d.comb += [pmem.r_addr[0].eq(feeder.mem_addr), pmem.r_en[0].eq(feeder.mem_read),
                     feeder.mem_data.eq(pmem.r_data[0])]

        # --- host access (hw.framer.DeviceSignature) -----------------------------------------
        w_region, w_offset = wr.addr.region, wr.addr.offset
        targets = {"weights": cfg.weight_word_bits, "params": cfg.param_word_bits,
                   "act0": cfg.act_word_bits, "act1": cfg.act_word_bits,
                   "counters": cfg.counter_bits}
        # The bytes before a word's last one wait in a shift register: words are written whole
        # and in order, so they are the bytes written just before it. (Merging each byte into its
        # place instead cost a multiplexer per staged bit.) With the deep read pipeline a word
        # is written a cycle after its last byte leaves the register above, from registers: the
        # commit's decode, the offset, and the staged bytes, the last one included (the
        # framer's state through the region compares into a parameter block RAM's write enable
        # set an 8x8 ECP5 build's clock, with 8.6 ns of routing).
        stage_bits = 8 * (max(-(-bits // 8) for bits in targets.values()) - (not deep_read))
        staging = Signal(max(1, stage_bits), reset_less=True)   # (read only once written)
        host_word, host_commit = {}, {}
        m.d.comb += bus.write.ready.eq(1)
        if stage_bits:
            with m.If(w_valid):
                m.d.sync += staging.eq(Cat(staging[8:], wr.data))
        offset = w_offset
        if deep_read:
            offset, wrote = Signal.like(w_offset, name="host_w_offset"), Signal()
            m.d.sync += wrote.eq(w_valid)
            with m.If(w_valid):
                m.d.sync += offset.eq(w_offset)
        for name, bits in targets.items():
            lg = (host_word_bytes(bits) - 1).bit_length()
            used = -(-bits // 8)
            byte = w_offset[:lg] if lg else 0
            host_word[name] = offset[lg:]
            hit = w_valid & (w_region == REGIONS[name])
            commit = hit & ~busy & (byte == used - 1)
            if deep_read:
                committed = Signal(name=f"host_commit_{name}")
                m.d.sync += committed.eq(commit)
                host_commit[name] = (committed, staging[stage_bits - 8 * used:][:bits])
            else:
                word = Cat(staging[stage_bits - 8 * (used - 1):stage_bits], wr.data)
                host_commit[name] = (commit, word[:bits])

        # Host reads: the address is taken when no byte is in flight; the memories read it, the
        # byte is selected from their outputs into a register and offered from there. (The
        # select, straight into the framer, was the critical path on an iCE40: 32 MHz.) With
        # the deep read pipeline the address is registered before the memories read it (the
        # framer's state decoding in front of the memories' address multiplexers), and their
        # words before the select (a block RAM's output through it): two ECP5 critical paths.
        rd = bus.read_addr.payload
        addressed = Signal()              # the address register holds the address (deep)
        pending = Signal()                # the memories' outputs hold the word of the address
        late = Signal()                   # ... but the weight memory's word is a cycle away
        loaded = Signal()                 # the word registers hold it (deep)
        copied = Signal()                 # ... and their copies near the byte select (deep)
        grouped = Signal()                # each memory's 4-byte group is selected (deep)
        chosen = Signal()                 # ... and its byte, 0 outside the region (deep)
        offered = Signal()                # the byte register holds a byte not yet taken
        accept = Signal()
        # A read in flight (one of the flags above is set) is a register of its own: the flags'
        # OR, three LUTs with the write's checks in front of the address registers' enables
        # (then 6.5 ns of routing to the weight memory's copy of the byte offset), was a 32x32
        # ECP5 accelerator's slowest path (seed 1 at 0b655bb, 12.9 ns).
        reading = Signal()
        idle = ~reading
        # A write is on its way to its memory for a few cycles after its last byte (with the
        # deep read pipeline it passes the register above; an activation word also passes the
        # write-back's last stages): no read until it has landed. Those cycles are one flag,
        # so that the check stays shallow: it is in front of the weight memory's read enables
        # (the 16x32 ECP5 accelerator placed at 87.4 MHz with a term per cycle).
        settle = int(deep_read) + wb.host_latency
        if deep_read:
            idle &= ~w_valid
        else:
            idle &= ~perf_en          # (its word would be undefined: the counters' block RAM)
        if settle:
            recent = [w_valid]
            for k in range(settle - 1):
                recent.append(Signal(name=f"host_wrote{k + 1}"))
                m.d.sync += recent[-1].eq(recent[-2])
            settling = Signal(name="host_write_settling")
            m.d.sync += settling.eq(Cat(*recent).any())
            idle &= ~settling
        m.d.comb += [bus.read_addr.ready.eq(idle), accept.eq(bus.read_addr.valid & idle)]
        if deep_read:
            rd_offset = Signal.like(rd.offset)
            with m.If(accept):
                m.d.sync += rd_offset.eq(rd.offset)
            read_now = addressed          # the memories read in this cycle
        else:
            rd_offset, read_now = rd.offset, accept
        rd_word = {name: rd_offset[(host_word_bytes(bits) - 1).bit_length():]
                   for name, bits in targets.items()}
        # The region, decoded as the address is taken: one flag per region, and the offset's low
        # byte (the byte's place in its word).
        rd_in = {name: Signal(name=f"rd_in_{name}") for name in targets}
        rd_low = Signal(8)
        with m.If(accept):
            m.d.sync += [(addressed if deep_read else pending).eq(1), rd_low.eq(rd.offset[:8]),
                         reading.eq(1)]
            m.d.sync += [flag.eq(rd.region == REGIONS[name]) for name, flag in rd_in.items()]
        with m.Elif(addressed):
            m.d.sync += [addressed.eq(0), pending.eq(1)]
        with m.Elif(pending):
            # (a weight memory with relays reads in four cycles, a cycle more than the others'
            # registered words: they wait for it)
            after = (late if wmem.relays else loaded) if deep_read else offered
            m.d.sync += [pending.eq(0), after.eq(1)]
        with m.Elif(late):
            m.d.sync += [late.eq(0), loaded.eq(1)]
        with m.Elif(loaded):
            m.d.sync += [loaded.eq(0), copied.eq(1)]
        with m.Elif(copied):
            m.d.sync += [copied.eq(0), grouped.eq(1)]
        with m.Elif(grouped):
            m.d.sync += [grouped.eq(0), chosen.eq(1)]
        with m.Elif(chosen):
            m.d.sync += [chosen.eq(0), offered.eq(1)]
        with m.Elif(bus.read_data.valid & bus.read_data.ready):
            m.d.sync += [offered.eq(0), reading.eq(0)]

        # Weight memory: the host while idle; the sequencer loading a descriptor; the read stage.
        # (The host's address is chosen by the write stream's valid alone, not by the commit
        # decode: host reads and writes never overlap, and the decode in front of the address
        # was an ECP5 critical path.)
        # A registered weight memory (the deep read pipeline) takes the host's read address
        # as it is accepted, a cycle before the other memories read theirs, and its word
        # arrives in a register of its own a cycle after theirs (two with relays: `late`).
        we, wd = host_commit["weights"]
        if wmem.registered:
            lg = (host_word_bytes(cfg.weight_word_bits) - 1).bit_length()
            w_host_addr, w_host_read = rd.offset[lg:], accept
        else:
            w_host_addr, w_host_read = rd_word["weights"], read_now
        m.d.comb += [
            wmem.w_en.eq(we), wmem.w_data.eq(wd),
            wmem.addr.eq(Mux(busy, Mux(seq.mem_read, seq.mem_addr, read.w_addr),
                             Mux(wrote if deep_read else w_valid, host_word["weights"],
                                 w_host_addr))),
            wmem.r_en.eq(Mux(busy, seq.mem_read | read.w_read, w_host_read)),
            seq.mem_data.eq(wmem.r_data),
        ]
        pe, pd = host_commit["params"]
        m.d.comb += [pmem.w_en.eq(pe), pmem.w_addr.eq(host_word["params"]), pmem.w_data.eq(pd)]
        with m.If(~busy):
            m.d.comb += [pmem.r_addr[param_host_bank].eq(rd_word["params"]),
                         pmem.r_en[param_host_bank].eq(read_now)]

        # Activation buffers: the source feeds the array rows; the destination takes the
        # write-back (and serves its max-pool reads). Their write port is the write-back's, the
        # host's writes (while idle) passing through it. (Both buffers' host words are alike.)
        m.d.comb += [wb.host_en[b].eq(host_commit[f"act{b}"][0]) for b in range(2)]
        m.d.comb += [wb.host_addr.eq(host_word["act0"]), wb.host_data.eq(host_commit["act0"][1])]
        if cfg.act_pingpong:
            # (The write-back writes one buffer at a time, `w_en[b]` for buffer b; the rows'
            # addresses are set by the read stage.)
            act, = bufs
            m.d.comb += [act.w_en.eq(wb.w_en.any()), act.w_addr.eq(Cat(wb.w_addr, wb.w_en[1])),
                         act.w_data.eq(wb.w_data)]
            with m.If(busy):
                m.d.comb += [act.r_en.eq(Cat(1, read.src_read)),
                             act.r_addr[0].eq(Cat(wb.r_addr, dst))]
            with m.Else():
                # (Read now: the address is the one being taken, `rd`.)
                m.d.comb += [act.r_en[0].eq(read_now),
                             act.r_addr[0].eq(Cat(rd_word["act0"][:cfg.act_addr_bits],
                                                  rd.region == REGIONS["act1"]))]
        else:
            for b, buf in enumerate(bufs):
                is_src, is_dst = src == b, dst == b
                m.d.comb += [buf.w_en.eq(wb.w_en[b]), buf.w_addr.eq(wb.w_addr),
                             buf.w_data.eq(wb.w_data)]
                with m.If(busy & is_src):
                    m.d.comb += read_bufs[b].r_en.eq(read.src_read)
                with m.If(busy & is_dst):
                    # (Without a bank of its own the write-back takes bank 0: while the next
                    # stage waits for this buffer, the generator is held.)
                    m.d.comb += [buf.r_en[wb_bank].eq(1), buf.r_addr[wb_bank].eq(wb.r_addr)]
                with m.If(~busy):
                    m.d.comb += [buf.r_en[wb_bank].eq(read_now),
                                 buf.r_addr[wb_bank].eq(rd_word[f"act{b}"])]
        # The write side is busy until its words are in the rows' copies too.
        copying = self._copy_to_rows(m, wb, read_bufs) if narrow else 0
        m.d.comb += seq.wb_busy.eq(wb.busy | copying)
        act_words = [buf.r_data[wb_bank] for buf in bufs] * (2 if cfg.act_pingpong else 1)
        if deep_wb:
            # The deep write-back takes its old word a cycle after the block RAM's output,
            # from this free-running register (the block RAM's own, on an ECP5).
            act_words = [Signal(cfg.act_word_bits, name=f"act{b}_wb_word", reset_less=True)
                         for b in range(2)]
            m.d.sync += [reg.eq(buf.r_data[wb_bank]) for reg, buf in zip(act_words, bufs)]
        m.d.comb += [wb.r_data[b].eq(word) for b, word in enumerate(act_words)]
        m.d.comb += wb.dst.eq(dst)
        m.d.comb += [perf.r_addr[0].eq(rd_word["counters"]), perf.r_en.eq(read_now)]

        words = {"weights": wmem.r_data, "params": pmem.r_data[param_host_bank],
                 "act0": bufs[0].r_data[wb_bank],
                 "act1": bufs[-1].r_data[wb_bank], "counters": perf.r_data[0]}
        rd_byte = Signal(8)
        m.d.comb += [bus.read_data.valid.eq(offered), bus.read_data.payload.eq(rd_byte)]
        if deep_read:
            # One register per memory, straight from its output: even a one-hot choice of five
            # memories in front of a shared register took four LUT levels on an ECP5. (The
            # registered weight memory's word is in its own register when `loaded`.) No reset:
            # `boards.outreg` moves only a register without one into its block RAM.
            # (The write-back bank's register holds the activation word in time, a cycle after
            # the read, as these do.)
            own = ("weights", "act0", "act1") if deep_wb else ("weights",)
            registered = {name: Signal(len(word), name=f"rd_{name}", reset_less=True)
                          for name, word in words.items() if name not in own}
            with m.If(pending):
                m.d.sync += [registered[name].eq(words[name]) for name in registered]
            words.update(registered)
            if deep_wb:
                words.update(act0=act_words[0], act1=act_words[1])
            written, written_word = Signal(), Signal(cfg.counter_bits, reset_less=True)
            with m.If(read_now):
                m.d.sync += [written.eq(perf_en & (perf_addr == rd_word["counters"])),
                             written_word.eq(perf_data)]
            words["counters"] = Mux(written, written_word, words["counters"])
            # Those registers are their block RAMs' own in ECP5 builds, beside the block RAMs,
            # which a large array spreads across the die: the words are copied near the byte
            # select first (a word's 3.8-4.8 ns of routing into the select's five LUT levels
            # set the 8x8 and 16x8 ECP5 accelerators' clocks: 96.8 and 86.6 MHz). The copies
            # run free (the words hold still from `loaded` on, and `copied` takes the copies):
            # loaded as `loaded` says, that flag's net to their 925 enables across the die was
            # a 32x32 accelerator's slowest path (15.8 ns of routing, 61.29 MHz).
            near = {name: Signal(len(word), name=f"rd_{name}_near", reset_less=True)
                    for name, word in words.items()}
            m.d.sync += [near[name].eq(words[name]) for name in near]
            words.update(near)
        # Each memory's byte selected, then the region's: bytes past a word's last used one
        # read as 0. With the deep read pipeline in three steps: each memory's group of four
        # bytes into a register, by a copy of the byte's place of its own (one select in five
        # LUT levels, its offset reaching every memory's, set a 16x16 ECP5 accelerator's clock:
        # 66.3 MHz, 13 ns of it routing), then its byte into a register beside it, then the
        # region's (the byte and region selects together, four LUT levels gathering the
        # memories' groups from across the die, set a 16x12 one's: 88.4 MHz, 9.8 ns routing).
        picked = 0
        for name, word in words.items():
            bits = targets[name]
            lg = (host_word_bytes(bits) - 1).bit_length()
            padded = Signal(8 * host_word_bytes(bits), name=f"rd_{name}_padded")
            m.d.comb += padded.eq(word)
            low = rd_low
            if deep_read and lg > 2:
                low = Signal(8, name=f"rd_low{REPLICA_SUFFIX}_{name}")
                with m.If(accept):
                    m.d.sync += low.eq(rd.offset[:8])
                group = Signal(32, name=f"rd_{name}_group", reset_less=True)
                with m.If(copied):
                    m.d.sync += group.eq(padded.word_select(low[2:lg], 32))
                padded, lg = group, 2
            elif deep_read:
                group = Signal.like(padded, name=f"rd_{name}_group", reset_less=True)
                with m.If(copied):
                    m.d.sync += group.eq(padded)
                padded = group
            own_byte = Mux(rd_in[name], padded.word_select(low[:lg], 8) if lg else padded[:8], 0)
            if deep_read:
                chosen_byte = Signal(8, name=f"rd_{name}_byte", reset_less=True)
                with m.If(grouped):
                    m.d.sync += chosen_byte.eq(own_byte)
                own_byte = chosen_byte
            picked |= own_byte
        with m.If(chosen if deep_read else pending):
            m.d.sync += rd_byte.eq(picked)
        return m


class AcceleratorTop(wiring.Component):
    """UART pins, the host link's framer and the accelerator core: a board's (or the simulated
    board's) top level, the accelerator's counterpart of ``hw.link_top.LinkTop``.

    Parameters
    ----------
    config : :class:`hw.config.ArrayConfig`
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Line rate (checked by ``hw.uart.uart_divisor``).
    max_payload : int
        Largest request payload (the framer's buffer).
    timeout : int or None
        Idle cycles in the middle of a frame before the framer drops it; default 20 ms.

    Members
    -------
    rx : ``In(1)``, the line from the host; tx : ``Out(1)``, the line to the host.
    """

    def __init__(self, *, config, clk_freq, baud, max_payload=256, timeout=None):
        from .uart import uart_divisor
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        self._config = config
        self._divisor = uart_divisor(clk_freq=clk_freq, baud=baud)
        self._identity = accelerator_identity(config, clk_hz=clk_freq, baud=baud,
                                              max_payload=max_payload)
        self._timeout = int(clk_freq // 50) if timeout is None else timeout
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    config = property(lambda self: self._config)
    identity = property(lambda self: self._identity)
    divisor = property(lambda self: self._divisor)
    timeout = property(lambda self: self._timeout)

    def elaborate(self, platform):
        from .framer import Framer
        from .uart import UART
        m = Module()
        m.submodules.uart = uart = UART(divisor=self._divisor)
        m.submodules.framer = framer = Framer(
            identity=self._identity, timeout=self._timeout,
            register_reads=self._config.read_pipeline == "deep")
        m.submodules.core = core = Accelerator(config=self._config)
        connect(m, uart.rx_data, framer.rx)
        connect(m, framer.tx, uart.tx_data)
        connect(m, framer.bus, core.bus)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     framer.rx_lost.eq(uart.frame_error | uart.overrun)]
        return m
