"""The command framer: parses request frames from the UART, executes them on a device, answers.

Frame layouts, command and status codes and the identify block come from
:mod:`addershift.sw.protocol` (the one source of truth the host driver reads too); the prose is in
``docs/protocol.md``.

A frame's payload goes into a buffer memory while its CRC is computed, and nothing reaches the device
before the whole frame has arrived with a good CRC and passed every check (command, lengths,
region bounds and access, busy). So a corrupted, truncated or refused frame never writes anything.
A receive FIFO keeps the line flowing while a frame executes and its answer goes out; bytes lost
anyway (receiver overrun or framing error) turn a frame's ``BAD_CRC`` or ``TIMEOUT`` NAK into
``LINE_ERROR``. An idle
line in the middle of a frame for ``timeout`` cycles answers ``TIMEOUT`` and resets the parser.

The device behind the framer implements ``flipped(DeviceSignature(...))``:

- ``write``: a stream of ``{addr, data}``, one byte per transfer, addresses ascending;
- ``read_addr`` / ``read_data``: one address out, one byte back (any latency), in order;
- ``run`` (one-cycle strobe) with ``run_arg``; ``busy``, ``done`` (since the last run) and
  ``error`` (0: none) back; ``counters``: total, busy PE and stall cycles, ``counter_width`` bits.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import protocol as P

__all__ = ["AddressLayout", "WriteLayout", "DeviceSignature", "Framer"]

#: A bus address: the byte offset inside a region and the region number (the top byte).
AddressLayout = data.StructLayout({"offset": unsigned(P.OFFSET_BITS),
                                   "region": unsigned(P.REGION_BITS)})
#: One byte written to the device.
WriteLayout = data.StructLayout({"addr": AddressLayout, "data": unsigned(8)})


class DeviceSignature(wiring.Signature):
    """The framer's side of the device interface (the device takes the flipped signature).

    Members
    -------
    write : ``Out(stream.Signature(WriteLayout))``
        Bytes to store, one per transfer (only ever inside a writable region, never while busy).
    read_addr : ``Out(stream.Signature(AddressLayout))``
        Addresses to read (only inside a readable region).
    read_data : ``In(stream.Signature(8))``
        One byte per address, in order, with any latency.
    run : ``Out(1)``
        One-cycle strobe: start a run with ``run_arg`` (never sent while busy).
    run_arg : ``Out(32)``
        The RUN command's argument, valid with ``run``.
    busy, done, error : ``In(1)``, ``In(1)``, ``In(8)``
        Running; a run finished since the last strobe; the device's error code (0 when none).
    counters : ``In(data.ArrayLayout(counter_width, 3))``
        Total, busy PE and stall cycles (:data:`~addershift.sw.protocol.COUNTERS` order).
    """

    def __init__(self, *, counter_width=32):
        if isinstance(counter_width, bool) or not isinstance(counter_width, int) \
                or not 1 <= counter_width <= 64:
            raise ValueError(f"Counter width must be an integer in [1, 64], not {counter_width!r}")
        self._counter_width = counter_width
        super().__init__({
            "write": Out(stream.Signature(WriteLayout)),
            "read_addr": Out(stream.Signature(AddressLayout)),
            "read_data": In(stream.Signature(8)),
            "run": Out(1),
            "run_arg": Out(32),
            "busy": In(1),
            "done": In(1),
            "error": In(8),
            "counters": In(data.ArrayLayout(counter_width, len(P.COUNTERS))),
        })

    @property
    def counter_width(self):
        return self._counter_width

    def __eq__(self, other):
        return type(other) is type(self) and other.counter_width == self.counter_width

    def __repr__(self):
        return f"DeviceSignature(counter_width={self._counter_width})"


# Where a response's payload bytes come from.
_SRC_NONE, _SRC_ROM, _SRC_BUF, _SRC_BUS, _SRC_STATUS, _SRC_CRC = range(6)


class Framer(wiring.Component):
    """Request parser, command executor and response writer of the host link.

    Parameters
    ----------
    identity : :class:`~addershift.sw.protocol.Identity`
        What IDENTIFY answers; its ``regions`` are the address map the framer enforces, its
        ``max_payload`` sizes the frame buffer and its ``counter_width`` the counters.
    timeout : int
        Idle clock cycles in the middle of a frame before it is dropped (answered ``TIMEOUT``).
    rx_fifo_depth : int
        Received bytes held while a frame executes and its answer goes out.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Bytes from the UART receiver.
    rx_lost : ``In(1)``
        Pulse: the receiver lost or garbled a byte (overrun or framing error).
    tx : ``Out(stream.Signature(8))``
        Bytes to the UART transmitter.
    bus : ``Out(DeviceSignature(counter_width=...))``
        The device.
    """

    def __init__(self, *, identity, timeout, rx_fifo_depth=64):
        if not isinstance(identity, P.Identity):
            raise TypeError(f"Identity must be a protocol.Identity, not {identity!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"Timeout must be an integer number of cycles >= 16, not {timeout!r}")
        if isinstance(rx_fifo_depth, bool) or not isinstance(rx_fifo_depth, int) \
                or rx_fifo_depth < 4:
            raise ValueError(f"Receive FIFO depth must be an integer >= 4, not {rx_fifo_depth!r}")
        self._identity = identity
        self._identify_bytes = identity.encode()
        if len(self._identify_bytes) > P.MAX_PAYLOAD_LIMIT:
            raise ValueError(f"Identify block must be at most {P.MAX_PAYLOAD_LIMIT} bytes, not "
                             f"{len(self._identify_bytes)}")
        self._timeout = timeout
        self._rx_fifo_depth = rx_fifo_depth
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_lost": In(1),
            "tx": Out(stream.Signature(8)),
            "bus": Out(DeviceSignature(counter_width=identity.counter_width)),
        })

    @property
    def identity(self):
        return self._identity

    @property
    def max_payload(self):
        return self._identity.max_payload

    @property
    def timeout(self):
        return self._timeout

    @property
    def rx_fifo_depth(self):
        return self._rx_fifo_depth

    def elaborate(self, platform):
        m = Module()
        ident = self._identity
        max_payload = ident.max_payload
        cw = ident.counter_width

        # --- receive FIFO ----------------------------------------------------------------------
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo_depth)
        m.d.comb += [
            fifo.w_data.eq(self.rx.payload),
            fifo.w_en.eq(self.rx.valid),
            self.rx.ready.eq(1),          # the line has no flow control: a full FIFO loses bytes
        ]
        lost = Signal()                   # bytes lost since the parser last caught up
        rx_lost_now = self.rx_lost | (self.rx.valid & ~fifo.w_rdy)
        byte = fifo.r_data
        have = fifo.r_rdy

        # --- memories --------------------------------------------------------------------------
        m.submodules.buf = buf = Memory(shape=8, depth=max_payload, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port(transparent_for=())
        m.submodules.rom = rom = Memory(shape=8, depth=len(self._identify_bytes),
                                        init=list(self._identify_bytes))
        rom_r = rom.read_port(transparent_for=())

        # --- CRCs ------------------------------------------------------------------------------
        m.submodules.rx_crc = rx_crc = catalog.CRC16_IBM_3740(8).create()
        m.submodules.tx_crc = tx_crc = catalog.CRC16_IBM_3740(8).create()
        m.submodules.region_crc = region_crc = catalog.CRC32_ISO_HDLC(8).create()

        # --- request registers -----------------------------------------------------------------
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        rcrc = Signal(16)
        args = Signal(64)                 # the first 8 payload bytes (address, length, argument)
        idx = Signal(range(max(max_payload, len(self._identify_bytes), P.STATUS_PAYLOAD) + 1))
        status = Signal(8)
        resp_len = Signal(16)
        source = Signal(range(6))
        timer = Signal(range(self._timeout + 1))
        count = Signal(range((1 << P.OFFSET_BITS) + 1))   # bytes left to commit / check
        uptime = Signal(cw)
        m.d.sync += uptime.eq(uptime + 1)

        addr = data.View(AddressLayout, args[0:32])
        arg_len = args[32:64]             # READ's u16 or CRC's u32 (the bytes above READ's are 0)
        next_offset = Signal(P.OFFSET_BITS)   # running address of a commit or region read

        def region_ok(count_, access):
            end = addr.offset + count_
            ok = Const(0)
            for r in ident.regions:
                if r.access & access:
                    ok = ok | ((addr.region == r.id) & (end <= r.size))
            return ok

        # --- response header bytes -------------------------------------------------------------
        header = Cat(Const(P.RESPONSE_SYNC[0], 8), Const(P.RESPONSE_SYNC[1], 8), cmd, seq, status,
                     rcrc, resp_len)
        hidx = Signal(range(9))
        pbyte = Signal(8)                 # the payload byte being sent
        shift = Signal(max(cw, 8))        # the status field being sent, shifted out a byte at a time

        # --- idle timeout while inside a frame -------------------------------------------------
        in_frame = Signal()
        with m.If(~in_frame | have):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != self._timeout):
            m.d.sync += timer.eq(timer + 1)
        timed_out = in_frame & ~have & (timer == self._timeout)

        hunting = Signal()
        with m.If(rx_lost_now):
            m.d.sync += lost.eq(1)
        with m.Elif(hunting & ~have):
            m.d.sync += lost.eq(0)       # every byte received so far has been parsed

        def take_crc():
            m.d.comb += [rx_crc.valid.eq(1), rx_crc.data.eq(byte)]

        def respond(code):
            if code == P.Status.TIMEOUT:
                code = Mux(lost, P.Status.LINE_ERROR, P.Status.TIMEOUT)
            m.d.sync += [status.eq(code), resp_len.eq(0), source.eq(_SRC_NONE), hidx.eq(0)]
            m.next = "HEADER"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [fifo.r_en.eq(1), hunting.eq(1)]
                with m.If(have & (byte == P.REQUEST_SYNC[0])):
                    m.next = "SYNC1"

            with m.State("SYNC1"):
                m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.Elif(have):
                    with m.If(byte == P.REQUEST_SYNC[1]):
                        m.d.comb += rx_crc.start.eq(1)
                        m.d.sync += [cmd.eq(0), seq.eq(0), args.eq(0), rcrc.eq(0), length.eq(0)]
                        m.next = "CMD"
                    with m.Elif(byte != P.REQUEST_SYNC[0]):
                        m.next = "HUNT"

            for state, nxt, target in (("CMD", "SEQ", cmd), ("SEQ", "LEN0", seq),
                                       ("LEN0", "LEN1", length[0:8])):
                with m.State(state):
                    m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                    with m.If(timed_out):
                        respond(P.Status.TIMEOUT)
                    with m.Elif(have):
                        take_crc()
                        m.d.sync += target.eq(byte)
                        m.next = nxt

            with m.State("LEN1"):
                m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                full_len = Cat(length[0:8], byte)
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(have):
                    take_crc()
                    m.d.sync += [length[8:16].eq(byte), idx.eq(0)]
                    with m.If(full_len > max_payload):
                        # Refused at once: a corrupted length must not swallow the next frames.
                        respond(P.Status.BAD_LENGTH)
                    with m.Elif(full_len == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(have):
                    take_crc()
                    m.d.comb += [buf_w.addr.eq(idx), buf_w.data.eq(byte), buf_w.en.eq(1)]
                    with m.Switch(idx):
                        for i in range(8):
                            with m.Case(i):
                                m.d.sync += args[8 * i:8 * i + 8].eq(byte)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 == length):
                        m.next = "CRC0"

            with m.State("CRC0"):
                m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(have):
                    m.d.sync += rcrc[0:8].eq(byte)
                    m.next = "CRC1"

            with m.State("CRC1"):
                m.d.comb += [fifo.r_en.eq(1), in_frame.eq(1)]
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(have):
                    m.d.sync += rcrc[8:16].eq(byte)
                    m.next = "DECODE"

            with m.State("DECODE"):
                # Every check happens here, before anything touches the device.
                m.d.sync += [hidx.eq(0), idx.eq(0), source.eq(_SRC_NONE), resp_len.eq(0),
                             status.eq(P.Status.OK),
                             next_offset.eq(addr.offset)]
                m.next = "HEADER"
                with m.If(rx_crc.crc != rcrc):
                    # Say why when bytes were lost on the line (a good CRC wins: a loss may have hit
                    # the bytes after this frame).
                    m.d.sync += status.eq(Mux(lost, P.Status.LINE_ERROR, P.Status.BAD_CRC))
                with m.Else():
                    with m.Switch(cmd):
                        with m.Case(P.Command.IDENTIFY):
                            with m.If(length != 0):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Else():
                                m.d.sync += [resp_len.eq(len(self._identify_bytes)),
                                             source.eq(_SRC_ROM)]
                        with m.Case(P.Command.ECHO):
                            m.d.sync += [resp_len.eq(length), source.eq(_SRC_BUF)]
                        with m.Case(P.Command.WRITE):
                            n = length - P.WRITE_HEADER
                            with m.If(length <= P.WRITE_HEADER):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Elif(~region_ok(n, P.Access.WRITE)):
                                m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                            with m.Elif(self.bus.busy):
                                m.d.sync += status.eq(P.Status.BUSY)
                            with m.Else():
                                m.d.sync += count.eq(n)
                                m.next = "COMMIT_FETCH"
                        with m.Case(P.Command.READ):
                            with m.If((length != 6) | (arg_len == 0) | (arg_len > max_payload)):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Elif(~region_ok(arg_len, P.Access.READ)):
                                m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                            with m.Else():
                                m.d.sync += [resp_len.eq(arg_len), source.eq(_SRC_BUS)]
                        with m.Case(P.Command.CRC):
                            with m.If(length != 8):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Elif((arg_len > (1 << P.OFFSET_BITS))
                                        | ~region_ok(arg_len, P.Access.READ)):
                                m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                            with m.Else():
                                m.d.sync += [resp_len.eq(4), source.eq(_SRC_CRC),
                                             count.eq(arg_len)]
                                m.d.comb += region_crc.start.eq(1)
                                m.next = "CRC_ADDR"
                        with m.Case(P.Command.RUN):
                            with m.If(length != 4):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Elif(self.bus.busy):
                                m.d.sync += status.eq(P.Status.BUSY)
                            with m.Else():
                                m.d.comb += [self.bus.run.eq(1)]
                        with m.Case(P.Command.STATUS):
                            with m.If(length != 0):
                                m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                            with m.Else():
                                m.d.sync += [resp_len.eq(P.STATUS_PAYLOAD),
                                             source.eq(_SRC_STATUS)]
                        with m.Default():
                            m.d.sync += status.eq(P.Status.BAD_COMMAND)

            # --- WRITE: copy the checked payload from the buffer to the device ------------------
            with m.State("COMMIT_FETCH"):
                m.d.comb += [buf_r.addr.eq(idx + P.WRITE_HEADER), buf_r.en.eq(1)]
                m.next = "COMMIT"
            with m.State("COMMIT"):
                m.d.comb += [
                    self.bus.write.valid.eq(1),
                    self.bus.write.payload.addr.region.eq(addr.region),
                    self.bus.write.payload.addr.offset.eq(next_offset),
                    self.bus.write.payload.data.eq(buf_r.data),
                ]
                with m.If(self.bus.write.ready):
                    m.d.sync += [idx.eq(idx + 1), next_offset.eq(next_offset + 1),
                                 count.eq(count - 1)]
                    with m.If(count == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "COMMIT_FETCH"

            # --- CRC: read the region through the device and check it --------------------------
            with m.State("CRC_ADDR"):
                with m.If(count == 0):
                    m.next = "HEADER"
                with m.Else():
                    m.d.comb += [
                        self.bus.read_addr.valid.eq(1),
                        self.bus.read_addr.payload.region.eq(addr.region),
                        self.bus.read_addr.payload.offset.eq(next_offset),
                    ]
                    with m.If(self.bus.read_addr.ready):
                        m.next = "CRC_DATA"
            with m.State("CRC_DATA"):
                m.d.comb += self.bus.read_data.ready.eq(1)
                with m.If(self.bus.read_data.valid):
                    m.d.comb += [region_crc.valid.eq(1),
                                 region_crc.data.eq(self.bus.read_data.payload)]
                    m.d.sync += [next_offset.eq(next_offset + 1), count.eq(count - 1)]
                    m.next = "CRC_ADDR"

            # --- the answer ------------------------------------------------------------------------
            with m.State("HEADER"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(header.word_select(hidx, 8))]
                with m.If(self.tx.ready):
                    m.d.comb += [tx_crc.start.eq(hidx == 0),
                                 tx_crc.valid.eq(hidx >= 2), tx_crc.data.eq(self.tx.payload)]
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 8):
                        m.d.sync += [idx.eq(0), next_offset.eq(addr.offset)]
                        with m.If(resp_len == 0):
                            m.next = "TXCRC0"
                        with m.Else():
                            m.next = "FETCH"

            with m.State("FETCH"):
                with m.Switch(source):
                    with m.Case(_SRC_ROM):
                        m.d.comb += [rom_r.addr.eq(idx), rom_r.en.eq(1)]
                        m.next = "LATCH"
                    with m.Case(_SRC_BUF):
                        m.d.comb += [buf_r.addr.eq(idx), buf_r.en.eq(1)]
                        m.next = "LATCH"
                    with m.Case(_SRC_BUS):
                        m.d.comb += [
                            self.bus.read_addr.valid.eq(1),
                            self.bus.read_addr.payload.region.eq(addr.region),
                            self.bus.read_addr.payload.offset.eq(next_offset),
                        ]
                        with m.If(self.bus.read_addr.ready):
                            m.d.sync += next_offset.eq(next_offset + 1)
                            m.next = "BUS_DATA"
                    with m.Default():
                        m.next = "LATCH"

            with m.State("BUS_DATA"):
                m.d.comb += self.bus.read_data.ready.eq(1)
                with m.If(self.bus.read_data.valid):
                    m.d.sync += pbyte.eq(self.bus.read_data.payload)
                    m.next = "SEND"

            with m.State("LATCH"):
                with m.Switch(source):
                    with m.Case(_SRC_ROM):
                        m.d.sync += pbyte.eq(rom_r.data)
                    with m.Case(_SRC_BUF):
                        m.d.sync += pbyte.eq(buf_r.data)
                    with m.Case(_SRC_CRC):
                        m.d.sync += pbyte.eq(region_crc.crc.word_select(idx[0:2], 8))
                    with m.Case(_SRC_STATUS):
                        flags = Cat(self.bus.busy, self.bus.done, self.bus.error != 0)
                        counters = self.bus.counters
                        field = Signal(cw)
                        rel = Signal(16)
                        m.d.comb += rel.eq(idx - 2)
                        with m.Switch(rel[3:6]):
                            for i, value in enumerate([uptime] + [counters[j] for j in
                                                                  range(len(P.COUNTERS))]):
                                with m.Case(i):
                                    m.d.comb += field.eq(value)
                        with m.If(idx == 0):
                            m.d.sync += pbyte.eq(flags)
                        with m.Elif(idx == 1):
                            m.d.sync += pbyte.eq(self.bus.error)
                        with m.Elif(rel[0:3] == 0):
                            # Each field is latched whole at its first byte: no torn values.
                            m.d.sync += [pbyte.eq(field[0:8]), shift.eq(field >> 8)]
                        with m.Else():
                            m.d.sync += [pbyte.eq(shift[0:8]), shift.eq(shift >> 8)]
                m.next = "SEND"

            with m.State("SEND"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(pbyte)]
                with m.If(self.tx.ready):
                    m.d.comb += [tx_crc.valid.eq(1), tx_crc.data.eq(pbyte)]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 == resp_len):
                        m.next = "TXCRC0"
                    with m.Else():
                        m.next = "FETCH"

            with m.State("TXCRC0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[0:8])]
                with m.If(self.tx.ready):
                    m.next = "TXCRC1"
            with m.State("TXCRC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[8:16])]
                with m.If(self.tx.ready):
                    m.next = "HUNT"

        m.d.comb += self.bus.run_arg.eq(args[0:32])
        return m
