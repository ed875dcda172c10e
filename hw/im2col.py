"""On-chip im2col: the k-step addresses of a layer, one step per cycle, from its descriptor.

For each output channel group ``og``, each tile of ``rows`` output pixels (raster order) and each
reduction step ``(kh, kw, c)`` of the patch (in that loop order), :class:`Im2colGenerator` emits one
*step*: for every array row ``r`` the activation word address of its pixel's patch element, whether
that element exists (padding, and rows past the last pixel, read as 0), the channel lane, the
weight word address, whether this is the last step of the reduction, and how many PEs do useful work.

Addresses come from counters and adders only (no multiplier, no divider), as
``sw/accel_model.py`` computes them:

- a *walker* steps through output pixels in raster order and tracks, per pixel, the top-left input
  position of its window ``ih0 = oh * stride - pad``, ``iw0 = ow * stride - pad`` and its address
  ``base = ih0 * W + iw0`` (``base += stride`` along a row, ``row_base += stride * W`` per row);
- it fills a shadow copy of the ``rows`` pixel registers one per cycle while the current tile runs;
  a tile starts by copying the shadow (so the walker costs no cycles when ``K >= rows``);
- per step, ``offset = cg * H * W + kh * W + kw`` is kept incrementally, row ``r`` reads word
  ``base[r] + offset`` and its element exists when ``0 <= ih0[r] + kh < H`` and
  ``0 <= iw0[r] + kw < W``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.compiler import DIM_BITS
from .array import REPLICA_SUFFIX
from .descriptor import descriptor_layout
from .skid import skid

__all__ = ["Im2colGenerator", "step_layout"]


def _le_2(value):
    """``value <= 2`` (unsigned) as logic: Yosys makes a carry chain of the comparison."""
    return (value[2:] == 0) & ~(value[0] & value[1])


def _in_range(value, bound):
    """``0 <= value < bound`` for a signed ``value`` wider than the unsigned ``bound``: its bits
    above ``bound``'s (the sign among them) are 0 and the rest compare as unsigned: a carry chain
    as wide as ``bound``, not as ``value`` (exact for every ``value``, wrapped ones included)."""
    n = len(bound)
    if len(value) <= n:
        return (value >= 0) & (value < bound)
    return (value[n:] == 0) & (value[:n] < bound)


def _branch_flags(last, ckw_last, c_last, lane_last):
    """From the reduction's end flags (the last step; the last of a kernel row, of a kernel
    column, of a channel group), the flags of the branch a step takes: the reduction's end, the
    next kernel row, the next kernel column, the next channel group (exclusive), and whether
    the lane wraps to 0."""
    return (last, ckw_last & ~last, c_last & ~ckw_last, lane_last & ~c_last, c_last | lane_last)


def step_layout(config):
    """One k-step: per-row addresses and valid bits, lane, ``first`` (the lane is 0: the step
    starts a new activation word), weight address, last, busy PEs; with the deep read pipeline
    also ``row_lane``, each row's copy of the lane (the same value), for its own bank's
    address."""
    lane = unsigned(max(1, (config.cols - 1).bit_length()))
    fields = {
        "addr": data.ArrayLayout(unsigned(config.act_addr_bits), config.rows),
        "valid": data.ArrayLayout(unsigned(1), config.rows),
        "lane": lane,
        "first": unsigned(1),
        "w_addr": unsigned(config.weight_addr_bits),
        "last": unsigned(1),
        "busy": unsigned((config.rows * config.cols).bit_length()),
    }
    if config.read_pipeline == "deep":
        fields["row_lane"] = data.ArrayLayout(lane, config.rows)
    return data.StructLayout(fields)


class Im2colGenerator(wiring.Component):
    """Emits every k-step of a stage on ``o`` (see the module docstring).

    Parameters
    ----------
    config : :class:`hw.config.ArrayConfig`

    Members
    -------
    desc : ``In(descriptor_layout(config))``
        The stage's descriptor; must hold still from ``start`` until ``busy`` falls.
    start : ``In(1)``
        Begin the stage (a one-cycle pulse while idle).
    release : ``In(1)``
        The previous stage has written this one's input: steps may go from the next cycle on.
        From ``start`` until then none is emitted (the walker fills the first tile meanwhile);
        a ``release`` in the cycle of ``start`` counts. With the deep read pipeline both act a
        cycle later (the generator registers them); ``busy`` rises with the cycle after
        ``start`` either way.
    busy : ``Out(1)``
        Steps remain to be emitted.
    o : ``Out(stream.Signature(step_layout(config)))``
        With the deep read pipeline through a skid register (:mod:`hw.skid`): the counters
        step on registers, not on the consumer's ready (which, through their enables, set an
        8x8 ECP5 accelerator's clock: 91.5 MHz).
    o_ready_next : ``In(rows)``, only with ``ready_ahead``
        ``o.ready``'s value in the next cycle (after a reset ``o.ready`` is 1), a bit per row
        (all equal): a consumer whose ready is a register's, or equal to one in every cycle,
        gives its next value, so each row can keep the generator's handshake itself (below),
        each from a bit the consumer may compute near the row.

    ``ready_ahead`` (deep read pipeline only): each row keeps copies of the generator's
    handshake state (whether a tile is loaded, the hold, the skid's) and computes its own
    step and load from them, its own copies of the consumer's ready and a few of the
    generator's registers, rather than taking one LUT of the central state that reaches every
    row (on a 32x32 ECP5 accelerator that LUT was the head of 30 late endpoints, up to 13.3
    ns of which 6.1 were its route to the far rows).
    """

    def __init__(self, *, config, ready_ahead=False):
        from .config import ArrayConfig
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        if ready_ahead and config.read_pipeline != "deep":
            raise ValueError("ready_ahead needs the deep read pipeline")
        self._config = config
        self._ready_ahead = ready_ahead
        members = {
            "desc": In(descriptor_layout(config)),
            "start": In(1),
            "release": In(1),
            "busy": Out(1),
            "o": Out(stream.Signature(step_layout(config))),
        }
        if ready_ahead:
            members["o_ready_next"] = In(config.rows)
        super().__init__(members)

    config = property(lambda self: self._config)
    ready_ahead = property(lambda self: self._ready_ahead)

    def elaborate(self, platform):
        m = Module()
        cfg, d = self._config, self.desc
        R, C = cfg.rows, cfg.cols
        a = cfg.act_addr_bits
        # ih0, iw0 and ih, iw of real pixels lie in [-pad, H + pad - 1]; the compiler keeps H, W
        # and pad below 2 ** DIM_BITS and H * W and pad * (W + 1) within the activation memory,
        # so both ends are below 2 ** (min(a, DIM_BITS) + 1) in magnitude. (Rows past the last
        # pixel may wrap: their valid bit is 0.)
        pos = signed(min(a, DIM_BITS) + 2)
        # Addresses and offsets only ever meet in a sum of which the memory takes the low a bits:
        # they are kept modulo 2 ** a (base0 is negative with padding).
        base_shape = unsigned(a)
        off_shape = unsigned(a)
        # With the deep read pipeline (ECP5 builds) more of the arithmetic is kept in registers
        # (the counters' ends, each row's input position): see below.
        deep = cfg.read_pipeline == "deep"

        # --- walker: fills the shadow pixel registers, one pixel per cycle ------------------
        w_ow = Signal(DIM_BITS)
        # (Named: a tuple assignment leaves a signal unnamed in Amaranth, and so in reports.)
        w_ih0, w_iw0 = Signal(pos, name="w_ih0"), Signal(pos, name="w_iw0")
        w_base = Signal(base_shape, name="w_base")
        w_row_base = Signal(base_shape, name="w_row_base")
        w_left = Signal(cfg.count_bits)       # pixels of this pass not yet walked
        fill = Signal(range(R + 1))       # shadow rows loaded
        # The rows' registers (shadow and current) have no reset: each is written before it is
        # read (a shadow row as `fill` reaches it, the current ones as a tile is loaded from
        # them), and on a 32x32 ECP5 accelerator they were 1,730 of the reset net's 3,514
        # loads, a register per row across the die.
        sh_ih0 = [Signal(pos, name=f"sh_ih0_{r}", reset_less=True) for r in range(R)]
        sh_iw0 = [Signal(pos, name=f"sh_iw0_{r}", reset_less=True) for r in range(R)]
        sh_base = [Signal(base_shape, name=f"sh_base_{r}", reset_less=True) for r in range(R)]
        sh_pv = [Signal(name=f"sh_pv_{r}", reset_less=True) for r in range(R)]
        sh_last = Signal()                # the shadow holds the pass's last tile

        # w_ow == out_w_m1, w_left <= 1 and w_left != 0, kept as registers: compares in front of
        # the walker registers' enables were the critical path on an iCE40 (and `w_left != 0`
        # in front of w_left's, 18 endpoints late on a 32x32 ECP5 accelerator). A tile is the
        # pass's last when at most one pixel is left for its last row (an earlier tile leaves at
        # least two for it), so no tile counter is needed.
        w_ow_last, w_few = Signal(name="w_ow_last"), Signal(name="w_few")
        w_more = Signal(name="w_more")

        def walker_reset():
            return [w_ow.eq(0), w_ih0.eq(-d.pad), w_iw0.eq(-d.pad), w_base.eq(d.base0),
                    w_row_base.eq(d.base0), w_left.eq(d.pixels), w_few.eq(d.pixels[1:] == 0),
                    w_more.eq(d.pixels != 0), w_ow_last.eq(d.out_w_m1 == 0)]

        active = Signal()                 # the stage is running (steps or fills remain)
        # `fill == R` (the shadow rows are all filled) and `fill == R - 1`: with the deep
        # pipeline each a register of its own (the compares of `fill` were two of the four LUT
        # levels in front of the rows' copies of the load, 11.9 ns on a 32x32 ECP5
        # accelerator); `full` is kept with its next value for those copies.
        if deep:
            full, full_next = Signal(name="full"), Signal(name="full_next")
            fill_last = Signal(init=R == 1)
            m.d.comb += full_next.eq(full)
            m.d.sync += full.eq(full_next)
        else:
            full, fill_last = fill == R, fill == R - 1
        walk = Signal()
        m.d.comb += walk.eq(active & ~full)

        def fill_shadow_row(r):
            m.d.sync += [sh_ih0[r].eq(w_ih0), sh_iw0[r].eq(w_iw0), sh_base[r].eq(w_base),
                         sh_pv[r].eq(w_more)]

        with m.If(walk):
            if not deep:      # (with the deep pipeline each row's own register: below)
                with m.Switch(fill):
                    for r in range(R):
                        with m.Case(r):
                            fill_shadow_row(r)
            m.d.sync += fill.eq(fill + 1)
            if deep:
                m.d.sync += fill_last.eq(fill == R - 2)
                with m.If(fill_last):
                    m.d.comb += full_next.eq(1)
            with m.If(w_more):
                m.d.sync += [w_left.eq(w_left - 1), w_few.eq(_le_2(w_left)),
                             w_more.eq(w_left != 1)]
            with m.If(fill_last):
                m.d.sync += sh_last.eq(w_few)
            with m.If(fill_last & w_few):
                # The pass over all pixels is complete: the next group starts at pixel 0.
                m.d.sync += walker_reset()
            with m.Else():
                with m.If(w_ow_last):
                    m.d.sync += [w_ow.eq(0), w_ih0.eq(w_ih0 + d.stride), w_iw0.eq(-d.pad),
                                 w_row_base.eq(w_row_base + d.row_step),
                                 w_base.eq(w_row_base + d.row_step),
                                 w_ow_last.eq(d.out_w_m1 == 0)]
                with m.Else():
                    m.d.sync += [w_ow.eq(w_ow + 1), w_iw0.eq(w_iw0 + d.stride),
                                 w_base.eq(w_base + d.stride), w_ow_last.eq(w_ow + 1 == d.out_w_m1)]

        # --- the current tile ----------------------------------------------------------------
        cur_iw0 = [Signal(pos, name=f"iw0_{r}", reset_less=True) for r in range(R)]
        # Each row's input position (ih0 + kh, iw0 + kw). With the deep pipeline these are
        # registers that step with kh and kw, so only the range compares stand in front of the
        # valid bits (the sums and then the compares, two carry chains from kh, set a 16x12 ECP5
        # accelerator's clock: 97.2 MHz). iCE40 builds keep the sums (no flip-flops for them),
        # and so the tile's ih0.
        cur_ih0 = None if deep else [Signal(pos, name=f"ih0_{r}", reset_less=True)
                                     for r in range(R)]
        ih = [Signal(pos, name=f"ih_{r}", reset_less=True) for r in range(R)]
        iw = [Signal(pos, name=f"iw_{r}", reset_less=True) for r in range(R)]
        # (With the deep pipeline a row's address registers below start from its shadow base.)
        cur_base = None if deep else [Signal(base_shape, name=f"base_{r}", reset_less=True)
                                      for r in range(R)]
        cur_pv = [Signal(name=f"pv_{r}", reset_less=True) for r in range(R)]
        tile_last = Signal()              # the current tile is the group's last
        loaded = Signal()                 # the current registers hold an unfinished tile
        loaded_next = Signal()
        m.d.comb += loaded_next.eq(loaded)
        m.d.sync += loaded.eq(loaded_next)
        # (A start comes only while idle, `issuing` and `loaded` low: it leaves `loaded` as it
        # is, low until the first tile is in.)
        issuing = Signal(name="issuing")  # steps remain in this stage
        issuing_next = Signal(name="issuing_next")
        m.d.comb += issuing_next.eq(issuing)
        m.d.sync += issuing.eq(issuing_next)
        load = Signal()                   # the next tile moves from the shadow rows
        m.d.comb += load.eq(issuing & ~loaded & full)
        with m.If(load):
            m.d.comb += loaded_next.eq(1)
            m.d.sync += [fill.eq(0), tile_last.eq(sh_last)]
            if deep:
                m.d.comb += full_next.eq(0)
                m.d.sync += fill_last.eq(R == 1)
        # With the deep pipeline each row loads its registers on a copy of `load` of its own,
        # set a cycle ahead: `load`, one LUT of the generator's registers, reached the 1,300
        # flip-flops of the 32 rows across the die (their input positions were 236 of a 32x32
        # ECP5 accelerator's late endpoints, up to 11.6 ns).
        # The rows' copies (of the load, the step and the flags) and addresses have no reset:
        # Yosys folded the reset into their next values' logic beside the start, and the route
        # from the reset's flip-flop into that logic began the slowest path of both 32x32 ECP5
        # builds at f903f1f (12.4 and 13.5 ns). After a reset the copies agree with their
        # originals within a cycle, and what they drive is used only after the stage's start.
        if deep:
            row_loads = [Signal(name=f"load{REPLICA_SUFFIX}_row{r}", reset_less=True)
                         for r in range(R)]
            if not self._ready_ahead:     # (else each row's own handshake sets its copy)
                m.d.sync += [copy.eq(issuing_next & ~loaded_next & full_next)
                             for copy in row_loads]
        else:
            row_loads = [load] * R
        for r in range(R):
            with m.If(row_loads[r]):
                m.d.sync += [cur_iw0[r].eq(sh_iw0[r]), cur_pv[r].eq(sh_pv[r])]
                if deep:      # a tile starts at kh = kw = 0
                    m.d.sync += [ih[r].eq(sh_ih0[r]), iw[r].eq(sh_iw0[r])]
                else:
                    m.d.sync += [cur_ih0[r].eq(sh_ih0[r]), cur_base[r].eq(sh_base[r])]

        # --- reduction counters --------------------------------------------------------------
        c = Signal(range(cfg.max_k + 1))
        lane = Signal(range(C))
        # `lane == 0` as a register of its own with the deep pipeline, set as the lane steps: the
        # compare behind the read stage's skid register, into the fetcher's enables across the
        # die, set a 16x32 ECP5 accelerator's clock (91.2 MHz).
        first = Signal(init=1) if deep else None
        kw, kh = Signal(DIM_BITS, name="kw"), Signal(DIM_BITS, name="kh")
        # The offsets the next kernel row and the next kernel column start at, (kh + 1) * W and
        # kh * W + kw + 1, kept as registers: the sums in front of the offset, then the route
        # to the far rows, set a 16x12 ECP5 accelerator's clock (97.8 MHz). (With the deep
        # pipeline each row keeps its own: below.)
        if not deep:
            next_row_off = Signal(off_shape)
            next_col_off = Signal(off_shape)
        og = Signal(DIM_BITS)
        w_addr = Signal(cfg.weight_addr_bits)
        og_base = Signal(cfg.weight_addr_bits)

        # With the deep read pipeline (ECP5 builds) the counters' ends are registers, set as the
        # counters step: their compares in front of the generator's enables, routed across a
        # 16x8 accelerator's die, set its clock (91.2 MHz). So are the ends' conjunctions that
        # choose a step's branch (kernel column, kernel row, the reduction's last step): built
        # from the single ends, each enable was a chain of LUTs, the step through it into the
        # output-group registers' enables a 16x16 accelerator's slowest path (94.9 MHz). (iCE40
        # builds keep the compares: as registers, with the write-back's, the ends took the 4x4 80
        # cells more and placed it slower, docs/board_log.md.)
        if deep:
            ends = {n: Signal(name=f"{n}_last") for n in ("lane", "c", "kw", "kh", "og")}
            # The flags' next values after a step (`nxt_step`: as they are, unless a step's
            # branch below sets them) and in all (`nxt`: those, unless a start sets them).
            nxt_step = {n: Signal(name=f"{n}_last_step") for n in ends}
            nxt = {n: Signal(name=f"{n}_last_next") for n in ends}
            m.d.comb += [nxt_step[n].eq(flag) for n, flag in ends.items()]
            m.d.comb += [nxt[n].eq(nxt_step[n]) for n in ends]
            m.d.sync += [flag.eq(nxt[n]) for n, flag in ends.items()]
            # A step's branches set the flags from registers only: `ahead`, the flag after the
            # counter's next step (`counter + 1 == bound`, kept as the counter steps), and the
            # flag at a restart (`bound == 0`; `bound == 1` for `ahead` then). The compares of
            # `counter + 1` in front of the rows' copies of the flags, one LUT reaching 32 rows
            # after them, made 62 of a 32x32 ECP5 accelerator's late endpoints (up to 12.2 ns).
            counters = {"lane": lane, "c": c, "kw": kw, "kh": kh}
            bounds = {"lane": C - 1, "c": d.cin_m1, "kw": d.kw_m1, "kh": d.kh_m1}
            ahead = {n: Signal(name=f"{n}_last_ahead") for n in counters}
            at_zero = {n: Signal(name=f"{n}_last_at_zero") for n in counters}
            at_one = {n: Signal(name=f"{n}_last_at_one") for n in counters}
            m.d.sync += [at_zero[n].eq(bound == 0) for n, bound in bounds.items()]
            m.d.sync += [at_one[n].eq(bound == 1) for n, bound in bounds.items()]
            ckw_last, last = Signal(name="ckw_last"), Signal(name="k_last")
            m.d.sync += [ckw_last.eq(nxt["c"] & nxt["kw"]),
                         last.eq(nxt["c"] & nxt["kw"] & nxt["kh"])]
            lane_last, c_last, og_last = ends["lane"], ends["c"], ends["og"]
            # Each row's registers (input position, offset) step on copies of the branch flags
            # of its own: with the counters' flags, the LUTs of the step and the flags that
            # enable the rows were placed among the rows, and the route out and back to the
            # next flags (8.6 ns) set a 16x32 ECP5 accelerator's clock (94.5 MHz); with one copy
            # for all rows, the route from it to the farthest row (98.1 MHz).
            # Each row rebuilds the flags' next values after a step in LUTs of its own, from
            # its copy of the step and the flag registers (the branches below, again): taken
            # from the generator's next values, one LUT after the step's and the branches'
            # reached all 32 rows' copies, 25 of a 32x32 ECP5 accelerator's late endpoints
            # (12.2 ns). A start's values are left out: a start comes only while idle, and the
            # copies agree with the flags a cycle later, long before the first step (the walker
            # fills a tile first).
            # The copies say which branch the row's next step takes, one flag per branch
            # (exclusive), so that the rows' registers choose among their next values by one
            # flag each: with the `last` flags and the `else` of each branch in front of them,
            # a row's `iw` took four LUTs spread apart (a 32x32 ECP5 accelerator's slowest path
            # with seed 2 at 0b655bb, 11.1 ns; with seed 3, 39 late `iw` and 9 late addresses).
            rows_flags = [[Signal(name=f"{n}{REPLICA_SUFFIX}_row{r}", reset_less=True)
                           for n in ("k_last", "to_kh", "to_kw", "to_c", "lane_wrap")]
                          for r in range(R)]

            def flags_after(took):
                """The rows' flags after a cycle in which ``took`` says whether a step was
                taken: see :func:`_branch_flags`."""
                e, az, ah = ends, at_zero, ahead
                c_ = Mux(took, Mux(e["c"], az["c"], ah["c"]), e["c"])
                kw_ = Mux(took & e["c"], Mux(ckw_last, az["kw"], ah["kw"]), e["kw"])
                kh_ = Mux(took & ckw_last, Mux(last, az["kh"], ah["kh"]), e["kh"])
                lane_ = Mux(took, Mux(e["c"] | e["lane"], az["lane"], ah["lane"]), e["lane"])
                return _branch_flags(c_ & kw_ & kh_, c_ & kw_, c_, lane_)
        else:
            lane_last = lane == C - 1
            c_last = c == d.cin_m1
            kw_last = kw == d.kw_m1
            kh_last = kh == d.kh_m1
            og_last = og == d.og_m1
            ckw_last = c_last & kw_last
            last = ckw_last & kh_last
            rows_flags = [_branch_flags(last, ckw_last, c_last, lane_last)]

        def lane_to_zero():
            return [lane.eq(0)] + ([first.eq(1)] if deep else [])

        def next_lane():
            return [lane.eq(lane + 1)] + ([first.eq(0)] if deep else [])

        def restart(*names):
            """At this step the counters ``names`` go back to 0: set their end flags' next
            values and their ``ahead`` (nothing when the ends are compares)."""
            for n in names if deep else ():
                m.d.comb += nxt_step[n].eq(at_zero[n])
                m.d.sync += ahead[n].eq(at_one[n])

        def advance(name):
            """At this step the counter ``name`` goes up by one: the same."""
            if deep:
                m.d.comb += nxt_step[name].eq(ahead[name])
                m.d.sync += ahead[name].eq(counters[name] + 2 == bounds[name])

        # kh * W + kw + (c // C) * H * W, kept as a register of its own (not a sum of two): a sum
        # in front of the rows' adders put two carry chains before the activation memories'
        # addresses (an ECP5 critical path). With the deep pipeline each row keeps its address,
        # base[r] + offset, in a register of its own instead, stepping by the same branches:
        # one offset register reaching every row's address adder set a 16x12 ECP5
        # accelerator's clock (3.9 ns of routing, 99.1 MHz); with a copy per row, their sum,
        # placed between the row's registers and its bank's block RAM, was routed 6.5 ns into
        # the block RAM's address (a 32x32 ECP5 accelerator at a8a21a1, seed 3: 10.45 ns); as a
        # register, the sum of the base's and offset's next values, it put two carry chains
        # (with `offset + in_hw`) in front of 31 of the registers (seed 2 at 4bae441: 11.32 ns).
        # Each step's sum is one of the row's registers and a row's copy of a descriptor field
        # (or 1): the row's addresses at its next kernel row's and current column's start,
        # `kh_next_addr` (base + (kh + 1) * W) and `kw_addr` (base + kh * W + kw), are registers
        # of its own. (With `kh_addr`, base + kh * W, the next kernel row's sum went into the
        # offset and `kw_addr`: a row's carry chain placed far from the row began a 32x32 ECP5
        # accelerator's slowest path, 11.37 ns with seed 2; now the sum is a register.) The
        # generator's `next_row_off`, routed 7.3 ns to a far row's `base + next_row_off`, began
        # a 32x32 ECP5 accelerator's slowest path at 74b1c2b (seed 1: 11.67 ns, 32 late).
        offsets = ([Signal(base_shape, name=f"addr{REPLICA_SUFFIX}_row{r}", reset_less=True)
                    for r in range(R)] if deep else [Signal(off_shape, name="offset")])
        kh_next_addrs = [Signal(base_shape, name=f"kh_next_addr_row{r}", reset_less=True)
                         for r in range(R)] if deep else []
        kw_addrs = [Signal(base_shape, name=f"kw_addr_row{r}", reset_less=True)
                    for r in range(R)] if deep else []

        # With the deep pipeline each row's copy of the lane, for the entry its bank reads
        # (`step_layout`'s `row_lane`): the lane's high bits, through the step's skid, reached
        # all 32 rows' banks on a 32x32 ECP5 accelerator (65 loads each; 78 late endpoints at
        # fde380e, seed 2, up to 12.3 ns). They step with the rows' registers below, and a
        # start clears them (they have no reset).
        row_lanes = ([Signal.like(lane, name=f"lane{REPLICA_SUFFIX}_row{r}", reset_less=True)
                      for r in range(R)] if deep else [])

        if not deep:
            m.d.comb += [ih[r].eq(cur_ih0[r] + kh) for r in range(R)]
            m.d.comb += [iw[r].eq(cur_iw0[r] + kw) for r in range(R)]
        # With the deep pipeline the sequencer's start and release act a cycle later, from
        # registers of the generator's own: the sequencer's start register, routed across the
        # die into the enables of the generator's counters, began the slowest path of both
        # 32x32 ECP5 builds at 70a34bf (12.4 and 12.9 ns). (Both wait alike, so a release in
        # the cycle of start still counts; `busy` below covers the cycle between.)
        # The walker resets on a copy of its own (the start register, reaching the rows'
        # offsets too, was 3.8 ns of routing from the walker's logic, the head of the slowest
        # path of a 32x32 ECP5 accelerator at fde380e: 11.6 ns, seed 1). Both are named as
        # copies, so board builds keep them apart (up to 1e6506f Yosys merged them into one).
        if deep:
            start = Signal(name=f"start{REPLICA_SUFFIX}_central")
            release = Signal(name="release_copy")
            walker_start = Signal(name=f"start{REPLICA_SUFFIX}_walker")
            m.d.sync += [start.eq(self.start), release.eq(self.release),
                         walker_start.eq(self.start)]
        else:
            start, release = self.start, self.release
            walker_start = start
        # Held from `start` until `release`, in a register of the generator's own (the
        # sequencer's, routed into the generator's step logic, began a 16x16 ECP5 accelerator's
        # slowest path: 94.4 MHz).
        # (Named as the rows' copies are, so kept apart from them in board builds: Yosys
        # merged it into row 0's copy, whose LUTs then began the slowest paths of 32x32 ECP5
        # accelerators at 1e6506f, seeds 4 and 5: 11.7 and 13.0 ns.)
        hold = Signal(init=1, name=f"hold{REPLICA_SUFFIX}_central")
        hold_next = Signal(name="hold_next")
        m.d.comb += hold_next.eq(Mux(release, 0, Mux(start, 1, hold)))
        m.d.sync += hold.eq(hold_next)
        p = Signal(step_layout(cfg))
        valid, step = Signal(name="valid"), Signal(name="step")   # a step is offered; it is taken
        m.d.comb += valid.eq(loaded & ~hold)
        if deep:
            # With `ready_ahead` each row's part of the step (its address, valid bit and lane)
            # leaves the skid by the row's own copy of its flag (from the row's handshake,
            # below): the central flag, through the skid's choice and on to the rows' block
            # RAM addresses across the die, began the slowest path of 32x32 ECP5 accelerators
            # at 1e6506f (seed 1: 13.0 ns, 12.1 of it routing; 20 late addresses).
            row_helds = ([Signal(name=f"step_held{REPLICA_SUFFIX}_row{r}") for r in range(R)]
                         if self._ready_ahead else None)
            row_parts = ([lambda v, r=r: Cat(v.addr[r], v.valid[r], v.row_lane[r])
                          for r in range(R)] if self._ready_ahead else ())
            out = skid(m, valid, p, self.o.ready, "step", row_parts, held_copies=row_helds)
            m.d.comb += [self.o.valid.eq(out.valid), self.o.payload.eq(out.payload),
                         step.eq(valid & out.ready)]
            # `busy` as a register of its next value (the same in every cycle): its LUT,
            # routed to the sequencer's enables across the die, was late into a 32x32 ECP5
            # accelerator's stage counter (10.2-11.0 ns).
            # (The sequencer's start sets it at once: the stage begins here a cycle later.)
            busy = Signal(name="busy_copy")
            m.d.sync += busy.eq(issuing_next | out.held_next | self.start)
            m.d.comb += self.busy.eq(busy)
            # Each row's registers step on a copy of `step` of their own, set a cycle ahead:
            # the step's LUT of the generator's registers reached the rows across the die
            # (their input position registers' enables, 98.0 MHz on a 16x32 ECP5 accelerator).
            # Their next value leaves `start` out: it comes only while idle, when `loaded` is
            # low and stays so, and no step follows (the sequencer's start pulse, through three
            # LUTs into these copies, was a 24x32 ECP5 accelerator's slowest path: 97.6 MHz).
            row_steps = [Signal(name=f"step{REPLICA_SUFFIX}_row{r}", reset_less=True)
                         for r in range(R)]
            if self._ready_ahead:
                self._row_handshakes(m, row_loads, row_steps, [flags[0] for flags in rows_flags],
                                     row_helds, tile_last=tile_last, og_last=og_last,
                                     active=active, fill_last=fill_last)
            else:
                m.d.sync += [go.eq(loaded_next & ~(hold & ~release) & ~out.held_next)
                             for go in row_steps]
        else:
            m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(p),
                         step.eq(valid & self.o.ready), self.busy.eq(issuing)]
            row_steps = [step]
        if deep:
            # Each row compares its position with copies of the input's height and width of its
            # own: the descriptor's, routed to the 32 rows' compares across the die (6.5 ns),
            # began the slowest path of a 32x32 ECP5 accelerator at a8a21a1 (11.33 ns, seed 2)
            # and several of its late endpoints with seed 3. The copies lag the descriptor a
            # cycle; it holds still from the start, and the first step comes four cycles after
            # it at the earliest (one row: its shadow fills, then loads; tests/hw/test_im2col.py
            # fails copies five cycles late).
            row_in_h = [Signal.like(d.in_h, name=f"in_h{REPLICA_SUFFIX}_row{r}",
                                    reset_less=True) for r in range(R)]
            row_in_w = [Signal.like(d.in_w, name=f"in_w{REPLICA_SUFFIX}_row{r}",
                                    reset_less=True) for r in range(R)]
            # So does each row step its address by its own copy of the input's plane size.
            row_in_hw = [Signal.like(d.in_hw, name=f"in_hw{REPLICA_SUFFIX}_row{r}",
                                     reset_less=True) for r in range(R)]
            m.d.sync += [copy.eq(d.in_h) for copy in row_in_h]
            m.d.sync += [copy.eq(d.in_w) for copy in row_in_w]
            m.d.sync += [copy.eq(d.in_hw) for copy in row_in_hw]
            row_addrs = offsets
        else:
            row_in_h, row_in_w, row_in_hw = [d.in_h] * R, [d.in_w] * R, [d.in_hw] * R
            row_addrs = [cur_base[r] + offsets[0] for r in range(R)]
        for r in range(R):
            m.d.comb += [
                p.addr[r].eq(row_addrs[r]),
                p.valid[r].eq(cur_pv[r] & _in_range(ih[r], row_in_h[r])
                              & _in_range(iw[r], row_in_w[r])),
            ]
        m.d.comb += [
            p.lane.eq(lane), p.first.eq(first if deep else lane == 0), p.w_addr.eq(w_addr),
            *[p.row_lane[r].eq(row_lane) for r, row_lane in enumerate(row_lanes)],
            p.last.eq(last),
            p.busy.eq(Mux(tile_last, Mux(og_last, d.busy_both, d.busy_rows),
                          Mux(og_last, d.busy_cols, d.busy_full))),
        ]

        # One branch per kind of step, each chosen by one flag (with the deep pipeline a
        # register): the reduction's last step, the last of a kernel row, the last of a kernel
        # column, and the rest.
        with m.If(step):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(last):
                m.d.sync += [c.eq(0), *lane_to_zero(), kw.eq(0), kh.eq(0)]
                if not deep:
                    m.d.sync += [next_row_off.eq(d.in_w), next_col_off.eq(1)]
                m.d.comb += loaded_next.eq(0)
                restart("lane", "c", "kw", "kh")
                with m.If(tile_last):
                    m.d.sync += og.eq(og + 1)
                    if deep:
                        m.d.comb += nxt_step["og"].eq(og + 1 == d.og_m1)
                    with m.If(og_last):
                        m.d.sync += active.eq(0)
                        m.d.comb += issuing_next.eq(0)
                with m.Else():
                    m.d.sync += w_addr.eq(og_base)
            with m.Elif(ckw_last):
                m.d.sync += [c.eq(0), *lane_to_zero(), kw.eq(0), kh.eq(kh + 1)]
                if not deep:
                    m.d.sync += [next_row_off.eq(next_row_off + d.in_w),
                                 next_col_off.eq(next_row_off + 1)]
                restart("lane", "c", "kw")
                advance("kh")
            with m.Elif(c_last):
                m.d.sync += [c.eq(0), *lane_to_zero(), kw.eq(kw + 1)]
                if not deep:
                    m.d.sync += next_col_off.eq(next_col_off + 1)
                restart("lane", "c")
                advance("kw")
            with m.Else():
                m.d.sync += c.eq(c + 1)
                advance("c")
                with m.If(lane_last):
                    m.d.sync += lane_to_zero()
                    restart("lane")
                with m.Else():
                    m.d.sync += next_lane()
                    advance("lane")

        # The next output group's first weight, kept while the group's last step waits (when
        # `w_addr` holds still) rather than on the step: only the branch above reads `og_base`,
        # never in the group's last tile, and the handshake in front of its enables was late
        # into its 12 flip-flops on a 32x32 ECP5 accelerator (11.1 ns).
        with m.If(loaded & last & tile_last):
            m.d.sync += og_base.eq(w_addr + 1)

        # The rows' registers by the same branches (one offset for all rows and no registers of
        # input positions when the ends are compares). A deep row's addresses start at its base
        # as a tile loads (every tile's first step comes after its load, and the reduction's
        # last step leaves the tile: nothing to set then); the offset restarts at 0.
        for r, (row_step, (row_last, to_kh, to_kw, to_c, lane_wrap)) in enumerate(
                zip(row_steps, rows_flags)):
            offset = offsets[r]
            if deep:
                m.d.sync += [flag.eq(value) for flag, value in zip(rows_flags[r],
                                                                    flags_after(row_step))]
                with m.If(row_loads[r]):
                    m.d.sync += [a.eq(sh_base[r]) for a in (offset, kw_addrs[r])]
                with m.If(row_loads[r] | (row_step & to_kh)):
                    kh_next = kh_next_addrs[r]
                    m.d.sync += kh_next.eq(Mux(row_loads[r], sh_base[r], kh_next)
                                           + row_in_w[r])
            with m.If(row_step):          # (the branches are exclusive)
                if not deep:
                    with m.If(row_last):
                        m.d.sync += offset.eq(0)
                with m.If(to_kh):                 # the next kernel row: iw back to its start
                    if deep:
                        m.d.sync += [a.eq(kh_next_addrs[r]) for a in (offset, kw_addrs[r])]
                        m.d.sync += [ih[r].eq(ih[r] + 1), iw[r].eq(cur_iw0[r])]
                    else:
                        m.d.sync += offset.eq(next_row_off)
                with m.If(to_kw):                 # the next kernel column
                    if deep:
                        m.d.sync += [a.eq(kw_addrs[r] + 1) for a in (offset, kw_addrs[r])]
                        m.d.sync += iw[r].eq(iw[r] + 1)
                    else:
                        m.d.sync += offset.eq(next_col_off)
                with m.If(to_c):                  # the next channel group
                    m.d.sync += offset.eq(offset + row_in_hw[r])
                if deep:      # as `lane` steps: back to 0 at a channel's last or lane's last
                    row_lane = row_lanes[r]
                    m.d.sync += row_lane.eq(Mux(lane_wrap, 0, row_lane + 1))

        if deep:
            # Each shadow row is written on a register of its own, `fill_at[r]`: a token that a
            # start or a load puts on row 0 and that passes down one row per cycle, as the
            # walker fills them (it fills every cycle from then until the shadow is full).
            # The decode of `fill` with `active` and `full` in front of the rows' enables,
            # then the route to the far rows, set a 32x32 ECP5 accelerator's clock (seed 2 at
            # 1e6506f: 10.9 ns). The token is not stopped where the stage ends: a token left
            # over writes a row of the next stage's shadow ahead of that stage's own token,
            # which rewrites it before the tile is loaded (every load waits for a full shadow);
            # so is one a reset leaves (the tokens have no reset).
            fill_at = [Signal(name=f"fill_at_{r}", reset_less=True) for r in range(R)]
            m.d.sync += [fill_at[0].eq(start | load),
                         *[fill_at[r].eq(fill_at[r - 1]) for r in range(1, R)]]
            for r in range(R):
                with m.If(fill_at[r]):
                    fill_shadow_row(r)

        with m.If(walker_start):
            m.d.sync += walker_reset()
        with m.If(start):
            m.d.sync += [
                fill.eq(0), active.eq(1),
                c.eq(0), *lane_to_zero(), kw.eq(0), kh.eq(0),
                og.eq(0), w_addr.eq(d.w_base), og_base.eq(d.w_base),
            ] + [lane.eq(0) for lane in row_lanes]
            if not deep:
                m.d.sync += [offsets[0].eq(0), next_row_off.eq(d.in_w), next_col_off.eq(1)]
            m.d.comb += issuing_next.eq(1)
            if deep:      # (from the descriptor itself: the registers above lag it a cycle)
                m.d.comb += full_next.eq(0)
                m.d.sync += fill_last.eq(R == 1)
                m.d.comb += [nxt[n].eq(bound == 0) for n, bound in bounds.items()]
                m.d.comb += nxt["og"].eq(d.og_m1 == 0)
                m.d.sync += [ahead[n].eq(bound == 1) for n, bound in bounds.items()]
        return m

    def _row_handshakes(self, m, row_loads, row_steps, row_lasts, row_helds, **central):
        """Each row's copies of ``load`` and ``step`` (``row_loads``, ``row_steps``: registers
        equal to them in every cycle, set a cycle ahead) from the row's own copies of the
        generator's handshake state. These follow the same rules as the originals (the
        ``loaded``, ``hold``, ``issuing`` and ``full`` registers and the output skid's
        ``held``, whose copies ``row_helds`` are given: the skid chooses each row's part of
        the step by its own) from the row's copies of ``load``, ``step`` and ``last``
        (``row_lasts``), its copy of the consumer's ready (from ``o_ready_next``), its copies
        of the generator's ``start`` and ``release`` registers and the generator's registers in
        ``central`` (``tile_last``, ``og_last``, ``active``, ``fill_last``), so they equal them
        in every cycle. Each row's logic has its own registers among its inputs, so Yosys
        keeps it the row's own; only registers reach the rows from the centre. The copies
        reset as the originals do (a reset lasts more than a cycle, so the load and step
        copies, which have none, are 0 by its end)."""
        c = central
        for r, (load, step, last, held) in enumerate(zip(row_loads, row_steps, row_lasts,
                                                         row_helds)):
            def copy(name, init=0):
                return Signal(init=init, name=f"{name}{REPLICA_SUFFIX}_row{r}")
            ready, loaded, hold = copy("o_ready", 1), copy("loaded"), copy("hold", 1)
            issuing, full = copy("issuing"), copy("full")
            # The row's own copies of the start and release registers: the central ones,
            # routed to the 32 rows' handshake logic, spread it across the die.
            start, release = copy("start"), copy("release")
            m.d.sync += [start.eq(self.start), release.eq(self.release)]
            valid = loaded & ~hold
            held_next = Mux(held, ~ready, valid & ~ready)
            loaded_next = Mux(load, 1, Mux(step & last, 0, loaded))
            issuing_next = Mux(start, 1, Mux(step & last & c["tile_last"] & c["og_last"],
                                             0, issuing))
            full_next = Mux(start | load, 0, Mux(c["active"] & c["fill_last"], 1, full))
            m.d.sync += [ready.eq(self.o_ready_next[r]),
                         hold.eq(Mux(release, 0, Mux(start, 1, hold))),
                         held.eq(held_next), loaded.eq(loaded_next), issuing.eq(issuing_next),
                         full.eq(full_next)]
            # (A start comes only while idle: the step's copy leaves it out, as the original's.)
            m.d.sync += [load.eq(issuing_next & ~loaded_next & full_next),
                         step.eq(loaded_next & ~(hold & ~release) & ~held_next)]
