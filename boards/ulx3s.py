"""ULX3S (ECP5 12F / 25F / 45F / 85F, CABGA381, speed 6): 25 MHz oscillator, EHXPLLL core clock,
FT231X UART, eight LEDs.

A thin layer over amaranth-boards' ``ULX3S_*_Platform``. The core clock comes from an EHXPLLL
(settings as ecppll computes them, CLKOP fed back) unless the core runs at 25 MHz itself. The
FT231X is the UART (M1 in, L4 out, up to 3 MBaud). LEDs: 0 heartbeat, 1 PLL locked, 2-7 core
status bits. amaranth-boards lists openFPGALoader among the tools a build needs even when it does
not program; :meth:`ULX3S.build_env` sets ``OPENFPGALOADER=true`` for builds when it is missing.
"""

from __future__ import annotations

from amaranth.hdl import Instance, Signal

from .board import Board, ProgramCommand, pin_buffer, register
from . import carry_ends, outreg
from .netlist_step import with_netlist_step
from .pll import ecp5_pll
from .toolchain import find_program

__all__ = ["ULX3S"]


class ULX3S(Board):
    family = "ecp5"
    oscillator_mhz = 25.0
    # 100 MHz: the fit study's ECP5 target clock (issue 6).
    default_clock_mhz = 100.0
    # The host link's test top (`--top link`): the fastest clock tried where seeds 1-3 all meet
    # it with 7 % to spare, as for the accelerators: 92.2, 91.6 and 92.6 MHz against 80; 88.7,
    # 92.0 and 92.3 against 85 (code of 2fd351f, 2026-12-07). Its scratch device adds a block
    # RAM's output (5.8 ns from clock to data) to its running sum in the same cycle.
    link_clock_mhz = 80.0
    clock_resource = "clk25"
    led_count = 8
    reset_button = ("button_fire", 0)
    bitstream_suffix = ".bit"
    bitstream_sync = b"\xff\xff\xbd\xb3"
    heartbeat_led = 0
    lock_led = 1
    status_led = 2

    _PLATFORMS = {"12f": "ULX3S_12F_Platform", "25f": "ULX3S_25F_Platform",
                  "45f": "ULX3S_45F_Platform", "85f": "ULX3S_85F_Platform"}
    # Each device's JTAG IDCODE (Lattice's; the 12F's differs from the 25F's, whose die it
    # shares), which ecppack writes into the bitstream's VERIFY_ID command.
    IDCODES = {"12f": 0x21111043, "25f": 0x41111043, "45f": 0x41112043, "85f": 0x41113043}

    def __init__(self, size):
        if size not in self._PLATFORMS:
            raise ValueError(f"ULX3S size must be one of {', '.join(self._PLATFORMS)}, not {size!r}")
        self.size = size
        self.name = f"ulx3s-{size}"
        self.bitstream_id = b"\xe2\x00\x00\x00" + self.IDCODES[size].to_bytes(4, "big")
        self.device = f"LFE5U-{size.upper()}"
        # The default accelerator of each kind: deep pipelines, a requantiser lane per column
        # (docs/board_log.md has each build). An 8x8 takes 65-69 block RAMs: the 25F's die (the
        # 12F's too) has 56.
        shape = {"rows": 8, "cols": 8} if size in ("45f", "85f") else {"rows": 4, "cols": 4}
        self.accelerator_builds = {kind: dict(shape) for kind in ("adder", "shift", "mul")}
        # The 8x8's Fmax on the 85F (docs/boards.md, "Each board's own build"), the fastest clock
        # where seeds 1-3 all keep 7 % to spare: adder 127.3 MHz (static placement; 100.8-106.2
        # with heap, earlier); shift 105.2-114.0 against 95 (Yosys' ABC9 fails on its netlist,
        # classic ABC maps it; 104.2-105.6 against 100); mul 102.3-113.0 against 100 and
        # 96.5-118.9 against 95: too little to spare for either.
        self.accelerator_clocks = {"adder": 100.0, "shift": 95.0, "mul": 90.0}
        # The adder 8x8 on the 85F (code of 929ee70): static placement 118.5, 116.0 and
        # 110.2 MHz (seeds 1-3), heap 99.8, 98.8 and 104.8 (docs/board_log.md, "Placement").
        self.accelerator_placers = {"adder": "static"} if size in ("45f", "85f") else {}

    def platform(self, *, bram_outreg=False):
        import amaranth_boards.ulx3s as ulx3s
        # Between Yosys and nextpnr: unread carry outs unconnected (always), registers into the
        # block RAMs and multipliers (bram_outreg).
        platform = with_netlist_step(getattr(ulx3s, self._PLATFORMS[self.size]),
                                     carry_ends.__file__, "CarryEnds")
        if bram_outreg:
            platform = with_netlist_step(platform, outreg.__file__, "Outreg")
        return platform()

    def _reset_net(self, m, held):
        # On a global network (a DCCA: nextpnr routes its output to any fabric input, the
        # flip-flops' resets included): on general routing the reset's ~1,400 loads across a
        # 32x32 accelerator's die took up to 11.2 ns from its flip-flop, and the slowest path
        # (12.4 ns at f903f1f, seed 2) ended on it, at the UART and the framer by the pins.
        rst = Signal(name="core_rst")
        m.submodules.reset_global = Instance("DCCA", i_CLKI=held, i_CE=1, o_CLKO=rst)
        return rst

    def pll_config(self, clock_mhz):
        if clock_mhz == self.oscillator_mhz:
            return None
        return ecp5_pll(self.oscillator_mhz, clock_mhz)

    def _pll(self, m, platform, cfg, cd):
        clk25 = pin_buffer(m, "clk_buf", "i", platform.request(self.clock_resource, dir="-"))
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=cfg.clki_div, p_CLKFB_DIV=cfg.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div,
            p_CLKOP_CPHASE=cfg.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=clk25.i, i_CLKFB=cd.clk, o_CLKOP=cd.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked,
            # Loop filter settings ecppll writes for every configuration.
            a_FREQUENCY_PIN_CLKI=f"{cfg.f_in:g}", a_FREQUENCY_PIN_CLKOP=f"{cfg.f_out:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2")
        return locked

    def program_commands(self):
        return [
            ProgramCommand("openFPGALoader", ["-b", "ulx3s", "{bitstream}"],
                           "load into SRAM (lost at power-off; add -f to write the flash)"),
            ProgramCommand("fujprog", ["{bitstream}"],
                           "load into SRAM (lost at power-off; add -j flash to write the flash)"),
        ]

    def build_env(self):
        return {} if find_program("openFPGALoader") else {"OPENFPGALOADER": "true"}


for _size in ("85f", "45f", "25f", "12f"):
    register(ULX3S(_size))
