"""The host driver end to end against the simulated board (Verilator), with faults injected.

A :class:`FaultySerial` sits between the driver and the board's socket and garbles the bytes on
purpose: flipped bits, dropped, duplicated and truncated bytes, garbage between frames, a board that
stalls or disconnects. Each case must either recover with correct results (the driver's counters
show that it had to) or raise a clear error; nothing wrong is ever returned.
"""

import contextlib
import random

import pytest
import serial

from addershift.hw.link_top import link_identity
from addershift.sim.board import BoardProcess
from addershift.sw import protocol as P
from addershift.sw.driver import (BadAnswer, BuildMismatch, Device, DeviceError, LinkError,
                                  LinkTimeout, Refused, RunUnconfirmed, check_build)

pytestmark = pytest.mark.cocotb

MEM = 4096
SIM_TIMEOUT = 8.0   # seconds: the simulated board is slow, and shares two cores with others


@pytest.fixture(scope="module")
def board():
    with BoardProcess(mem_size=MEM) as b:
        yield b


def running_sums(data):
    out, acc = bytearray(), 0
    for b in data:
        acc = (acc + b) & 0xFF
        out.append(acc)
    return bytes(out)


class FaultySerial:
    """A pyserial-like wrapper that applies ``faults`` to the bytes passing through it.

    ``tx`` and ``rx`` map a byte index (counted from the start, per direction) to an action:
    ``("flip", bit)``, ``("drop",)``, ``("dup",)``, ``("insert", bytes)`` (before the byte),
    ``("truncate", n)`` (this byte and the next n-1 vanish), ``("stall",)`` (from here on nothing
    gets through either way), ``("disconnect",)`` (the port dies).
    """

    def __init__(self, inner, *, tx=None, rx=None):
        self.inner = inner
        self.name = "faulty:" + inner.name
        self.faults = {"tx": dict(tx or {}), "rx": dict(rx or {})}
        self.count = {"tx": 0, "rx": 0}
        self.skip = {"tx": 0, "rx": 0}
        self.stalled = False
        self.dead = False
        self.applied = []

    def _apply(self, direction, data):
        out = bytearray()
        for b in data:
            i = self.count[direction]
            self.count[direction] += 1
            action = self.faults[direction].get(i)
            if action:
                self.applied.append((direction, i, action[0]))
                if action[0] == "stall":
                    self.stalled = True
                elif action[0] == "disconnect":
                    self.dead = True
                elif action[0] == "truncate":
                    self.skip[direction] = action[1]
            if self.stalled or self.dead:
                continue
            if self.skip[direction]:
                self.skip[direction] -= 1
                continue
            if not action:
                out.append(b)
            elif action[0] == "flip":
                out.append(b ^ (1 << action[1]))
            elif action[0] == "dup":
                out += bytes([b, b])
            elif action[0] == "insert":
                out += action[1] + bytes([b])
            elif action[0] == "drop":
                pass
        return bytes(out)

    def write(self, data):
        if self.dead:
            raise serial.SerialException("port is gone")
        data = self._apply("tx", data)
        if data:
            self.inner.write(data)
        return len(data)

    def read(self, size=1):
        if self.dead:
            raise serial.SerialException("socket disconnected")
        return self._apply("rx", self.inner.read(size))

    def close(self):
        self.inner.close()


def connect(board, *, timeout=SIM_TIMEOUT):
    """A driver on a FaultySerial without faults yet (identify must get through)."""
    link = FaultySerial(serial.serial_for_url(board.url, timeout=0))
    return Device(link, timeout=timeout, retries=4), link


# --- end to end --------------------------------------------------------------------------------

def test_write_verify_read_run(board):
    rng = random.Random(1)
    data = bytes(rng.randrange(256) for _ in range(1500))
    with Device(board.url, timeout=SIM_TIMEOUT) as dev:
        assert dev.identity == link_identity(clk_freq=12_000_000, baud=1_500_000, mem_size=MEM,
                                             max_payload=256)
        assert dev.echo(b"ping") == b"ping"
        dev.write("mem", 100, data)                      # pipelined, then CRC read-back
        assert dev.crc("mem", 100, len(data)) == P.crc32(data)
        assert dev.read("mem", 100, len(data), verify=True) == data
        st = dev.run(300)
        assert (st.busy, st.done, st.error) == (False, True, 0)
        assert (st.total_cycles, st.busy_pe_cycles, st.stall_cycles) == (601, 300, 300)
        before = dev.read("mem", 0, 300)
        assert dev.read("result", 0, 300) == running_sums(before)
        with pytest.raises(DeviceError, match=r"finished RUN 4097 with error 1"):
            dev.run(MEM + 1)
        assert dev.stats["resent"] == 0 and dev.stats["timeouts"] == 0


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_results_cannot_be_read_while_the_board_runs(board, simulator):
    # ``result`` is not LIVE: while a run writes it, the device refuses a READ or CRC of it with
    # BUSY, and the driver says why. A run of MEM bytes takes 8193 cycles, about seven frame
    # bytes each way: a request sent right after RUN lands inside it unless the host is slow.
    # The framer's Verilog on both simulators (the module's board is Verilator's).
    data = bytes([7, 250, 3, 99])
    with contextlib.ExitStack() as stack:
        url = board.url if simulator == "verilator" else stack.enter_context(
            BoardProcess(simulator=simulator, mem_size=MEM)).url
        dev = stack.enter_context(Device(url, timeout=SIM_TIMEOUT))
        dev.write("mem", 0, data)

        def refused_during_a_run(call):
            for _ in range(3):
                dev.run(MEM, wait=False)
                try:
                    call()
                except Refused as e:
                    return e
                finally:
                    dev.wait(timeout=SIM_TIMEOUT)
            raise AssertionError("no refusal in three runs")

        for what, call in (("READ", lambda: dev.read("result", 0, 4)),
                           ("CRC", lambda: dev.crc("result", 0, 4))):
            e = refused_during_a_run(call)
            assert e.status == P.Status.BUSY
            assert str(e) == (f"the board refused {what} result+0x000000 (4 bytes): BUSY (region "
                              f"result is not readable while the board runs; wait for the run "
                              f"to end)")
        assert dev.read("result", 0, 4, verify=True) == running_sums(data)


def test_check_build(board):
    with Device(board.url, timeout=SIM_TIMEOUT) as dev:
        ident = dev.identity
        check_build(ident, build_hash=ident.build_hash, build=ident.build)
        other = dict(ident.build, mem_size=8192)
        with pytest.raises(BuildMismatch, match=r"the program was compiled for build "
                           r"[0-9a-f]{16} \{.*\"mem_size\":8192.*\}, but the board runs build "
                           r"[0-9a-f]{16} \{.*\"mem_size\":4096.*\}"):
            check_build(ident, build_hash=P.build_hash(other), build=other)
        with pytest.raises(BuildMismatch, match=r"does not match its own build parameters"):
            check_build(ident, build_hash=ident.build_hash, build=other)


def test_too_large_or_malformed_writes(board):
    with Device(board.url, timeout=SIM_TIMEOUT) as dev:
        dev.write("mem", 0, b"\x11" * 64)
        with pytest.raises(ValueError, match=r"^write of 4000 bytes at mem\+0x000100 does not fit "
                                             r"region mem \(4096 bytes\)$"):
            dev.write("mem", 256, bytes(4000))
        with pytest.raises(ValueError, match=r"^region result is not writable$"):
            dev.write("result", 0, b"x")
        with pytest.raises(TypeError, match=r"^Data must be bytes, not list$"):
            dev.write("mem", 0, [1, 2])
        with pytest.raises(KeyError, match=r"no region 'weights'"):
            dev.write("weights", 0, b"x")
        # Past the driver's own checks, the board refuses and writes nothing.
        with pytest.raises(Refused, match=r"BAD_ADDRESS") as e:
            dev.transact(P.Command.WRITE, P.write_payload(P.address(1, MEM - 2), b"abcd"))
        assert e.value.status == P.Status.BAD_ADDRESS
        with pytest.raises(Refused, match=r"BAD_COMMAND"):
            dev.transact(0x7E)
        with pytest.raises(Refused, match=r"BAD_ARGUMENT"):
            dev.transact(P.Command.READ, b"\x00\x00\x00\x01")
        assert dev.read("mem", 0, 64) == b"\x11" * 64
        assert dev.read("mem", MEM - 4, 4) == dev.read("mem", MEM - 4, 4)


def test_progress_on_stderr(board, capsys):
    with Device(board.url, timeout=SIM_TIMEOUT, progress=True, progress_min=500) as dev:
        dev.write("mem", 0x40, bytes(600))
        dev.write("mem", 0x40, bytes(100))                # below progress_min: silent
    err = capsys.readouterr().err
    assert "\rwrite mem+0x000040..0x000298: 100% 600/600 bytes" in err
    assert err.count("write mem") >= 1 and "100/100" not in err


def test_run_command_identifies_the_board(board, tmp_path, capsys):
    from addershift.sw.cli import main
    from addershift.sw.examples import digits_net
    from addershift.sw.model import save_model
    save_model(digits_net("adder", mode="pow2x2"), tmp_path / "m.npz")
    assert main(["run", "--port", board.url, "-m", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "runs the host-link test design" in err and "no accelerator" in err


def test_driver_parameter_checks():
    with pytest.raises(ValueError, match=r"^Timeout must be a positive number of seconds, not 0$"):
        Device("socket://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match=r"^Retries must be a non-negative integer, not -1$"):
        Device("socket://127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match=r"^Window must be an integer in \[1, 64\], not 0$"):
        Device("socket://127.0.0.1:1", window=0)
    with pytest.raises(LinkError, match=r"^cannot open /nonexistent/tty"):
        Device("/nonexistent/tty")
    # a line that only echoes is never taken for a device: requests and answers differ in sync

    class Echo:
        name = "echo"

        def __init__(self):
            self.buf = bytearray()

        def write(self, data):
            self.buf += data

        def read(self, n):
            out, self.buf[:n] = bytes(self.buf[:n]), b""
            return out

        def close(self):
            pass

    with pytest.raises(LinkError, match=r"^the board at echo did not accept IDENTIFY after 2 "
                                        r"attempts \(last: no answer for 0\.2 s\); \d+ bytes "
                                        r"arrived that held no answer \(wrong baud rate\? not an "
                                        r"addershift board\?\)$"):
        Device(Echo(), timeout=0.2, retries=1)
    with pytest.raises(TypeError, match=r"^Identity must be a protocol\.Identity"):
        check_build({}, build_hash="00")


def test_open_port_names_the_url_and_the_reason():
    # pyserial's own message for these is "'debug|info|warning|error'"
    with pytest.raises(LinkError, match=r"^cannot open socket://127\.0\.0\.1:99999: the TCP port "
                                        r"must be an integer in 0-65535, not '99999'$"):
        Device("socket://127.0.0.1:99999")
    with pytest.raises(LinkError, match=r"^cannot open socket://127\.0\.0\.1:x: the TCP port "
                                        r"must be an integer in 0-65535, not 'x'$"):
        Device("socket://127.0.0.1:x")
    with pytest.raises(LinkError, match=r"^cannot open socket://127\.0\.0\.1: it names no TCP "
                                        r"port \(socket://HOST:PORT\)$"):
        Device("socket://127.0.0.1")
    # the reason once, without pyserial's repetition of the URL
    with pytest.raises(LinkError, match=r"^cannot open socket://127\.0\.0\.1:1: (?!Could not)"):
        Device("socket://127.0.0.1:1")
    with pytest.raises(LinkError, match=r"^cannot open /dev/no-such-port: (?!could not)"):
        Device("/dev/no-such-port")


class AnsweringPort:
    """A port that answers each request frame written to it with ``answer(request)``'s bytes."""

    def __init__(self, identity):
        self.identity = identity
        self.decoder = P.FrameDecoder(kind="request")
        self.out = bytearray()

    def write(self, data):
        for r in self.decoder.feed(bytes(data)):
            self.out += self.answer(r)
        return len(data)

    def read(self, size):
        data, self.out = bytes(self.out[:size]), self.out[size:]
        return data

    def close(self):
        pass


class GarbledBoard(AnsweringPort):
    """A port whose answers all fail their CRC (a flipped bit each), from the first or only after
    ``good`` answers."""

    name = "garbled"

    def __init__(self, identity, *, good=0):
        super().__init__(identity)
        self.good = good

    def answer(self, r):
        payload = self.identity.encode() if r.cmd == P.Command.IDENTIFY else P.encode_status(
            busy=False, done=False, error=0, uptime=1, counters=[0, 0, 0])
        frame = bytearray(P.encode_response(r.cmd, r.seq, P.Status.OK, r.crc, payload))
        if self.good:
            self.good -= 1
        else:
            frame[-3] ^= 0x10
        return frame


def test_only_bad_answers_are_not_reported_as_silence():
    identity = P.Identity(max_payload=64, clk_hz=1, baud=1, build={},
                          regions=(P.Region(1, "mem", 64, P.Access.RW),))
    with pytest.raises(LinkError, match=r"^the board at garbled did not accept IDENTIFY after 2 "
                                        r"attempts \(last: no answer for 0\.2 s\); \d+ answers "
                                        r"failed the CRC or framing check \(wrong baud rate\? not "
                                        r"an addershift board\?\)$") as e:
        Device(GarbledBoard(identity), timeout=0.2, retries=1)
    assert not isinstance(e.value, LinkTimeout)
    # ... though its last attempt did time out (a slow simulated board: a longer --timeout)
    assert e.value.waited_out
    # once identified, the same is a bad line
    with Device(GarbledBoard(identity, good=1), timeout=0.2, retries=1) as dev:
        with pytest.raises(LinkError, match=r"^the board at garbled did not accept STATUS after 2 "
                                            r"attempts \(last: no answer for 0\.2 s\); \d+ "
                                            r"answers failed the CRC or framing check \(a noisy "
                                            r"line\?\)$"):
            dev.status()


# --- faults ------------------------------------------------------------------------------------

FRAME = 252 + P.WRITE_HEADER + P.REQUEST_OVERHEAD    # one full WRITE frame on the wire

FAULTS = {
    "flip a payload bit": {"tx": {FRAME + 100: ("flip", 3)}},
    "flip a header bit": {"tx": {FRAME + 3: ("flip", 0)}},
    "flip a length bit": {"tx": {FRAME + 5: ("flip", 7)}},       # length > max_payload
    "drop a byte": {"tx": {2 * FRAME + 40: ("drop",)}},
    "duplicate a byte": {"tx": {FRAME + 60: ("dup",)}},
    "truncate a frame": {"tx": {2 * FRAME - 30: ("truncate", 30)}},
    "garbage between frames": {"tx": {FRAME: ("insert", b"\xA5\x5A\x10\x01\xff\x00garbage")}},
    "flip an ACK bit": {"rx": {20: ("flip", 5)}},
    "drop an ACK byte": {"rx": {30: ("drop",)}},
    "garbage from the board": {"rx": {11: ("insert", b"\xA5\xC3\x00\x00\x00zz\xA5")}},
    "duplicate an ACK": {"rx": {i: ("dup",) for i in range(11, 22)}},
}


@pytest.mark.parametrize("name", FAULTS)
def test_fault_recovers_with_correct_data(board, name):
    rng = random.Random(name)
    data = bytes(rng.randrange(256) for _ in range(4 * 252))
    dev, link = connect(board, timeout=1.5)
    # the faults count bytes from here on (after identify)
    link.count = {"tx": 0, "rx": 0}
    link.faults = {k: dict(v) for k, v in FAULTS[name].items()} | \
        {k: {} for k in ("tx", "rx") if k not in FAULTS[name]}
    with dev:
        dev.write("mem", 512, data)
        assert link.applied, "the fault was never applied"
        assert dev.read("mem", 512, len(data)) == data
        recovered = dev.stats["resent"] + dev.stats["stale"]
        assert recovered > 0 or dev._decoder.bad_frames > 0, dev.stats


def test_board_stalls(board):
    dev, link = connect(board, timeout=1.0)
    link.count = {"tx": 0, "rx": 0}
    link.faults["tx"] = {FRAME + 10: ("stall",)}
    with dev, pytest.raises(LinkTimeout, match=r"did not accept WRITE mem\+0x000000 \(252 bytes\) "
                            r"after 5 attempts \(last: no answer for 1 s\); also pending: WRITE "
                            r"mem\+0x0000fc \(252 bytes\), .*; "
                            r"mem\+0x000000\.\.0x0003f0 may be partly written$"):
        dev.write("mem", 0, bytes(4 * 252))


def test_board_disconnects(board):
    dev, link = connect(board)
    link.count = {"tx": 0, "rx": 0}
    link.faults["rx"] = {5: ("disconnect",)}
    with dev, pytest.raises(LinkTimeout, match=r"disconnected.*may be partly written"):
        dev.write("mem", 0, bytes(600))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_random_fault_soak(board, seed):
    """Random faults at a low rate both ways: every operation returns correct data or raises."""
    rng = random.Random(seed)
    actions = [("flip", 1), ("drop",), ("dup",), ("insert", b"\xA5\x5A\x00"), ("truncate", 7)]
    faults = {d: {rng.randrange(20000): rng.choice(actions) for _ in range(12)} for d in ("tx", "rx")}
    dev, link = connect(board, timeout=3.0)
    link.count = {"tx": 0, "rx": 0}
    link.faults = faults
    with dev:
        for k in range(6):
            off = rng.randrange(0, MEM - 800)
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 800)))
            try:
                dev.write("mem", off, data)
                got = dev.read("mem", off, len(data))
            except LinkError as e:
                assert "after 5 attempts" in str(e)   # a clear error is allowed, a wrong result not
                break
            assert got == data
    assert link.applied


class BusyBoard(AnsweringPort):
    """A port that answers like a device in the middle of a run: IDENTIFY and STATUS (busy), and
    BUSY for every other request (no board: the simulated one finishes a run within one frame)."""

    name = "busy-board"

    def answer(self, r):
        status, payload = P.Status.BUSY, b""
        if r.cmd == P.Command.IDENTIFY:
            status, payload = P.Status.OK, self.identity.encode()
        elif r.cmd == P.Command.STATUS:
            status, payload = P.Status.OK, P.encode_status(
                busy=True, done=False, error=0, uptime=1, counters=[1, 0, 0])
        return P.encode_response(r.cmd, r.seq, status, r.crc, payload)


def test_a_read_refused_while_running_says_why():
    identity = P.Identity(max_payload=64, clk_hz=1, baud=1, build={},
                          regions=(P.Region(1, "mem", 64, P.Access.RW),
                                   P.Region(2, "live", 64, P.Access.READ | P.Access.LIVE)))
    with Device(BusyBoard(identity), timeout=1.0) as dev:
        with pytest.raises(Refused, match=r"^the board refused READ mem\+0x000000 \(4 bytes\): BUSY "
                                          r"\(region mem is not readable while the board runs; "
                                          r"wait for the run to end\)$") as e:
            dev.read("mem", 0, 4)
        assert e.value.status == P.Status.BUSY
        with pytest.raises(Refused, match=r"^the board refused CRC mem\+0x000000 \(4 bytes\): BUSY "
                                          r"\(region mem is not readable"):
            dev.crc("mem", 0, 4)
        # A LIVE region refused anyway (not by our devices) gets no made-up reason.
        with pytest.raises(Refused, match=r"^the board refused READ live\+0x000000 \(4 bytes\): "
                                          r"BUSY$"):
            dev.read("live", 0, 4)


class RunningBoard(AnsweringPort):
    """A port that answers like an idle device whose run adds one to every byte of ``mem`` (not
    idempotent, like the accelerator's: a later stage may overwrite the input). The answers to
    the RUNs numbered in ``lose`` (from 0) vanish; after a RUN, ``busy_polls`` STATUS answers say
    busy."""

    name = "running-board"

    def __init__(self, identity, *, lose=(), busy_polls=0):
        super().__init__(identity)
        self.mem = bytearray(64)
        self.runs = 0
        self.lose, self.busy_polls, self.busy = set(lose), busy_polls, 0

    def answer(self, r):
        payload = b""
        if r.cmd == P.Command.IDENTIFY:
            payload = self.identity.encode()
        elif r.cmd == P.Command.STATUS:
            payload = P.encode_status(busy=self.busy > 0, done=self.runs > 0, error=0, uptime=1,
                                      counters=[1, 0, 0])
            self.busy = max(self.busy - 1, 0)
        elif r.cmd == P.Command.WRITE:
            off = int.from_bytes(r.payload[:4], "little") & 0xFFFFFF
            self.mem[off:off + len(r.payload) - 4] = r.payload[4:]
        elif r.cmd in (P.Command.READ, P.Command.CRC):
            addr, n = P.parse_address_args(r.payload)
            data = bytes(self.mem[addr & 0xFFFFFF:][:n])
            payload = data if r.cmd == P.Command.READ else P.crc32(data).to_bytes(4, "little")
        elif r.cmd == P.Command.RUN:
            self.mem[:] = bytes((b + 1) & 0xFF for b in self.mem)
            self.runs += 1
            self.busy = self.busy_polls
            if self.runs - 1 in self.lose:
                return b""
        return P.encode_response(r.cmd, r.seq, P.Status.OK, r.crc, payload)


RUN_IDENTITY = P.Identity(max_payload=64, clk_hz=1, baud=1, build={},
                          regions=(P.Region(1, "mem", 64, P.Access.RW),))


def test_a_run_whose_answer_is_lost_is_not_run_again():
    # The run took less than the timeout: the board is idle again, and a second RUN would add
    # two. The driver says it cannot tell, and the run happened once.
    board = RunningBoard(RUN_IDENTITY, lose={0})
    with Device(board, timeout=0.2) as dev:
        dev.write("mem", 0, bytes(range(64)))
        with pytest.raises(RunUnconfirmed, match=r"^the board at running-board did not answer "
                                                 r"RUN 5 \(no answer for 0\.2 s\): it may or may "
                                                 r"not have executed it, and a second one would "
                                                 r"compute on the first one's output; the board "
                                                 r"is idle: write the inputs again, then run$"):
            dev.run(5)
        assert board.runs == 1 and dev.read("mem", 0, 64) == bytes(range(1, 65))
        # the next one goes through, once
        assert not dev.run(6).busy and board.runs == 2
    # A board still busy when asked ran our RUN (it was idle before): wait for it.
    board = RunningBoard(RUN_IDENTITY, lose={0}, busy_polls=2)
    with Device(board, timeout=0.2) as dev:
        st = dev.run(7)
        assert (st.busy, st.done, board.runs) == (False, True, 1)


class OddBoard(AnsweringPort):
    """A port that follows the framing but not the protocol: READ gets status ``code``, STATUS a
    payload three bytes long."""

    name = "odd-board"

    def __init__(self, identity, code):
        super().__init__(identity)
        self.code = code

    def answer(self, r):
        status, payload = P.Status.OK, b"\x00\x01\x02"
        if r.cmd == P.Command.IDENTIFY:
            payload = self.identity.encode()
        elif r.cmd == P.Command.READ:
            status, payload = self.code, b""
        return P.encode_response(r.cmd, r.seq, status, r.crc, payload)


def test_answers_outside_the_protocol_are_named():
    with Device(OddBoard(RUN_IDENTITY, 0x55), timeout=0.2) as dev:
        with pytest.raises(Refused, match=r"^the board refused READ mem\+0x000000 \(4 bytes\): "
                                          r"unknown status 0x55$") as e:
            dev.read("mem", 0, 4)
        assert e.value.status == 0x55
        with pytest.raises(BadAnswer, match=r"^the board at odd-board answered STATUS with a "
                                            r"payload that does not follow the protocol: a status "
                                            r"block has \d+ bytes, not 3$"):
            dev.status()


def test_a_write_that_cannot_be_verified_is_refused_before_sending():
    identity = P.Identity(max_payload=64, clk_hz=1, baud=1, build={},
                          regions=(P.Region(1, "mem", 64, P.Access.WRITE),))
    board = RunningBoard(identity)
    with Device(board, timeout=0.2) as dev:
        with pytest.raises(ValueError, match=r"^region mem is not readable, so a write to it "
                                             r"cannot be verified: pass verify=False$"):
            dev.write("mem", 0, b"\x07" * 8)
        assert board.mem == bytes(64)
        dev.write("mem", 0, b"\x07" * 8, verify=False)
        assert board.mem[:9] == b"\x07" * 8 + b"\x00"
