"""The write side of a stage: requantised rows -> the destination activation buffer.

Rows arrive in the order the array finishes them: for each output channel group, for each tile,
rows ``0 .. rows - 1`` (a row is one output pixel's ``cols`` channels). :class:`Writeback` drops
rows past the layer's last pixel and writes each word to the destination buffer (every bank at
once), fusing the pooling layers as ``sw/accel_model.py`` does:

- no pooling: word ``og * out_hw + oh * OW + ow``;
- max pooling (kernel ``k`` <= stride ``s``): pixel ``(oh, ow)`` belongs to window
  ``(oh // s, ow // s)`` when ``oh % s < k`` and ``ow % s < k`` and the window exists (edge windows
  that do not fit are dropped). The first pixel of a window (top-left, first in raster order) is
  written; later ones are read-modify-written with a lane-wise max (the read: one of the buffer's
  read ports, bank 0's or, deep, a bank of the write-back's own); back-to-back updates of one
  window see each other through its transparency for the write port (short pipeline) or by
  forwarding (deep);
- global average pooling (builds with ``global_pool``): per-lane sums over the group's pixels,
  then ``round_shift`` by ``gap_shift`` and saturation, one word per group.

The write-back also owns the buffers' write port: the host's writes (only while no stage runs) go
through it, so with the deep pipeline every write leaves from registers next to nothing but the
block RAMs (a select between the host and the write-back in front of them, its control the
sequencer's ``busy``, set a 16x16 ECP5 accelerator's clock: 96.3 MHz).

It never stalls (``i.ready`` is always high): one row per cycle, two pipeline stages, or five with
``config.writeback_pipeline == "deep"``: the old word of a max-pool update then arrives through a
register (its memory's clock-to-output, about 5.6 ns on an ECP5 block RAM, began the critical
path of the whole ECP5 accelerator; the accelerator gives the write-back a bank of its own, so
that register is the block RAM's own) and a copy of it near the merge, the write leaves from
registers, and the words the four rows before wrote are forwarded (the read is then not
transparent).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.compiler import DIM_BITS
from ..sw.numerics import int_range
from .array import REPLICA_SUFFIX, TILE
from .descriptor import write_layout

__all__ = ["Writeback"]


def _biased(x):
    """Signed ``x`` as unsigned with its sign bit flipped: the order is the same, and an unsigned
    compare is the bare carry out of a chain (a signed one adds logic after it, on the deep
    pipeline's merge path)."""
    return Cat(x[:-1], ~x[-1])


class Writeback(wiring.Component):
    """Writes a stage's requantised rows to the destination buffer (see the module docstring).

    Members
    -------
    desc : ``In(write_layout(config))``
    start : ``In(1)``
        Begin a stage (a pulse while idle; with the deep pipeline it begins a cycle later, from a
        register of the pulse). ``busy`` rises the cycle after the pulse.
    busy : ``Out(1)``
        Rows of the stage remain to be written.
    i : ``In(stream.Signature(ArrayLayout(signed(x_bits), lanes)))``
        Requantised rows (ReLU applied), ``cols / lanes`` transfers per row, lowest lanes first.
    w_en, w_addr, w_data : ``Out(2)``, ``Out``, ``Out``
        The activation buffers' write port: ``w_en[b]`` writes buffer ``b`` (the destination, or
        the host's).
    host_en, host_addr, host_data : ``In(2)``, ``In``, ``In``
        A host write to buffer ``b`` (``host_en[b]``), only while ``busy`` is low: short
        pipeline, on the write port in the same cycle; deep, two cycles later (through the last
        two stages).
    r_addr : ``Out``, r_data : ``In(ArrayLayout(act_word_bits, 2))``, dst : ``In(1)``
        A read port of each activation buffer (for max pooling), and which one is the
        destination (steady during a stage). Short pipeline: data one cycle after the address,
        transparent for the write port. Deep: data two cycles after the address (the port's
        word through a free-running register); it need not see the writes of the read's cycle
        and the three after it, which the write-back forwards.
    """

    def __init__(self, *, config):
        self._config = config
        self._deep = config.writeback_pipeline == "deep"
        a = unsigned(config.act_addr_bits)
        super().__init__({
            "desc": In(write_layout(config)),
            "start": In(1),
            "busy": Out(1),
            "i": In(stream.Signature(data.ArrayLayout(signed(config.x_bits), config.lanes))),
            "w_en": Out(2), "w_addr": Out(a), "w_data": Out(config.act_word_bits),
            "host_en": In(2), "host_addr": In(a), "host_data": In(config.act_word_bits),
            "r_addr": Out(a), "r_data": In(data.ArrayLayout(config.act_word_bits, 2)),
            "dst": In(1),
        })

    config = property(lambda self: self._config)

    @property
    def latency(self):
        """Cycles from a row on ``i`` to its write."""
        return 5 if self._deep else 2

    @property
    def host_latency(self):
        """Cycles from a host write on ``host_en`` to its write."""
        return 2 if self._deep else 0

    def elaborate(self, platform):
        m = Module()
        cfg, d = self._config, self.desc
        R, C, xb = cfg.rows, cfg.cols, cfg.x_bits
        a = cfg.act_addr_bits
        lane = data.ArrayLayout(signed(xb), C)

        # Row position (the stream order) and the layer's pixel position.
        row = Signal(range(R))
        og = Signal(DIM_BITS)
        left = Signal(cfg.count_bits)         # pixels of this group not written yet
        ow_c = Signal(DIM_BITS)
        dw, pw, dh, ph = (Signal(DIM_BITS, name=n) for n in ("dw", "pw", "dh", "ph"))
        og_dest = Signal(a + 1)           # og * out_hw
        row_dest = Signal(a + 1)          # og * out_hw + ph * PW
        active = Signal()
        m.d.comb += [self.i.ready.eq(1)]

        # A row arrives in cols / lanes parts: the earlier ones wait in `parts`, each in its own
        # register, enabled by its bit of the one-hot `part` (a shift register of all of them
        # had one enable, the requantiser's valid, reaching 224 flip-flops across a 32x32 ECP5
        # accelerator: 12.5 ns to the farthest).
        chunks = C // cfg.lanes
        part = Signal(chunks, init=1)
        row_data = Signal(lane)
        if chunks > 1:
            parts = [Signal(cfg.lanes * xb, name=f"part{k}", reset_less=True)
                     for k in range(chunks - 1)]
            with m.If(self.i.valid):
                m.d.sync += part.eq(part.rotate_left(1))
            for k, reg in enumerate(parts):
                with m.If(self.i.valid & part[k]):
                    m.d.sync += reg.eq(self.i.payload.as_value())
            m.d.comb += row_data.as_value().eq(Cat(*parts, self.i.payload.as_value()))
        else:
            m.d.comb += row_data.eq(self.i.payload)
        # The bounds the walk's end flags compare with, from registers (the descriptor holds
        # still for the stage, and its first row comes many cycles after the start): a
        # counter's next end is `counter == bound - 2`, one compare. The stride's subtraction
        # in front of the window counters' compares was an 8x8 ECP5 accelerator's slowest path
        # (94.3 MHz), and the iCEBreaker's 4x4's (wb.row_dest, 35.2 MHz with seed 1);
        # `ow_c + 1 == out_w_m1`, seven LUTs into `row_end` (seed 2 at 33 MHz, 31.0 ns).
        # (One bit wider: a bound of 1 gives -1, which no counter reaches.)
        stride_one, width_one = Signal(name="stride_one"), Signal(name="width_one")
        stride_m2, out_w_m2 = (Signal(DIM_BITS + 1, name=n) for n in ("stride_m2", "out_w_m2"))
        m.d.sync += [stride_one.eq(d.pool_s == 1), stride_m2.eq(d.pool_s - 2),
                     width_one.eq(d.out_w_m1 == 0), out_w_m2.eq(d.out_w_m1 - 1)]
        take = self.i.valid & active & part[-1]
        # The counters' ends are registers that move with the counters: `left != 0`, `left <= 1`
        # and `ow_c == out_w_m1` (the OR of left's bits, then the handshake and the compare into
        # the pooling counters' enables, 9 ns across the die, set the 16x8 ECP5 accelerator's
        # clock with placement seeds 4 and 5: 88.5, 93.6 MHz). So are the pooling offsets' ends,
        # `dw == pool_s - 1` and `dh == pool_s - 1` (the compare, then the handshake, into the
        # window registers' enables: 16.4 ns on a 32x32 ECP5 accelerator, its slowest path).
        # The short pipeline (iCE40) first kept only `left`'s two ends as registers, which were
        # the iCEBreaker 4x4's slowest path (27.8 ns, seed 1 at 36 MHz); then `row_end` and
        # `dw_end` as compares into pw's enable and carry chain were (28.0 ns, six LUTs, seed 1
        # at 40 MHz).
        pixel, last_pixel = Signal(name="pixel"), Signal(name="last_pixel")
        row_end, dw_end, dh_end = (Signal(name=n) for n in ("row_end", "dw_end", "dh_end"))
        first = (dh == 0) & (dw == 0)
        inside = (dh < d.pool_k) & (dw < d.pool_k) & (ph < d.pool_h) & (pw < d.pool_w)
        # The pixel's word, row_dest + pw. With the deep pipeline a register that moves with pw
        # and row_dest, so that the read address leaves a flip-flop: the sum into the
        # write-back's block RAM across the die was the 16x8 ECP5 accelerator's slowest path
        # (86.4 MHz, seed 1). (On the iCEBreaker's 4x4 the register cost 72 LUTs.)
        dest = Signal(a + 1)
        m.d.comb += self.r_addr.eq(dest)
        if not self._deep:
            m.d.comb += dest.eq(row_dest + pw)

        # Global average pooling (builds with global_pool): per-lane sums of the group's pixels.
        gap = cfg.global_pool
        sum_shape = signed(xb + cfg.count_bits)
        gap_first = Signal()
        if gap:
            sums = [Signal(sum_shape, name=f"gap_sum_{j}") for j in range(C)]
            gap_next = [Signal(sum_shape, name=f"gap_next_{j}") for j in range(C)]
            for j in range(C):
                m.d.comb += gap_next[j].eq(Mux(gap_first, 0, sums[j]) + row_data[j])

        # The walk over the layer's pixels and pooling windows: these registers move on each
        # row taken. With the deep pipeline and rows of several transfers they move to a copy
        # of their next values (`after`), computed from them in the cycles between rows (no row
        # is taken the cycle after a row or after a start): the decisions of the walk (row and
        # group ends, window ends, the handshake) in front of its registers were up to six
        # LUTs, a 32x32 ECP5 accelerator's slowest path (`dh_end`, 11.2 ns).
        walk = [row, og, active, left, ow_c, dw, pw, dh, ph, og_dest, row_dest, gap_first]
        if self._deep:
            walk += [pixel, last_pixel, row_end, dw_end, dh_end, dest]
        ahead = self._deep and chunks > 1
        active_busy = active
        if ahead:
            moved = {id(reg): Signal.like(reg, name=f"{reg.name}_moved") for reg in walk}
            after = [Signal.like(reg, name=f"{reg.name}_after") for reg in walk]
            m.d.comb += [moved[id(reg)].eq(reg) for reg in walk]
            m.d.sync += [copy.eq(moved[id(reg)]) for copy, reg in zip(after, walk)]
            # The walk moves a cycle after its row is taken, on a register of `take` (the next
            # row comes two cycles later at the earliest, and `after` was computed from the
            # walk's last move): the requantiser's valid, through the handshake, into the
            # enables of the walk's registers reached them 5.1 ns across a 32x32 ECP5
            # accelerator and was its slowest path with placement seed 3 (93.5 MHz).
            move = Signal(name="walk_move")
            m.d.sync += move.eq(take)
            # Busy ends in the cycle it did: `active` as it is after a pending move.
            active_after = after[[id(reg) for reg in walk].index(id(active))]
            active_busy = active & ~(move & ~active_after)
            with m.If(move):
                m.d.sync += [reg.eq(copy) for reg, copy in zip(walk, after)]
            step, walk_domain = Const(1), "comb"
        else:
            step, walk_domain = take, "sync"

        def to(reg, value):
            """Move the walk's register ``reg`` to ``value`` on the row taken."""
            return (moved[id(reg)] if ahead else reg).eq(value)

        def dest_at(value):
            """Move the deep pipeline's ``dest`` register to ``value`` (short: nothing)."""
            return [to(dest, value)] if self._deep else []

        def ends_at(**values):
            """Set the pooling-offset end registers."""
            ends = {"dw_end": dw_end, "dh_end": dh_end}
            return [to(ends[n], v) for n, v in values.items()]

        def group_reset(dest_base, to=to):
            # (From the descriptor itself: the registers above are a cycle behind it.)
            flags = [to(pixel, d.pixels != 0), to(last_pixel, d.pixels[1:] == 0)]
            flags += [to(row_end, d.out_w_m1 == 0), to(dw_end, d.pool_s == 1),
                      to(dh_end, d.pool_s == 1)]
            return [to(left, d.pixels), to(ow_c, 0), to(dw, 0), to(pw, 0), to(dh, 0), to(ph, 0),
                    to(og_dest, dest_base), to(row_dest, dest_base), to(gap_first, 1), *flags,
                    *([to(dest, dest_base)] if self._deep else [])]

        walk_to = m.d[walk_domain]
        with m.If(step & pixel):
            walk_to += [to(left, left - 1), to(pixel, left != 1), to(last_pixel, left <= 2)]
            walk_to += to(row_end, Mux(row_end, width_one, ow_c == out_w_m2))
            if gap:
                with m.If(d.gap):
                    walk_to += to(gap_first, 0)
            # Advance (oh, ow) and the pooling coordinates.
            with m.If(row_end):
                walk_to += [to(ow_c, 0), to(dw, 0), to(pw, 0)] + dest_at(row_dest)
                walk_to += ends_at(dw_end=stride_one)
                with m.If(dh_end):
                    walk_to += [to(dh, 0), to(ph, ph + 1), to(row_dest, row_dest + d.pool_w)]
                    walk_to += dest_at(row_dest + d.pool_w) + ends_at(dh_end=stride_one)
                with m.Else():
                    walk_to += [to(dh, dh + 1)] + ends_at(dh_end=dh == stride_m2)
            with m.Else():
                walk_to += to(ow_c, ow_c + 1)
                with m.If(dw_end):
                    walk_to += [to(dw, 0), to(pw, pw + 1)] + dest_at(dest + 1)
                    walk_to += ends_at(dw_end=stride_one)
                with m.Else():
                    walk_to += [to(dw, dw + 1)] + ends_at(dw_end=dw == stride_m2)
        with m.If(step):
            walk_to += to(row, Mux(row == R - 1, 0, row + 1))
            # The group's last tile: at its last row at most one pixel is left (at an earlier
            # tile's, at least two), so no tile counter is needed.
            with m.If((row == R - 1) & last_pixel):
                walk_to += to(og, og + 1)
                walk_to += group_reset(og_dest + d.out_hw)
                with m.If(og == d.og_m1):
                    walk_to += to(active, 0)

        # Stage 1: the word to write (or to merge with the old word).
        s1_valid, s1_merge, s1_gap = Signal(), Signal(), Signal()
        s1_dest = Signal(a)
        # The row's data, no reset (as in hw/accelerator.py) and no enable: it is read only in
        # the cycle after a row is taken, and its enable reached 263 flip-flops across a 32x32
        # ECP5 accelerator (12.8 ns to the farthest).
        s1_data = Signal(lane, reset_less=True)
        s1_sums = [Signal(sum_shape, name=f"s1_sum_{j}") for j in range(C)] if gap else []
        m.d.sync += [s1_valid.eq(0), s1_data.eq(row_data)]
        with m.If(take & pixel):
            m.d.sync += [s1_dest.eq(dest), s1_valid.eq(inside), s1_merge.eq(d.pool & ~first),
                         s1_gap.eq(0)]
            if gap:
                with m.If(d.gap):
                    m.d.sync += [sums[j].eq(gap_next[j]) for j in range(C)]
                    m.d.sync += [s1_sums[j].eq(gap_next[j]) for j in range(C)]
                    m.d.sync += [s1_valid.eq(left == 1), s1_gap.eq(1), s1_dest.eq(og_dest)]

        # Global average pooling: the group's sums rounded, round_shift(sum, k) =
        # ((2 * sum) >> k + 1) >> 1 (ties toward +inf; k = 0: the sum), then saturated.
        lo, hi = int_range(xb)
        avg = Signal(lane)
        for j in range(C) if gap else ():
            rounded = Signal(signed(sum_shape.width + 1), name=f"gap_round_{j}")
            m.d.comb += rounded.eq((((s1_sums[j] << 1) >> d.gap_shift) + 1) >> 1)
            m.d.comb += avg[j].eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded)))

        word = Signal(lane)               # the merged word (written this cycle: short)
        if self._deep:
            # Stage 2 merges the row with the words of the rows two to four ahead, stage 3 with
            # the row one ahead's or the memory's old word, stage 4 writes it from registers
            # (the merge's result to a block RAM across the die was the 16x16 ECP5
            # accelerator's slowest path: 58.7 MHz). The old word comes through the
            # register behind the read (the block RAM's own, on an ECP5) and a copy of it on the
            # write-back's side: the two buffers' block RAMs lie apart, and the route from one of
            # them into the merge's compare took 4.5-4.6 ns (16x12 seed 2, 94.6 MHz; 8x8 at
            # 107.5 MHz). The read went out at stage 0 and the memory is not transparent here, so
            # the words the four rows before wrote (while this one was at stages 0 to 3) are
            # missing from it: they are forwarded, the latest one first, when they went to the
            # same address. (A transparent read adds a compare and a multiplexer behind the block
            # RAM's output.) Each buffer's word is compared as it comes and the destination's
            # chosen after, the buffer select kept out of the compare's carry chain.
            near = [Signal(len(word), name=f"old_act{b}", reset_less=True)
                    for b, word in enumerate(self.r_data)]
            m.d.sync += [reg.eq(word) for reg, word in zip(near, self.r_data)]
            history = [Signal(lane, reset_less=True, name=f"word{k}") for k in range(1, 5)]
            # The rows written this cycle (history[0]) and the cycle before.
            w_dests = [Signal(a, name=f"dest{k}") for k in range(1, 3)]
            w_valids = [Signal(name=f"valid{k}") for k in range(1, 3)]
            s2_valid = Signal()
            s2_dest = Signal(a)
            s2_data = Signal(lane, reset_less=True, name="s2_data")
            s2_avg = Signal(lane, reset_less=True, name="s2_avg")
            s3_valid = Signal()
            s3_host = Signal(2)           # a host write to buffer 0 or 1 (no stage running)
            w_bufs = Signal(2)            # the write port's enables, a register per buffer
            s3_dest = Signal(a)
            s3_data = Signal(lane, reset_less=True)
            # The merged word is chosen, one-hot, from: the max of the new values and the old
            # word (the row one to four cycles ahead, or the memory's), the new values alone, or
            # the rounded sums. The choice is made at stage 1 (the destinations compared with
            # those of the rows that will be one to four ahead) and every candidate that exists
            # a stage early is merged at stage 2 (`s3_early`): the rows two to four ahead wrote
            # history[0..2] by then. Stage 3 merges only with the row one ahead and the
            # memory's words, so two LUTs follow its compares where three did: the merge with
            # its OR of seven candidates was a 32x32 ECP5 accelerator's slowest path (11.1 ns).
            # A copy of the choice per block of TILE lanes, kept apart in board builds: one
            # copy reached the selects of all 256 bits of a 32x32 ECP5 accelerator's word.
            groups = range(-(-C // TILE))
            choice2 = [{"new": Signal(name=f"s2_new{REPLICA_SUFFIX}{g}"),
                        "gap": Signal(name=f"s2_gap{REPLICA_SUFFIX}{g}"),
                        "max": [Signal(name=f"s2_max{k}{REPLICA_SUFFIX}{g}") for k in range(1, 5)],
                        "max_mem": [Signal(name=f"s2_max_act{b}{REPLICA_SUFFIX}{g}")
                                    for b in range(2)]}
                       for g in groups]
            choice3 = [{"max": Signal(name=f"s3_max1{REPLICA_SUFFIX}{g}"),
                        "max_mem": [Signal(name=f"s3_max_act{b}{REPLICA_SUFFIX}{g}")
                                    for b in range(2)]}
                       for g in groups]
            s3_early = Signal(lane, reset_less=True)
            # The new values again per compare after the first: one register reaching a lane's
            # three compares (and the new word's select) was routed 4.8 ns into one of their
            # carry chains, the start of a 32x32 ECP5 accelerator's slowest path (93.3 MHz).
            s2_news = [s2_data] + [Signal(lane, reset_less=True,
                                          name=f"s2_data{REPLICA_SUFFIX}{k}") for k in (1, 2)]
            s3_news = [s3_data] + [Signal(lane, reset_less=True,
                                          name=f"s3_data{REPLICA_SUFFIX}{k}") for k in (1, 2)]
            # The rows that will be one to four ahead of the row at stage 1 when it merges.
            ahead = [s2_valid & (s2_dest == s1_dest), s3_valid & (s3_dest == s1_dest)] + [
                valid & (dest == s1_dest) for valid, dest in zip(w_valids, w_dests)]
            s1_merges = s1_valid & s1_merge & ~s1_gap
            m.d.sync += [history[0].eq(word), *(h.eq(prev) for h, prev in zip(history[1:],
                                                                                history)),
                         w_dests[0].eq(s3_dest), w_valids[0].eq(s3_valid),
                         *(r.eq(prev) for r, prev in zip(w_dests[1:], w_dests)),
                         *(r.eq(prev) for r, prev in zip(w_valids[1:], w_valids)),
                         s2_valid.eq(s1_valid), s2_dest.eq(s1_dest),
                         *(new.eq(s1_data) for new in s2_news),
                         w_bufs.eq(Cat(s3_valid & ~self.dst, s3_valid & self.dst) | s3_host),
                         s3_valid.eq(s2_valid), s3_host.eq(self.host_en),
                         s3_dest.eq(Mux(s2_valid, s2_dest, self.host_addr)),
                         *(new.eq(Mux(s2_valid, s2_data.as_value(), self.host_data))
                           for new in s3_news)]
            for copy, later in zip(choice2, choice3):
                # (s1_merge and s1_gap keep the last row's values between stages: a host word
                # passing must see neither; it takes the place of the early merge below.)
                m.d.sync += [copy["gap"].eq(s1_valid & s1_gap),
                             copy["new"].eq(~s1_merge & ~s1_gap)]
                nearer = 0                # a row nearer ahead went to the same word
                for sel, hit in zip(copy["max"], ahead):
                    m.d.sync += sel.eq(s1_merges & ~nearer & hit)
                    nearer |= hit
                m.d.sync += [sel.eq(s1_merges & ~nearer & (self.dst == b))
                             for b, sel in enumerate(copy["max_mem"])]
                m.d.sync += [later["max"].eq(copy["max"][0]),
                             *(b.eq(a) for a, b in zip(copy["max_mem"], later["max_mem"]))]
            if gap:
                m.d.sync += s2_avg.eq(avg)

            def max_or_new(select, old, new):
                # Compared from registers, the one-hot choice after: choosing first put two LUT
                # levels in front of the compare's carry chain, on the critical path.
                return Mux(select, Mux(_biased(old) > _biased(new), old, new), 0)

            # The word written goes to the block RAMs from a copy of its own: the history's
            # first word, routed both to the write ports (spread with the block RAMs) and into
            # the merges' compares, reached the early merge 5.1 ns after the clock on a 32x32
            # ECP5 accelerator (10.8 ns to `s3_early`).
            w_word = Signal(lane, name=f"word{REPLICA_SUFFIX}", reset_less=True)
            m.d.sync += w_word.eq(word)
            w_en, w_dest = w_bufs, w_dests[0]
            for j in range(C):
                copy, later = choice2[j // TILE], choice3[j // TILE]
                early = Mux(copy["new"], s2_data[j], 0)
                for old, select, new in zip(history[:3], copy["max"][1:], s2_news):
                    early |= max_or_new(select, lane(old)[j], new[j])
                if gap:
                    early |= Mux(copy["gap"], s2_avg[j], 0)
                # Between stages the host's word passes as a new word.
                m.d.sync += s3_early[j].eq(Mux(s2_valid, early, lane(self.host_data)[j]))
                merged = s3_early[j] | max_or_new(later["max"], lane(history[0])[j], s3_data[j])
                for old, select, new in zip(near, later["max_mem"], s3_news[1:]):
                    merged |= max_or_new(select, lane(old)[j], new[j])
                m.d.comb += word[j].eq(merged)
        else:
            # Stage 1 writes: the memory's read, transparent for its write port, feeds the merge.
            # Between stages the host writes.
            w_en = Cat(s1_valid & ~self.dst, s1_valid & self.dst) | self.host_en
            w_dest = Mux(s1_valid, s1_dest, self.host_addr)
            w_word = Mux(s1_valid, word.as_value(), self.host_data)
            old = lane(Mux(self.dst, self.r_data[1], self.r_data[0]))
            for j in range(C):
                v = s1_data[j]
                merged = Mux(s1_merge & (old[j] > v), old[j], v)
                m.d.comb += word[j].eq(Mux(s1_gap, avg[j], merged) if gap else merged)

        busy = active_busy | s1_valid | (s2_valid | s3_valid | w_valids[0] if self._deep else 0)
        start = self.start
        if self._deep:
            # With the deep pipeline the stage starts a cycle after the pulse, from a register of
            # the write-back's own (busy meanwhile): the sequencer's, through the LUT of the
            # group registers' enables, reached 88 of them across a 32x32 ECP5 accelerator and
            # was late into 64. `desc` holds still for the stage, and its first row comes many
            # cycles later.
            start = Signal(name="start_copy")
            m.d.sync += start.eq(self.start)
            busy |= start
        m.d.comb += [self.w_en.eq(w_en), self.w_addr.eq(w_dest), self.w_data.eq(w_word),
                     self.busy.eq(busy)]

        with m.If(start):
            m.d.sync += [row.eq(0), og.eq(0), active.eq(1), part.eq(1)]
            m.d.sync += group_reset(0, to=lambda reg, value: reg.eq(value))
        return m
