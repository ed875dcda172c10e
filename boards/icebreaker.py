"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, SB_PLL40_PAD core clock, FT2232H UART, two LEDs.

A thin layer over amaranth-boards' :class:`ICEBreakerPlatform`. The 12 MHz oscillator enters on
pin 35, a PLL-capable pad, so the core clock comes from ``SB_PLL40_PAD`` (settings as icepll
computes them) unless the core runs at 12 MHz itself. The FT2232H's second channel is the UART
(pins 6/9, up to 12 MBaud); the red LED (pin 11) shows core status (or "PLL not locked" when the
core has none) and the green LED (pin 37) is a heartbeat.
"""

from __future__ import annotations

from amaranth.hdl import Instance, Signal

from .board import Board, ProgramCommand, register
from .pll import ice40_pll

__all__ = ["ICEBreaker"]


class ICEBreaker(Board):
    name = "icebreaker"
    family = "ice40"
    device = "iCE40UP5K"
    oscillator_mhz = 12.0
    # The FT2232H's second interface (the first programs the flash).
    host_port = "/dev/ttyUSB1"
    # 48 MHz: the fit study's iCE40 target clock (issue 6), a clean PLL setting (DIVF=63, DIVQ=4).
    default_clock_mhz = 48.0
    # Digits-sized accelerators that fit the chip (bench/fit_study.py --top accelerator,
    # docs/cost.md): a one-lane requantiser, short pipelines and memories no deeper than the
    # digits models need. The adder's 4x4 takes 2,100 cycles per digits inference (and is the
    # search's largest that meets 34.5 MHz); its area limit, a 3x6, takes 2,508, and a 5x4 2,091
    # (nextpnr finds no placement for it). The shift kind's 4x3 (2,876) was chosen when its 3x4
    # did not fit (2,741; it fits now, 96.6 % of the chip). Their Fmax is
    # 35-40 MHz, short of 48 (docs/board_log.md, "Why the iCE40 build stays near 32 MHz"): each
    # kind runs at the fastest of the clocks tried where seeds 1-3 all met timing with at
    # least 7 % to spare: the adder and the shift kind at 34.5 MHz (10-16 %; at 36 the adder's
    # seeds 2 and 3 miss; 33 and 31.5 until the framer's WRITE size and the write-back's
    # pooling ends became registers, 2026-12-07), the multiplier at 30 (17-21 %; at 31.5 its
    # seed 2 keeps 2 %). docs/board_log.md has each measurement (2026-12-07 sections) and
    # docs/boards.md, "Each board's own build", the numbers; all at 28.125 MHz until the
    # activation buffers shared one memory, 24 before.
    _SMALL = {"requant_lanes": 1, "requant_pipeline": "short", "writeback_pipeline": "short",
              "read_pipeline": "short", "weight_depth": 1024, "act_depth": 128, "param_depth": 64}
    accelerator_builds = {"adder": {"rows": 4, "cols": 4, **_SMALL},
                          "shift": {"rows": 4, "cols": 3, **_SMALL},
                          "mul": {"rows": 2, "cols": 3, **_SMALL}}
    accelerator_clocks = {"adder": 34.5, "shift": 34.5, "mul": 30.0}
    # The host link's test top (`--top link`) at the adder accelerator's clock: it places at
    # 38.8, 37.3 and 39.1 MHz against 34.5 (seeds 1-3, 2026-12-07, after the framer's WRITE size
    # became a register; 39.5, 39.8, 39.8 against 33 before); against 48 it reached 40.6 (34.6
    # before 2fd351f cut the framer's slowest paths).
    link_clock_mhz = 34.5
    clock_resource = "clk12"
    led_count = 2
    reset_button = ("button", 0)
    bitstream_suffix = ".bin"
    bitstream_sync = b"\x7e\xaa\x99\x7e"
    # LED indices in amaranth-boards' resources: led 0 is red (pin 11), led 1 green (pin 37).
    status_led = 0
    heartbeat_led = 1

    def platform(self, *, bram_outreg=False):
        if bram_outreg:
            raise ValueError("iCE40 block RAMs have no output register to move flip-flops into")
        from amaranth_boards.icebreaker import ICEBreakerPlatform
        return ICEBreakerPlatform()

    def pll_config(self, clock_mhz):
        if clock_mhz == self.oscillator_mhz:
            return None
        return ice40_pll(self.oscillator_mhz, clock_mhz)

    def _pll(self, m, platform, cfg, cd):
        pad = platform.request(self.clock_resource, dir="-")
        locked = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=cfg.divr, p_DIVF=cfg.divf, p_DIVQ=cfg.divq, p_FILTER_RANGE=cfg.filter_range,
            i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=cd.clk, o_LOCK=locked)
        return locked

    def program_commands(self):
        return [
            ProgramCommand("iceprog", ["{bitstream}"], "write the SPI flash (kept over power cycles)"),
            ProgramCommand("openFPGALoader", ["-b", "icebreaker", "{bitstream}"],
                           "write the SPI flash"),
        ]


register(ICEBreaker())
