# amaranth: UnusedElaboratable=no
"""The command framer in Amaranth's simulator, behind the scratch device of ``hw/link_top.py``.

Byte streams go straight into the framer (no UART): every command, every NAK code, the idle
timeout, garbage between frames, bytes lost on the line, and the hard rule that a frame which fails
any check (above all a bad CRC) never writes anything: every transfer on the device's write port is
recorded and compared.
"""

import random
import zlib

import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from addershift.hw.framer import DeviceSignature, Framer, _ReceiveFIFO
from addershift.hw.link_top import (ERROR_BAD_LENGTH, MEM_REGION, RESULT_REGION, ScratchDevice,
                                    link_identity)
from addershift.sw import protocol as P
from addershift.sw.protocol import Command as C
from addershift.sw.protocol import Status as S

MEM = 2048
MAX = 64
TIMEOUT = 300
IDENTITY = link_identity(clk_freq=12_000_000, baud=1_500_000, mem_size=MEM, max_payload=MAX)


def mem(offset):
    return P.address(MEM_REGION, offset)


def res(offset):
    return P.address(RESULT_REGION, offset)


class Throttle(wiring.Component):
    """Passes the device interface through, letting a stream transfer only one cycle in
    ``period``: a slow device that stalls the framer's writes and reads. With ``counters`` it
    reports those constants as the device's counters instead."""

    def __init__(self, period, counters=None):
        self.period = period
        self.counters = counters
        super().__init__({"up": In(DeviceSignature()), "down": Out(DeviceSignature())})

    def elaborate(self, platform):
        m = Module()
        phase = Signal(range(self.period))
        m.d.sync += phase.eq(Mux(phase == self.period - 1, 0, phase + 1))
        go = phase == 0
        up, down = self.up, self.down
        m.d.comb += [down.run.eq(up.run), down.run_arg.eq(up.run_arg), up.busy.eq(down.busy),
                     up.done.eq(down.done), up.error.eq(down.error)]
        if self.counters is None:
            m.d.comb += up.counters.eq(down.counters)
        else:
            m.d.comb += [up.counters[k].eq(value) for k, value in enumerate(self.counters)]
        for name in ("write", "read_addr"):
            a, b = getattr(up, name), getattr(down, name)
            m.d.comb += [b.payload.eq(a.payload), b.valid.eq(a.valid & go),
                         a.ready.eq(b.ready & go)]
        a, b = up.read_data, down.read_data
        m.d.comb += [a.payload.eq(b.payload), a.valid.eq(b.valid & go), b.ready.eq(a.ready & go)]
        return m


class Bench:
    """Framer + scratch device; ``run(script)`` feeds bytes and returns what came back."""

    def __init__(self, *, timeout=TIMEOUT, rx_fifo_depth=64, throttle=None, register_reads=True,
                 counters=None):
        self.identity = IDENTITY
        self.m = Module()
        self.m.submodules.framer = self.framer = Framer(identity=self.identity, timeout=timeout,
                                                        rx_fifo_depth=rx_fifo_depth,
                                                        register_reads=register_reads)
        self.m.submodules.device = self.device = ScratchDevice(mem_size=MEM)
        if throttle or counters is not None:
            self.m.submodules.throttle = t = Throttle(throttle or 1, counters)
            wiring.connect(self.m, self.framer.bus, t.up)
            wiring.connect(self.m, t.down, self.device.bus)
        else:
            wiring.connect(self.m, self.framer.bus, self.device.bus)

    def run(self, script, *, byte_cycles=10, tx_cycles=10, tail=600, limit=200_000):
        """``script`` items: bytes (sent one per ``byte_cycles``), ``("idle", n)`` cycles,
        ``("lost",)`` an rx_lost pulse, ``("wait", k)`` until k responses have arrived.
        The device's read addresses, ``(region, offset)`` per transfer, land in ``self.reads``."""
        framer = self.framer
        raw, writes, runs = bytearray(), [], []
        self.reads = reads = []
        decoder = P.FrameDecoder(kind="response")
        responses = []

        async def feed(ctx):
            for item in script:
                if isinstance(item, (bytes, bytearray)):
                    for b in item:
                        ctx.set(framer.rx.payload, b)
                        ctx.set(framer.rx.valid, 1)
                        await ctx.tick()
                        ctx.set(framer.rx.valid, 0)
                        if byte_cycles > 1:
                            await ctx.tick().repeat(byte_cycles - 1)
                elif item[0] == "idle":
                    await ctx.tick().repeat(item[1])
                elif item[0] == "lost":
                    ctx.set(framer.rx_lost, 1)
                    await ctx.tick()
                    ctx.set(framer.rx_lost, 0)
                elif item[0] == "wait":
                    for _ in range(limit):
                        if len(responses) >= item[1]:
                            break
                        await ctx.tick()
                    else:
                        raise AssertionError(f"no response {item[1]} after {limit} cycles")
            await ctx.tick().repeat(tail)

        async def watch(ctx):
            n = 0
            bus = framer.bus
            async for (_, _, tv, tp, wv, wr, w_off, w_reg, w_data, run, arg,
                       rv, rr, r_addr) in ctx.tick().sample(
                    framer.tx.valid, framer.tx.payload, bus.write.valid, bus.write.ready,
                    bus.write.payload.addr.offset, bus.write.payload.addr.region,
                    bus.write.payload.data, bus.run, bus.run_arg,
                    bus.read_addr.valid, bus.read_addr.ready, bus.read_addr.payload):
                n += 1
                ctx.set(framer.tx.ready, int(n % tx_cycles == 0))
                if tv and n % tx_cycles == 1 % tx_cycles:
                    raw.append(tp)
                    responses.extend(decoder.feed(bytes([tp])))
                if wv and wr:
                    writes.append((w_reg, w_off, w_data))
                if run:
                    runs.append(arg)
                if rv and rr:
                    reads.append((r_addr.region, r_addr.offset))

        sim = Simulator(self.m)
        sim.add_clock(1e-8)
        sim.add_testbench(feed)
        sim.add_process(watch)
        sim.run()
        assert decoder.bad_frames == 0, "the framer sent a frame with a bad CRC"
        return responses, writes, runs, bytes(raw)


def req(cmd, seq, payload=b""):
    return P.Request(cmd, seq, payload)


def check(resp, request, status=S.OK):
    assert resp.answers(request), (resp, request)
    assert S(resp.status) == status, (S(resp.status), status)


def running_sums(data):
    out, acc = [], 0
    for b in data:
        acc = (acc + b) & 0xFF
        out.append(acc)
    return bytes(out)


# --- every command -------------------------------------------------------------------------------

@pytest.mark.parametrize("throttle, register_reads", [(None, True), (3, True), (None, False),
                                                      (3, False)])
def test_every_command(throttle, register_reads):
    rng = random.Random(1)
    data = bytes(rng.randrange(256) for _ in range(MAX - P.WRITE_HEADER))
    n = 20
    reqs = [
        req(C.IDENTIFY, 1),
        req(C.ECHO, 2, b"hello"),
        req(C.ECHO, 3, b""),
        req(C.ECHO, 4, bytes(range(MAX))),
        req(C.WRITE, 5, P.write_payload(mem(100), data)),
        req(C.READ, 6, P.read_payload(mem(98), MAX)),
        req(C.CRC, 7, P.crc_payload(mem(100), len(data))),
        req(C.CRC, 8, P.crc_payload(mem(0), 0)),
        req(C.WRITE, 9, P.write_payload(mem(0), data[:n])),
        req(C.RUN, 10, P.run_payload(n)),
        req(C.STATUS, 11),
        req(C.READ, 12, P.read_payload(res(0), n)),
        req(C.READ, 13, P.read_payload(mem(MEM - 1), 1)),
    ]
    script = []
    for i, r in enumerate(reqs):
        script += [r.encode(), ("wait", i + 1)]
        if r.cmd == C.RUN:
            script += [("idle", 2 * n + 10)]
    got, writes, runs, _ = Bench(throttle=throttle, register_reads=register_reads).run(script)
    assert len(got) == len(reqs)
    for g, r in zip(got, reqs):
        check(g, r)
    assert P.Identity.decode(got[0].payload) == IDENTITY
    assert got[1].payload == b"hello" and got[2].payload == b"" and got[3].payload == bytes(range(MAX))
    assert got[4].payload == b""
    assert got[5].payload == bytes(2) + data + bytes(2)
    assert got[6].payload == zlib.crc32(data).to_bytes(4, "little")
    assert got[7].payload == bytes(4)
    assert writes == [(MEM_REGION, 100 + i, b) for i, b in enumerate(data)] + \
                     [(MEM_REGION, i, b) for i, b in enumerate(data[:n])]
    assert runs == [n]
    st = P.decode_status(got[10].payload)
    assert (st.busy, st.done, st.error) == (False, True, 0)
    assert (st.total_cycles, st.busy_pe_cycles, st.stall_cycles) == (2 * n + 1, n, n)
    assert st.uptime > 0
    assert got[11].payload == running_sums(data[:n])
    assert len(got[12].payload) == 1


def test_status_while_running_and_busy_naks():
    n = MEM
    reqs = [req(C.RUN, 1, P.run_payload(n)), req(C.STATUS, 2),
            req(C.WRITE, 3, P.write_payload(mem(0), b"x")), req(C.RUN, 4, P.run_payload(1)),
            req(C.READ, 5, P.read_payload(mem(0), 4))]
    script = []
    for i, r in enumerate(reqs):
        script += [r.encode(), ("wait", i + 1)]
    script += [("idle", 2 * n + 20), req(C.STATUS, 6).encode(), ("wait", 6)]
    got, writes, runs, _ = Bench().run(script)
    check(got[0], reqs[0])
    st = P.decode_status(got[1].payload)
    assert (st.busy, st.done) == (True, False)
    assert 0 < st.total_cycles < 2 * n + 1
    check(got[2], reqs[2], S.BUSY)
    check(got[3], reqs[3], S.BUSY)
    check(got[4], reqs[4])            # reads of a LIVE region are allowed while running
    assert writes == [] and runs == [n]
    st = P.decode_status(got[5].payload)
    assert (st.busy, st.done, st.error, st.total_cycles) == (False, True, 0, 2 * n + 1)


@pytest.mark.parametrize("register_reads", [True, False])
def test_status_sends_every_byte_of_each_counter(register_reads):
    # Counters whose bytes all differ (the scratch device's stay below 2**16): a field byte
    # sent twice, skipped or taken from the wrong field changes one of them.
    counters = (0x8877_6655, 0xCCBB_AA99, 0x1122_33F0)
    reqs = [req(C.STATUS, 1), req(C.STATUS, 2)]
    script = [reqs[0].encode(), ("wait", 1), ("idle", 300), reqs[1].encode(), ("wait", 2)]
    got, _, _, _ = Bench(counters=counters, register_reads=register_reads).run(script)
    first, second = (P.decode_status(g.payload) for g in got)
    for st in (first, second):
        assert (st.total_cycles, st.busy_pe_cycles, st.stall_cycles) == counters
        assert (st.busy, st.done, st.error) == (False, False, 0)
    assert 300 < second.uptime - first.uptime < 1000


def test_reads_of_a_region_without_live_are_refused_while_running():
    # ``result`` is not LIVE (as the accelerator's memories): the framer must refuse READ and CRC
    # there while the device runs, and never touch the device, yet serve the LIVE ``mem``, and
    # serve both once the run is over.
    n = MEM
    reqs = [req(C.RUN, 1, P.run_payload(n)), req(C.READ, 2, P.read_payload(res(0), 4)),
            req(C.CRC, 3, P.crc_payload(res(0), 4)), req(C.READ, 4, P.read_payload(mem(0), 4)),
            req(C.STATUS, 5)]
    script = []
    for i, r in enumerate(reqs):
        script += [r.encode(), ("wait", i + 1)]
    after = [req(C.READ, 6, P.read_payload(res(0), 4)), req(C.CRC, 7, P.crc_payload(res(0), 4))]
    script += [("idle", 2 * n + 20), after[0].encode(), ("wait", 6), after[1].encode(),
               ("wait", 7)]
    bench = Bench()
    got, writes, runs, _ = bench.run(script)
    check(got[0], reqs[0])
    check(got[1], reqs[1], S.BUSY)
    check(got[2], reqs[2], S.BUSY)
    check(got[3], reqs[3])
    assert P.decode_status(got[4].payload).busy, "the run ended before the reads were tested"
    check(got[5], after[0])
    check(got[6], after[1])
    assert got[6].payload == zlib.crc32(got[5].payload).to_bytes(4, "little")
    # The device saw the LIVE read and the two after the run, only.
    assert bench.reads == [(MEM_REGION, i) for i in range(4)] + [(RESULT_REGION, i)
                                                                for i in range(4)] * 2
    assert writes == [] and runs == [n]


def test_run_error_code():
    reqs = [req(C.RUN, 1, P.run_payload(MEM + 1)), req(C.STATUS, 2)]
    got, _, _, _ = Bench().run([reqs[0].encode(), ("wait", 1), reqs[1].encode(), ("wait", 2)])
    check(got[0], reqs[0])
    st = P.decode_status(got[1].payload)
    assert (st.busy, st.done, st.error) == (False, True, ERROR_BAD_LENGTH)


# --- refusals ----------------------------------------------------------------------------------

NAK_CASES = [
    (req(0x7F, 1), S.BAD_COMMAND),
    (req(C.IDENTIFY, 2, b"x"), S.BAD_ARGUMENT),
    (req(C.STATUS, 3, b"x"), S.BAD_ARGUMENT),
    (req(C.READ, 4, P.read_payload(mem(0), 4)[:5]), S.BAD_ARGUMENT),
    (req(C.READ, 5, P.read_payload(mem(0), 0)), S.BAD_ARGUMENT),
    (req(C.READ, 6, P.read_payload(mem(0), MAX + 1)), S.BAD_ARGUMENT),
    (req(C.WRITE, 7, P.write_payload(mem(0), b"")), S.BAD_ARGUMENT),
    (req(C.WRITE, 8, b"\x00\x00"), S.BAD_ARGUMENT),
    (req(C.RUN, 9, b"\x01\x00\x00"), S.BAD_ARGUMENT),
    (req(C.CRC, 10, P.crc_payload(mem(0), 4)[:7]), S.BAD_ARGUMENT),
    (req(C.WRITE, 11, P.write_payload(P.address(9, 0), b"abc")), S.BAD_ADDRESS),
    (req(C.WRITE, 12, P.write_payload(mem(MEM - 2), b"abc")), S.BAD_ADDRESS),
    (req(C.WRITE, 13, P.write_payload(res(0), b"abc")), S.BAD_ADDRESS),
    (req(C.READ, 14, P.read_payload(mem(MEM - 3), 4)), S.BAD_ADDRESS),
    (req(C.READ, 15, P.read_payload(P.address(0, 0), 1)), S.BAD_ADDRESS),
    (req(C.CRC, 16, P.crc_payload(mem(1), MEM)), S.BAD_ADDRESS),
    (req(C.CRC, 17, P.crc_payload(mem(0), 1 << 32 - 1)), S.BAD_ADDRESS),
    # The framer keeps only the offset and size bits the region map needs: any above them
    # (whatever the bits it keeps say) is out of bounds, never a wrapped-around address.
    (req(C.CRC, 18, P.crc_payload(mem(0), 1 << 16 | 4)), S.BAD_ADDRESS),
    (req(C.WRITE, 19, P.write_payload(mem(1 << 20), b"abc")), S.BAD_ADDRESS),
    (req(C.READ, 20, P.read_payload(mem(1 << 23), 4)), S.BAD_ADDRESS),
    (req(C.READ, 21, P.read_payload(mem(0), 1 << 12 | 4)), S.BAD_ARGUMENT),
]


def test_nak_codes_and_nothing_written():
    script = []
    for i, (r, _) in enumerate(NAK_CASES):
        script += [r.encode(), ("wait", i + 1)]
    # A length beyond max_payload is refused at once, before any payload arrives.
    script += [P.REQUEST_SYNC + bytes([C.WRITE, 40]) + (MAX + 1).to_bytes(2, "little"),
               ("wait", len(NAK_CASES) + 1)]
    got, writes, runs, _ = Bench().run(script)
    for g, (r, status) in zip(got, NAK_CASES):
        check(g, r, status)
        assert g.payload == b""
    last = got[len(NAK_CASES)]
    assert (last.cmd, last.seq, S(last.status), last.request_crc) == (C.WRITE, 40, S.BAD_LENGTH, 0)
    assert writes == [] and runs == []


def test_bad_crc_never_writes():
    """Flip one bit anywhere after the sync word of a WRITE frame: never an ACK, never a write."""
    rng = random.Random(3)
    data = bytes(rng.choice([b for b in range(256) if b != 0xA5]) for _ in range(24))
    frame = req(C.WRITE, 0x33, P.write_payload(mem(16), data)).encode()
    positions = list(range(2, len(frame)))
    script = []
    for pos in positions:
        bad = bytearray(frame)
        bad[pos] ^= 1 << rng.randrange(8)
        # Idle beyond the timeout: a corrupted length may leave the parser waiting for bytes.
        script += [bytes(bad), ("idle", TIMEOUT + 200)]
    good = req(C.ECHO, 0x44, b"still alive")
    script += [good.encode(), ("idle", 400)]
    got, writes, runs, _ = Bench().run(script)
    assert writes == [] and runs == []
    assert got[-1].answers(good) and got[-1].ok
    for g in got[:-1]:
        assert S(g.status) in (S.BAD_CRC, S.BAD_LENGTH, S.TIMEOUT), g
    # every corrupted frame was answered (a NAK), none silently dropped: the sync word was intact
    assert len(got) == len(positions) + 1


@pytest.mark.parametrize("timeout, register_reads", [(TIMEOUT, True), (100, False)])
def test_timeout_to_the_cycle(timeout, register_reads):
    # Bytes every 10 cycles (the parser keeps up: the UART's are 10 bit times apart), then a
    # gap: `timeout` cycles with no byte are tolerated, one more answers TIMEOUT.
    good = req(C.ECHO, 9, b"abcdef").encode()
    statuses = []
    for idle in (timeout, timeout + 1):
        # A byte is valid for one cycle and the next follows 10 cycles later: 9 idle cycles.
        script = [good[:7], ("idle", idle - 9), good[7:], ("wait", 1)]
        got, *_ = Bench(timeout=timeout, register_reads=register_reads).run(script, tail=50)
        statuses.append(S(got[0].status))
    assert statuses == [S.OK, S.TIMEOUT]


def test_timeout_resets_parser_and_short_gaps_do_not():
    good = req(C.ECHO, 7, b"abcdef")
    half = req(C.WRITE, 5, P.write_payload(mem(0), b"0123456789")).encode()[:9]
    script = [half, ("idle", TIMEOUT + 50), good.encode(), ("wait", 2),
              # a pause just below the timeout in the middle of a frame is fine
              good.encode()[:7], ("idle", TIMEOUT - 20), good.encode()[7:], ("wait", 3)]
    got, writes, _, _ = Bench().run(script)
    assert (got[0].cmd, got[0].seq, S(got[0].status)) == (C.WRITE, 5, S.TIMEOUT)
    check(got[1], good)
    check(got[2], good)
    assert got[2].payload == b"abcdef"
    assert writes == []


def test_line_error_and_garbage_between_frames():
    rng = random.Random(9)
    frames = [req(C.ECHO, i, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))))
              for i in range(6)]
    script = []
    for i, f in enumerate(frames):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 30)))
        garbage += P.REQUEST_SYNC[:1] if i % 2 else P.REQUEST_SYNC   # false starts too
        script += [garbage, ("idle", TIMEOUT + 50), f.encode(), ("wait", 0)]
    # a byte lost on the line in the middle of a frame: the NAK says so
    lossy = req(C.WRITE, 99, P.write_payload(mem(0), b"abcdefgh")).encode()
    script += [lossy[:10], ("lost",), lossy[11:], ("idle", TIMEOUT + 50)]
    got, writes, _, _ = Bench().run(script)
    answers = [g for g in got if any(g.answers(f) for f in frames)]
    assert [g.payload for g in answers] == [f.payload for f in frames]
    assert all(S(g.status) != S.OK for g in got if g not in answers)
    assert any(S(g.status) == S.LINE_ERROR and g.seq == 99 for g in got)
    assert writes == []


def test_pipelined_writes_at_line_rate():
    """Write frames back to back at a UART's pace: the receive FIFO absorbs every commit and ACK."""
    rng = random.Random(4)
    chunk = MAX - P.WRITE_HEADER
    data = bytes(rng.randrange(256) for _ in range(4 * chunk))
    reqs = [req(C.WRITE, i, P.write_payload(mem(i * chunk), data[i * chunk:(i + 1) * chunk]))
            for i in range(4)]
    # 8 cycles per bit: 80 cycles per byte each way
    got, writes, _, _ = Bench(rx_fifo_depth=16).run([b"".join(r.encode() for r in reqs)],
                                                    byte_cycles=80, tx_cycles=80, tail=2000)
    for g, r in zip(got, reqs):
        check(g, r)
    assert bytes(w[2] for w in writes) == data


@pytest.mark.parametrize("depth", [4, 5, 16, 64])
def test_receive_fifo_is_sync_fifo_buffered(depth):
    """The framer's receive FIFO (transparent memory read, power-of-two memory) holds as many bytes
    and answers cycle for cycle as ``SyncFIFOBuffered`` of the same depth, full and empty."""
    m = Module()
    m.submodules.ours = ours = _ReceiveFIFO(depth)
    m.submodules.ref = ref = SyncFIFOBuffered(width=8, depth=depth)
    w_en, r_en, w_data = Signal(), Signal(), Signal(8)
    for f in (ours, ref):
        m.d.comb += [f.w_en.eq(w_en), f.w_data.eq(w_data), f.r_en.eq(r_en)]
    rng = random.Random(depth)
    seen = set()

    async def bench(ctx):
        for cycle in range(3000):
            # phases that fill the FIFO up and drain it empty, and random ones in between
            phase = cycle // 300 % 3
            ctx.set(w_en, rng.random() < (0.9, 0.1, 0.5)[phase])
            ctx.set(r_en, rng.random() < (0.1, 0.9, 0.5)[phase])
            ctx.set(w_data, rng.randrange(256))
            got = [ctx.get(s) for s in (ours.w_rdy, ours.r_rdy, ref.w_rdy, ref.r_rdy)]
            assert got[:2] == got[2:], (cycle, got)
            if got[1]:
                assert ctx.get(ours.r_data) == ctx.get(ref.r_data), cycle
            seen.add(tuple(got[:2]))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert {(0, 1), (1, 0), (1, 1)} <= seen     # full, empty and in between were all reached


def test_framer_parameter_checks():
    ident = IDENTITY
    with pytest.raises(ValueError, match=r"^Timeout must be an integer number of cycles >= 16, "
                                         r"not 3$"):
        Framer(identity=ident, timeout=3)
    with pytest.raises(TypeError, match=r"^Identity must be a protocol\.Identity, not \{\}$"):
        Framer(identity={}, timeout=100)
    with pytest.raises(ValueError, match=r"^Receive FIFO depth must be an integer >= 4, not 2$"):
        Framer(identity=ident, timeout=100, rx_fifo_depth=2)
    with pytest.raises(TypeError, match=r"^register_reads must be a bool, not 1$"):
        Framer(identity=ident, timeout=100, register_reads=1)
    with pytest.raises(ValueError, match=r"^Counter width must be an integer in \[1, 64\], "
                                         r"not 65$"):
        DeviceSignature(counter_width=65)
    f = Framer(identity=ident, timeout=100)
    assert (f.max_payload, f.timeout, f.rx_fifo_depth) == (MAX, 100, 64)
    assert f.signature.members["bus"].signature == DeviceSignature(counter_width=32)
