"""The command framer: parses request frames from the UART, executes them on a device, answers.

Frame layouts, command and status codes and the identify block come from
:mod:`addershift.sw.protocol` (the one source of truth the host driver reads too); the prose is in
``docs/protocol.md``.

A frame's payload goes into a buffer memory while its CRC is computed, and nothing reaches the device
before the whole frame has arrived with a good CRC and passed every check (command, lengths,
region bounds and access, busy). So a corrupted, truncated or refused frame never writes anything.
A receive FIFO keeps the line flowing while a frame executes and its answer goes out; bytes lost
anyway (receiver overrun or framing error) turn a frame's ``BAD_CRC`` or ``TIMEOUT`` NAK into
``LINE_ERROR``. A line idle
in the middle of a frame for more than ``timeout`` cycles (counted while the parser has no byte
waiting) answers ``TIMEOUT`` and resets the parser.

The device behind the framer implements ``flipped(DeviceSignature(...))``:

- ``write``: a stream of ``{addr, data}``, one byte per transfer, addresses ascending;
- ``read_addr`` / ``read_data``: one address out, one byte back (any latency), in order;
- ``run`` (one-cycle strobe) with ``run_arg``; ``busy``, ``done`` (since the last run) and
  ``error`` (0: none) back; ``counters``: total, busy PE and stall cycles, ``counter_width`` bits.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import protocol as P
from .skid import skid

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
        Addresses to read (only inside a readable region; while busy, only in a ``LIVE`` one).
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


def _gt_const(value, const):
    """``value > const`` as logic, without the carry chain Yosys makes of a comparison (on an
    iCE40 a carry and often a LUT a bit): for each 0 bit of ``const``, ``value`` has a 1 there
    and equals ``const`` above it."""
    terms = [value[i] & (value[i + 1:] == const >> (i + 1))
             for i in range(len(value)) if not (const >> i) & 1]
    return Cat(*terms).any()


class _SerialCRCs(wiring.Component):
    """The link's CRC-16 and CRC-32 over bytes, bit-serial: 9 cycles per byte (a cycle in the
    input registers, then 8 shifts), about one logic cell per CRC bit.

    Bytes reach the framer every ``10 * divisor >= 80`` cycles, so a byte-parallel CRC (which
    costs several LUTs per bit: ~200 for CRC-32) buys nothing here. The two never run at once (the
    CRC-32 only during a CRC command, between a request and its answer), so they share one byte
    shifter: ``data`` goes in MSB first, so the caller bit-reverses the CRC-32's (reflected) bytes.

    While the CRC-16 takes the answer's bytes, ``drain32`` shifts the finished CRC-32 register
    by 8 with its feedback off, so ``crc32[0:8]`` is always the next byte of the CRC-32 to send
    (a byte select on the answer byte's path cost more than the gate).
    """
    def __init__(self):
        super().__init__({
            "start16": In(1),  # back to the initial value (while idle)
            "start32": In(1),
            "load": In(1),     # take ``data`` (while idle): into the CRC-32 if ``sel32``
            "sel32": In(1),
            "drain32": In(1),  # with ``load``: the CRC-32 shifts its next answer byte into place
            "data": In(8),
            "busy": Out(1),
            "crc16": Out(16),
            "crc32": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(8)
        left = Signal(range(9))
        is32 = Signal()
        drain = Signal()
        # ``left != 0`` kept as a register of its own: ``busy`` gates the framer's answer
        # handshake and state changes, whose logic set the ECP5 4x4 accelerator's clock.
        busy = Signal()
        # Each CRC is a plain MSB-first shift register, not ``amaranth.lib.crc``'s processor: that
        # one muxes ``start`` into every bit's XOR (two LUTs for each), here ``start`` is a
        # flip-flop's synchronous set or reset and only the polynomial's taps take a LUT.
        for algo, start, valid, feed, out in (
                (catalog.CRC16_IBM_3740, self.start16, busy & ~is32, 1, self.crc16),
                (catalog.CRC32_ISO_HDLC, self.start32, busy & (is32 | drain), ~drain,
                 self.crc32)):
            reg = Signal(algo.crc_width, init=algo.initial_crc)
            feedback = (reg[-1] ^ shreg[7]) & feed
            with m.If(start):             # only while idle: never with ``valid``
                m.d.sync += reg.eq(algo.initial_crc)
            with m.Elif(valid):
                m.d.sync += reg.eq((reg << 1) ^ Mux(feedback, algo.polynomial, 0))
            m.d.comb += out.eq((reg[::-1] if algo.reflect_output else reg) ^ algo.xor_output)
        # A byte to take waits a cycle in registers of its own (busy meanwhile): the framer's
        # states deciding ``load``, into the enables of the shifter and its count, were an
        # iCE40 host link's slowest path.
        load, data, sel32, drain32 = Signal(), Signal(8), Signal(), Signal()
        m.d.sync += [load.eq(self.load), data.eq(self.data), sel32.eq(self.sel32),
                     drain32.eq(self.drain32)]
        m.d.comb += self.busy.eq(busy | load)
        with m.If(load):
            m.d.sync += [shreg.eq(data), left.eq(8), busy.eq(1), is32.eq(sel32),
                         drain.eq(drain32)]
        with m.Elif(busy):
            m.d.sync += [shreg.eq(shreg << 1), left.eq(left - 1), busy.eq(left != 1)]
        return m


class _ReceiveFIFO(wiring.Component):
    """``SyncFIFOBuffered(width=8, depth=depth)`` as far as the framer uses it (same capacity, same
    cycle behaviour), with a transparent read port on its memory.

    The memory is never read at the address being written (at equal pointers the FIFO is empty,
    so nothing is read, or full, so nothing is written), so transparency changes nothing but the
    cost: Yosys emulates a non-transparent read on an iCE40 block RAM by delaying the write port a
    cycle (15 flip-flops). The memory has a power-of-two depth: its pointers wrap by themselves.
    """
    def __init__(self, depth):
        self._depth = depth
        super().__init__({
            "w_data": In(8), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(8), "r_en": In(1), "r_rdy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        inner = self._depth - 1          # in the memory; one more in its output register
        m.submodules.storage = storage = Memory(shape=8, depth=1 << (inner - 1).bit_length(),
                                                init=[])
        w_port = storage.write_port()
        r_port = storage.read_port(transparent_for=(w_port,))
        produce = Signal.like(w_port.addr)
        consume = Signal.like(r_port.addr)
        level = Signal(range(inner + 1))
        # Whether the memory holds a byte, and whether it has room, are registers set from the
        # level before the step (a 32x32 ECP5 accelerator's slowest path was the level through
        # its compare with zero, the read decision and back into the level: 12.2 ns, three
        # LUTs spread apart).
        stored = Signal()
        room = Signal(init=1)
        do_write = self.w_en & room
        do_read = stored & (~self.r_rdy | self.r_en)
        m.d.comb += [
            self.w_rdy.eq(room),
            w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(do_write),
            r_port.addr.eq(consume), r_port.en.eq(do_read), self.r_data.eq(r_port.data),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(do_read):
            m.d.sync += consume.eq(consume + 1)
        with m.If(do_write & ~do_read):
            m.d.sync += [level.eq(level + 1), stored.eq(1), room.eq(level != inner - 1)]
        with m.If(do_read & ~do_write):
            m.d.sync += [level.eq(level - 1), stored.eq(level != 1), room.eq(1)]
        with m.If(do_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m


# Where a response's payload bytes come from.
_SRC_NONE, _SRC_ROM, _SRC_BUF, _SRC_BUS, _SRC_STATUS, _SRC_CRC = range(6)
# What a request that passed its checks does (bits of the framer's plan register).
_PLAN_ROM, _PLAN_BUF, _PLAN_COMMIT, _PLAN_BUS, _PLAN_CRC, _PLAN_RUN, _PLAN_STATUS = range(7)


class Framer(wiring.Component):
    """Request parser, command executor and response writer of the host link.

    Parameters
    ----------
    identity : :class:`~addershift.sw.protocol.Identity`
        What IDENTIFY answers; its ``regions`` are the address map the framer enforces, its
        ``max_payload`` sizes the frame buffer and its ``counter_width`` the counters.
    timeout : int
        Idle clock cycles tolerated in the middle of a frame; one more drops it (answered
        ``TIMEOUT``).
    rx_fifo_depth : int
        Received bytes held while a frame executes and its answer goes out.
    register_reads : bool
        Pass the bytes read from the frame buffer and the identify ROM through registers of
        their own (one more cycle per byte; the buffer's read is then not transparent, so that an
        ECP5 build moves its register into the block RAM): a block RAM's output (5.8 ns from
        clock to data on an ECP5) through the answer's multiplexer, or into the device's write
        port, set the ECP5 host link's clock. And read the receive FIFO through a skid register
        (:mod:`hw.skid`; no cycle more), so its read enable is a register's, and take the
        device's ``done`` and ``error`` for the status answer through registers. Off for an
        iCE40, where the flip-flops cost logic cells.

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

    def __init__(self, *, identity, timeout, rx_fifo_depth=64, register_reads=True):
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
        if not isinstance(register_reads, bool):
            raise TypeError(f"register_reads must be a bool, not {register_reads!r}")
        self._timeout = timeout
        self._rx_fifo_depth = rx_fifo_depth
        self._register_reads = register_reads
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
        n_identify = len(self._identify_bytes)
        resp_max = max(max_payload, n_identify, P.STATUS_PAYLOAD)
        # Widths from the region map, not the protocol's: a valid offset is below the largest
        # region's size, and a valid count (of bytes to write, read, check or send) at most that
        # or the longest answer. Argument bits above them only ever mean "out of bounds".
        max_size = max((r.size for r in ident.regions), default=1)
        off_bits = max(1, (max_size - 1).bit_length())
        n_bits = max(max_size, resp_max).bit_length()

        # --- receive FIFO ----------------------------------------------------------------------
        m.submodules.rx_fifo = fifo = _ReceiveFIFO(self._rx_fifo_depth)
        m.d.comb += [
            fifo.w_data.eq(self.rx.payload),
            fifo.w_en.eq(self.rx.valid),
            self.rx.ready.eq(1),          # the line has no flow control: a full FIFO loses bytes
        ]
        rx_lost_now = self.rx_lost | (self.rx.valid & ~fifo.w_rdy)
        # The parser sees the FIFO through one register: a memory's output straight into the
        # parser's decisions was the critical path on an iCE40 (31 MHz).
        byte = Signal(8)
        have = Signal()
        consume = Signal()
        if self._register_reads:
            # ... and a skid register before that, so the FIFO's read enable is a register's:
            # the parser's decision to take the byte, through the FIFO's level logic, was a
            # 32x32 ECP5 accelerator's slowest path (12.4 ns, two routes of 4 ns between the
            # parser's LUTs and the FIFO's).
            rx = skid(m, fifo.r_rdy, fifo.r_data, ~have | consume, "rx")
            m.d.comb += fifo.r_en.eq(rx.ready)
            rx_valid, rx_byte = rx.valid, rx.payload
        else:
            m.d.comb += fifo.r_en.eq(~have | consume)
            rx_valid, rx_byte = fifo.r_rdy, fifo.r_data
        with m.If(~have | consume):
            m.d.sync += [byte.eq(rx_byte), have.eq(rx_valid)]

        # --- memories --------------------------------------------------------------------------
        m.submodules.buf = buf = Memory(shape=8, depth=max_payload, init=[])
        buf_w = buf.write_port()
        # Written (PAYLOAD) and read (FETCH, COMMIT_FETCH) in different states: transparency
        # changes nothing but the cost. An iCE40 block RAM leaves a read of the address being
        # written undefined; Yosys makes a transparent read of it with a bypass register, a
        # non-transparent one by delaying the write port a cycle as well (17 more flip-flops).
        # With register_reads (ECP5 builds) the read is not transparent, so that its word goes
        # straight into `fetched_buf`, which the build moves into the block RAM's output register
        # (boards/outreg.py): through the transparency's bypass and the ROM's select, the block
        # RAM's 5.6 ns clock-to-output into `fetched` was late on a 32x32 ECP5 accelerator.
        buf_r = buf.read_port(transparent_for=() if self._register_reads else (buf_w,))
        m.submodules.rom = rom = Memory(shape=8, depth=n_identify, init=list(self._identify_bytes))
        rom_r = rom.read_port(transparent_for=())
        # A read port's enable defaults to 1: hold the data between reads (a device may stall).
        m.d.comb += [buf_r.en.eq(0), rom_r.en.eq(0)]

        # --- CRCs: the CRC-16 for the request, then for the answer; the CRC-32 in between -----
        m.submodules.crc = crc = _SerialCRCs()

        # --- registers (few: on an iCE40 every flip-flop costs a logic cell) ----------------------
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(max(8, len(Signal(range(max_payload + 1)))))   # LEN0 lands in [0:8]
        rcrc = Signal(16)
        crc_ok = Signal()
        status = Signal(8)
        source = Signal(range(6))
        idx = Signal(range(resp_max + 1))  # header, buffer, ROM or answer byte index
        pbyte = Signal(8)                 # the answer byte being sent
        # A byte read from the buffer or the ROM (register_reads), each in a register of its own.
        fetched_buf, fetched_rom = (Signal(8, name=f"fetched_{n}", reset_less=True)
                                    for n in ("buf", "rom"))
        timer = Signal(range(self._timeout + 1))
        # The request's address and size, captured from the payload as it arrives, then the
        # running address (only its low ``off_bits`` count) and the count of bytes left (to
        # write, read, check or send; 0 for an answer without payload).
        offset = Signal(P.OFFSET_BITS)
        region = Signal(P.REGION_BITS)
        n = Signal(n_bits)
        n_high = Signal()                 # the size argument has bits above n's
        end = Signal(max(off_bits, n_bits) + 1)   # offset's low bits + n (PREP_SUM)
        ok_read = Signal()                # [offset, offset + n) inside a readable region
        ok_write = Signal()               # ... inside a writable region
        ok_live = Signal()                # ... inside a region readable while the device runs
        n_zero = Signal()
        n_big = Signal()                  # more than a READ may ask for
        run_strobe = Signal()
        # The command and length, decoded ahead of PREP and DECODE (one-hot flags keep their logic
        # shallow: it was the critical path on an iCE40).
        commands = [P.Command.IDENTIFY, P.Command.ECHO, P.Command.WRITE, P.Command.READ,
                    P.Command.CRC, P.Command.RUN, P.Command.STATUS]
        is_cmd = {c: Signal(name=f"is_{c.name.lower()}") for c in commands}
        len_is = {k: Signal(name=f"len_is_{k}") for k in (0, 4, 6, 8)}
        # Set in every cycle: the command and the length hold still from their bytes to the
        # answer, so the flags are right from PREP on, and no state is in their enables.
        m.d.sync += [flag.eq(cmd == c) for c, flag in is_cmd.items()]
        m.d.sync += [flag.eq(length == k) for k, flag in len_is.items()]
        len_gt_header = Signal()
        # A WRITE's payload size, from a register set in every cycle (the length holds still, as
        # above): as a difference in PREP, Yosys shared one subtractor between it and n's
        # decrement, and the operand select in front of that carry chain was the slowest path
        # into n on an iCE40.
        write_size = Signal(n_bits)
        m.d.sync += write_size.eq(length - P.WRITE_HEADER)
        plan = Signal(7)                  # what APPLY does (one-hot _PLAN_* bits)
        # The next payload byte is the last, set a byte ahead: the count's sum and compare in
        # front of the state register were a 16x12 ECP5 accelerator's slowest path (96.8 MHz).
        payload_last = Signal()
        # The device's busy, registered, and with register_reads its done and error for the
        # status answer (the device's logic across the die was in front of the answer byte's
        # enable; a cycle late changes nothing there).
        busy, done, error = Signal(), Signal(), Signal(8)
        m.d.sync += busy.eq(self.bus.busy)
        if self._register_reads:
            m.d.sync += [done.eq(self.bus.done), error.eq(self.bus.error)]
        else:
            done, error = self.bus.done, self.bus.error
        m.d.sync += run_strobe.eq(0)
        uptime = Signal(cw)
        m.d.sync += uptime.eq(uptime + 1)
        # A status field is sent a byte at a time from a copy latched at its first byte. (Reusing
        # the idle address register for it saved 32 cells but put the status logic on the
        # address register's enable: the critical path on an iCE40.)
        shift = Signal(cw)

        # The status field the answer index points at, in a register set in every cycle: LATCH
        # follows FETCH, which leaves the index as it is, so it holds the field of LATCH's index,
        # all of one cycle. (The select in front of the answer byte, 4.5 ns of routing from the
        # index and 3.9 ns on to the byte and `shift`, was a 32x32 ECP5 accelerator's slowest
        # path with placement seed 4: 11.99 ns.) Field k starts at idx 2 + 8 * k: idx[0:3] == 2
        # and idx[3:5] == k (no subtraction of the 2).
        field = Signal(cw)
        with m.Switch(idx[3:5]):
            for k, value in enumerate([uptime] + [self.bus.counters[j]
                                                  for j in range(len(P.COUNTERS))]):
                with m.Case(k):
                    m.d.sync += field.eq(value)
        # Which status byte the index points at, registered in every cycle too (the flags byte,
        # the error byte, a field's first byte): compared in LATCH, the index through the
        # choice into the answer byte was an iCE40 host link's slowest path (seven LUTs).
        at_flags, at_error, at_field = Signal(), Signal(), Signal()
        m.d.sync += [at_flags.eq(idx == 0), at_error.eq(idx == 1), at_field.eq(idx[0:3] == 2)]

        # The answer's header, indexed by ``idx`` (the length is ``n``: 0 for a NAK).
        header_byte = Signal(8)
        with m.Switch(idx[0:4]):
            for k, value in enumerate([P.RESPONSE_SYNC[0], P.RESPONSE_SYNC[1], cmd, seq, status,
                                       rcrc[0:8], rcrc[8:16], n[0:8], n[8:16]]):
                with m.Case(k):
                    m.d.comb += header_byte.eq(value)

        # The memories' addresses and write data in every state, only the enables by state (an
        # address gated by the state costs a LUT a bit).
        m.d.comb += [buf_w.addr.eq(idx), buf_w.data.eq(byte), buf_r.addr.eq(idx),
                     rom_r.addr.eq(idx)]

        # --- idle timeout inside a frame; lost bytes --------------------------------------------
        hunting = Signal()
        lost = Signal()                   # bytes lost since the parser last caught up
        # timer == timeout, kept as a register: the compare of every timer bit in front of the
        # parser's state took four LUT levels, then the route to the state register, a 16x12
        # ECP5 accelerator's slowest path (83.6 MHz).
        # The timer restarts on every byte waiting, in every state (no decode of the frame's
        # states in front of it): each state that checks it is entered on a byte taken.
        expired = Signal()
        with m.If(have):
            m.d.sync += [timer.eq(0), expired.eq(0)]
        with m.Elif(~expired):
            m.d.sync += [timer.eq(timer + 1), expired.eq(timer == self._timeout - 1)]
        timed_out = ~have & expired
        with m.If(rx_lost_now):
            m.d.sync += lost.eq(1)
        with m.Elif(hunting & ~have):
            m.d.sync += lost.eq(0)       # every byte received so far has been parsed

        def respond(code):
            # A NAK from the parser: through one state, so the registers it sets have one
            # more source, not one per parser state.
            m.next = "NAK_" + code.name

        def take(target=None):
            """Consume a header or payload byte into the CRC (the serial CRC must be idle)."""
            m.d.comb += consume.eq(~crc.busy)
            ready = have & ~crc.busy
            m.d.comb += [crc.load.eq(ready), crc.data.eq(byte)]
            if target is not None:
                with m.If(ready):
                    m.d.sync += target.eq(byte)
            return ready

        def fetch():
            """On to the next answer byte (bus reads have their own state: see BUS_ADDR)."""
            with m.If(source == _SRC_BUS):
                m.next = "BUS_ADDR"
            with m.Else():
                m.next = "FETCH"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += [consume.eq(1), hunting.eq(1)]
                # The header fields a NAK echoes and the size start at 0 (a READ's payload sets
                # only n's low 16 bits): cleared here, where every frame begins, and not on the
                # second sync byte, whose compare then led five LUTs into n's enable (the slowest
                # path of a 32x32 ECP5 accelerator with placement seed 4, 94.5 MHz). The address
                # needs no clearing (fewer sources): every command that reads it has a length
                # check that proves its payload set all four bytes.
                m.d.sync += [cmd.eq(0), seq.eq(0), rcrc.eq(0), n.eq(0), n_high.eq(0)]
                with m.If(have & (byte == P.REQUEST_SYNC[0])):
                    m.next = "SYNC1"

            with m.State("SYNC1"):
                m.d.comb += consume.eq(1)
                with m.If(timed_out):
                    m.next = "HUNT"
                with m.Elif(have):
                    with m.If(byte == P.REQUEST_SYNC[1]):
                        m.d.comb += crc.start16.eq(1)
                        m.next = "CMD"
                    with m.Elif(byte != P.REQUEST_SYNC[0]):
                        m.next = "HUNT"

            for state, nxt, target in (("CMD", "SEQ", cmd), ("SEQ", "LEN0", seq),
                                       ("LEN0", "LEN1", length[0:8])):
                with m.State(state):
                    ready = take(target)
                    with m.If(timed_out):
                        respond(P.Status.TIMEOUT)
                    with m.Elif(ready):
                        m.next = nxt

            with m.State("LEN1"):
                full_len = Cat(length[0:8], byte)
                ready = take()
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(ready):
                    m.d.sync += [length.eq(full_len), idx.eq(0),
                                 payload_last.eq(full_len == 1)]
                    with m.If(_gt_const(full_len, max_payload)):
                        # Refused at once: a corrupted length must not swallow the next frames.
                        respond(P.Status.BAD_LENGTH)
                    with m.Elif(full_len == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                ready = take()
                with m.If(have):
                    # Bytes 0-3: the address (RUN's argument); 4-7: READ's u16 or CRC's u32 size,
                    # its bits above n's only flagged. Taken while the byte waits, not as it is
                    # consumed (the same byte again until then): the CRC's busy in n's enable
                    # was an iCE40 host link's slowest path.
                    with m.Switch(idx):
                        for k, target in enumerate([offset[0:8], offset[8:16], offset[16:24],
                                                    region]):
                            with m.Case(k):
                                m.d.sync += target.eq(byte)
                        for k in range(4):
                            lo, keep = 8 * k, max(0, min(8, n_bits - 8 * k))
                            with m.Case(4 + k):
                                if keep:
                                    m.d.sync += n[lo:lo + keep].eq(byte[0:keep])
                                if keep < 8:
                                    with m.If(byte[keep:] != 0):
                                        m.d.sync += n_high.eq(1)
                with m.If(timed_out):
                    respond(P.Status.TIMEOUT)
                with m.Elif(ready):
                    m.d.comb += buf_w.en.eq(1)
                    m.d.sync += [idx.eq(idx + 1), payload_last.eq(idx + 2 == length)]
                    with m.If(payload_last):
                        m.next = "CRC0"

            for state, nxt, target in (("CRC0", "CRC1", rcrc[0:8]), ("CRC1", "PREP", rcrc[8:16])):
                with m.State(state):
                    m.d.comb += consume.eq(1)
                    with m.If(timed_out):
                        respond(P.Status.TIMEOUT)
                    with m.Elif(have):
                        m.d.sync += target.eq(byte)
                        m.next = nxt

            for code in (P.Status.TIMEOUT, P.Status.BAD_LENGTH):
                with m.State("NAK_" + code.name):
                    if code == P.Status.TIMEOUT:
                        code = Mux(lost, P.Status.LINE_ERROR, P.Status.TIMEOUT)
                    m.d.sync += [status.eq(code), source.eq(_SRC_NONE), idx.eq(0), n.eq(0)]
                    m.next = "HEADER"

            with m.State("PREP"):
                # The sizes that come from the length: a WRITE's payload, an ECHO's answer.
                with m.If(is_cmd[P.Command.WRITE]):
                    m.d.sync += [n.eq(write_size), n_high.eq(0)]
                with m.If(is_cmd[P.Command.ECHO]):
                    m.d.sync += n.eq(length)
                with m.If(~crc.busy):     # the last payload byte's CRC may still be going
                    m.d.sync += crc_ok.eq(crc.crc16 == rcrc)
                    m.next = "PREP_SUM"

            with m.State("PREP_SUM"):
                # The access's end, registered before the regions' compares: the sum and the
                # compares in one cycle were an 8x8 ECP5 accelerator's slowest path (99.9 MHz).
                m.d.sync += end.eq(offset[0:off_bits] + n)
                m.next = "PREP_END"

            with m.State("PREP_END"):
                # The address checks, registered: DECODE only combines flags. Only the low bits
                # of the offset count; any above them is out of every region.
                fits = ~n_high
                if off_bits < P.OFFSET_BITS:
                    fits &= offset[off_bits:] == 0
                ok = {P.Access.READ: Const(0), P.Access.WRITE: Const(0), P.Access.LIVE: Const(0)}
                for r in ident.regions:
                    for access in ok:
                        if r.access & access:
                            ok[access] = ok[access] | ((region == r.id) & ~_gt_const(end, r.size))
                m.d.sync += [ok_read.eq(fits & ok[P.Access.READ]),
                             ok_write.eq(fits & ok[P.Access.WRITE]),
                             ok_live.eq(ok[P.Access.LIVE]),
                             n_zero.eq(~n_high & (n == 0)),
                             n_big.eq(n_high | _gt_const(n, max_payload)),
                             len_gt_header.eq(_gt_const(length, P.WRITE_HEADER))]
                m.next = "DECODE"

            with m.State("DECODE"):
                # Every check happens here, before anything touches the device: the verdict and a
                # plan, registered; APPLY carries the plan out.
                m.d.sync += [idx.eq(0), source.eq(_SRC_NONE), status.eq(P.Status.OK),
                             plan.eq(0)]
                m.next = "APPLY"
                with m.If(~crc_ok):
                    # Say why when bytes were lost on the line (a good CRC wins: a loss may have hit
                    # the bytes after this frame).
                    m.d.sync += status.eq(Mux(lost, P.Status.LINE_ERROR, P.Status.BAD_CRC))
                with m.Else():
                    with m.If(is_cmd[P.Command.IDENTIFY]):
                        with m.If(~len_is[0]):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += plan[_PLAN_ROM].eq(1)
                    with m.Elif(is_cmd[P.Command.ECHO]):
                        m.d.sync += plan[_PLAN_BUF].eq(~len_is[0])
                    with m.Elif(is_cmd[P.Command.WRITE]):
                        with m.If(~len_gt_header):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Elif(~ok_write):
                            m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                        with m.Elif(busy):
                            m.d.sync += status.eq(P.Status.BUSY)
                        with m.Else():
                            m.d.sync += plan[_PLAN_COMMIT].eq(1)
                    with m.Elif(is_cmd[P.Command.READ]):
                        with m.If(~len_is[6] | n_zero | n_big):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Elif(~ok_read):
                            m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                        with m.Elif(busy & ~ok_live):
                            m.d.sync += status.eq(P.Status.BUSY)
                        with m.Else():
                            m.d.sync += plan[_PLAN_BUS].eq(1)
                    with m.Elif(is_cmd[P.Command.CRC]):
                        with m.If(~len_is[8]):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Elif(~ok_read):
                            m.d.sync += status.eq(P.Status.BAD_ADDRESS)
                        with m.Elif(busy & ~ok_live):
                            m.d.sync += status.eq(P.Status.BUSY)
                        with m.Else():
                            m.d.sync += plan[_PLAN_CRC].eq(1)
                    with m.Elif(is_cmd[P.Command.RUN]):
                        with m.If(~len_is[4]):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Elif(busy):
                            m.d.sync += status.eq(P.Status.BUSY)
                        with m.Else():
                            m.d.sync += plan[_PLAN_RUN].eq(1)
                    with m.Elif(is_cmd[P.Command.STATUS]):
                        with m.If(~len_is[0]):
                            m.d.sync += status.eq(P.Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += plan[_PLAN_STATUS].eq(1)
                    with m.Else():
                        m.d.sync += status.eq(P.Status.BAD_COMMAND)

            with m.State("APPLY"):
                m.next = "HEADER"
                # Only a WRITE's, READ's, CRC's or ECHO's size stays in n; every other answer sets
                # its own length or has none (n is the header's length field). Decided here from
                # the registered plan: in DECODE it put the whole verdict in front of n's enable,
                # the critical path on an iCE40.
                with m.If(~(plan[_PLAN_COMMIT] | plan[_PLAN_BUS] | plan[_PLAN_CRC]
                            | plan[_PLAN_BUF])):
                    m.d.sync += n.eq(0)
                with m.If(plan[_PLAN_ROM]):
                    m.d.sync += [n.eq(n_identify), source.eq(_SRC_ROM)]
                with m.If(plan[_PLAN_BUF]):
                    m.d.sync += source.eq(_SRC_BUF)
                with m.If(plan[_PLAN_COMMIT]):
                    m.d.sync += idx.eq(P.WRITE_HEADER)
                    m.next = "COMMIT_FETCH"
                with m.If(plan[_PLAN_BUS]):
                    m.d.sync += source.eq(_SRC_BUS)
                with m.If(plan[_PLAN_CRC]):
                    m.d.sync += source.eq(_SRC_CRC)
                    m.next = "CRC_START"
                with m.If(plan[_PLAN_RUN]):
                    m.d.sync += run_strobe.eq(1)
                with m.If(plan[_PLAN_STATUS]):
                    m.d.sync += [n.eq(P.STATUS_PAYLOAD), source.eq(_SRC_STATUS)]

            # The device's stream valids come from the state alone: a count compared into them
            # put the framer on the whole design's critical path. (Their payloads: at the end.)

            # --- WRITE: copy the checked payload from the buffer to the device ------------------
            with m.State("COMMIT_FETCH"):
                m.d.comb += buf_r.en.eq(1)
                m.next = "COMMIT_FETCHED" if self._register_reads else "COMMIT"
            if self._register_reads:
                with m.State("COMMIT_FETCHED"):
                    m.d.sync += fetched_buf.eq(buf_r.data)
                    m.next = "COMMIT"
            with m.State("COMMIT"):
                m.d.comb += self.bus.write.valid.eq(1)
                with m.If(self.bus.write.ready):
                    m.d.sync += [idx.eq(idx + 1), offset[0:off_bits].eq(offset[0:off_bits] + 1),
                                 n.eq(n - 1)]
                    with m.If(n == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "COMMIT_FETCH"

            # --- CRC: read the region through the device and check it --------------------------
            with m.State("CRC_START"):
                m.d.comb += crc.start32.eq(1)
                with m.If(n_zero):
                    m.next = "CRC_END"
                with m.Else():
                    m.next = "CRC_ADDR"
            # (The count steps as an address is sent, and the answer's count is set while the
            # CRC finishes: with the CRC's busy in n's enable, that was slower.)
            with m.State("CRC_ADDR"):
                m.d.comb += self.bus.read_addr.valid.eq(1)
                with m.If(self.bus.read_addr.ready):
                    m.d.sync += n.eq(n - 1)
                    m.next = "CRC_DATA"
            with m.State("CRC_DATA"):
                m.d.comb += self.bus.read_data.ready.eq(~crc.busy)
                with m.If(self.bus.read_data.valid & ~crc.busy):
                    # The CRC-32 is reflected: its bytes go into the shifter LSB first.
                    m.d.comb += [crc.load.eq(1), crc.sel32.eq(1),
                                 crc.data.eq(self.bus.read_data.payload[::-1])]
                    m.d.sync += offset[0:off_bits].eq(offset[0:off_bits] + 1)
                    with m.If(n == 0):
                        m.next = "CRC_END"
                    with m.Else():
                        m.next = "CRC_ADDR"
            with m.State("CRC_END"):
                m.d.sync += [n.eq(4), idx.eq(0)]           # the answer: four bytes of CRC
                with m.If(~crc.busy):
                    m.next = "HEADER"

            # --- the answer ------------------------------------------------------------------------
            with m.State("HEADER"):
                # The CRC may still be digesting the request's last byte (a BAD_LENGTH answer).
                m.d.comb += [self.tx.payload.eq(header_byte),
                             self.tx.valid.eq(~crc.busy),
                             crc.start16.eq((idx[1:] == 0) & ~crc.busy)]
                with m.If(self.tx.valid & self.tx.ready):
                    m.d.comb += [crc.load.eq(idx[1:] != 0), crc.data.eq(self.tx.payload)]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 8):
                        m.d.sync += idx.eq(0)
                        with m.If(n == 0):
                            m.next = "TXCRC0"
                        with m.Else():
                            fetch()

            with m.State("FETCH"):
                with m.Switch(source):
                    with m.Case(_SRC_ROM):
                        m.d.comb += rom_r.en.eq(1)
                    with m.Case(_SRC_BUF):
                        m.d.comb += buf_r.en.eq(1)
                # The CRC-32 shifts its next byte into place while the CRC-16 takes the last one
                # (SEND waits for the CRC-16 anyway: no later on the line).
                with m.If(~crc.busy | (source != _SRC_CRC)):
                    m.next = "FETCHED" if self._register_reads else "LATCH"

            if self._register_reads:
                with m.State("FETCHED"):
                    m.d.sync += [fetched_buf.eq(buf_r.data), fetched_rom.eq(rom_r.data)]
                    m.next = "LATCH"

            with m.State("BUS_ADDR"):
                m.d.comb += self.bus.read_addr.valid.eq(1)
                with m.If(self.bus.read_addr.ready):
                    m.d.sync += offset[0:off_bits].eq(offset[0:off_bits] + 1)
                    m.next = "BUS_DATA"

            # The byte count steps as the answer byte is latched (here and in LATCH), not as it
            # leaves in SEND: there the UART's handshake went into n's enable, eight LUTs deep,
            # an iCE40 accelerator's and host link's slowest path.
            with m.State("BUS_DATA"):
                m.d.comb += self.bus.read_data.ready.eq(1)
                with m.If(self.bus.read_data.valid):
                    m.d.sync += [pbyte.eq(self.bus.read_data.payload), n.eq(n - 1)]
                    m.next = "SEND"

            with m.State("LATCH"):
                with m.Switch(source):
                    with m.Case(_SRC_ROM):
                        m.d.sync += pbyte.eq(fetched_rom if self._register_reads else rom_r.data)
                    with m.Case(_SRC_BUF):
                        m.d.sync += pbyte.eq(fetched_buf if self._register_reads else buf_r.data)
                    with m.Case(_SRC_CRC):
                        m.d.sync += pbyte.eq(crc.crc32[0:8])    # drained byte by byte: see SEND
                    with m.Case(_SRC_STATUS):
                        # flags, error, then uptime and the counters, 8 bytes each. Each field
                        # is latched whole at its first byte (no torn values); `shift` takes
                        # one of two values on every byte (the flags and error bytes leave
                        # nothing in it that a field's first byte does not replace), so its
                        # enable is the state's alone.
                        m.d.sync += shift.eq(Mux(at_field, field >> 8, shift >> 8))
                        with m.If(at_flags):
                            m.d.sync += pbyte.eq(Cat(busy, done, error != 0))
                        with m.Elif(at_error):
                            m.d.sync += pbyte.eq(error)
                        with m.Elif(at_field):
                            m.d.sync += pbyte.eq(field[0:8])
                        with m.Else():
                            m.d.sync += pbyte.eq(shift[0:8])
                m.d.sync += n.eq(n - 1)
                m.next = "SEND"

            with m.State("SEND"):
                m.d.comb += [self.tx.valid.eq(~crc.busy), self.tx.payload.eq(pbyte)]
                with m.If(self.tx.valid & self.tx.ready):
                    m.d.comb += [crc.load.eq(1), crc.data.eq(pbyte),
                                 crc.drain32.eq(source == _SRC_CRC)]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(n == 0):            # (counted as the byte was latched)
                        m.next = "TXCRC0"
                    with m.Else():
                        fetch()

            with m.State("TXCRC0"):
                m.d.comb += [self.tx.valid.eq(~crc.busy), self.tx.payload.eq(crc.crc16[0:8])]
                with m.If(self.tx.valid & self.tx.ready):
                    m.next = "TXCRC1"
            with m.State("TXCRC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc.crc16[8:16])]
                with m.If(self.tx.ready):
                    m.next = "HUNT"

        # The run strobe leaves from a register, one cycle after DECODE, with the argument held.
        m.d.comb += [self.bus.run.eq(run_strobe), self.bus.run_arg.eq(Cat(offset, region))]
        # The streams' payloads are the registers themselves in every state, valid or not
        # (gating them with the state cost a LUT a bit).
        m.d.comb += [
            self.bus.write.payload.addr.region.eq(region),
            self.bus.write.payload.addr.offset.eq(offset),
            self.bus.write.payload.data.eq(fetched_buf if self._register_reads else buf_r.data),
            self.bus.read_addr.payload.region.eq(region),
            self.bus.read_addr.payload.offset.eq(offset),
        ]
        return m
