"""The sequencer: runs a program's stages from memory with no help from the host.

:class:`Sequencer` is the control state machine. On ``run`` it loads stage ``start``'s descriptor
from the weight memory (``descriptor_slot_words`` words at ``stage * slot``), checks its magic and
starts the im2col generator. A stage's *read side* (generator, read stage, array input) and its
*write side* (array output, requantiser, write-back) overlap with the neighbouring stages:

- as soon as the generator has issued a stage's last k-step, the next descriptor is loaded and the
  generator started on it (its walker fills the first tile), held before its first k-step;
- when the write-back has written the previous stage's last word (the next stage's input is
  complete) and that stage's counters are recorded (three more cycles), the sequencer hands the
  write-side fields (``compiler.WRITE_FIELDS``) to the write-back and the parameter feeder, starts
  them and releases the generator.

So a stage costs its k-steps plus the drain of its pipeline; the descriptor load and the walker's
first fill hide in the previous stage's drain. Runs end at a descriptor marked ``last`` (or after
``count`` stages) once its last word is written.

:class:`RequantFeeder` sits between the array and the requantiser: it splits each finished row
into the requantiser's transfers and reads, a cycle ahead, the parameter word that holds those
lanes' parameters, then attaches it and the ReLU bit.

Performance counters (all since the run started): ``total`` cycles busy, ``issue`` k-steps taken by
the array, ``busy_pe`` useful PE-cycles (PEs whose row holds a pixel and whose column a channel,
per step), ``stall`` cycles in which a released stage had k-steps left and none was taken. A
stage's cycles run from the end of the previous stage (its last write) to its own last write.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.compiler import (DESCRIPTOR_MAGIC, PERF_COUNTERS, PERF_STAGES, WRITE_FIELDS,
                           descriptor_slot_words)
from .descriptor import descriptor_layout, write_layout

__all__ = ["Sequencer", "RequantFeeder", "Error"]


class Error:
    """Error codes the sequencer reports (0: none)."""
    NONE = 0
    BAD_DESCRIPTOR = 1     #: a descriptor slot without the magic (no program, or past its end)


class Sequencer(wiring.Component):
    """The control state machine (see the module docstring).

    Members
    -------
    run : ``In(1)``
        Start a run (ignored while busy); ``run_start`` is the first stage, ``run_count`` the number
        of stages (0: up to the one marked ``last``), both taken with ``run`` (they may change while
        the run goes on).
    busy, done, error : ``Out``
        ``done`` rises when a run ends and stays until the next ``run``; ``error`` is an
        :class:`Error` code.
    total, issue, busy_pe, stall : ``Out(counter_bits)``
    stage : ``Out(8)``
        The stage the generator reads for (its input buffer is ``stage % 2``), a register of
        the sequencer's count: it follows it a cycle later.
    desc : ``Out(descriptor_layout(config))``
        That stage's descriptor.
    gen_start : ``Out(1)``, gen_release : ``Out(1)``, issuing : ``In(1)``
        Start the generator; let its k-steps go (the previous stage's words are written); it
        (or the read stage) still has k-steps of the stage to issue.
    wb_stage : ``Out(8)``
        The stage the write side writes (its output buffer is ``(wb_stage + 1) % 2``).
    wb_desc : ``Out(write_layout(config))``, wb_start : ``Out(1)``, wb_busy : ``In(1)``
        The write side's fields, its start pulse, and whether it still has rows to write. In
        the cycle of ``wb_start`` ``desc`` still holds the same stage (the write side's start-only
        fields are read from there).
    step, step_busy : ``In``
        The array took a k-step this cycle, with ``step_busy`` useful PEs.
    mem_addr, mem_read : ``Out``, mem_data : ``In``
        The weight memory port while loading a descriptor (data
        ``config.weight_read_latency`` cycles after ``mem_read``).
    perf_en, perf_addr, perf_data : ``Out``
        Write port of the per-stage counter memory (:data:`PERF_STAGES` x 4 words).
    """

    def __init__(self, *, config):
        self._config = config
        cb = config.counter_bits
        self._slot = descriptor_slot_words(config)
        super().__init__({
            "run": In(1), "run_start": In(8), "run_count": In(8),
            "busy": Out(1), "done": Out(1), "error": Out(8),
            "total": Out(cb), "issue": Out(cb), "busy_pe": Out(cb), "stall": Out(cb),
            "stage": Out(8),
            "desc": Out(descriptor_layout(config)),
            "gen_start": Out(1), "gen_release": Out(1), "issuing": In(1),
            "wb_stage": Out(8),
            "wb_desc": Out(write_layout(config)),
            "wb_start": Out(1), "wb_busy": In(1),
            "step": In(1), "step_busy": In((config.rows * config.cols).bit_length()),
            "mem_addr": Out(config.weight_addr_bits), "mem_read": Out(1),
            "mem_data": In(config.weight_word_bits),
            "perf_en": Out(1), "perf_addr": Out(range(4 * PERF_STAGES)), "perf_data": Out(cb),
        })

    config = property(lambda self: self._config)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        slot, W = self._slot, cfg.weight_word_bits
        shift = (slot - 1).bit_length()

        # Only the words that hold fields are loaded (a slot is padded to a power of two), each
        # straight into its place: bits that nothing reads (the last word's padding, fields of
        # features the build lacks) are then left out by synthesis. (Shifted in, every
        # bit was a flip-flop: a logic cell each on an iCE40.)
        words = -(-self.desc.shape().size // W)
        # (No reset: a stage's words are loaded before anything reads them, and its 200-odd
        # flip-flops were loads of the reset net across a 32x32 ECP5 accelerator.)
        desc_reg = Signal(words * W, reset_less=True)
        m.d.comb += self.desc.as_value().eq(desc_reg[:self.desc.shape().size])

        # The stage, and `stage` a register of it, a cycle behind: the read side's buffer select
        # pulled the stage's flip-flops across the die, and their enable (the end of the
        # stage's issue, from the generator's and read stage's flags) reached them 10.9 ns
        # after the clock on a 32x32 ECP5 accelerator. The read side first reads for a stage
        # many cycles after it changes (the descriptor's load comes between).
        stage = Signal(8, name="stage_count")
        m.d.sync += self.stage.eq(stage)

        # --- the write side: hand-over, start one cycle later, end ---------------------------
        handed = Signal()          # the generator's stage has been handed to the write side
        start_wb = Signal()        # registered: wb_desc is in place this cycle
        wb_active = Signal()       # the write side has a stage in flight
        m.d.comb += self.wb_start.eq(start_wb)
        m.d.sync += [start_wb.eq(0), self.gen_start.eq(0)]
        with m.If(start_wb):
            m.d.sync += wb_active.eq(1)
        stage_end = Signal()
        m.d.comb += stage_end.eq(wb_active & ~self.wb_busy)

        def hand_over():
            return [getattr(self.wb_desc, name).eq(getattr(self.desc, name))
                    for name in WRITE_FIELDS] + [
                    self.wb_stage.eq(stage), start_wb.eq(1), handed.eq(1)]

        # --- counters ------------------------------------------------------------------------
        # A step counts a cycle after it is taken, from registers: the array's handshake into
        # three counters' enables and the PE count's carry chain were 96 late endpoints of a
        # 32x32 ECP5 accelerator (11.7 ns). A stage's record reads them once its write side has
        # finished, many cycles after its last step, and the next stage's steps begin after
        # the record: none is missed or misplaced.
        took, took_busy, stalled = Signal(), Signal.like(self.step_busy), Signal()
        m.d.sync += [took.eq(self.step), took_busy.eq(self.step_busy),
                     stalled.eq(handed & self.issuing & ~self.step)]
        with m.If(self.busy):
            m.d.sync += self.total.eq(self.total + 1)
        with m.If(took):
            m.d.sync += [self.issue.eq(self.issue + 1),
                         self.busy_pe.eq(self.busy_pe + took_busy)]
        with m.If(stalled):
            m.d.sync += self.stall.eq(self.stall + 1)

        # Per-stage record at a stage's end: the four counters, one per cycle. The next stage is
        # handed over only after the last of them (``snap == 0``), and until then no k-step can
        # happen, so the counters hold still and need no latches (three cycles per stage, where
        # latches cost 3 * counter_bits flip-flops: a logic cell each on an iCE40).
        snap = Signal(range(len(PERF_COUNTERS)))
        snap_index = Signal(8)
        ran_wb = Signal(8)         # stages of this run whose write side has finished
        with m.If(stage_end):
            m.d.comb += [self.perf_en.eq(ran_wb < PERF_STAGES), self.perf_addr.eq(ran_wb << 2),
                         self.perf_data.eq(self.total + 1)]
            m.d.sync += [snap.eq(1), snap_index.eq(ran_wb), ran_wb.eq(ran_wb + 1),
                         wb_active.eq(0)]
        with m.Elif(snap != 0):
            m.d.sync += snap.eq(_wrap_inc(snap, len(PERF_COUNTERS) - 1))
            m.d.comb += [self.perf_en.eq(snap_index < PERF_STAGES),
                         self.perf_addr.eq(Cat(snap, snap_index))]
            with m.Switch(snap):
                for i, counter in enumerate((self.issue, self.busy_pe, self.stall), start=1):
                    with m.Case(i):
                        m.d.comb += self.perf_data.eq(counter)

        # --- descriptor loading --------------------------------------------------------------
        ran = Signal(8)            # stages whose k-steps have all been issued
        count = Signal(8)          # the run's ``run_count``
        # ``ran + 1 == count`` from registers, a cycle late: read only in ISSUE, at least two
        # cycles after ``ran`` or ``count`` changed (LOAD and CHECK come between). Its adder and
        # compare in front of the stage's enable were an iCE40 2x2 build's critical path.
        at_count = Signal()
        m.d.sync += at_count.eq(ran + 1 == count)
        issued = Signal(range(words + 1))
        received = Signal(range(words + 1))
        pending = Signal()
        magic_ok = Signal()        # the magic, checked from its register
        magic = self.desc.shape()["magic"]
        requested = self.mem_read
        for _ in range(cfg.weight_read_latency - 1):
            earlier, requested = requested, Signal()
            m.d.sync += requested.eq(earlier)
        m.d.sync += pending.eq(requested)
        with m.If(pending):
            m.d.sync += [desc_reg.word_select(received, W).eq(self.mem_data),
                         received.eq(received + 1)]
        # Ready by CHECK, which comes a cycle after the last word's. (Checked as its word arrived,
        # the compare and its route after a block RAM's 5.6 ns from clock to data set an 8x8
        # ECP5 accelerator's clock: 84.6 MHz.)
        m.d.sync += magic_ok.eq(desc_reg[magic.offset:][:magic.width] == DESCRIPTOR_MAGIC)

        # The hand-over, and the generator's release with it, from a register set a cycle ahead:
        # in ISSUE, not yet handed, with the write side idle and its counters recorded. Decoded
        # from the sequencer's state in the cycle itself, it ran through four LUTs and across the
        # die into the generator's step copies: a 32x32 ECP5 accelerator's slowest path (13.1 ns).
        release = Signal()
        m.d.comb += self.gen_release.eq(release)
        m.d.sync += release.eq(0)
        # The write side will be idle and done recording next cycle: no start pending, no stage
        # in flight (one that ends now starts the record), the record over or at its last word.
        write_side_idle_next = Signal()
        m.d.comb += write_side_idle_next.eq(
            ~start_wb & ~wb_active & ((snap == 0) | (snap == len(PERF_COUNTERS) - 1)))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.run):
                    m.d.sync += [stage.eq(self.run_start), count.eq(self.run_count),
                                 ran.eq(0), ran_wb.eq(0),
                                 self.busy.eq(1), self.done.eq(0), self.error.eq(0),
                                 self.total.eq(0), self.issue.eq(0), self.busy_pe.eq(0),
                                 self.stall.eq(0), issued.eq(0), received.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(issued != words):
                    m.d.comb += [self.mem_read.eq(1),
                                 self.mem_addr.eq((stage << shift) | issued)]
                    m.d.sync += issued.eq(issued + 1)
                with m.If(received == words):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(~magic_ok):
                    m.d.sync += self.error.eq(Error.BAD_DESCRIPTOR)
                    m.next = "FINISH"
                with m.Else():
                    # From a register: the magic's compare in front of every walker register's
                    # enable was the critical path on an iCE40.
                    m.d.sync += [self.gen_start.eq(1), handed.eq(0),
                                 release.eq(write_side_idle_next)]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                # The previous stage's last word is written (or there was none): go.
                with m.If(release):
                    m.d.sync += hand_over()
                m.d.sync += release.eq(~handed & ~release & write_side_idle_next)
                with m.If(handed & ~self.issuing):
                    m.d.sync += [ran.eq(ran + 1), issued.eq(0), received.eq(0)]
                    with m.If(self.desc.last | at_count):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += stage.eq(stage + 1)
                        m.next = "LOAD"
            with m.State("FINISH"):
                with m.If(~wb_active & ~start_wb & (snap == 0)):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
        return m


def _wrap_inc(counter, last):
    """``counter + 1``, or 0 after ``last``."""
    return Mux(counter == last, 0, counter + 1)


class RequantFeeder(wiring.Component):
    """Attaches the requantisation parameters of each transfer's lanes, and the ReLU bit, to the
    array's finished rows.

    A row of ``cols`` values goes to the requantiser in ``cols / lanes`` transfers, lowest lanes
    first, and parameter word ``rq_base + group * (cols / lanes) + transfer`` holds exactly that
    transfer's ``lanes`` channels (the compiler's layout). So the feeder reads one word per
    transfer, addressed a cycle ahead, and keeps no copy of the parameters (a bank of ``cols``
    channels' parameters costs hundreds of flip-flops: a logic cell each on an iCE40).

    Members
    -------
    desc : ``In(write_layout(config))``
    start : ``In(1)``
        Begin a stage: parameters are read from word ``rq_base``.
    rq_base : ``In(config.param_addr_bits)``
        The stage's first parameter word (read only with ``start``).
    mem_addr, mem_read : ``Out``, mem_data : ``In``
        The parameter memory's read port (data one cycle after an enabled address, kept while
        ``mem_read`` is low).
    i : ``In(stream.Signature(array_out_layout))``
        Finished rows from the array (``acc``, ``last``).
    o : ``Out(stream.Signature(requant_in_layout))``
        Transfers for the requantiser (``acc``, ``param``, ``relu``), ``config.lanes`` values
        each.
    """

    def __init__(self, *, config, array_out_layout, requant_in_layout):
        self._config = config
        super().__init__({
            "desc": In(write_layout(config)),
            "start": In(1),
            "rq_base": In(config.param_addr_bits),
            "mem_addr": Out(config.param_addr_bits), "mem_read": Out(1),
            "mem_data": In(config.param_word_bits),
            "i": In(stream.Signature(array_out_layout)),
            "o": Out(stream.Signature(requant_in_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d = self._config, self.desc
        R, L = cfg.rows, cfg.lanes
        chunks = cfg.cols // L

        # The word after the current transfer's, incremented as the current one is read: the
        # current word's address plus 1 in front of the memory's address, then the route to
        # its block RAM across the die, set a 16x12 ECP5 accelerator's clock (99.0 MHz, seed 3).
        next_addr = Signal(cfg.param_addr_bits)
        group_base = Signal(cfg.param_addr_bits)  # the word of the group's first transfer
        primed = Signal()                         # mem_data holds the current transfer's word
        chunk = Signal(range(chunks))
        row = Signal(range(R))
        left = Signal.like(d.pixels)              # pixels of the group from this tile's first on

        acc_elem = self.i.payload.acc.shape().elem_shape
        acc_chunks = data.ArrayLayout(data.ArrayLayout(acc_elem, L), chunks)(
            self.i.payload.acc.as_value())
        # The transfer's lanes by a constant index per case: indexed by `chunk`, the layout
        # multiplies it by the chunk's width, and a width that is not a power of two (a shift
        # build's accumulators) left a `$mul` in multiplier-free builds with fewer requantiser
        # lanes than columns.
        picked = Signal(data.ArrayLayout(acc_elem, L))
        with m.Switch(chunk):
            for k in range(chunks):
                with m.Case(k):
                    m.d.comb += picked.eq(acc_chunks[k])
        # chunk == chunks - 1, a register of its own: the row's take (`i.ready`) goes into the
        # array's read-out logic, in front of its rows' `update` copies across the die, and
        # the compare made that a LUT deeper (a 32x32 ECP5 accelerator's slowest path, 12.6 ns,
        # began at `chunk`).
        last_chunk = Signal(init=chunks == 1)
        m.d.comb += [
            self.o.valid.eq(self.i.valid & primed),
            self.i.ready.eq(self.o.ready & primed & last_chunk),
            self.o.payload.acc.as_value().eq(picked.as_value()),
            self.o.payload.param.as_value().eq(self.mem_data),
            self.o.payload.relu.eq(d.relu),
        ]

        # left <= rows (the group's last tile), kept as a flag: the compare in front of the
        # memory's address was the critical path on an iCE40. (Counting pixels, not tiles,
        # leaves the tile count to the generator's descriptor: no copy for the write side.)
        tile_last = Signal()
        # row == R - 1, kept as a flag: the compare in front of the memory's address was an
        # 8x8 ECP5 accelerator's slowest path (98.3 MHz).
        last_row = Signal()
        advance = self.o.valid & self.o.ready
        take = advance & last_chunk               # a whole row has gone
        group_last = last_row & tile_last
        # The word after this transfer's: the next lanes of the row, or the row's first lanes
        # again for the group's next row; after the group's last row, the next group's first.
        # It does not depend on the handshake, which only enables the read: through the
        # address it was the 4x4 ECP5 accelerator's slowest path (8.5 ns of routing).
        following = Mux(last_chunk & ~group_last, group_base, next_addr)
        m.d.comb += [self.mem_addr.eq(Mux(self.start, self.rq_base, following)),
                     self.mem_read.eq(self.start | advance)]
        with m.If(self.mem_read):
            m.d.sync += next_addr.eq(self.mem_addr + 1)
        with m.If(advance):
            m.d.sync += [chunk.eq(_wrap_inc(chunk, chunks - 1)),
                         last_chunk.eq(chunk == (chunks - 2) % chunks)]
        with m.If(take):
            m.d.sync += [row.eq(_wrap_inc(row, R - 1)), last_row.eq(row == (R - 2) % R)]
            with m.If(last_row):
                m.d.sync += [left.eq(Mux(tile_last, d.pixels, left - R)),
                             tile_last.eq(Mux(tile_last, d.pixels <= R, left <= 2 * R))]
        # The next group's first word, kept while the group's last transfer waits (when
        # `next_addr` holds still) rather than on the take: `following` reads `group_base` only
        # outside that transfer, and the handshake in front of its enables was late on a 32x32
        # ECP5 accelerator (11 ns).
        with m.If(group_last & last_chunk):
            m.d.sync += group_base.eq(next_addr)

        with m.If(self.start):
            m.d.sync += [group_base.eq(self.rq_base), primed.eq(1), row.eq(0), last_row.eq(R == 1),
                         left.eq(d.pixels), tile_last.eq(d.pixels <= R), chunk.eq(0),
                         last_chunk.eq(chunks == 1)]
        return m
