"""8N1 UART: the divisor, a transmitter and an oversampled receiver with error reporting.

amaranth-stdio has a UART, but it is not published on PyPI and every dependency here must be a
pinned PyPI package, so the link has its own.

The receiver works at the full clock rate: it finds the start bit, then takes three samples around
the middle of every bit, ``divisor // 8`` cycles apart, and keeps the majority (the middle sample
sits at ``(divisor - 1) // 2``, since the start bit is seen up to a cycle after its edge). It returns
to idle right after sampling the stop bit, so it re-synchronises on every start bit and the timing
error of one byte never carries into the next. With ``divisor >= 8`` every sample stays inside its
bit for a sender up to +-2% off (tested with bytes back to back; the margin measured at divisor 8 is
-3.5% to +4%: ``python bench/link.py --uart-margin``). A stop bit sampled low is a
framing error and drops the byte.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "uart_divisor", "UARTTx", "UARTRx", "UART"]

#: The receiver needs at least this many clock cycles per bit (three spread samples per bit and a
#: one-cycle uncertainty of the start edge stay inside a bit for a +-2% baud mismatch).
MIN_DIVISOR = 8


def uart_divisor(*, clk_freq, baud, tolerance=0.01):
    """Clock cycles per bit for ``baud`` from a ``clk_freq`` Hz clock.

    Raises ``ValueError`` when the baud rate needs fewer than :data:`MIN_DIVISOR` cycles per bit, or
    when the nearest divisor misses the baud rate by more than ``tolerance`` (a fraction: 0.01 is
    1%; that error adds to the mismatch the far end already has).
    """
    for name, value in (("Clock frequency", clk_freq), ("Baud rate", baud)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 < tolerance < 0.05:
        raise ValueError(f"Baud tolerance must be a fraction in (0, 0.05), not {tolerance!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Baud rate {baud} is too high for a {clk_freq} Hz clock: the receiver "
                         f"needs at least {MIN_DIVISOR} clock cycles per bit (at most "
                         f"{clk_freq // MIN_DIVISOR} baud)")
    actual = clk_freq / divisor
    error = actual / baud - 1
    if abs(error) > tolerance:
        raise ValueError(f"Baud rate {baud} is not reachable from a {clk_freq} Hz clock within "
                         f"{tolerance:.1%}: the nearest divisor {divisor} gives {actual:.0f} baud "
                         f"({error:+.2%})")
    return divisor


class _UARTPart(wiring.Component):
    """What the transmitter, the receiver and the pair share: the checked divisor."""

    def __init__(self, *, divisor):
        if isinstance(divisor, bool) or not isinstance(divisor, int):
            raise TypeError(f"UART divisor must be an integer, not {divisor!r}")
        if divisor < MIN_DIVISOR:
            raise ValueError(f"UART divisor must be at least {MIN_DIVISOR}, not {divisor!r}")
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor


class UARTTx(_UARTPart):
    """8N1 transmitter: one start bit, eight data bits LSB first, one stop bit.

    Bytes offered on ``data`` back to back go out with no idle time between them. A byte taken
    waits in a holding register (a 16550's transmit holding register) until the shift register
    is free: the sender's valid and payload logic ends at that register, not at the shift
    register's, the bit timer's and the bit count's enables (the host link framer's answer
    handshake into those made most of the endpoints of the iCEBreaker's 4x4 accelerator that
    would miss 38 MHz: docs/board_log.md).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (see :func:`uart_divisor`).

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1)``
        The line (idle high), driven from a register.
    busy : ``Out(1)``
        A byte is waiting or being sent.
    """
    data: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        bits = Signal(range(11))       # bits still to send, the current one included
        shreg = Signal(10, init=0x3FF)  # idle shifts in ones, so bit 0 is the line
        holding = Signal(8)
        full = Signal()
        # The shift register is free: idle, or in the last cycle of the stop bit (back to back,
        # no idle gap). A register, like ``data.ready``.
        free = Signal(init=1)
        # ``bits != 0`` and ``timer == 0`` as registers too: the shift register's enable is
        # then two flip-flops' AND, not a compare of the timer through the carry chain Yosys
        # makes of it.
        sending = Signal()
        bit_end = Signal()
        m.d.comb += [
            self.tx.eq(shreg[0]),
            self.busy.eq(full | sending),
            self.data.ready.eq(~full),
        ]
        with m.If(self.data.valid & ~full):
            m.d.sync += [holding.eq(self.data.payload), full.eq(1)]
        with m.If(full & free):
            m.d.sync += [
                shreg.eq(Cat(Const(0, 1), holding, Const(1, 1))),
                bits.eq(10),
                timer.eq(self._divisor - 1),
                free.eq(0),
                full.eq(0),
                sending.eq(1),
                bit_end.eq(0),
            ]
        with m.Elif(sending):
            with m.If(bit_end):
                m.d.sync += [
                    timer.eq(self._divisor - 1),
                    shreg.eq(Cat(shreg[1:], Const(1, 1))),
                    bits.eq(bits - 1),
                    sending.eq(bits != 1),
                    bit_end.eq(0),
                ]
            with m.Else():
                m.d.sync += [timer.eq(timer - 1), bit_end.eq(timer == 1)]
            # next cycle is the stop bit's last one (timer 1 -> 0), or idle (timer 0 now)
            m.d.sync += free.eq((bits == 1) & (timer <= 1))
        with m.Else():
            m.d.sync += free.eq(1)
        return m


class UARTRx(_UARTPart):
    """8N1 receiver, oversampled at the clock rate with a majority of three samples per bit.

    The line has no flow control: a byte that arrives while the previous one is still offered on
    ``data`` is dropped and reported on ``overrun``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (see :func:`uart_divisor`).

    Members
    -------
    rx : ``In(1)``
        The line (asynchronous; synchronised inside).
    data : ``Out(stream.Signature(8))``
        Received bytes.
    frame_error : ``Out(1)``
        Pulses for one cycle when a byte's stop bit is low (the byte is dropped).
    overrun : ``Out(1)``
        Pulses for one cycle when a byte is dropped because ``data`` was still full.
    """
    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        centre, spread = (d - 1) // 2, max(1, d // 8)

        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        t = Signal(range(d))     # cycle within the current bit, 0 where the start bit was seen
        k = Signal(range(10))    # bit index: 0 start, 1..8 data, 9 stop
        early = Signal(2)        # the first two samples of the bit
        shreg = Signal(8)
        # The third sample is the line itself, so a bit is decided in the cycle of its last sample:
        # after the stop bit the receiver is idle in time for a sender that is 2% fast.
        vote = (early[0] & early[1]) | (early[0] & line) | (early[1] & line)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        # The payload follows the shift register whenever it is free, so only `valid` depends on
        # the stop bit's vote: loaded from the vote's logic, its enable (the line through the
        # receiver's state, 11.4 ns of routing) was the slowest path of a 32x32 ECP5 accelerator
        # with placement seed 2 (79.2 MHz). The shift register holds the byte until the next
        # one's first data bit, long after the stop bit.
        with m.If(~self.data.valid | self.data.ready):
            m.d.sync += self.data.payload.eq(shreg)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        # The cycle that decides a bit (`t == centre + spread` in BIT) and the bit index's ends
        # are registers set a cycle ahead: through their compares, the receiver's state into
        # its shift register was the slowest path of a 32x32 ECP5 accelerator with placement
        # seed 2 at 4bae441 (11.3 ns, 6.9 of routing). `t` counts up by one in BIT, which is
        # left at a decision (`decide` is then set low, and stays so until BIT's next one);
        # `k` changes two cycles or more before a decision (`t` is then 0 or 1; a decision
        # comes at `t` >= 4, as the divisor is >= 8).
        decide = Signal()
        k_start, k_stop = Signal(), Signal()
        m.d.sync += [k_start.eq(k == 0), k_stop.eq(k == 9)]

        with m.FSM():
            with m.State("IDLE"):
                # A low level, not a falling edge: a start bit that began a cycle before the stop
                # bit was decided is still caught (one cycle late) instead of being lost.
                with m.If(~line):
                    m.d.sync += [t.eq(1), k.eq(0)]
                    m.next = "BIT"
            with m.State("BIT"):
                m.d.sync += [t.eq(Mux(t == d - 1, 0, t + 1)),
                             decide.eq(t == centre + spread - 1)]
                with m.If((t == centre - spread) | (t == centre)):
                    m.d.sync += early.eq(Cat(early[1], line))
                with m.If(decide):
                    with m.If(k_start):
                        with m.If(vote):
                            m.next = "IDLE"      # a glitch, not a start bit
                    with m.Elif(k_stop):
                        with m.If(~vote):
                            m.d.sync += self.frame_error.eq(1)
                            m.next = "BREAK"
                        with m.Else():
                            with m.If(self.data.valid & ~self.data.ready):
                                m.d.sync += self.overrun.eq(1)
                            with m.Else():
                                m.d.sync += self.data.valid.eq(1)
                            # Idle at once: the next start bit re-synchronises the receiver.
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += shreg.eq(Cat(shreg[1:], vote))
                with m.If(t == d - 1):
                    m.d.sync += k.eq(k + 1)
            with m.State("BREAK"):
                # After a framing error wait for the line to go high: a held-low line (a break)
                # is one error, not one per byte time.
                with m.If(line):
                    m.next = "IDLE"
        return m


class UART(_UARTPart):
    """A transmitter and a receiver sharing one divisor.

    Members
    -------
    rx, tx : the line pins (idle high)
    tx_data : ``In(stream.Signature(8))``: bytes to send
    rx_data : ``Out(stream.Signature(8))``: bytes received
    frame_error, overrun : receiver error pulses (see :class:`UARTRx`)
    """
    rx: In(1, init=1)
    tx: Out(1, init=1)
    tx_data: In(stream.Signature(8))
    rx_data: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTx(divisor=self._divisor)
        m.submodules.rx = rx = UARTRx(divisor=self._divisor)
        wiring.connect(m, wiring.flipped(self.tx_data), tx.data)
        wiring.connect(m, rx.data, wiring.flipped(self.rx_data))
        m.d.comb += [
            self.tx.eq(tx.tx),
            rx.rx.eq(self.rx),
            self.frame_error.eq(rx.frame_error),
            self.overrun.eq(rx.overrun),
        ]
        return m
