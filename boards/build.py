"""Board builds: a generic top around any core, the bitstream, its report, and programming.

:class:`BoardTop` puts a core on a :class:`~.board.Board`: the core clock (PLL), reset, the UART pins
and the status LEDs. The core is any :class:`wiring.Component` whose ports are a subset of
``rx: In(1)``, ``tx: Out(1)`` and ``status: Out(n)`` (other names can be mapped with ``ports=``);
any other port is an error, since an undriven input would let synthesis delete logic silently.

:func:`build` runs Amaranth's platform build (Yosys, nextpnr, icepack / ecppack, the YoWASP builds)
with the statistics of :mod:`.report` added (and, given several seeds, nextpnr and the packer
again per seed until one meets the clock), and returns the :class:`~.report.Report`. A build that
misses its clock raises :class:`~.report.TimingError` and its bitstream is renamed
``*.timing-failed.*`` so that ``program`` cannot pick it up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import time

from amaranth.hdl import Elaboratable, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import outreg
from .board import Board, get_board, pin_buffer
from .report import (ecp5_classic_abc, ecp5_retry_opts, read_report, yosys_input_commands,
                     yosys_netlist_problem, yosys_stat_commands)
from .toolchain import ToolError, find_program, last_error, prepare_environment
from ..sw.protocol import DEFAULT_BAUD

__all__ = ["BoardTop", "BuildResult", "DoesNotFit", "DoesNotPlace", "ROUTERS", "build",
           "build_accelerator", "build_array", "build_link", "array_core",
           "multiplier_opts", "MULTIPLIERS", "default_build_dir", "bitstream_path", "program",
           "NoProgrammer", "ProgrammerFailed"]

_PORT_ROLES = ("rx", "tx", "status")


class BoardTop(Elaboratable):
    """Put ``core`` on ``board`` at ``clock_mhz``.

    Parameters
    ----------
    core : wiring.Component or callable
        The design, or a function ``core(clock_hz) -> wiring.Component`` for cores that need the
        achieved clock (a UART's divisor, for example).
    board : Board or str
    clock_mhz : float, optional
        Core clock (default: the board's ``default_clock_mhz``).
    ports : dict, optional
        Role -> core port name, for the roles ``rx``, ``tx`` and ``status`` (default: the same
        names).
    """

    def __init__(self, core, *, board, clock_mhz=None, ports=None):
        # A rejected top is never elaborated: no "created but never used" warning for it.
        self._MustUse__silence = True
        if isinstance(board, str):
            board = get_board(board)
        if not isinstance(board, Board):
            raise TypeError(f"Board must be a Board or a board name, not {board!r}")
        if clock_mhz is None:
            clock_mhz = board.default_clock_mhz
        self._achieved = board.check_clock(clock_mhz)
        ports = dict(ports or {})
        for role in ports:
            if role not in _PORT_ROLES:
                raise ValueError(f"Port role must be one of {', '.join(_PORT_ROLES)}, not {role!r}")
        self._ports = {role: ports.get(role, role) for role in _PORT_ROLES}
        if callable(core) and not isinstance(core, Elaboratable):
            core = core(self._achieved * 1e6)
        if not isinstance(core, wiring.Component):
            raise TypeError(f"Core must be a wiring.Component, not {core!r}")
        expected = {"rx": (In, 1), "tx": (Out, 1), "status": (Out, None)}
        members = dict(core.signature.members)
        by_name = {name: role for role, name in self._ports.items()}
        for name, member in members.items():
            if name not in by_name:
                raise ValueError(f"Core port {name!r} has no board connection; a core on a board "
                                 f"may only have {', '.join(self._ports.values())}")
            role = by_name[name]
            flow, width = expected[role]
            if not member.is_port or member.flow != flow \
                    or (width is not None and Value.cast(getattr(core, name)).shape().width != width):
                raise ValueError(f"Core port {name!r} ({member!r}) cannot be the board's {role}: "
                                 f"it must be {flow.name}({width or 'n'})")
        self._core = core
        self._board = board
        self._clock_mhz = clock_mhz
        self._MustUse__silence = False

    @property
    def core(self):
        return self._core

    @property
    def board(self):
        return self._board

    @property
    def clock_mhz(self):
        """The core clock the PLL really produces, in MHz."""
        return self._achieved

    def _core_port(self, role):
        name = self._ports[role]
        return getattr(self._core, name) if name in self._core.signature.members else None

    def elaborate(self, platform):
        m = Module()
        board = self._board
        achieved, locked = board.add_clock(m, platform, self._clock_mhz)
        m.submodules.core = self._core

        rx, tx = self._core_port("rx"), self._core_port("tx")
        if rx is not None or tx is not None:
            uart = platform.request(board.uart, 0, dir="-")
            uart_rx = pin_buffer(m, "uart_rx", "i", uart.rx)
            uart_tx = pin_buffer(m, "uart_tx", "o", uart.tx)
            if rx is not None:
                m.d.comb += rx.eq(uart_rx.i)
            if tx is not None:
                m.d.comb += uart_tx.o.eq(tx)
            else:
                m.d.comb += uart_tx.o.eq(1)   # idle line

        leds = [pin_buffer(m, f"led{i}", "o", platform.request("led", i, dir="-"))
                for i in range(board.led_count)]
        # Heartbeat: the top bit of a counter that wraps about once a second.
        beat = Signal(max(1, round(achieved * 1e6).bit_length() - 1))
        m.d.sync += beat.eq(beat + 1)
        m.d.comb += leds[board.heartbeat_led].o.eq(beat[-1])
        status = self._core_port("status")
        status_bits = [] if status is None else list(Value.cast(status))
        lock_led = getattr(board, "lock_led", None)
        if lock_led is not None:
            m.d.comb += leds[lock_led].o.eq(locked)
        if status_bits:
            for led, bit in zip(leds[board.status_led:], status_bits):
                m.d.comb += led.o.eq(bit)
        elif lock_led is None:
            m.d.comb += leds[board.status_led].o.eq(~locked)
        return m


@dataclasses.dataclass
class BuildResult:
    """What :func:`build` produced: the report, the bitstream (None when timing failed) and the
    folder with every intermediate file."""
    report: object
    bitstream: pathlib.Path | None
    build_dir: pathlib.Path

    def to_dict(self):
        return {**self.report.to_dict(), "bitstream": None if self.bitstream is None
                else str(self.bitstream), "build_dir": str(self.build_dir)}


def default_build_dir(board):
    """``build/<board>``: the folder ``build`` writes to and ``program`` reads from."""
    name = board.name if isinstance(board, Board) else str(board)
    return pathlib.Path("build") / name


def bitstream_path(board, build_dir=None, name="top"):
    board = get_board(board) if isinstance(board, str) else board
    return pathlib.Path(build_dir or default_build_dir(board)) / f"{name}{board.bitstream_suffix}"


#: The exit status :func:`_run_platform_build` gives when it stopped Yosys at ``synth_timeout``.
SYNTH_TIMED_OUT = -1000

#: How long the ECP5 ``-dff`` retry may synthesise before the build stops it and goes on to
#: classic ABC. Where that retry maps a netlist ABC9 could not (small arrays) it takes seconds;
#: where it fails too (the 8x8 and 16x16 accelerators) it took 25-35 minutes to do so.
DFF_RETRY_TIMEOUT_S = 600


def _run_platform_build(top, board, name, build_dir, log, *, synth_opts, after_read, after_synth,
                        nextpnr_opts, bram_outreg, synth_timeout=None):
    """Write Amaranth's build files for ``top`` into ``build_dir`` and run its script there;
    return the exit status (output in ``log``), or :data:`SYNTH_TIMED_OUT` when Yosys had not
    finished after ``synth_timeout`` seconds (the script is then stopped)."""
    plan = board.platform(bram_outreg=bram_outreg).prepare(
        top, name,
        synth_opts=" ".join(synth_opts),
        script_after_read="\n".join(after_read),
        script_after_synth="\n".join(after_synth),
        nextpnr_opts=nextpnr_opts)
    plan.extract(build_dir)
    env = {**os.environ, **board.build_env()}
    rpt = build_dir / f"{name}.rpt"
    rpt.unlink(missing_ok=True)       # an earlier attempt's log must not look finished
    with open(log, "w") as f:
        proc = subprocess.Popen(["sh", f"build_{name}.sh"], cwd=build_dir, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        return _wait_for_build(proc, rpt, synth_timeout)


def _wait_for_build(proc, yosys_log, synth_timeout, poll_s=2.0):
    """Wait for the build script ``proc`` (started in its own session); stop it and all its
    tools when Yosys (``yosys_log``) has not finished ``synth_timeout`` seconds after the start,
    and when this process is interrupted."""
    deadline = None if synth_timeout is None else time.monotonic() + synth_timeout
    try:
        while True:
            try:
                return proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                if deadline is None or time.monotonic() < deadline:
                    continue
                if _yosys_finished(yosys_log):
                    deadline = None          # place and route have no time limit
                    continue
                _stop(proc)
                return SYNTH_TIMED_OUT
    except BaseException:
        _stop(proc)
        raise


def _stop(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _yosys_finished(log):
    """Whether Yosys's log (Amaranth's build writes it to ``{name}.rpt``) reached its end."""
    return log.exists() and "End of script." in log.read_text(errors="replace")


def _yosys_failed(log):
    """Why synthesis failed (Yosys stopped, or wrote a netlist nextpnr cannot take), or None."""
    if not _yosys_finished(log):
        return "Yosys failed"
    return yosys_netlist_problem(log.read_text(errors="replace"))


class DoesNotFit(ToolError):
    """The design needs more cells than the device has (nextpnr's utilisation): ``overflows``
    lists every ``(cell type, needed, available)`` over 100 %, ``cell``, ``needed`` and
    ``available`` are the first of them."""

    def __init__(self, message, *, cell, needed, available, overflows=None):
        super().__init__(message)
        self.cell, self.needed, self.available = cell, needed, available
        self.overflows = list(overflows or [(cell, needed, available)])


#: Block RAM cell types: an overflow of these asks for fewer memories, not less logic.
BLOCK_RAM_CELLS = ("DP16KD", "ICESTORM_RAM")
#: nextpnr's words when a packed design within the device's totals finds no legal placement: the
#: heap placer's (two: the fit study's logs of 2026-11 also have its region expansion's), and the
#: simulated-annealing one's (``--placer sa``) for a carry chain or a cell.
NO_LEGAL_PLACEMENT = re.compile(r"Unable to find legal placement|Failed to expand region|"
                                r"failed to place (chain starting at )?cell")
# The counts that say how full a design is: logic cells and block RAMs (global buffers and the
# PLL read 100 % in most builds, and more of them is not what a smaller array needs).
_FILL_CELLS = ("ICESTORM_LC", "TRELLIS_COMB", "TRELLIS_FF", *BLOCK_RAM_CELLS)


class DoesNotPlace(DoesNotFit):
    """The packed design is within the device's totals, but nextpnr found no legal placement
    for it: ``cell``, ``needed`` and ``available`` are its fullest logic-cell or block RAM count
    (``overflows`` holds that one)."""


def _utilisation(log_text):
    """``[(cell type, used, available)]`` of nextpnr's device utilisation."""
    return [(cell, int(used), int(total))
            for cell, used, total in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%",
                                                log_text, re.M)]


def _overflows(log_text):
    """``[(cell type, used, available)]`` of every resource nextpnr found over 100 %."""
    return [u for u in _utilisation(log_text) if u[1] > u[2]]


def _fullest(log_text):
    """The logic-cell or block RAM count nearest its device's total, or None."""
    fills = [u for u in _utilisation(log_text) if u[0] in _FILL_CELLS and u[2] > 0]
    return max(fills, key=lambda u: u[1] / u[2], default=None)


def too_full(log_text):
    """Whether nextpnr's log says the design is too big for the device: a count over its total,
    or no legal placement found (any other failure is the tools', not the design's size)."""
    return bool(_overflows(log_text)) or bool(NO_LEGAL_PLACEMENT.search(log_text))


def _seed_list(seed):
    """``seed`` (an int, or a sequence of them) as a tuple of distinct ints."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = (seed,)
    else:
        try:
            seeds = tuple(seed)
        except TypeError:
            seeds = ()
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"Seed must be an integer or a list of them, not {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"Seeds must differ, not {', '.join(map(str, seeds))}")
    if any(not -2**31 <= s < 2**31 for s in seeds):     # nextpnr's --seed is a 32-bit int
        raise ValueError(f"Seeds must be 32-bit integers (-2147483648 to 2147483647), not "
                         f"{', '.join(map(str, seeds))}")
    return seeds


#: What one place-and-route run writes: nextpnr's report and log, its placed design, bitstreams.
_PLACED_SUFFIXES = (".report.json", ".tim", ".asc", ".config", ".bin", ".bit", ".svf")


def _placed_files(build_dir, name):
    return [build_dir / f"{name}{suffix}" for suffix in _PLACED_SUFFIXES
            if (build_dir / f"{name}{suffix}").exists()]


def _move_placed(name, source, dest):
    """Move one place-and-route run's files from folder ``source`` to folder ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in _placed_files(source, name):
        path.replace(dest / path.name)


def _place_again(board, name, build_dir, log, seed):
    """Place, route and pack the synthesised netlist again with nextpnr's ``seed``.

    The commands are the nextpnr and pack lines of Amaranth's own build script (with its tool
    variables), so a new seed runs exactly what the first did; Yosys and the netlist passes
    that rewrite ``{name}.json`` (:mod:`.outreg`, :mod:`.carry_ends`) do not run again.
    """
    script = (build_dir / f"build_{name}.sh").read_text().splitlines()
    keep = [line for line in script
            if line.startswith(("set ", "[ ", ": ")) or line.startswith(('"$NEXTPNR', '"$ICEPACK',
                                                                         '"$ECPPACK'))]
    if not any(line.startswith('"$NEXTPNR') for line in keep):
        raise ToolError(f"no nextpnr command in {build_dir / f'build_{name}.sh'} to place with "
                        f"--seed {seed}")
    keep = [re.sub(r"--seed -?\d+", f"--seed {seed}", line) for line in keep]
    (build_dir / f"place_{name}.sh").write_text("\n".join(keep) + "\n")
    env = {**os.environ, **board.build_env()}
    with open(log, "a") as f:
        f.write(f"\n--- place and route again with --seed {seed} ---\n")
        f.flush()
        proc = subprocess.Popen(["sh", f"place_{name}.sh"], cwd=build_dir, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        returncode = _wait_for_build(proc, build_dir / f"{name}.rpt", None)
    if returncode != 0:
        raise ToolError(f"the {board.name} build failed placing with --seed {seed}: "
                        f"{last_error(log, default='see the log')} (log: {log})")


def _fastest_seed(board, name, build_dir, log, seeds, placed_report):
    """Place and route with each of ``seeds`` after the first (already run) until one meets the
    clock; keep the fastest run's files in ``build_dir`` and the others' in ``seeds/<seed>/``.

    ``placed_report()`` reads the :class:`~.report.Report` of the run whose files are in place.
    Returns the fastest run's report, its seed and ``{seed: Fmax}`` of every run.
    """
    # ``report`` is the fastest run so far (``kept``), ``last`` the run whose files are in place.
    report, kept, last = placed_report(), seeds[0], seeds[0]
    fmax_by_seed = {last: report.fmax}
    for next_seed in seeds[1:]:
        if report.timing_met is not False:
            break
        _move_placed(name, build_dir, build_dir / "seeds" / str(last))
        _place_again(board, name, build_dir, log, next_seed)
        placed, last = placed_report(), next_seed
        fmax_by_seed[last] = placed.fmax
        if placed.fmax is not None and (report.fmax is None or placed.fmax > report.fmax):
            report, kept = placed, last
    if kept != last:
        _move_placed(name, build_dir, build_dir / "seeds" / str(last))
        _move_placed(name, build_dir / "seeds" / str(kept), build_dir)
        (build_dir / "seeds" / str(kept)).rmdir()
    for other in fmax_by_seed.keys() - {kept}:
        # Every run but the kept one missed the clock: `program` must not load its bitstream.
        slow = bitstream_path(board, build_dir / "seeds" / str(other), name)
        slow.replace(slow.with_suffix(f".timing-failed{board.bitstream_suffix}"))
    return report, kept, fmax_by_seed


ROUTERS = ("router1", "router2")
PLACERS = ("heap", "sa", "static")


def _check_build_dir(build_dir, name):
    """A ``ValueError`` unless ``build_dir`` is new, empty or an earlier build's folder: a build
    replaces the files of its own there (and an earlier bitstream goes first), so a folder of
    other files (``-o .`` in a project) is refused rather than written into."""
    if build_dir.exists() and not build_dir.is_dir():
        raise ValueError(f"build folder {build_dir} is a file")
    if not build_dir.exists() or not any(build_dir.iterdir()):
        return
    markers = (f"build_{name}.sh", f"{name}.il", f"{name}.addershift.json")
    if not any((build_dir / marker).exists() for marker in markers):
        raise ValueError(f"build folder {build_dir} holds other files and no earlier build "
                         f"({', '.join(markers)}): give a new or empty folder")


def _remove_seed_folders(build_dir):
    """Remove an earlier build's placements of other seeds (``seeds/<seed>/``), and nothing else
    that may be in ``seeds/``."""
    seeds = build_dir / "seeds"
    if not seeds.is_dir():
        return
    for folder in seeds.iterdir():
        if folder.is_dir() and folder.name.isdigit():
            shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        seeds.rmdir()         # only when nothing else is left in it


def build(core, *, board, clock_mhz=None, build_dir=None, name="top", ports=None, design=None,
          harness=None, seed=1, router=None, placer=None, synth_opts=(), check_timing=True,
          extra=None, bram_outreg=True, late_endpoints=False):
    """Build ``core`` for ``board``: bitstream and :class:`~.report.Report`.

    ``bram_outreg`` (ECP5 only; iCE40 block RAMs have no output register): move the registers
    after block RAMs into the block RAMs' output registers (:mod:`.outreg`), which take about
    1 ns from clock to data instead of the 5.8 ns of an unregistered output, and those after
    multipliers into the MULT18X18Ds' own.

    ``router`` picks nextpnr's router (:data:`ROUTERS`; None: nextpnr's default, router1).
    router2 finished a 32x32 ECP5 array (71 % of the chip) that router1 had not routed after
    25 minutes. ``placer`` picks nextpnr's placer (:data:`PLACERS`; None: nextpnr's default,
    heap).

    ``seed``: nextpnr's seed, or a sequence of seeds: the netlist is then placed and routed
    with each in turn until one meets the clock, and the fastest run's files are kept (the
    others' in ``seeds/<seed>/`` of ``build_dir``). Large ECP5 builds differ by up to 25 MHz
    between seeds of one netlist (docs/board_log.md, "Placement").

    ``late_endpoints``: have nextpnr time every net (``--detailed-timing-report``, a report of
    about 30 MB for a full ECP5-85F) and add the endpoints that miss the clock, counted by
    register and by net (:mod:`.late_endpoints`), to the report.

    The report is also written to ``{name}.addershift.json`` in ``build_dir`` (default
    ``build/<board>``). With ``check_timing`` (the default) a build that misses ``clock_mhz`` raises
    :class:`~.report.TimingError` after writing the report.
    """
    if isinstance(board, str):
        board = get_board(board)
    seeds = _seed_list(seed)
    if router is not None and router not in ROUTERS:
        raise ValueError(f"Router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if placer is not None and placer not in PLACERS:
        raise ValueError(f"Placer must be one of {', '.join(PLACERS)}, not {placer!r}")
    top = BoardTop(core, board=board, clock_mhz=clock_mhz, ports=ports)
    build_dir = pathlib.Path(build_dir or default_build_dir(board))
    _check_build_dir(build_dir, name)
    build_dir.mkdir(parents=True, exist_ok=True)
    bitstream = bitstream_path(board, build_dir, name)
    failed_bitstream = bitstream.with_suffix(f".timing-failed{board.bitstream_suffix}")
    # A failed build must not leave an earlier bitstream behind for `program` to load, nor an
    # earlier nextpnr log or report for its failure to be read from (a Yosys error would be
    # reported as the last placement's "does not fit").
    for stale in (bitstream, failed_bitstream, build_dir / f"{name}.addershift.json",
                  build_dir / f"{name}.tim", build_dir / f"{name}.report.json"):
        stale.unlink(missing_ok=True)
    _remove_seed_folders(build_dir)
    prepare_environment()

    after_read, after_synth = yosys_stat_commands(name)
    after_read = [*yosys_input_commands(), *after_read]
    synth_opts = tuple(synth_opts)
    if board.family == "ecp5" and "-nowidelut" not in synth_opts:
        # Measured in docs/cost.md: never larger than with wide-LUT muxes, 2-3 % smaller for shift.
        synth_opts = synth_opts + ("-nowidelut",)
    bram_outreg = bool(bram_outreg) and board.family == "ecp5"
    nextpnr_opts = f"--report {name}.report.json --timing-allow-fail --seed {seeds[0]}"
    if router is not None:
        nextpnr_opts += f" --router {router}"
    if placer is not None:
        nextpnr_opts += f" --placer {placer}"
    if late_endpoints:
        nextpnr_opts += " --detailed-timing-report"
    notes = {}
    log = build_dir / f"{name}.build.log"
    returncode = _run_platform_build(top, board, name, build_dir, log, synth_opts=synth_opts,
                                     after_read=after_read, after_synth=after_synth,
                                     nextpnr_opts=nextpnr_opts, bram_outreg=bram_outreg)
    retry = ecp5_retry_opts(board.family, synth_opts)
    rpt = build_dir / f"{name}.rpt"
    failure = _yosys_failed(rpt) if returncode != 0 else None
    if failure and retry is not None:
        notes["synth"] = (f"synth_ecp5 {' '.join(retry)}: {failure} without "
                          f"{' '.join(o for o in retry if o not in synth_opts)}")
        synth_opts = retry
        returncode = _run_platform_build(top, board, name, build_dir, log, synth_opts=synth_opts,
                                         after_read=after_read, after_synth=after_synth,
                                         nextpnr_opts=nextpnr_opts, bram_outreg=bram_outreg,
                                         synth_timeout=DFF_RETRY_TIMEOUT_S)
        if returncode == SYNTH_TIMED_OUT:
            notes["synth"] = (f"classic ABC (abc -lut 4): Yosys' ABC9 failed, and with -dff had "
                              f"not finished after {DFF_RETRY_TIMEOUT_S // 60} minutes")
        elif returncode != 0 and _yosys_failed(rpt):
            notes["synth"] = "classic ABC (abc -lut 4): Yosys' ABC9 failed with and without -dff"
        if returncode != 0 and _yosys_failed(rpt):
            synth_opts, mapping = ecp5_classic_abc(synth_opts, name)
            returncode = _run_platform_build(top, board, name, build_dir, log,
                                             synth_opts=synth_opts, after_read=after_read,
                                             after_synth=[*mapping, *after_synth],
                                             nextpnr_opts=nextpnr_opts, bram_outreg=bram_outreg)
    if returncode != 0 and board.family == "ice40" and "of type 'SB_GB'" in log.read_text():
        # iCE40 global networks each feed only some pin kinds (clock enable or reset); nextpnr's
        # greedy promotion can ask for more of one kind than remain beside the PLL's. Routing
        # those nets in the fabric instead always places.
        notes["globals"] = "not promoted: nextpnr could not place its global buffers"
        returncode = _run_platform_build(top, board, name, build_dir, log, synth_opts=synth_opts,
                                         after_read=after_read, after_synth=after_synth,
                                         nextpnr_opts=nextpnr_opts + " --no-promote-globals",
                                         bram_outreg=bram_outreg)
    if returncode != 0:
        # First line: what went wrong, for a one-line CLI error; then the log's tail.
        text = log.read_text(errors="replace")
        tail = "\n".join(text.splitlines()[-30:])
        tim = build_dir / f"{name}.tim"         # nextpnr's own log
        tim_text = tim.read_text(errors="replace") if tim.exists() else ""
        overs = _overflows(tim_text)
        fullest = _fullest(tim_text) if NO_LEGAL_PLACEMENT.search(tim_text) else None
        if fullest and not overs:
            cell, used, total = fullest
            how = ""
            if placer == "sa" and board.family == "ice40":
                # (Measured: docs/boards.md, "Placement".)
                how = (" with its simulated-annealing placer, which fails to legalise iCE40 "
                       "designs that its default placer places")
            raise DoesNotPlace(f"the {board.name} build does not place on the {board.device}: it "
                               f"packs into {used} {cell} of {total} ({100 * used / total:.1f}%), "
                               f"and nextpnr found no legal placement for it{how} "
                               f"(log: {log})\n{tail}", cell=cell, needed=used, available=total)
        if overs:
            needs = " and ".join(f"{used} {cell} of {total} ({100 * used / total:.0f}%)"
                                 for cell, used, total in overs)
            cell, used, total = overs[0]
            raise DoesNotFit(f"the {board.name} build does not fit the {board.device}: it needs "
                             f"{needs} (log: {log})\n{tail}", cell=cell, needed=used,
                             available=total, overflows=overs)
        # A netlist Yosys should not have written: say so, not only what nextpnr made of it.
        cause = yosys_netlist_problem(rpt.read_text(errors="replace")) if rpt.exists() else None
        raise ToolError(f"the {board.name} build failed: "
                        f"{cause or last_error(log, default='see the log')} (log: {log})\n{tail}")

    def placed_report():
        return read_report(build_dir, prefix=name, design=design or type(top.core).__name__,
                           target=board.name, family=board.family, device=board.device,
                           synth_opts=synth_opts, clock_mhz=top.clock_mhz, harness=harness,
                           late=late_endpoints)

    report, kept, fmax_by_seed = _fastest_seed(board, name, build_dir, log, seeds, placed_report)
    cfg = board.pll_config(clock_mhz if clock_mhz is not None else board.default_clock_mhz)
    report.extra.update({"requested_clock_mhz": clock_mhz or board.default_clock_mhz,
                         "router": router or "router1", "placer": placer or "heap",
                         "seed": kept,
                         **({"fmax_by_seed": {str(s): None if f is None else round(f, 2)
                                              for s, f in fmax_by_seed.items()}}
                            if len(fmax_by_seed) > 1 else {}),
                         "pll": None if cfg is None else dataclasses.asdict(cfg),
                         **notes, **(extra or {})})
    if bram_outreg:
        text = log.read_text(errors="replace")
        moved, mults = outreg.read_log(text), outreg.read_log(text, outreg.MULTREG_LOG)
        if moved is None or mults is None:
            raise ToolError(f"the {board.name} build ran without its output register step "
                            f"(boards/outreg.py; log: {log})")
        report.note_moved_registers(moved, mults)
    failed = report.timing_met is False
    if failed and bitstream.exists():
        bitstream.replace(failed_bitstream)
    result = BuildResult(report, None if failed else bitstream, build_dir)
    (build_dir / f"{name}.addershift.json").write_text(json.dumps(result.to_dict(), indent=1))
    if failed and check_timing:
        report.check_timing()
    return result


# --- the array build (until the full accelerator exists) ----------------------------------------

def array_core(*, pe, rows, cols, **kwargs):
    """The systolic array of ``pe`` kind in a :class:`~.harness.SerialHarness` (UART rx feeds its
    input chain, tx carries its output parity): the array with registered I/O on two pins."""
    from ..hw.array import SystolicArray
    from .harness import SerialHarness
    return SerialHarness(SystolicArray(kind=pe, rows=rows, cols=cols, **kwargs))


MULTIPLIERS = ("dsp", "luts")


def multiplier_opts(family, multipliers):
    """Synthesis options that put multipliers on DSP blocks (``"dsp"``) or in LUTs (``"luts"``).

    Amaranth runs ``synth_ice40`` without ``-dsp`` (multipliers in LUTs); ``synth_ecp5`` maps them
    to MULT18X18D unless given ``-nodsp``. With ``"dsp"`` a DSP count of zero also shows that
    Yosys found no multiplier to put there.
    """
    if multipliers not in MULTIPLIERS:
        raise ValueError(f"Multipliers must be one of {', '.join(MULTIPLIERS)}, not {multipliers!r}")
    if family == "ice40":
        return ("-dsp",) if multipliers == "dsp" else ()
    return () if multipliers == "dsp" else ("-nodsp",)


def build_array(*, board, pe, rows, cols, clock_mhz=None, build_dir=None, seed=1, router=None,
                placer=None, multipliers="dsp", check_timing=True, bram_outreg=True,
                late_endpoints=False, **array_kwargs):
    """Build the ``rows`` x ``cols`` array of ``pe`` kind for ``board`` (see :func:`array_core`),
    with multipliers on DSP blocks or in LUTs (:func:`multiplier_opts`)."""
    if isinstance(board, str):
        board = get_board(board)
    # Checked before anything is constructed, so a bad clock leaves no half-built design behind.
    board.check_clock(board.default_clock_mhz if clock_mhz is None else clock_mhz)
    synth_opts = multiplier_opts(board.family, multipliers)
    harness = array_core(pe=pe, rows=rows, cols=cols, **array_kwargs)
    return build(harness, board=board, clock_mhz=clock_mhz, build_dir=build_dir,
                 ports={"rx": "si", "tx": "so"}, design=f"{pe} array {rows}x{cols}",
                 harness=harness.cost, seed=seed, router=router, placer=placer,
                 synth_opts=synth_opts,
                 check_timing=check_timing, bram_outreg=bram_outreg,
                 late_endpoints=late_endpoints,
                 extra={"pe": pe, "rows": rows, "cols": cols, "multipliers": multipliers,
                        "contents": "array + I/O harness"})


def build_accelerator(*, board, config, clock_mhz=None, baud=DEFAULT_BAUD, build_dir=None, seed=1,
                      router=None, placer=None, multipliers="dsp", check_timing=True,
                      bram_outreg=True, late_endpoints=False):
    """Build the accelerator (:class:`~addershift.hw.accelerator.AcceleratorTop`: UART, host
    link framer and the core of ``config``, a ``hw.config.ArrayConfig``) for ``board``, at
    ``clock_mhz`` (default: the board's ``accelerator_clocks`` for the PE kind), placed by
    ``placer`` (default: the board's ``accelerator_placers`` for the PE kind)."""
    from ..hw.accelerator import AcceleratorTop
    from ..hw.uart import uart_divisor
    if isinstance(board, str):
        board = get_board(board)
    clock_mhz = board.accelerator_clock(config.pe.value, clock_mhz)
    placer = board.accelerator_placer(config.pe.value, placer)
    achieved = board.check_clock(clock_mhz)
    uart_divisor(clk_freq=achieved * 1e6, baud=baud)   # a bad baud rate fails before the build
    c = config
    return build(lambda clock_hz: AcceleratorTop(config=c, clk_freq=int(round(clock_hz)), baud=baud),
                 board=board, clock_mhz=clock_mhz, build_dir=build_dir,
                 design=f"accelerator {c.pe.value} {c.rows}x{c.cols}", seed=seed, router=router,
                 placer=placer,
                 synth_opts=multiplier_opts(board.family, multipliers), check_timing=check_timing,
                 bram_outreg=bram_outreg, late_endpoints=late_endpoints,
                 extra={"contents": "accelerator: UART + framer + core", "baud": baud,
                        "pe": c.pe.value, "rows": c.rows, "cols": c.cols,
                        "requant_mode": c.requant_mode.value, "multipliers": multipliers,
                        "build_hash": c.build_hash})


def build_link(*, board, clock_mhz=None, baud=DEFAULT_BAUD, build_dir=None, seed=1, router=None,
               placer=None, check_timing=True, bram_outreg=True, late_endpoints=False):
    """Build the host link's test top (:class:`~addershift.hw.link_top.LinkTop`: UART, framer
    and a scratch device) for ``board``: a bitstream the host driver can talk to over the board's
    UART before the accelerator exists. Its clock by default: the board's ``link_clock_mhz``."""
    from ..hw.link_top import LinkTop
    if isinstance(board, str):
        board = get_board(board)
    if clock_mhz is None:
        clock_mhz = board.link_clock_mhz
    achieved = board.check_clock(clock_mhz)
    from ..hw.uart import uart_divisor
    uart_divisor(clk_freq=achieved * 1e6, baud=baud)   # a bad baud rate fails before the build
    return build(lambda clock_hz: LinkTop(clk_freq=int(round(clock_hz)), baud=baud),
                 board=board, clock_mhz=clock_mhz, build_dir=build_dir, design="host link top",
                 seed=seed, router=router, placer=placer, check_timing=check_timing,
                 bram_outreg=bram_outreg, late_endpoints=late_endpoints,
                 extra={"contents": "UART + framer + scratch device", "baud": baud})


# --- programming --------------------------------------------------------------------------------

class NoProgrammer(RuntimeError):
    """No programming tool is installed; ``commands`` holds the command lines to run by hand."""

    def __init__(self, board, bitstream, commands):
        self.commands = commands
        super().__init__(f"no programmer for {board.name} is installed "
                         f"({', '.join(c.tool for c in board.program_commands())})")


class ProgrammerFailed(RuntimeError):
    """The programming tool ran and failed (no board plugged in, say); the message has its
    command line."""


def program(*, board, bitstream=None, dry_run=False):
    """Load ``bitstream`` (default: the last build's) onto ``board`` with the first installed tool.

    Returns the command line that ran (or would run, with ``dry_run``). Raises
    :class:`FileNotFoundError` without a bitstream, :class:`ValueError` for a file that is not
    one of the board's family (no ``Board.bitstream_sync`` in its first 4 KiB),
    :class:`NoProgrammer` without a tool and :class:`ProgrammerFailed` when the tool fails.
    """
    if isinstance(board, str):
        board = get_board(board)
    bitstream = pathlib.Path(bitstream or bitstream_path(board))
    if not bitstream.exists():
        failed = bitstream.with_suffix(f".timing-failed{board.bitstream_suffix}")
        hint = (f"the build there missed its clock ({failed.name}): rebuild at a lower --clock"
                if failed.exists() else "build one")
        raise FileNotFoundError(f"no bitstream at {bitstream}: {hint} with "
                                f"`addershift build --board {board.name}`")
    if not bitstream.is_file():
        raise ValueError(f"{bitstream} is not a file")
    with open(bitstream, "rb") as f:
        head = f.read(4096)
        if board.bitstream_sync not in head:
            raise ValueError(f"{bitstream} is not a bitstream of the {board.name}'s FPGA "
                             f"family, {board.family} (no sync word "
                             f"{board.bitstream_sync.hex()}): it takes the "
                             f"top{board.bitstream_suffix} of `addershift build --board "
                             f"{board.name}`")
    check = board.bitstream_id
    at = head.find(check[:4]) if check else -1
    if at >= 0 and head[at:at + len(check)] != check:
        # Another device of the family: its programmer would refuse it with a JTAG error.
        raise ValueError(f"{bitstream} was built for another {board.family} device (ID "
                         f"{head[at + 4:at + len(check)].hex()}), not the {board.name}'s "
                         f"{board.device} ({check[4:].hex()}): build it with `addershift build "
                         f"--board {board.name}`")
    for cmd in board.program_commands():
        exe = find_program(cmd.tool)
        if exe is None:
            continue
        argv = [exe, *cmd.argv(str(bitstream))[1:]]
        if not dry_run:
            done = subprocess.run(argv)
            if done.returncode != 0:
                raise ProgrammerFailed(f"{cmd.tool} failed (exit status {done.returncode}; its "
                                       f"output is above; is the board plugged in?): "
                                       f"{shlex.join(argv)}")
        return argv
    raise NoProgrammer(board, bitstream, [c.text(str(bitstream)) for c in board.program_commands()])
