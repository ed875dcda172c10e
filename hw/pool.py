"""Pooling units for a streaming accelerator: max pooling and global average pooling by shift.

Both take a feature map as a stream of pixels in raster order (x fastest, then y), one pixel of
``lanes`` channels per transfer: the channel group an array of ``lanes`` columns produces per
output pixel. A frame is ``height`` rows of ``width`` pixels of one channel group; frames follow
each other with no gap and no marker, the units count. The frame size comes from ports (a layer's
descriptor), which must hold still from a frame's first pixel until its last result is out.
Bit-exact with ``golden.max_pool2d`` and ``golden.global_avg_pool``; ``docs/postproc.md`` has
the interface and the costs. ReLU has no unit of its own: the requantiser applies it.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.numerics import SHIFT_MAX, RequantMode, int_range, signed_width
from .config import check_int
from .requant import ACC_BITS_MAX, Requantiser

__all__ = ["MaxPool", "GlobalAvgPool"]


def _pixels(lanes, bits):
    return data.ArrayLayout(signed(bits), lanes)


def _max(a, b):
    return Mux(a > b, a, b)


class MaxPool(wiring.Component):
    """Max over ``kernel x kernel`` windows moved by ``stride``, no padding: partial windows at
    the right and bottom edges are dropped, as in ``golden.max_pool2d``.

    Pooled pixels leave in raster order, each two cycles after the pixel that completes its
    window. Inside, a shift register of the last ``kernel - 1`` pixels gives the maximum along
    a window's row; ``kernel - 1`` line memories (one row of such row maxima each, written in
    turn, a cycle after the pixel) give the other rows of the window at the row that completes
    it.

    Parameters
    ----------
    lanes : int
        Channels per pixel (per transfer).
    bits : int
        Width of the signed values, 1 to 32.
    kernel, stride : int
        Window size and step, at least 1 (``stride < kernel`` overlaps windows).
    max_width, max_height : int
        The largest frame the build takes, at least ``kernel``; ``max_width`` sizes the line
        memories: ``(max_width - kernel) // stride + 1`` pixels each.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(bits), lanes)))``
    o : ``Out(stream.Signature(ArrayLayout(signed(bits), lanes)))``
    width, height : ``In(unsigned(...))``
        The frame size, from ``kernel`` to ``max_width`` / ``max_height`` (other values are
        outside the contract).

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and shows it.
    """

    def __init__(self, *, lanes=1, bits=8, kernel=2, stride=2, max_width, max_height):
        # A rejected build is never elaborated: no "created but never used" warning for it.
        self._MustUse__silence = True
        self._lanes = check_int("lanes", lanes, 1)
        self._bits = check_int("bits", bits, 1, 32)
        self._kernel = check_int("kernel", kernel, 1)
        self._stride = check_int("stride", stride, 1)
        self._max_width = check_int("max_width", max_width, kernel)
        self._max_height = check_int("max_height", max_height, kernel)
        layout = _pixels(lanes, bits)
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "width": In(unsigned(max_width.bit_length())),
            "height": In(unsigned(max_height.bit_length())),
        })
        self._MustUse__silence = False

    lanes = property(lambda self: self._lanes)
    bits = property(lambda self: self._bits)
    kernel = property(lambda self: self._kernel)
    stride = property(lambda self: self._stride)
    max_width = property(lambda self: self._max_width)
    max_height = property(lambda self: self._max_height)

    @property
    def line_depth(self):
        """Pooled pixels per row of the widest frame: the depth of each line memory."""
        return (self._max_width - self._kernel) // self._stride + 1

    @property
    def latency(self):
        """Cycles from the transfer that completes a window to its result on ``o``."""
        return 2

    def elaborate(self, platform):
        m = Module()
        k, s = self._kernel, self._stride
        layout = _pixels(self._lanes, self._bits)
        load = Signal()
        m.d.comb += [load.eq(~self.o.valid | self.o.ready), self.i.ready.eq(load)]
        accept = self.i.valid & load

        # Position in the frame, and the countdowns to the next window end along x and y.
        x = Signal(range(self._max_width))
        y = Signal(range(self._max_height))
        x_left = Signal(range(max(k, s)), init=k - 1)
        y_left = Signal(range(max(k, s)), init=k - 1)
        column = Signal(range(self.line_depth))
        slot = Signal(range(max(1, k - 1)))
        window_x, window_y = x_left == 0, y_left == 0

        # The window's maximum along its row: this pixel and the k - 1 before it.
        history = [Signal(layout, name=f"previous{j}") for j in range(k - 1)]
        row_max = Signal(layout)
        for lane in range(self._lanes):
            value = self.i.payload[lane]
            for previous in history:
                value = _max(value, previous[lane])
            m.d.comb += row_max[lane].eq(value)

        # Stage 1 holds the row maximum (and where it goes) while the memories read the window's
        # other rows; stage 2 writes it into its line and is the output. Writing from stage 1
        # keeps the compare chain away from the memories' inputs; a read never needs the row
        # being written (consecutive window ends never share a column when kernel >= 2).
        held = Signal(layout)
        held_column = Signal.like(column)
        held_slot = Signal.like(slot)
        held_write = Signal()
        held_valid = Signal()
        with m.If(load):
            m.d.sync += [held.eq(row_max), held_column.eq(column), held_slot.eq(slot),
                         held_write.eq(accept & window_x),
                         held_valid.eq(accept & window_x & window_y)]

        # k - 1 line memories of row maxima, written in turn, read at the window's column.
        rows = []
        for j in range(k - 1):
            line = memory.Memory(shape=layout, depth=self.line_depth, init=[])
            m.submodules[f"line{j}"] = line
            write, read = line.write_port(), line.read_port(transparent_for=())
            m.d.comb += [write.addr.eq(held_column), write.data.eq(held),
                         write.en.eq(load & held_write & (held_slot == j)),
                         read.addr.eq(column), read.en.eq(load)]
            rows.append(read.data)

        result = Signal(layout)
        for lane in range(self._lanes):
            value = held[lane]
            for row in rows:
                value = _max(value, row[lane])
            m.d.comb += result[lane].eq(value)
        with m.If(load):
            m.d.sync += [self.o.payload.eq(result), self.o.valid.eq(held_valid)]

        with m.If(accept):
            m.d.sync += [history[j].eq(self.i.payload if j == 0 else history[j - 1])
                         for j in range(k - 1)]
            with m.If(x == self.width - 1):
                m.d.sync += [x.eq(0), x_left.eq(k - 1), column.eq(0)]
                with m.If(y == self.height - 1):
                    m.d.sync += [y.eq(0), y_left.eq(k - 1), slot.eq(0)]
                with m.Else():
                    m.d.sync += [y.eq(y + 1), y_left.eq(Mux(window_y, s - 1, y_left - 1)),
                                 slot.eq(Mux(slot == k - 2, 0, slot + 1))]
            with m.Else():
                m.d.sync += [x.eq(x + 1), x_left.eq(Mux(window_x, s - 1, x_left - 1)),
                             column.eq(column + window_x)]
        return m


class GlobalAvgPool(wiring.Component):
    """Sum of every pixel of a frame per channel, then ``round_shift`` by ``shift`` and saturate
    to ``out_bits``: ``golden.global_avg_pool``. One result per frame of ``pixels`` transfers.

    The sums go through a :class:`~.requant.Requantiser` in ``shift`` mode (bias 0), so the
    rounding is the requantiser's, tested once.

    Parameters
    ----------
    lanes : int
        Channels per pixel (per transfer).
    bits : int
        Width of the signed input values, 1 to 32.
    out_bits : int
        Width of the signed results, 2 to 16 (``None``: ``bits``).
    max_pixels : int
        The largest frame (``height * width``) the build takes; sets the sums' width.
    shift_max : int
        Largest ``shift`` the build handles, 0 to ``SHIFT_MAX``.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(signed(bits), lanes)))``
    o : ``Out(stream.Signature(ArrayLayout(signed(out_bits), lanes)))``
    pixels : ``In(unsigned(...))``
        Pixels per frame, 1 to ``max_pixels``.
    shift : ``In(unsigned(...))``
        The layer's shift, 0 to ``shift_max``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range; the message names it and shows it.
    """

    def __init__(self, *, lanes=1, bits=8, out_bits=None, max_pixels, shift_max=SHIFT_MAX):
        # A rejected build is never elaborated: no "created but never used" warning for it.
        self._MustUse__silence = True
        self._lanes = check_int("lanes", lanes, 1)
        self._bits = check_int("bits", bits, 1, 32)
        self._out_bits = check_int("out_bits", bits if out_bits is None else out_bits, 2, 16)
        self._max_pixels = check_int("max_pixels", max_pixels, 1)
        self._shift_max = check_int("shift_max", shift_max, 0, SHIFT_MAX)
        lo, hi = int_range(bits)
        self._sum_bits = signed_width(max_pixels * lo, max_pixels * hi)
        if self._sum_bits > ACC_BITS_MAX:
            raise ValueError(f"max_pixels must keep the {bits}-bit sums within {ACC_BITS_MAX} "
                             f"bits, not {max_pixels!r}")
        super().__init__({
            "i": In(stream.Signature(_pixels(lanes, bits))),
            "o": Out(stream.Signature(_pixels(lanes, self._out_bits))),
            "pixels": In(unsigned(max_pixels.bit_length())),
            "shift": In(unsigned(max(1, shift_max.bit_length()))),
        })
        self._MustUse__silence = False
        self._requantiser = Requantiser(mode=RequantMode.SHIFT, acc_bits=self._sum_bits,
                                        out_bits=self._out_bits, lanes=lanes, bias_bits=1,
                                        shift_max=shift_max)

    lanes = property(lambda self: self._lanes)
    bits = property(lambda self: self._bits)
    out_bits = property(lambda self: self._out_bits)
    max_pixels = property(lambda self: self._max_pixels)
    shift_max = property(lambda self: self._shift_max)
    sum_bits = property(lambda self: self._sum_bits, doc="Width of the per-channel sums.")

    @property
    def latency(self):
        """Cycles from a frame's last transfer to its result on ``o``: one to close the sum,
        then the requantiser's latency."""
        return 1 + self._requantiser.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.requantiser = rq = self._requantiser
        wiring.connect(m, wiring.flipped(self.o), rq.o)

        total = Signal(_pixels(self._lanes, self._sum_bits))
        count = Signal(range(self._max_pixels))
        full = Signal()       # total is a whole frame's sum, offered to the requantiser
        m.d.comb += [
            rq.i.valid.eq(full),
            rq.i.payload.acc.eq(total),
            rq.i.payload.relu.eq(0),
            self.i.ready.eq(~full | rq.i.ready),
        ]
        for lane in range(self._lanes):
            m.d.comb += [rq.i.payload.param[lane].bias.eq(0),
                         rq.i.payload.param[lane].shift.eq(self.shift)]

        last = count == self.pixels - 1
        with m.If(self.i.valid & self.i.ready):
            for lane in range(self._lanes):
                value = self.i.payload[lane]
                m.d.sync += total[lane].eq(Mux(count == 0, value, total[lane] + value))
            m.d.sync += [count.eq(Mux(last, 0, count + 1)), full.eq(last)]
        with m.Elif(rq.i.ready):
            m.d.sync += full.eq(0)
        return m
