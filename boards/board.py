"""What addershift needs from a board: its platform, core clock, UART, LEDs and programmers.

One :class:`Board` subclass per board module (``icebreaker.py``, ``ulx3s.py``) wraps an
amaranth-boards platform; :func:`get_board` looks one up by the name ``--board`` takes. Every pin
is reached through ``platform.request``, so a top that uses a board also elaborates without one.
"""

from __future__ import annotations

import math

from amaranth.hdl import ClockDomain, Const, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["Board", "BOARDS", "register", "get_board", "ProgramCommand", "pin_buffer"]

#: Board name -> Board instance, filled by the board modules (see :func:`get_board`).
BOARDS = {}


def register(board):
    BOARDS[board.name] = board
    return board


def get_board(name):
    """The :class:`Board` called ``name`` (``icebreaker``, ``ulx3s-85f``, ...)."""
    # Importing the board modules registers them.
    from . import icebreaker, ulx3s  # noqa: F401
    if name not in BOARDS:
        raise ValueError(f"Board must be one of {', '.join(sorted(BOARDS))}, not {name!r}")
    return BOARDS[name]


def pin_buffer(m, name, direction, port):
    """Add an ``io.Buffer`` for ``port`` (from ``platform.request(..., dir="-")``) as submodule
    ``name``; returns the buffer (its ``i`` / ``o``)."""
    buf = io.Buffer(direction, port)
    m.submodules[name] = buf
    return buf


class ProgramCommand:
    """One way to load a bitstream: the tool and its argument list (``{bitstream}`` filled in)."""

    def __init__(self, tool, args, what):
        self.tool = tool
        self.args = tuple(args)
        self.what = what

    def argv(self, bitstream):
        return [self.tool, *(a.format(bitstream=bitstream) for a in self.args)]

    def text(self, bitstream):
        import shlex
        return shlex.join(self.argv(bitstream))


class Board:
    """A supported board. Subclasses set the class attributes and :meth:`_pll`.

    Attributes
    ----------
    name : str
        What ``--board`` takes.
    family, device : str
        ``"ice40"`` / ``"ecp5"`` and the FPGA as Amaranth spells it.
    oscillator_mhz : float
        The board's clock input.
    default_clock_mhz : float
        Core clock when ``--clock`` is not given.
    accelerator_builds : dict
        PE kind -> the accelerator ``addershift build`` makes for that kind when its options are
        not given: ``ArrayConfig`` keyword arguments (array shape, requantiser lanes, pipelines),
        each measured to fit the device and meet its clock (``accelerator_clocks``;
        ``docs/boards.md``). Memory depths in it are the least a build gets: a model that needs
        more gets more.
    accelerator_clocks : dict
        PE kind -> the accelerator's core clock when ``--clock`` is not given (a kind not in it:
        ``default_clock_mhz``).
    link_clock_mhz : float
        The host link's test top's core clock when ``--clock`` is not given (the fastest it
        meets with placement seeds 1-3; ``docs/boards.md``).
    accelerator_placers : dict
        PE kind -> nextpnr's placer for its accelerator when ``--placer`` is not given (a kind
        not in it: nextpnr's default, heap).
    clock_resource : str
        The amaranth-boards resource of the oscillator.
    led_count : int
        User LEDs that the top drives (heartbeat, lock, core status).
    reset_button : (str, int) or None
        A button resource that resets the core while held.
    bitstream_suffix : str
        ``.bin`` (iCE40) or ``.bit`` (ECP5).
    bitstream_sync : bytes
        The family's synchronisation word, near the start of every bitstream of it (after a
        comment block): how ``program`` tells a bitstream from another file.
    bitstream_id : bytes or None
        The device's ID as the bitstream's check command carries it (ECP5: ``VERIFY_ID``,
        ``e2 00 00 00`` and the IDCODE), so that ``program`` refuses another device's bitstream.
    """

    name = None
    family = None
    device = None
    oscillator_mhz = None
    default_clock_mhz = None
    accelerator_builds = {}
    accelerator_clocks = {}
    link_clock_mhz = None
    accelerator_placers = {}
    clock_resource = None
    led_count = 0
    reset_button = None
    bitstream_suffix = None
    bitstream_sync = None
    bitstream_id = None
    uart = "uart"
    #: The host link's serial port on Linux, usually (for the hints the CLI prints).
    host_port = "/dev/ttyUSB0"

    def accelerator_build(self, kind):
        """``accelerator_builds[kind]`` (a copy; empty for a kind the board has none for)."""
        return dict(self.accelerator_builds.get(kind, {}))

    def accelerator_clock(self, kind, clock_mhz=None):
        """The core clock of a ``kind`` accelerator for a requested ``clock_mhz`` (None: the
        board's)."""
        if clock_mhz is not None:
            return clock_mhz
        return self.accelerator_clocks.get(kind, self.default_clock_mhz)

    def accelerator_placer(self, kind, placer=None):
        """nextpnr's placer for a ``kind`` accelerator and a requested ``placer`` (None: the
        board's; None again: nextpnr's default)."""
        return placer if placer is not None else self.accelerator_placers.get(kind)

    def platform(self, *, bram_outreg=False):
        """A fresh amaranth-boards platform instance; with ``bram_outreg`` (ECP5 only) its build
        moves the registers after block RAMs into them (:mod:`.outreg`). ECP5 builds also leave
        the carry outs nothing reads unconnected (:mod:`.carry_ends`)."""
        raise NotImplementedError

    def pll_config(self, clock_mhz):
        """The PLL setting for ``clock_mhz``, or None when the oscillator runs the core directly."""
        raise NotImplementedError

    def core_clock_mhz(self, clock_mhz):
        """The frequency the core will really run at for a requested ``clock_mhz``."""
        cfg = self.pll_config(clock_mhz)
        return self.oscillator_mhz if cfg is None else cfg.f_out

    def check_clock(self, clock_mhz):
        if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) \
                or not math.isfinite(clock_mhz) or clock_mhz <= 0:
            raise ValueError(f"Clock must be a positive number of MHz, not {clock_mhz!r}")
        achieved = self.core_clock_mhz(clock_mhz)
        # A PLL reaches most frequencies only approximately; more than 1 % off is a surprise.
        if abs(achieved - clock_mhz) > 0.01 * clock_mhz:
            raise ValueError(f"Clock {clock_mhz:g} MHz is not reachable on {self.name}: the nearest "
                             f"PLL setting gives {achieved:.3f} MHz")
        return achieved

    def _pll(self, m, platform, cfg, cd):
        """Instantiate the PLL driving ``cd.clk``; return its lock signal."""
        raise NotImplementedError

    def add_clock(self, m, platform, clock_mhz, *, por_us=15):
        """Create the ``sync`` domain at ``clock_mhz`` (through the PLL when needed) and its reset.

        Reset is held while the PLL is unlocked, while the reset button is pressed, and for at
        least ``por_us`` microseconds after either (at most twice that): iCE40 block RAM reads as
        zero for ~3 us after configuration (the margin is Amaranth's own for its default iCE40
        domain). The counter counts up from 0 because iCE40 flip-flops power up as 0. Returns
        ``(achieved_mhz, locked)``.
        """
        achieved = self.check_clock(clock_mhz)
        cd = ClockDomain("sync")
        m.domains.sync = cd
        cfg = self.pll_config(clock_mhz)
        if cfg is None:
            clk = pin_buffer(m, "clk_buf", "i", platform.request(self.clock_resource, dir="-"))
            m.d.comb += cd.clk.eq(clk.i)
            locked = Const(1)
        else:
            locked = self._pll(m, platform, cfg, cd)
        # No add_clock_constraint here: the platform constrains the oscillator pin, and nextpnr
        # derives the PLL output's constraint from it and the dividers (both families). A
        # constraint on cd.clk would name the net as Amaranth sees it ("core.dut.pe_2_3.clk"),
        # which is not the name it has after Yosys flattens the design: nextpnr ignores it.

        hold = ~locked
        if self.reset_button is not None:
            button = pin_buffer(m, "reset_button", "i",
                                platform.request(*self.reset_button, dir="-"))
            hold = hold | button.i
        # Asynchronous assertion, synchronous release, then the power-on count.
        m.domains.por = cd_por = ClockDomain("por", local=True)
        m.d.comb += cd_por.clk.eq(cd.clk)
        m.submodules.reset_sync = ResetSynchronizer(hold, domain="por")
        # Count to the next power of two at or above por_us: the counter's top bit is then the
        # whole test, so the counter runs at the speed of its carry chain (a compare against an
        # arbitrary count was the slowest path of small designs).
        width = max(4, math.ceil(por_us * achieved)).bit_length()
        count = Signal(width + 1)
        held = Signal(init=1)   # the core's reset, straight from a flip-flop
        with m.If(~count[-1]):
            m.d.por += count.eq(count + 1)
        m.d.por += held.eq(~count[-1])
        m.d.comb += cd.rst.eq(self._reset_net(m, held))
        return achieved, locked

    def _reset_net(self, m, held):
        """What carries the core's reset from ``held``, its flip-flop, to the core's registers:
        the flip-flop's own net unless a board routes it otherwise."""
        return held

    def program_commands(self):
        """The ways to load a bitstream on this board, most preferred first."""
        raise NotImplementedError

    def build_env(self):
        """Extra environment variables for a build (none by default)."""
        return {}

    def __repr__(self):
        return f"<Board {self.name}>"
