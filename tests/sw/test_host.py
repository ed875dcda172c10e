"""Whole inferences on the simulated accelerator board (Verilator) through the host link.

One board per module (the Verilator build is cached under ~/.cache/addershift: the first session
on a machine builds it, about two minutes; later sessions start it in seconds). The board runs the
build that fits the shipped adder model on a 4x4 array; each test loads a program and runs a few
digits images, compared bit for bit with ``golden.predict``.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import serial

from addershift.hw.accelerator import accelerator_identity
from addershift.sim.accel_sim import test_images as digits_images
from addershift.sim.board import BoardProcess
from addershift.sw import cli
from addershift.sw import protocol as P
from addershift.sw.accel_model import AcceleratorModel
from addershift.sw.compiler import CompileError, compile_model, default_config
from addershift.sw.driver import BuildMismatch, Device, LinkTimeout, RunUnconfirmed
from addershift.sw.golden import predict
from addershift.sw.host import Accelerator, connect
from addershift.sw.model import load_model

pytestmark = pytest.mark.cocotb

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
SIM_TIMEOUT = 8.0


def _faulty_serial():
    """The fault-injection proxy of the driver's tests (one implementation)."""
    path = pathlib.Path(__file__).with_name("test_driver.py")
    spec = importlib.util.spec_from_file_location("_driver_tests_for_host", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FaultySerial


@pytest.fixture(scope="module")
def model():
    return load_model(MODELS / "digits_adder.npz")


@pytest.fixture(scope="module")
def board(model):
    with BoardProcess(accelerator=default_config(model, rows=4, cols=4)) as b:
        yield b


def test_load_and_predict_bit_exact(board, model):
    x, labels = digits_images(model, 3)
    with connect(board.url) as acc:
        assert acc.config == default_config(model, rows=4, cols=4)
        program = acc.load(model)
        got = acc.predict(x)
        want = predict(model, x)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        counters = acc.counters()
        assert [c["name"] for c in counters] == [s.name for s in program.stages]
        # every PE-cycle the program needs was counted busy, and no more
        assert sum(c["busy_pe"] for c in counters) == program.busy_pe_cycles
        assert all(0 < c["utilisation"] <= 1 for c in counters)
        link = acc.link_report()
        assert link["load_bytes"] == sum(len(d) for d in program.images().values())
        assert link["images"] == 3
        # one image again after others: nothing left over from the previous run
        np.testing.assert_array_equal(acc.predict(x[2:3]), want[2:3])


def test_program_for_another_build_is_refused(board, model):
    other = default_config(model, rows=4, cols=4, weight_depth=8192)
    program = compile_model(model, other)
    with connect(board.url) as acc:
        with pytest.raises(BuildMismatch, match=r"compiled for build " + other.build_hash[:16]
                           + r".* but the board runs build " + acc.config.build_hash[:16]):
            acc.load(program)
        assert acc.program is None
        with pytest.raises(RuntimeError, match=r"no program is loaded"):
            acc.predict(digits_images(model, 1)[0])


def test_model_that_does_not_fit(board):
    shift = load_model(MODELS / "digits_shift.npz")
    with connect(board.url) as acc:
        with pytest.raises(CompileError, match=r"uses shift operations; this build's PEs are "
                                               r"adder: rebuild with pe=shift"):
            acc.load(shift)


def test_fault_during_load_recovers(board, model):
    FaultySerial = _faulty_serial()
    link = FaultySerial(serial.serial_for_url(board.url, timeout=0))
    dev = Device(link, timeout=4.0, retries=4)
    link.count = {"tx": 0, "rx": 0}
    # a flipped bit in the second WRITE frame of the weight image, and a lost ACK byte
    link.faults = {"tx": {400: ("flip", 2)}, "rx": {30: ("drop",)}}
    x, _ = digits_images(model, 2)
    with Accelerator(dev) as acc:
        acc.load(model)
        assert len(link.applied) == 2, link.applied
        assert dev.stats["resent"] > 0, dev.stats
        np.testing.assert_array_equal(acc.predict(x), predict(model, x))


def test_run_and_predict_commands(board, model, tmp_path, capsys):
    path = str(MODELS / "digits_adder.npz")
    assert cli.main(["run", "--port", board.url, "--model", path, "--images", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] and report["mismatches"] == 0 and report["images"] == 2
    assert report["predictions"] == report["golden_predictions"]
    assert report["cycles_per_inference"] == sum(s["cycles"] for s in report["stages"])
    assert report["link"]["load_bytes_per_s_device"] > 0

    x, _ = digits_images(model, 2)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert cli.main(["predict", "--backend", board.url, "-m", path, "-i", str(tmp_path / "x.npy"),
                     "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), predict(model, x))


def test_predict_backend_checks(tmp_path, capsys):
    path = str(MODELS / "digits_adder.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), dtype=np.int64))
    assert cli.main(["predict", "--backend", "fpga", "-m", path, "-i", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / "y.npy")]) == 1
    assert "--backend must be golden, amaranth, icarus, verilator or a serial URL" in \
        capsys.readouterr().err


def test_run_refuses_a_model_that_does_not_fit(board, capsys):
    assert cli.main(["run", "--port", board.url, "--model",
                     str(MODELS / "digits_shift.npz"), "--images", "1"]) == 1
    assert "uses shift operations; this build's PEs are adder" in capsys.readouterr().err


def test_serve_sim_checks_the_build(capsys):
    assert cli.main(["serve-sim", "--rows", "0"]) == 1
    assert "rows" in capsys.readouterr().err


def test_run_exits_non_zero_on_a_mismatch(board, monkeypatch, capsys):
    # A golden model that disagrees on the second image: run must notice and fail.
    import addershift.sw.golden as golden
    real = golden.predict

    def off_by_one(model, x):
        y = real(model, x).copy()
        y[1, 0] += 1
        return y

    monkeypatch.setattr(golden, "predict", off_by_one)
    assert cli.main(["run", "--port", board.url, "--model", str(MODELS / "digits_adder.npz"),
                     "--images", "2"]) == 1
    captured = capsys.readouterr()
    assert "outputs bit-exact with the golden model: 1/2 (differ: images [1])" in captured.out
    assert "1 of 2 outputs differ from the golden model" in captured.err


def _run_then(url, request):
    """RUN the loaded program and send ``(command, payload)`` right behind it, without waiting
    for RUN's answer; return both answers (``protocol.Response``)."""
    link = serial.serial_for_url(url, timeout=SIM_TIMEOUT)
    try:
        cmd, payload = request
        link.write(P.encode_request(P.Command.RUN, 1, P.run_payload(0))
                   + P.encode_request(cmd, 2, payload))
        decoder, answers = P.FrameDecoder(kind="response"), []
        while len(answers) < 2:
            data = link.read(64)
            if not data:
                raise AssertionError(f"no answer after {answers}")
            answers += decoder.feed(data)
        return answers
    finally:
        link.close()


def test_buffers_cannot_be_read_while_a_run_writes_them(board, model):
    """The accelerator's memories are not LIVE: a READ or CRC of one that arrives while a run
    goes on is refused with BUSY, and the counters (LIVE) are served. The request goes out right
    behind the RUN, without waiting for its answer: a digits run on this 4x4 (about 1,780
    cycles) is shorter than RUN's answer and a READ request on the line (about 2,000 cycles
    at the board's 8 cycles a bit), so the driver's own turn-taking would always miss it."""
    with connect(board.url) as acc:
        acc.load(model)
        regions = {r.name: r for r in acc.device.identity.regions}
    act1, counters = regions["act1"].base, regions["counters"].base
    for cmd, payload, status, size in (
            (P.Command.READ, P.read_payload(act1, 16), P.Status.BUSY, 16),
            (P.Command.CRC, P.crc_payload(act1, 16), P.Status.BUSY, 4),
            (P.Command.READ, P.read_payload(counters, 8), P.Status.OK, 8)):
        # The request may still reach the board after the run if the host stalls between the
        # two frames' bytes: a refusal gets three tries.
        for _ in range(3 if status == P.Status.BUSY else 1):
            run, answer = _run_then(board.url, (cmd, payload))
            assert (run.cmd, run.seq, run.status) == (P.Command.RUN, 1, P.Status.OK)
            with Device(board.url, timeout=SIM_TIMEOUT) as dev:
                dev.wait(timeout=SIM_TIMEOUT)
                # After the run the same request is served (Refused would be raised otherwise).
                assert len(dev.transact(cmd, payload)) == size
            if answer.status == status:
                break
        assert (answer.cmd, answer.seq, answer.status) == (cmd, 2, status), answer
        assert len(answer.payload) == (size if status == P.Status.OK else 0)


# --- in process: a fake board ------------------------------------------------------------------

class FakeAccelerator:
    """A port that answers like an accelerator board running ``program``, in process: the regions
    are byte arrays, RUN executes the program on ``sw.accel_model`` (the counters stay zero, as
    STATUS says). After ``runs`` RUNs, if given, the port disconnects. The answers to the RUNs
    numbered in ``lose`` (from 0) vanish; ``executed`` counts the RUNs."""

    name = "fake-accelerator"

    def __init__(self, program, *, runs=None, lose=()):
        self.identity = accelerator_identity(program.config, clk_hz=12_000_000, baud=1_500_000,
                                             max_payload=256)
        self.program, self.runs = program, runs
        self.mem = {r.id: bytearray(r.size) for r in self.identity.regions}
        self.ids = {r.name: r.id for r in self.identity.regions}
        self.decoder = P.FrameDecoder(kind="request")
        self.out = bytearray()
        self.requests = []
        self.uptime = 0
        self.dead = False
        self.lose, self.executed = set(lose), 0

    def _run(self):
        nb = self.program.config.act_word_bytes
        acc = AcceleratorModel(self.program)
        for i, buf in enumerate(("act0", "act1")):
            mem = self.mem[self.ids[buf]]
            acc.act[i][:len(mem) // nb] = [int.from_bytes(mem[j:j + nb], "little")
                                           for j in range(0, len(mem), nb)]
        acc.run()
        for i, buf in enumerate(("act0", "act1")):
            self.mem[self.ids[buf]][:] = b"".join(w.to_bytes(nb, "little") for w in acc.act[i])

    def _answer(self, r):
        if r.cmd == P.Command.IDENTIFY:
            return self.identity.encode()
        if r.cmd == P.Command.STATUS:
            self.uptime = (self.uptime + 1000) % (1 << self.program.config.counter_bits)
            return P.encode_status(busy=False, done=True, error=0, uptime=self.uptime,
                                   counters=[100, 0, 0])
        if r.cmd == P.Command.RUN:
            self._run()
            self.executed += 1
            if self.runs is not None:
                self.runs -= 1
                self.dead = self.runs < 0
            return b""
        addr = int.from_bytes(r.payload[:4], "little")
        mem, off = self.mem[addr >> 24], addr & 0xFFFFFF
        if r.cmd == P.Command.WRITE:
            mem[off:off + len(r.payload) - 4] = r.payload[4:]
            return b""
        n = int.from_bytes(r.payload[4:], "little")
        if r.cmd == P.Command.READ:
            return bytes(mem[off:off + n])
        return P.crc32(bytes(mem[off:off + n])).to_bytes(4, "little")     # CRC

    def write(self, data):
        if self.dead:
            raise serial.SerialException("socket disconnected")
        for r in self.decoder.feed(bytes(data)):
            self.requests.append(r)
            answer = P.encode_response(r.cmd, r.seq, P.Status.OK, r.crc, self._answer(r))
            if not (r.cmd == P.Command.RUN and self.executed - 1 in self.lose):
                self.out += answer
        return len(data)

    def read(self, size):
        if self.dead:
            raise serial.SerialException("socket disconnected")
        data, self.out = bytes(self.out[:size]), self.out[size:]
        return data

    def close(self):
        pass


@pytest.fixture(scope="module")
def program(model):
    return compile_model(model, default_config(model, rows=4, cols=4))


def test_cycles_counted_across_the_uptime_counters_wrap(model, program):
    # 32 bits wrap every 43 s at 100 MHz: a load or an image that spans the wrap still counts
    # its cycles (1000 between two STATUS answers here), not a negative number.
    x, _ = digits_images(model, 1)
    board = FakeAccelerator(program)
    board.uptime = (1 << 32) - 1500
    with Accelerator(Device(board, timeout=1.0)) as acc:
        acc.load(program)
        assert board.uptime < 1000 and acc.stats["load_cycles"] == 1000
        board.uptime = (1 << 32) - 1500
        acc.predict(x)
        assert board.uptime < 3000 and 0 < acc.stats["image_cycles"] < 10_000


def test_inputs_out_of_range_are_refused_before_sending(model, program):
    # 300 does not fit an 8-bit lane: the board would compute on 300 mod 256 = 44.
    x, _ = digits_images(model, 3)
    board = FakeAccelerator(program)
    with Accelerator(Device(board, timeout=1.0)) as acc:
        acc.load(program)
        np.testing.assert_array_equal(acc.predict(x), predict(model, x))
        sent = len(board.requests)
        x[1, 0, 2, 3] = 300
        with pytest.raises(ValueError, match=r"^Inputs must lie in \[-128, 127\] \(8-bit "
                                             r"activations\), found \[0, 300\]$"):
            predict(model, x)
        with pytest.raises(ValueError, match=r"^Inputs must lie in \[-128, 127\] \(8-bit "
                                             r"activations\), found \[0, 300\]$"):
            acc.predict(x)
        with pytest.raises(ValueError, match=r"^Inputs must lie in \[-128, 127\]"):
            acc.predict_one(x[1])
        with pytest.raises(ValueError, match=r"^Inputs must be integers, not float64$"):
            acc.predict(x.astype(np.float64))
        assert len(board.requests) == sent, "an input was sent"


def test_a_link_lost_mid_predict_keeps_the_finished_outputs(model, program):
    x, _ = digits_images(model, 5)
    board = FakeAccelerator(program, runs=3)
    with Accelerator(Device(board, timeout=1.0)) as acc:
        acc.load(program)
        with pytest.raises(LinkTimeout, match=r"^the board at fake-accelerator disconnected "
                                              r"\(socket disconnected\); 3 of 5 images "
                                              r"finished$") as e:
            acc.predict(x)
    done = e.value.done_outputs
    assert done.dtype == np.int64
    np.testing.assert_array_equal(done, predict(model, x[:3]))
    # none finished: still an array, shaped like predict's result
    with Accelerator(Device(FakeAccelerator(program, runs=0), timeout=1.0)) as acc:
        acc.load(program)
        with pytest.raises(LinkTimeout, match=r"; 0 of 5 images finished$") as e:
            acc.predict(x)
    assert e.value.done_outputs.shape == (0,) + predict(model, x).shape[1:]


def test_an_image_whose_run_answer_is_lost_starts_again_from_its_input(model, program):
    # The digits program's second stage overwrites act0, the input: run twice on the same
    # buffers, an image computes on its own intermediate values. So a lost RUN answer redoes
    # the image from writing its input, and the outputs stay bit-exact.
    x, _ = digits_images(model, 3)
    board = FakeAccelerator(program, lose={1})
    with Accelerator(Device(board, timeout=0.2)) as acc:
        acc.load(program)
        np.testing.assert_array_equal(acc.predict(x), predict(model, x))
        assert (board.executed, acc.stats["images_redone"]) == (4, 1)
        inputs = len(program.input_image(x[0]))          # written four times for three images
        assert acc.stats["image_bytes"] == 4 * inputs + 3 * program.output_extent(
            len(program.stages) - 1)[1]
    # An answer lost every time: the finished images are kept, the error says why.
    board = FakeAccelerator(program, lose=range(1, 99))
    with Accelerator(Device(board, timeout=0.2, retries=2)) as acc:
        acc.load(program)
        with pytest.raises(RunUnconfirmed, match=r"^the board at fake-accelerator did not answer "
                                                 r"RUN 0 .*write the inputs again, then run; 1 of "
                                                 r"3 images finished$") as e:
            acc.predict(x)
        np.testing.assert_array_equal(e.value.done_outputs, predict(model, x[:1]))
        assert board.executed == 4 and acc.stats["images_redone"] == 2


def test_run_says_when_the_test_split_has_fewer_images(model, program, monkeypatch):
    from addershift.sw import host
    x, labels = digits_images(model, 2)
    monkeypatch.setattr("addershift.sim.accel_sim.test_images", lambda m, n: (x, labels))
    monkeypatch.setattr(host, "connect", lambda url, **kw: Accelerator(
        Device(FakeAccelerator(program), timeout=1.0)))
    report = host.run_model("fake", model, 5)
    assert report["images"] == 2 and report["bit_exact"]
    assert "outputs bit-exact with the golden model: 2/2 (the test split has 2, not 5)" in \
        report["text"]


def test_run_on_a_link_lost_part_way_says_what_the_finished_images_showed(model, program,
                                                                         monkeypatch):
    # `addershift run` has no output file: its result is the comparison, so the error keeps it.
    from addershift.sw import host
    x, labels = digits_images(model, 5)
    monkeypatch.setattr("addershift.sim.accel_sim.test_images", lambda m, n: (x, labels))
    monkeypatch.setattr(host, "connect", lambda url, **kw: Accelerator(
        Device(FakeAccelerator(program, runs=3), timeout=1.0)))
    with pytest.raises(LinkTimeout, match=r"; 3 of 5 images finished, 3 of them bit-exact with "
                                          r"the golden model$"):
        host.run_model("fake", model, 5)
