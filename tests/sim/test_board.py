# amaranth: UnusedElaboratable=no
"""The simulated board: the harness in Amaranth's simulator (host baud off by +-2%), the TCP bridge
on the Amaranth fallback, and connection handling on Verilator."""

import contextlib
import socket

import pytest
from amaranth.sim import Simulator

from addershift.hw.link_top import LinkTop
from addershift.sim.board import BoardProcess, SimHarness
from addershift.sw import protocol as P
from addershift.sw.driver import Device


def harness_exchange(request_bytes, *, host_baud_error, expect):
    """Send bytes through the harness's host UART into a LinkTop; return the decoded answers."""
    top = LinkTop(clk_freq=12_000_000, baud=240_000, mem_size=64, max_payload=32, timeout=20000)
    dut = SimHarness(top, divisor=round(top.divisor * (1 + host_baud_error)), fifo_depth=16)
    decoder = P.FrameDecoder(kind="response")
    got = []

    async def tb(ctx):
        pending = bytearray(request_bytes)
        ctx.set(dut.host_rx.ready, 1)
        for _ in range(400_000):
            if pending and ctx.get(dut.host_tx.ready):
                ctx.set(dut.host_tx.payload, pending[0])
                ctx.set(dut.host_tx.valid, 1)
                del pending[0]
            else:
                ctx.set(dut.host_tx.valid, 0)
            if ctx.get(dut.host_rx.valid):
                got.extend(decoder.feed(bytes([ctx.get(dut.host_rx.payload)])))
            await ctx.tick()
            if len(got) == expect and ctx.get(dut.idle):
                break
        assert ctx.get(dut.host_errors) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


@pytest.mark.parametrize("error", [-0.02, 0.02])
def test_harness_with_host_baud_off(error):
    # divisor 50: a 2% slower or faster host is 51 or 49 cycles per bit
    req = P.Request(P.Command.ECHO, 2, b"\x55\xaa\x00\xff")
    got = harness_exchange(req.encode(), host_baud_error=error, expect=1)
    assert len(got) == 1 and got[0].answers(req) and got[0].ok
    assert got[0].payload == req.payload


def test_harness_checks_its_top():
    with pytest.raises(TypeError, match=r"^Top level must have rx and tx pins"):
        SimHarness(object(), divisor=8)


def test_amaranth_fallback_serves_the_driver():
    with BoardProcess(simulator="amaranth", mem_size=256, startup_timeout=120) as board:
        with Device(board.url, timeout=30.0) as dev:
            assert dev.identity.build["mem_size"] == 256
            dev.write("mem", 10, b"hello", verify=False)
            assert dev.read("mem", 9, 7) == b"\x00hello\x00"


@pytest.mark.cocotb
def test_reconnect_after_a_half_frame():
    """A client that leaves in the middle of a frame does not break the next one. Stopping the
    board removes its files (log and the simulator's run folder): nothing is left in /tmp."""
    with BoardProcess(mem_size=4096) as board:
        files = board._dir
        assert [p.name for p in files.iterdir() if p.name.startswith("addershift-board-")]
        with Device(board.url, timeout=8.0) as dev:
            dev.write("mem", 0, b"first")
        s = socket.create_connection(("127.0.0.1", board.port))
        s.sendall(P.Request(P.Command.WRITE, 9, P.write_payload(P.address(1, 0), b"zzzz"))
                  .encode()[:9])
        s.close()
        with Device(board.url, timeout=8.0) as dev:
            assert dev.read("mem", 0, 5) == b"first"    # the half frame wrote nothing
            assert dev.stats["timeouts"] == 0            # the connection pad resynchronised it
            # One client at a time: a second one is closed at once (its driver: "the board at
            # ... disconnected"), not left unanswered until it times out; the first goes on.
            extra = socket.create_connection(("127.0.0.1", board.port), timeout=8.0)
            with extra, contextlib.suppress(ConnectionResetError):
                assert extra.recv(1) == b""
            assert dev.read("mem", 0, 5) == b"first"
    assert not files.exists()


def test_a_missing_simulator_is_named(monkeypatch):
    # cocotb's own message names neither the command nor what installs it.
    from addershift.sim import runner
    monkeypatch.setattr(runner.shutil, "which", lambda tool: None if tool == "iverilog" else "/x")
    with pytest.raises(runner.SimulatorMissing, match=r"^iverilog not found on PATH; it comes with "
                                                      r"Icarus Verilog: `make install`"):
        runner.require_simulator("icarus")
    runner.require_simulator("verilator")


def test_an_interrupted_start_stops_the_board(monkeypatch):
    # Ctrl-C while the board starts (its simulator building): the board, in a session of its
    # own that the Ctrl-C does not reach, is stopped, not left running.
    import time
    stopped, real_sleep, real_stop = [], time.sleep, BoardProcess.stop

    def interrupt(seconds):          # the first wait for the board (later ones: stop's)
        real_sleep(seconds)
        if not stopped:
            stopped.append("interrupted")
            raise KeyboardInterrupt

    def stop(self):
        real_stop(self)
        stopped.append(self.proc.poll())
    monkeypatch.setattr("addershift.sim.board.time.sleep", interrupt)
    monkeypatch.setattr(BoardProcess, "stop", stop)
    with pytest.raises(KeyboardInterrupt):
        BoardProcess(mem_size=64, simulator="amaranth")
    assert len(stopped) == 2 and stopped[1] is not None     # stopped, and its process ended


@pytest.mark.cocotb
def test_serve_sim_stopped_by_sigterm_leaves_no_files(tmp_path):
    # A `kill` ends serve-sim as Ctrl-C does: the simulator's run folder is removed.
    import os
    import signal
    import subprocess
    import sys
    env = dict(os.environ, TMPDIR=str(tmp_path))
    argv = [sys.executable, "-m", "addershift.sw.cli", "serve-sim", "--link-test",
            "--simulator", "icarus", "--port", "0"]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env) as proc:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "simulated board listening on" in line:
                break
        assert [p for p in tmp_path.iterdir() if p.name.startswith("addershift-board-")], seen
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest[-2000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("addershift-board-")]
