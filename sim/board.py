"""The simulated board: a top level, UART pins included, running in a simulator behind a TCP socket.

The unchanged host driver talks to it through ``serial.serial_for_url("socket://127.0.0.1:PORT")``.

The top level's ``rx``/``tx`` pins are wired to a host-side UART (our own, checked against
cocotbext-uart in ``sim/uart/``) inside :class:`SimHarness`; Python exchanges whole bytes with that
UART through two FIFOs, so a byte costs the bridge a couple of wake-ups instead of one per bit.
Verilator through cocotb is the default; Amaranth's simulator is the fallback.

Pacing (TOOLCHAIN.md: a bridge that polls the socket with a fixed sleep kills throughput): while bytes
are waiting or the line is busy, simulated time advances in chunks of a few byte times and the socket
is polled without waiting. When the line has been idle for a while the bridge sleeps in ``select``
(woken at once by new bytes) and still advances the clock a little each time, so the device's idle
timeout and long runs make progress while the host is quiet.

Simulated time is what counts: the device's uptime counter (STATUS) is in simulated cycles, so the
throughput measured through it is what a real board at the same clock and baud would reach with a
host that answers at once.
"""

import contextlib
import json
import os
import pathlib
import select
import shutil
import socket
import sys
import time

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from addershift.hw.uart import UART

__all__ = ["SimHarness", "BoardConfig", "BoardProcess", "serve", "bridge", "sim_timeout",
           "accelerator_top", "SIM_BACKENDS"]

SIM_BACKENDS = ("verilator", "icarus", "amaranth")
_CLK_NS = 10   # the simulated clock's period; only cycles matter (the device counts them)


class SimHarness(wiring.Component):
    """A top level with ``rx``/``tx`` pins, and a host-side UART that Python feeds with bytes.

    Parameters
    ----------
    top : a component with members ``rx: In(1)`` and ``tx: Out(1)``
    divisor : int
        The host UART's clock cycles per bit (make it differ from the top's to model a host whose
        baud rate is off).
    fifo_depth : int
        Bytes buffered each way between Python and the host UART.

    Members
    -------
    host_tx : ``In(stream.Signature(8))``: bytes the host sends
    host_rx : ``Out(stream.Signature(8))``: bytes the top level sent
    idle : ``Out(1)``: nothing queued or on the wire either way for the last two byte times
    host_errors : ``Out(16)``: framing errors and overruns the host UART saw
    """
    host_tx: In(stream.Signature(8))
    host_rx: Out(stream.Signature(8))
    idle: Out(1)
    host_errors: Out(16)

    def __init__(self, top, *, divisor, fifo_depth=256):
        for name in ("rx", "tx"):
            if name not in getattr(top, "signature", wiring.Signature({})).members:
                raise TypeError(f"Top level must have rx and tx pins, not {top!r}")
        self._top = top
        self._divisor = divisor
        self._fifo_depth = fifo_depth
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self._top
        m.submodules.uart = uart = UART(divisor=self._divisor)
        m.submodules.to_top = to_top = SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        m.submodules.from_top = from_top = SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        wiring.connect(m, wiring.flipped(self.host_tx), to_top.w_stream)
        wiring.connect(m, to_top.r_stream, uart.tx_data)
        wiring.connect(m, uart.rx_data, from_top.w_stream)
        wiring.connect(m, from_top.r_stream, wiring.flipped(self.host_rx))
        m.d.comb += [top.rx.eq(uart.tx), uart.rx.eq(top.tx)]

        # Quiet: both lines high for two byte times and nothing queued.
        quiet_for = 20 * self._divisor
        quiet = Signal(range(quiet_for + 1))
        with m.If(~top.tx | ~uart.tx | to_top.r_rdy | from_top.r_rdy):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != quiet_for):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.idle.eq(quiet == quiet_for)
        with m.If(uart.frame_error | uart.overrun):
            m.d.sync += self.host_errors.eq(self.host_errors + 1)
        return m


class BoardConfig:
    """What the bridge needs to know (JSON-serialisable, so it reaches a cocotb process)."""

    def __init__(self, *, divisor, port=0, host="127.0.0.1", ready_file=None, parent_pid=None,
                 max_connections=None, spin_s=0.25, sleep_s=0.01):
        self.divisor = divisor
        self.port = port
        self.host = host
        self.ready_file = ready_file
        self.parent_pid = parent_pid
        self.max_connections = max_connections
        self.spin_s = spin_s
        self.sleep_s = sleep_s

    def to_json(self):
        return dict(vars(self))

    @classmethod
    def from_json(cls, d):
        return cls(**d)


def _parent_alive(pid):
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_to_end(conn, into):
    """Move every byte waiting on ``conn`` into ``into``; whether the peer has closed it."""
    while True:
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        into += chunk


async def bridge(io, cfg):
    """Serve the board on a TCP socket until ``max_connections`` clients have come and gone (or the
    parent process is gone). ``io`` moves bytes and time in whichever simulator runs the harness."""
    byte_cycles = 10 * cfg.divisor
    busy_chunk = 16 * byte_cycles
    idle_chunk = 64 * byte_cycles
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((cfg.host, cfg.port))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    if cfg.ready_file:
        tmp = pathlib.Path(str(cfg.ready_file) + ".tmp")
        tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
        tmp.replace(cfg.ready_file)
    print(f"simulated board listening on {cfg.host}:{port}", file=sys.stderr, flush=True)

    stats = {"iterations": 0, "advanced": 0, "exchanged": 0, "t_advance": 0.0, "t_exchange": 0.0}
    show_stats = os.environ.get("ADDERSHIFT_BOARD_STATS") == "1"

    async def advance(cycles):
        t = time.perf_counter()
        await io.advance(cycles)
        stats["advanced"] += cycles
        stats["t_advance"] += time.perf_counter() - t

    async def exchange(to, frm):
        t = time.perf_counter()
        moved = await io.exchange(to, frm)
        stats["exchanged"] += moved + 1
        stats["t_exchange"] += time.perf_counter() - t
        return moved

    connections = 0
    conn = None
    to_dev, from_dev, out = bytearray(), bytearray(), bytearray()
    last_activity = time.monotonic()
    try:
        while True:
            if conn is None:
                if cfg.max_connections is not None and connections >= cfg.max_connections:
                    return
                if not _parent_alive(cfg.parent_pid):
                    return
                readable, _, _ = select.select([server], [], [], cfg.sleep_s)
                if readable:
                    conn, _ = server.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections += 1
                    to_dev.clear()
                    out.clear()
                    last_activity = time.monotonic()
                # Keep the device's time moving (its idle timeout drops a half frame).
                await exchange(bytearray(), from_dev)
                from_dev.clear()
                await advance(idle_chunk)
                continue

            readable, writable, _ = select.select([conn, server], [conn] if out else [], [], 0)
            closed = False
            if conn in readable:
                try:
                    chunk = conn.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                if chunk:
                    to_dev += chunk
                    last_activity = time.monotonic()
                else:
                    closed = True
            if writable and out:
                try:
                    sent = conn.send(out)
                    del out[:sent]
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            if server in readable and not closed:
                # One client at a time: a second one is closed at once (its driver says the
                # board disconnected) rather than left queued, unanswered, until it times out;
                # unless the first has just left (its close came before the new connect: read
                # what it sent up to its end), when the new one is served next.
                closed = _read_to_end(conn, to_dev)
                if not closed:
                    with contextlib.suppress(BlockingIOError, ConnectionAbortedError):
                        extra, _ = server.accept()     # (gone already: nothing to close)
                        extra.close()
            if closed:
                conn.close()
                conn = None
                if show_stats:
                    print(f"simulated board: {stats}", file=sys.stderr, flush=True)
                continue

            stats["iterations"] += 1
            moved = await exchange(to_dev, from_dev)
            if from_dev:
                out += from_dev
                from_dev.clear()
                last_activity = time.monotonic()
            if to_dev or moved or not io.idle():
                await advance(busy_chunk)
            elif time.monotonic() - last_activity < cfg.spin_s:
                await advance(busy_chunk)
            else:
                if not out:
                    select.select([conn], [], [], cfg.sleep_s)
                await advance(idle_chunk)
                if not _parent_alive(cfg.parent_pid):
                    return
    finally:
        if conn is not None:
            conn.close()
        server.close()


# --- cocotb (Icarus / Verilator) -----------------------------------------------------------------

class _CocotbIO:
    def __init__(self, dut):
        self.dut = dut

    async def start(self):
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import RisingEdge
        dut = self.dut
        dut.host_tx__valid.value = 0
        dut.host_rx__ready.value = 0
        # The C++ clock: a Python clock would cost two wake-ups per cycle. We only write signals on
        # falling edges, so its inertial writes cannot race our own.
        Clock(dut.clk, _CLK_NS, unit="ns", impl="gpi").start()
        dut.rst.value = 1
        for _ in range(4):
            await RisingEdge(dut.clk)
        dut.rst.value = 0

    async def exchange(self, to_dev, from_dev):
        """Push and pop bytes one clock cycle at a time until neither side can move."""
        from cocotb.triggers import FallingEdge
        dut = self.dut
        moved = 0
        while True:
            await FallingEdge(dut.clk)   # outputs are stable here on both simulators
            push = bool(to_dev) and bool(dut.host_tx__ready.value)
            pop = bool(dut.host_rx__valid.value)
            if push:
                dut.host_tx__payload.value = to_dev[0]
                del to_dev[0]
            dut.host_tx__valid.value = int(push)
            if pop:
                from_dev.append(int(dut.host_rx__payload.value))
            dut.host_rx__ready.value = int(pop)
            if not (push or pop):
                return moved
            moved += 1

    async def advance(self, cycles):
        from cocotb.triggers import Timer
        await Timer(cycles * _CLK_NS, unit="ns")

    def idle(self):
        return bool(self.dut.idle.value)


async def cocotb_main(dut):
    """The cocotb test that runs the bridge (see ``sim/board_bridge/bridge_bench.py``)."""
    from addershift.sim.runner import bench_params
    cfg = BoardConfig.from_json(bench_params())
    io = _CocotbIO(dut)
    await io.start()
    await bridge(io, cfg)


# --- Amaranth's simulator (the fallback) ---------------------------------------------------------

class _AmaranthIO:
    def __init__(self, ctx, harness):
        self.ctx = ctx
        self.h = harness

    async def exchange(self, to_dev, from_dev):
        ctx, h = self.ctx, self.h
        moved = 0
        while True:
            push = bool(to_dev) and bool(ctx.get(h.host_tx.ready))
            pop = bool(ctx.get(h.host_rx.valid))
            if push:
                ctx.set(h.host_tx.payload, to_dev[0])
                del to_dev[0]
            ctx.set(h.host_tx.valid, int(push))
            if pop:
                from_dev.append(ctx.get(h.host_rx.payload))
            ctx.set(h.host_rx.ready, int(pop))
            await self.ctx.tick()
            if not (push or pop):
                return moved
            moved += 1

    async def advance(self, cycles):
        await self.ctx.tick().repeat(cycles)

    def idle(self):
        return bool(self.ctx.get(self.h.idle))


# --- entry point ---------------------------------------------------------------------------------

def serve(top, *, divisor, port=0, simulator="verilator", ready_file=None, parent_pid=None,
          max_connections=None, host_divisor=None, build_dir=None, work_dir=None, device=None):
    """Run ``top`` (a component with ``rx``/``tx`` pins and UART divisor ``divisor``) as a simulated
    board on ``127.0.0.1:port`` (0 picks a free port, written to ``ready_file`` as JSON). Blocks
    until ``max_connections`` clients have disconnected, the process ``parent_pid`` is gone, or
    forever. The simulator's run folder is made in ``work_dir`` (default: the system's
    temporary folder) and removed unless the run failed. ``device`` (Icarus and Verilator): the
    Verilog elaborated for that device, its vendor cells by Yosys' models (``sim/cells.py``)."""
    if simulator not in SIM_BACKENDS:
        raise ValueError(f"Simulator must be one of {', '.join(SIM_BACKENDS)}, not {simulator!r}")
    if device and simulator == "amaranth":
        raise ValueError(f"Amaranth's simulator cannot run the {device}'s vendor cells: "
                         f"simulate its build on icarus or verilator")
    harness = SimHarness(top, divisor=host_divisor or divisor)
    # The simulator runs in a child process: it stops when we are gone, whatever killed us.
    cfg = BoardConfig(divisor=divisor, port=port, ready_file=str(ready_file) if ready_file else None,
                      parent_pid=parent_pid or os.getpid(), max_connections=max_connections)
    if simulator == "amaranth":
        from amaranth.sim import Simulator

        async def main(ctx):
            await bridge(_AmaranthIO(ctx, harness), cfg)

        sim = Simulator(harness)
        sim.add_clock(_CLK_NS * 1e-9)
        sim.add_testbench(main)
        sim.run()
        return

    from amaranth.back import verilog
    from .cells import Device, models_for
    text = verilog.convert(harness, name="board", emit_src=False,
                           platform=Device(device) if device else None)
    _run_cocotb_board(simulator, text + models_for(text), cfg, build_dir, work_dir)


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "addershift"


def _run_cocotb_board(simulator, verilog_text, cfg, build_dir=None, work_dir=None):
    """Build the harness once per distinct Verilog (cached, under a lock, so parallel boards share
    one build) and run the bridge in a fresh test folder.

    ``sim/runner.py``'s ``run_cocotb`` rebuilds every time and shares one folder between the build
    and the run; a board is started by every test session and by every ``serve-sim``, and a
    Verilator build costs up to a minute here, so the build is kept. The simulator flags still come
    from ``sim/runner.py``.
    """
    import fcntl
    import hashlib
    import tempfile

    import cocotb
    from cocotb_tools.runner import get_results, get_runner

    from addershift.sim import runner as shared
    shared.prepare_environment()
    shared.require_simulator(simulator)
    build_args = list(shared._BUILD_ARGS[simulator])
    # sys.prefix: a build's Makefiles name the Verilator of the venv that made it, which may have
    # been removed since (another checkout's).
    key = hashlib.sha256("\0".join([verilog_text, simulator, repr(build_args), cocotb.__version__,
                                    sys.prefix]).encode()).hexdigest()[:16]
    build_dir = pathlib.Path(build_dir) if build_dir else _cache_dir() / f"board-{simulator}-{key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "board.v"
    run = get_runner(simulator)
    # shared.prepare_environment() above also fixes the wheel's precompiled-header flag.
    with open(build_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not source.exists() or source.read_text() != verilog_text:
            source.write_text(verilog_text)
        # Verilator skips identical inputs by itself; Icarus compares file dates.
        run.build(sources=[source], hdl_toplevel="board", build_args=build_args,
                  build_dir=build_dir, always=False, timescale=("1ns", "1ps"))
    bench = pathlib.Path(__file__).parent / "board_bridge"
    # cocotb's runner hands the simulator sys.path as PYTHONPATH: the bench's folder goes there.
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    test_dir = pathlib.Path(tempfile.mkdtemp(prefix="addershift-board-", dir=work_dir))
    failed = True
    try:
        results = run.test(test_module="bridge_bench", hdl_toplevel="board", build_dir=build_dir,
                           test_dir=test_dir, timescale=("1ns", "1ps"),
                           extra_env={"ADDERSHIFT_BENCH_PARAMS": json.dumps(cfg.to_json())})
        failed = results is not None and get_results(results)[1] > 0
    except KeyboardInterrupt:
        failed = False           # Ctrl-C on serve-sim: the usual way it ends
        raise
    finally:
        # A failed run's folder stays for the message below.
        if not failed:
            shutil.rmtree(test_dir, ignore_errors=True)
    if failed:
        raise RuntimeError(f"the simulated board stopped with an error (see {test_dir})")


class BoardProcess:
    """A simulated board in a child process (for tests, benchmarks and ``addershift run --sim``):
    the link test top, or with ``accelerator`` (an ``hw.config.ArrayConfig`` or its ``to_dict()``)
    the accelerator's top level (``hw.accelerator.AcceleratorTop``), elaborated for ``device`` if
    given (:func:`serve`). Use as a context manager; ``url`` is what the driver opens.

    The child (and the simulator it starts) form their own process group, stopped by ``stop()``;
    they also stop by themselves when this process is gone. Their files (the board log unless
    ``log`` names another place, the simulator's run folder) are in a temporary folder that
    ``stop()`` removes, unless the board failed to start or stopped by itself before: then the
    folder stays for the log.
    """

    def __init__(self, *, simulator="verilator", clock=12_000_000, baud=1_500_000, mem_size=4096,
                 host_baud_error=0.0, startup_timeout=900.0, log=None, accelerator=None,
                 device=None):
        import subprocess
        import tempfile
        if accelerator is not None and not isinstance(accelerator, dict):
            if not hasattr(accelerator, "to_dict"):
                raise TypeError(f"accelerator must be an ArrayConfig or its to_dict(), not "
                                f"{accelerator!r}")
            accelerator = accelerator.to_dict()
        self._dir = pathlib.Path(tempfile.mkdtemp(prefix="addershift-boardproc-"))
        self._ready = self._dir / "ready.json"
        self.log_path = pathlib.Path(log) if log else self._dir / "board.log"
        cmd = [sys.executable, "-m", "addershift.sim.board", "--simulator", simulator,
               "--clock", str(clock), "--baud", str(baud), "--mem-size", str(mem_size),
               "--host-baud-error", repr(host_baud_error),
               "--ready-file", str(self._ready), "--parent-pid", str(os.getpid()),
               "--work-dir", str(self._dir)]
        if accelerator is not None:
            cmd += ["--accelerator", json.dumps(accelerator)]
        if device:
            cmd += ["--device", device]
        self._log = open(self.log_path, "w")
        self.port = None
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        try:
            while not self._ready.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_path.read_text()[-3000:]
                    raise RuntimeError(f"the simulated board did not start (log "
                                       f"{self.log_path}):\n{tail}")
                time.sleep(0.2)
        except KeyboardInterrupt:
            # The board runs in a session of its own (a Ctrl-C meant for the host must not
            # reach it mid-run), so it is stopped here, not left building or serving.
            self.stop()
            raise
        self.port = json.loads(self._ready.read_text())["port"]

    @property
    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    def stop(self):
        import signal
        ended_by_itself = self.proc.poll() is not None
        if not ended_by_itself:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        if self.port is not None and not ended_by_itself:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    """``python -m addershift.sim.board``: serve the link test top, or the accelerator's top level
    with ``--accelerator '{build parameters as JSON}'`` (the CLI's serve-sim serves the latter)."""
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--simulator", choices=SIM_BACKENDS, default="verilator")
    p.add_argument("--clock", type=int, default=12_000_000, help="nominal clock (Hz)")
    p.add_argument("--baud", type=int, default=1_500_000)
    p.add_argument("--mem-size", type=int, default=4096)
    p.add_argument("--ready-file")
    p.add_argument("--parent-pid", type=int)
    p.add_argument("--max-connections", type=int)
    p.add_argument("--host-baud-error", type=float, default=0.0,
                   help="how far off the simulated host's baud rate is (0.02 is 2%% slow)")
    p.add_argument("--work-dir", help="folder for the simulator's run folder (default: the "
                   "system's temporary folder)")
    p.add_argument("--accelerator", metavar="JSON",
                   help="serve the accelerator built with these parameters (ArrayConfig.to_dict)")
    p.add_argument("--device", help="elaborate the Verilog for this device (a board's, such as "
                   "iCE40UP5K): its vendor cells by Yosys' models")
    args = p.parse_args(argv)
    if args.accelerator:
        from addershift.hw.config import ArrayConfig
        top = accelerator_top(ArrayConfig.from_dict(json.loads(args.accelerator)),
                              clock=args.clock, baud=args.baud)
    else:
        from addershift.hw.link_top import LinkTop
        top = LinkTop(clk_freq=args.clock, baud=args.baud, mem_size=args.mem_size,
                      timeout=sim_timeout(args.clock, args.baud))
    serve(top, divisor=top.divisor, port=args.port, simulator=args.simulator,
          ready_file=args.ready_file, parent_pid=args.parent_pid,
          max_connections=args.max_connections,
          host_divisor=round(top.divisor * (1 + args.host_baud_error)), work_dir=args.work_dir,
          device=args.device)


def accelerator_top(config, *, clock=12_000_000, baud=1_500_000):
    """The accelerator's top level (UART pins, framer, core) as the simulated board runs it: the
    framer's idle timeout shortened to :func:`sim_timeout`."""
    from addershift.hw.accelerator import AcceleratorTop
    return AcceleratorTop(config=config, clk_freq=clock, baud=baud,
                          timeout=sim_timeout(clock, baud))


def sim_timeout(clock, baud):
    """The framer's idle timeout on the simulated board: 256 byte times (a real board uses 20 ms,
    which would be seconds of waiting here)."""
    return int(256 * 10 * clock // baud)


if __name__ == "__main__":
    main()
