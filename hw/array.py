"""The systolic array: ``rows x cols`` PEs of one kind computing ``Y[r, c] = op(X[r], W[c])``.

For X (rows x K) and W (cols x K) the array computes, exactly as
:func:`addershift.sw.golden.array_op`, ``Y[r, c] = sum_k term(X[r, k], W[c, k])`` for any K from 1 to
``max_length`` chosen at run time.

Streams (:mod:`amaranth.lib.stream`; a transfer happens on ``valid & ready``, the payload holds until
taken, ``valid`` never waits for ``ready``):

- ``i``: one k-step per transfer: ``x`` (``rows`` activations), ``w`` (``cols`` weights in their
  natural form: signed integers, or :class:`~addershift.hw.pe.ShiftWeight`) and ``last``, set on the
  final step of a reduction.
- ``o``: the finished reduction, one row per transfer: ``acc`` (``cols`` accumulators of row ``r``),
  rows in order ``0 .. rows - 1``, ``last`` set on row ``rows - 1``.

Dataflow (``docs/architecture.md`` has the diagram and the measurements): operands are registered
once at the edge and broadcast, ``x[r]`` along row ``r`` and ``w[c]`` down column ``c``; every PE
keeps its own accumulator (output stationary). An array larger than :data:`TILE` x :data:`TILE`
registers operands once at its edge and then :data:`HOPS` times per tile, and copies its control
likewise per tile and per row of PEs, each copy a register of the one before, so that the nets
that span the chip carry no logic and each reaches a few flip-flops.
When a reduction finishes, every accumulator is copied into a result register; the result
registers form one shift chain per column that the output stream drains a row per transfer while
the PEs already sum the next reduction. An array of more than one tile drives ``o`` through a
queue of three output registers, and a row leaves the chain only when the queue will have room for
it whatever ``o.ready`` does, so the chain's shift is decided two cycles ahead, from registers.

Timing: the array never stalls a step it has taken, so its control is a pipeline of the input's
``valid`` and ``last``. The cycle after a ``last`` transfer, ``i.ready`` is low (the accumulators
clear then), so a reduction of K steps occupies K + 1 input cycles. A ``last`` step is taken only
when its result will find the result chain empty: ``i.ready`` is low while ``i.payload.last`` is
set and a previous result is unread or still on its way to the chain. With ``o.ready`` always high,
reductions of ``K >= rows + 3`` steps (``rows + 4`` for several tiles) stream back to back with no
stall (:meth:`SystolicArray.reduction_cycles`). ``i.ready`` and ``o.valid`` depend on registers and
``i.payload.last`` only: no combinational path runs from ``o.ready`` to ``i.ready``. The array's
reset is the design's one register later: ``i.ready`` is low for one cycle after a reset ends.
:attr:`SystolicArray.latency` counts the queue's cycle.
"""

from __future__ import annotations

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Module, Mux, ResetSignal,
                          Signal, signed)
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe import _is_int, check_params, make_pe, rejected

__all__ = ["SystolicArray", "REPLICA_SUFFIX"]

#: Registers whose names contain this are deliberate copies that cut a high-fanout net; a
#: synthesis flow must keep them apart (board builds mark them ``keep`` for Yosys:
#: ``boards.report.yosys_input_commands``).
REPLICA_SUFFIX = "_replica"
#: The array is cut into tiles of at most TILE x TILE PEs; each tile has its own copy of the
#: read-out and PE control and of the operand registers of its rows and columns.
TILE = 8
#: In an array of several tiles, what goes from the array's edge to a tile (operands, `valid`,
#: `last`, the reset) passes this many registers of the tile. Two (one between the edge and the
#: tile, one among its PEs) placed the 32 x 32 ECP5 array at 72-88 MHz in three builds, one at
#: 93.9 MHz: see docs/cost.md, "Fit study".
HOPS = 1


def _check_dim(name, value):
    if not _is_int(value):
        raise TypeError(f"Array {name} must be an integer, not {value!r}")
    if not 1 <= value <= 64:
        raise ValueError(f"Array {name} must be between 1 and 64, not {value}")


class SystolicArray(wiring.Component):
    """An output-stationary array of ``rows x cols`` PEs of one kind, with stream interfaces.

    Parameters
    ----------
    kind : str or :class:`~addershift.sw.numerics.Op`
        ``"adder"``, ``"shift"`` or ``"mul"``.
    rows, cols : int
        Array shape (1 .. 64 each).
    x_bits : int
        Width of the signed activations.
    w_bits : int or None
        Width of the signed weights (adder, mul; default ``x_bits``; the adder requires
        ``x_bits``). Must be ``None`` for shift.
    p_min, p_max : int or None
        Exponent range of shift weights (default 0 and 7). Must be ``None`` for adder and mul.
    max_length : int
        The longest reduction (K) the array must sum without overflow; sets :attr:`acc_bits`.
    ready_next : bool
        Drive :attr:`i_ready_next_last` and :attr:`i_ready_next_other` (default False: Yosys'
        ABC9 wrote a net driven twice for a lone 2x2 array with them driven and unread).

    Members
    -------
    i : ``In(stream.Signature(in_layout))``
        k-steps: ``x`` (``rows``), ``w`` (``cols``), ``last``.
    o : ``Out(stream.Signature(out_layout))``
        Finished rows: ``acc`` (``cols``), ``last``.
    i_ready_next_last, i_ready_next_other : Signal or None
        With ``ready_next`` (else None): ``i.ready`` in the next cycle if the step offered then is a
        ``last`` one, or is not. A consumer keeps a register equal to ``i.ready`` with them, so
        that what waits on the array's ready need not wait on the logic behind it.

    Raises
    ------
    TypeError, ValueError
        For a bad parameter; the message names it and shows the value.
    """

    def __init__(self, *, kind, rows, cols, x_bits=8, w_bits=None, p_min=None, p_max=None,
                 max_length=128, ready_next=False):
        with rejected(self):
            _check_dim("rows", rows)
            _check_dim("cols", cols)
            op, w_bits, p_min, p_max, _ = check_params(kind, x_bits=x_bits, w_bits=w_bits,
                                                       p_min=p_min, p_max=p_max,
                                                       max_length=max_length)
        self._kind, self._rows, self._cols = op, rows, cols
        self._single_tile = rows <= TILE and cols <= TILE
        self._ready_next = bool(ready_next)
        # (None without ready_next: an undriven signal would read as a ready that never comes.)
        self.i_ready_next_last = Signal() if ready_next else None
        self.i_ready_next_other = Signal() if ready_next else None
        self._pe_params = dict(x_bits=x_bits, w_bits=w_bits, p_min=p_min, p_max=p_max,
                               max_length=max_length)
        # A template for derived widths and shapes; elaborate() builds the real ones.
        self._pe = make_pe(op, register_inputs=False, **self._pe_params)
        self._pe._MustUse__silence = True
        self._in_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(x_bits), rows),
            "w": data.ArrayLayout(self._pe.weight_shape, cols),
            "last": 1,
        })
        self._out_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(self._pe.acc_bits), cols),
            "last": 1,
        })
        super().__init__({
            "i": In(stream.Signature(self._in_layout)),
            "o": Out(stream.Signature(self._out_layout)),
        })

    # -- parameters and timing (read-only) ----------------------------------------------------

    @property
    def kind(self):
        return self._kind

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def x_bits(self):
        return self._pe.x_bits

    @property
    def w_bits(self):
        return self._pe.w_bits

    @property
    def p_min(self):
        return self._pe.p_min

    @property
    def p_max(self):
        return self._pe.p_max

    @property
    def max_length(self):
        return self._pe.max_length

    @property
    def acc_bits(self):
        """Accumulator width, from :func:`~addershift.sw.numerics.acc_width`."""
        return self._pe.acc_bits

    @property
    def weight_shape(self):
        """The shape of one weight on the input stream."""
        return self._pe.weight_shape

    @property
    def in_layout(self):
        return self._in_layout

    @property
    def out_layout(self):
        return self._out_layout

    @property
    def _load_delay(self):
        # Cycles from taking a `last` step to loading its result: the operand registers (one;
        # several tiles: one at the edge, then HOPS per tile), the PEs' term register, the
        # accumulator.
        return 3 + (0 if self._single_tile else HOPS)

    @property
    def latency(self):
        """Cycles from the transfer of a ``last`` step to ``o.valid`` with row 0 of its result
        (when the previous result has been read out)."""
        return self._load_delay + 1 + (0 if self._single_tile else 1)

    @property
    def readout_cycles(self):
        """Output transfers per reduction (one per row)."""
        return self._rows

    @property
    def idle_after_last(self):
        """Input cycles the array takes no step after each ``last`` transfer."""
        return self._pe.idle_after_last

    def reduction_cycles(self, length):
        """Input cycles per reduction of ``length`` steps when reductions stream back to back with
        ``o.ready`` always high: ``max(length, rows + d) + 1``, where ``d`` (3, or 4 for an array
        of several tiles) is the cycles from a ``last`` step to loading its result; a ``last``
        step waits until the previous result has left the result chain."""
        return max(length, self._rows + self._load_delay) + self.idle_after_last

    def params(self):
        """The parameters and the derived accumulator width as a plain dict (for reports)."""
        out = {"rows": self._rows, "cols": self._cols}
        out.update(self._pe.params())
        return out

    # -- the hardware -------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        acc_bits = self._pe.acc_bits
        single = self._single_tile

        # Every register of the array is in `array`: the design's clock, and its reset one register
        # later. The reset net spans the whole chip; on a 16x32 ECP5 array it reached the far PEs
        # 7.7 ns after its flip-flop, the critical path. This copy sits among the PEs, and `i.ready`
        # is low while it lasts, so no step enters an array still in reset.
        m.domains.array = array_domain = ClockDomain("array", local=True)
        in_reset = Signal(reset_less=True)
        m.d.sync += in_reset.eq(ResetSignal())
        m.d.comb += [array_domain.clk.eq(ClockSignal()), array_domain.rst.eq(in_reset)]

        # The PEs' accumulators are cleared and enabled by the array (below); their own `valid`,
        # `last` and `done` are left unused, and `hold` is never set: the array never stalls.
        pes = [[make_pe(self._kind, register_inputs=False, acc_control="external",
                        **self._pe_params) for _ in range(cols)]
               for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = DomainRenamer("array")(pes[r][c])

        # --- input and the control pipeline --------------------------------------------------
        # The array never stalls once a step is in: the control is a pipeline of the input's
        # `valid` and `last`, so every copy of it (per tile, per row) is a register of the copy
        # before it and the nets that fan out across the chip carry no logic. A `last` step is
        # taken only while no result is unread or on its way to the result chain (`last_ok`), so
        # a load always finds the chain empty.
        valid0, last0 = Signal(), Signal()      # the step taken a cycle ago
        last_ok = Signal(init=1)
        transfer = Signal()
        m.d.comb += [
            self.i.ready.eq(~in_reset & ~(valid0 & last0) & (last_ok | ~self.i.payload.last)),
            transfer.eq(self.i.valid & self.i.ready),
        ]
        m.d.array += [valid0.eq(transfer), last0.eq(self.i.payload.last)]
        # (`last_ok_next` is defined with the result chain below.)
        last_ok_next = Signal()
        if self._ready_next:
            stalled_next = Signal()   # the next cycle is the array's reset's or follows a `last`
            m.d.comb += [
                stalled_next.eq(ResetSignal() | (~in_reset & transfer & self.i.payload.last)),
                self.i_ready_next_other.eq(~stalled_next),
                self.i_ready_next_last.eq(~stalled_next & (in_reset | last_ok_next)),
            ]

        # A `last` step taken in cycle T loads its result `load_delay` cycles later; `in_flight[k]`
        # is "a last step was taken k + 1 cycles ago".
        in_flight = [Signal(name=f"last_in_flight_{k + 1}") for k in range(self._load_delay)]
        m.d.comb += in_flight[0].eq(valid0 & last0)
        m.d.array += [in_flight[k + 1].eq(in_flight[k]) for k in range(self._load_delay - 1)]
        done = in_flight[-1]             # the central copy of the result load

        # Tiles of at most TILE x TILE PEs (below), each with its own copy of the control and of
        # the operand registers, and (several tiles) a copy of the control per row of PEs: a net
        # that reaches every PE spans the chip, and placement spreads even one row of a large
        # array across it. On ECP5 these nets were the critical path in turn
        # (docs/architecture.md). Board builds keep the copies apart (REPLICA_SUFFIX; Yosys would
        # merge equal registers).
        row_blocks = [range(a, min(a + TILE, rows)) for a in range(0, rows, TILE)]
        col_blocks = [range(a, min(a + TILE, cols)) for a in range(0, cols, TILE)]

        def relay(value, name, shape=1):
            """``value`` through the registers of a tile (HOPS of them, one with one tile)."""
            for hop in range(1 if single else HOPS):
                last_hop = hop == (0 if single else HOPS - 1)
                reg = Signal(shape, name=name if last_hop else f"{name}_hop{hop}",
                             reset_less=True)
                m.d.array += reg.eq(value)
                value = reg
            return value

        # The array's reset reaches each tile through registers of the tile: the reset net to
        # every tile spanned the chip (the 32 x 32 ECP5 array's critical path, first into the
        # accumulators, then into the output registers). Each row of tiles takes them from its
        # own copy of `in_reset`, a register of the design's reset as `in_reset` is (so the same
        # cycle): one register feeding every tile's copy was 14.9 ns of routing from the farthest.
        if single:
            tile_reset = [[in_reset]]
        else:
            row_reset = [Signal(name=f"reset{REPLICA_SUFFIX}{tr}", reset_less=True)
                         for tr in range(len(row_blocks))]
            m.d.sync += [copy.eq(ResetSignal()) for copy in row_reset]
            tile_reset = [[relay(row_reset[tr], f"reset{REPLICA_SUFFIX}{tr}_{tc}")
                           for tc in range(len(col_blocks))] for tr in range(len(row_blocks))]

        # Result registers: one shift chain per column, row 0 at the output end.
        result = [[Signal(signed(acc_bits), name=f"result_{r}_{c}", reset_less=True)
                   for c in range(cols)]
                  for r in range(rows)]
        count = Signal(range(rows + 1))  # result rows not yet read out (one tile; else count_ahead)
        empty = Signal(init=1)           # count == 0, as a register of its own
        # count == 1, a register too: behind a compare the read-out logic was three LUTs deep
        # in front of its net to every tile's copy of `take` a cycle ahead (the 32 x 32 ECP5
        # array's slowest path; each row's `update` now).
        one = Signal()
        take = Signal()                  # the head row leaves the result chain
        head = Signal(self._out_layout)  # the result chain's output end
        m.d.comb += [head.last.eq(one)]
        m.d.comb += [head.acc[c].eq(result[0][c]) for c in range(cols)]
        # `o.valid` is low while the array's own reset lasts: in the cycle after a one-cycle
        # reset of the design the array's registers still hold the row from before it.
        out_valid = Signal()
        m.d.comb += self.o.valid.eq(out_valid & ~in_reset)
        if single:
            m.d.comb += [
                out_valid.eq(~empty),
                self.o.payload.eq(head),
                take.eq(self.o.valid & self.o.ready),
            ]
        else:
            # Three output registers (`o` and two spares) between the chain and `o`, and the
            # chain's shift (`take`) decided two cycles ahead: a row leaves the chain only when
            # the queue will surely have room for it, were `o` to take nothing in between. So
            # each row's `update`, the next value of `take`, is a copy of a register
            # (`take_ahead`), and no result enable waits for `o.ready` or for the read-out's
            # state: on a 32x32 ECP5 accelerator the result enables waited first on `o.ready`
            # (13 ns of routing), then on two LUTs of the read-out's state in front of the net
            # to the rows' copies across the die (11 ns, 7.7 of them that net). Two spares keep
            # a row per cycle leaving the chain while `o` takes one per cycle.
            # Each block of TILE columns has its own copy of the queue's valid bits for its
            # enables and selects: one net to all of them spanned the 32 x 32 ECP5 array (8.6 ns
            # of routing to the spare's enables). The copies take their reset from the tile at
            # the output end, cycles after the array's own registers; those stay as reset until
            # the first load, which comes later still (`load_delay`), so the copies agree.
            spare_a, spare_b = (Signal(self._out_layout, reset_less=True, name=f"spare_{n}")
                                for n in "ab")
            payload = Signal(self._out_layout, reset_less=True)
            m.d.comb += self.o.payload.eq(payload)

            def queue(flags, fields, reset=None):
                # Each spare copies the head while it holds no row, so its enable is a register;
                # a row taken while `o` is full or a spare is queued stays in the spare that
                # copied it. `o` takes the older spare (`b_older`), else the head.
                o_valid, a_valid, b_valid, b_older = flags
                out_free = ~o_valid | self.o.ready
                from_b = b_valid & (~a_valid | b_older)
                from_a = a_valid & ~from_b
                queued = a_valid | b_valid
                to_a = take & ~a_valid & (queued | ~out_free)
                to_b = take & a_valid & ~b_valid
                a_stays = a_valid & ~(out_free & from_a)
                b_stays = b_valid & ~(out_free & from_b)
                m.d.array += [a_valid.eq(a_stays | to_a), b_valid.eq(b_stays | to_b),
                              b_older.eq(b_stays & (to_a | a_stays & b_older))]
                with m.If(out_free):
                    m.d.array += o_valid.eq(queued | take)
                    m.d.array += [o.eq(Mux(from_b, b, Mux(a_valid, a, h)))
                                  for o, a, b, h in fields]
                with m.If(~a_valid):
                    m.d.array += [a.eq(h) for o, a, b, h in fields]
                with m.If(~b_valid):
                    m.d.array += [b.eq(h) for o, a, b, h in fields]
                if reset is not None:
                    with m.If(reset):
                        m.d.array += [flag.eq(0) for flag in flags]

            names = ("o_valid", "spare_a_valid", "spare_b_valid", "spare_b_older")
            queued_rows = [Signal(name=name) for name in names]
            queue(queued_rows, [(payload.last, spare_a.last, spare_b.last, head.last)])
            for k, block in enumerate(col_blocks):
                queue([Signal(name=f"{name}{REPLICA_SUFFIX}{k}", reset_less=True)
                       for name in names],
                      [(payload.acc[c], spare_a.acc[c], spare_b.acc[c], head.acc[c])
                       for c in block],
                      reset=tile_reset[0][k])
            m.d.comb += out_valid.eq(queued_rows[0])

        # A load finds the chain empty: a `last` step waits while rows are unread or a load is
        # in flight, and nothing else fills the chain.
        empty_next, one_next = Signal(), Signal()   # the chain's rows next cycle: none, one
        if not single:
            # `take` two cycles ahead, the same in each copy (one per row of tiles, for the rows'
            # `update`): a row will be in the chain then (one is loaded next cycle, or one
            # stays after next cycle's `take`), and the queue will hold at most two rows before
            # it, however many `o` takes (it takes one now only if `o.ready`). Its inputs are
            # registers of their own, one cycle ahead, and a row count in place of a sum of the
            # queue's flags: with the sum, and `take` 5.3 ns away across the die, the copies
            # were a 32x32 ECP5 accelerator's slowest path (11.6 ns, 86.6 MHz with seed 2).
            # The first, for the chain's own logic, is named as a copy too, so board builds
            # keep it apart (Yosys merged it into the first row of tiles' up to 1e6506f).
            take_ahead = [Signal(name=f"take_ahead{REPLICA_SUFFIX}_central")] + [
                Signal(name=f"take_ahead{REPLICA_SUFFIX}{tr}") for tr in range(len(row_blocks))]
            next_take = take_ahead[0]
            # The chain's rows next cycle, and whether that is none or one.
            count_ahead = Signal(range(rows + 1))
            none_ahead, one_ahead = Signal(init=1), Signal()
            load_next = in_flight[-2]
            row_ahead = load_next | ~(none_ahead | (one_ahead & next_take))
            m.d.array += [
                count_ahead.eq(Mux(load_next, rows, count_ahead - next_take)),
                none_ahead.eq(~row_ahead),
                one_ahead.eq(Mux(load_next, rows == 1,
                                 Mux(next_take, count_ahead == 2, one_ahead))),
            ]
            # Rows in the queue or leaving the chain this cycle (0-3); next cycle's is at most
            # three, so the queue is full then only at exactly three.
            held = Signal(range(4))
            # `dequeue` leaves out `o.valid`'s reset term: while the array's reset lasts, every
            # register it reaches is reset anyway. Through it the reset's flip-flop, whose net
            # reaches every register of the array with a reset, began a 32x32 ECP5
            # accelerator's slowest path (4.2 ns of routing, then four LUTs into these copies).
            dequeue = out_valid & self.o.ready
            m.d.array += held.eq(held + next_take - dequeue)
            full_next = Mux(held == 3, next_take | ~dequeue, (held == 2) & next_take & ~dequeue)
            m.d.array += [copy.eq(row_ahead & ~full_next) for copy in take_ahead]
            m.d.array += take.eq(take_ahead[0])
            # The chain's rows next cycle are the ahead registers' now.
            m.d.comb += [empty_next.eq(none_ahead), one_next.eq(one_ahead)]
        else:
            with m.If(done):
                m.d.comb += [empty_next.eq(0), one_next.eq(rows == 1)]
            with m.Elif(take):
                m.d.comb += [empty_next.eq(one), one_next.eq(count == 2)]
            with m.Else():
                m.d.comb += [empty_next.eq(empty), one_next.eq(one)]
            with m.If(done):
                m.d.array += count.eq(rows)
            with m.Elif(take):
                m.d.array += count.eq(count - 1)
        m.d.comb += last_ok_next.eq(empty_next & ~Cat(in_flight[:-1]).any())
        m.d.array += [empty.eq(empty_next), one.eq(one_next), last_ok.eq(last_ok_next)]

        if single:
            # Operands registered once and broadcast, x[r] along row r and w[c] down column c.
            x_in = [self.i.payload.x[r] for r in range(rows)]
            w_in = [self._pe.encode_weight(self.i.payload.w[c]) for c in range(cols)]
        else:
            # A register of each operand first, so the input's nets reach one flip-flop each and
            # the tiles' copies start from there.
            x_in = [Signal(signed(self.x_bits), name=f"x_in_{r}", reset_less=True)
                    for r in range(rows)]
            w_in = [Signal(self._pe.operand_shape, name=f"w_in_{c}", reset_less=True)
                    for c in range(cols)]
            m.d.array += [x_in[r].eq(self.i.payload.x[r]) for r in range(rows)]
            m.d.array += [w_in[c].eq(self._pe.encode_weight(self.i.payload.w[c]))
                          for c in range(cols)]

        for tr, tile_rows in enumerate(row_blocks):
            for tc, tile_cols in enumerate(col_blocks):
                tile = f"{REPLICA_SUFFIX}{tr}_{tc}"
                # Data registers need no reset (valid bits say when they matter).
                x_reg = {r: relay(x_in[r], f"x_{r}" if single else f"x_{r}{tile}",
                                  signed(self.x_bits)) for r in tile_rows}
                w_reg = {c: relay(w_in[c], f"w_{c}" if single else f"w_{c}{tile}",
                                  self._pe.operand_shape) for c in tile_cols}
                # The tile's control registers have no reset. They are a pipeline of `valid0`
                # and `last0`, which have one, and the tile's reset sets `load` while it lasts,
                # so the accumulators clear after whatever the stale registers did; stale loads
                # and shifts of result rows reach no one (`count` is 0).
                # `valid` and `last` of the steps the tile's PEs see, and `ends`: "the last step
                # of a reduction is in the PEs' term registers".
                reset = tile_reset[tr][tc]
                if single:
                    valid, last = valid0, last0
                else:
                    valid, last = relay(valid0, f"valid{tile}"), relay(last0, f"last{tile}")
                ends = Signal(name=f"ends{tile}", reset_less=True)
                m.d.array += ends.eq(valid & last)
                shifting = [r for r in tile_rows if r < rows - 1]   # the last row has no successor
                for group in ([tile_rows] if single else [[r] for r in tile_rows]):
                    where = tile if single else f"{tile}_{group[0]}"
                    # `load`: the accumulators hold finished sums; the result registers take them
                    # and the accumulators clear. `acc_enable`: a term to add, or that clear.
                    load, acc_enable = (Signal(name=f"{name}{where}", reset_less=True)
                                        for name in ("load", "acc_enable"))
                    m.d.array += [load.eq(ends | reset), acc_enable.eq(valid | ends)]
                    if single:
                        # The read-out shifts on `take`.
                        with m.If(load):
                            m.d.array += [result[r][c].eq(pes[r][c].acc)
                                          for r in group for c in tile_cols]
                        with m.Elif(take):
                            m.d.array += [result[r][c].eq(result[r + 1][c])
                                          for r in group if r in shifting for c in tile_cols]
                    elif group[0] in shifting:
                        # A row's result registers change on `load` or when the read-out shifts
                        # (`take`): that enable is a register of the row's, `update`, set a
                        # cycle ahead from the row of tiles' copy of `take_ahead`. A LUT of
                        # `load` and a tile's copy of `take` in front of the row's 128 enables
                        # was 12.7 ns of routing on a 32x32 ECP5 accelerator.
                        update = Signal(name=f"update{where}", reset_less=True)
                        m.d.array += update.eq(ends | reset | take_ahead[1 + tr])
                        with m.If(update):
                            m.d.array += [result[r][c].eq(Mux(load, pes[r][c].acc,
                                                              result[r + 1][c]))
                                          for r in group for c in tile_cols]
                    else:
                        with m.If(load):
                            m.d.array += [result[r][c].eq(pes[r][c].acc)
                                          for r in group for c in tile_cols]
                    for r in group:
                        for c in tile_cols:
                            m.d.comb += [
                                pes[r][c].x.eq(x_reg[r]),
                                pes[r][c].w.eq(w_reg[c]),
                                pes[r][c].acc_clear.eq(load),
                                pes[r][c].acc_enable.eq(acc_enable),
                            ]
        return m
