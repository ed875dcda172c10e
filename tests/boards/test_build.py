"""Board tops, board builds with their reports, and programming without a programmer."""

import json
import pathlib
import re

import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from addershift.boards.board import BOARDS, get_board
from addershift.boards.build import BoardTop, NoProgrammer, build, program
from addershift.boards.harness import SerialHarness
from addershift.boards.report import TimingError


class _Echo(wiring.Component):
    """A core with the board roles: rx, tx and a status vector."""
    rx: In(1)
    tx: Out(1)
    status: Out(3)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.tx.eq(self.rx), self.status.eq(self.status + self.rx)]
        return m


class _Acc(wiring.Component):
    a: In(8)
    b: In(8)
    y: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.y + self.a - self.b)
        return m


def _silenced(obj):
    obj._MustUse__silence = True
    return obj


def test_boards_are_registered():
    get_board("icebreaker")
    assert set(BOARDS) == {"icebreaker", "ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f"}
    assert get_board("ulx3s-25f").device == "LFE5U-25F"
    with pytest.raises(ValueError, match=r"Board must be one of .*, not 'arty'"):
        get_board("arty")


def test_board_top_rejects_unconnected_ports():
    with pytest.raises(ValueError, match=re.escape(
            "Core port 'a' has no board connection; a core on a board may only have rx, tx, status")):
        BoardTop(_silenced(_Acc()), board="icebreaker")
    with pytest.raises(ValueError, match=re.escape("Core port 'si' (In(1)) cannot be the board's "
                                                   "tx: it must be Out(1)")):
        BoardTop(_silenced(SerialHarness(_Acc())), board="icebreaker",
                 ports={"rx": "so", "tx": "si"})
    with pytest.raises(ValueError, match=r"Port role must be one of rx, tx, status, not 'led'"):
        BoardTop(_silenced(_Echo()), board="icebreaker", ports={"led": "status"})


def test_board_top_clock_checks():
    with pytest.raises(ValueError, match=r"Clock must be a positive number of MHz, not 0"):
        BoardTop(_silenced(_Echo()), board="icebreaker", clock_mhz=0)
    with pytest.raises(ValueError, match=r"PLL output frequency must be between 16 and 275 MHz, "
                                         r"not 500"):
        BoardTop(_silenced(_Echo()), board="icebreaker", clock_mhz=500)
    # 12 MHz is the oscillator itself; 48 MHz goes through the PLL; a callable core sees the clock.
    seen = []

    def make(clock_hz):
        seen.append(clock_hz)
        return _silenced(_Echo())

    top = _silenced(BoardTop(make, board="ulx3s-12f", clock_mhz=75))
    assert seen == [75e6] and top.clock_mhz == 75


def test_icebreaker_build_with_pll_and_uart(tmp_path):
    result = build(_Echo(), board="icebreaker", clock_mhz=48, build_dir=tmp_path)
    r = result.report
    assert result.bitstream.exists() and result.bitstream.suffix == ".bin"
    assert r.resources["pll"].used == 1 and r.extra["pll"]["divf"] == 63
    assert r.clock_mhz == 48 and r.fmax > 48 and r.timing_met
    assert r.multiplier_free
    # Clock pad, reset button, UART rx/tx, two LEDs.
    assert r.resources["io"].used == 6
    saved = json.loads((tmp_path / "top.addershift.json").read_text())
    assert saved["bitstream"] == str(result.bitstream) and saved["target"] == "icebreaker"


def test_build_with_router2(tmp_path):
    from addershift.boards.build import ROUTERS
    from addershift.sw.cli import ROUTERS as CLI_ROUTERS
    assert CLI_ROUTERS == ROUTERS
    result = build(_Echo(), board="icebreaker", build_dir=tmp_path, router="router2")
    assert result.report.extra["router"] == "router2" and result.report.timing_met
    assert "Router2" in (tmp_path / "top.tim").read_text()
    with pytest.raises(ValueError, match=r"Router must be one of router1, router2, not 'fast'"):
        build(_silenced(_Echo()), board="icebreaker", build_dir=tmp_path, router="fast")


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-12f"])
def test_build_with_the_static_placer(board, tmp_path):
    from addershift.boards.build import PLACERS
    from addershift.sw.cli import PLACERS as CLI_PLACERS
    assert CLI_PLACERS == PLACERS
    result = build(_Echo(), board=board, build_dir=tmp_path, placer="static")
    assert result.report.extra["placer"] == "static" and result.report.timing_met
    assert "Running Static placer" in (tmp_path / "top.tim").read_text()
    with pytest.raises(ValueError, match=r"Placer must be one of heap, sa, static, not 'fast'"):
        build(_silenced(_Echo()), board=board, build_dir=tmp_path, placer="fast")


def _report_fmax(folder):
    """The slowest clock's Fmax in nextpnr's own report in ``folder``, in MHz to 0.01."""
    clocks = json.loads((folder / "top.report.json").read_text())["fmax"]
    return round(min(clock["achieved"] for clock in clocks.values()), 2)


@pytest.mark.parametrize("board, clock", [("ulx3s-12f", 400), ("icebreaker", 275)])
def test_seeds_placed_in_turn_keep_the_fastest_run(board, clock, tmp_path):
    # No seed meets these clocks, so every seed runs; each run's files are its own.
    seeds = (2, 1, 3)
    result = build(SerialHarness(_Acc()), board=board, clock_mhz=clock, build_dir=tmp_path,
                   seed=seeds, ports={"rx": "si", "tx": "so"}, check_timing=False)
    report = result.report
    tried = {int(seed): fmax for seed, fmax in report.extra["fmax_by_seed"].items()}
    assert list(tried) == list(seeds)
    kept = report.extra["seed"]
    assert tried[kept] == max(tried.values()) and kept == next(s for s in seeds
                                                               if tried[s] == tried[kept])
    assert _report_fmax(tmp_path) == tried[kept] == round(report.fmax, 2)
    assert not (tmp_path / "seeds" / str(kept)).exists()
    suffix = get_board(board).bitstream_suffix
    for seed in set(seeds) - {kept}:
        assert _report_fmax(tmp_path / "seeds" / str(seed)) == tried[seed]
        assert {p.name for p in (tmp_path / "seeds" / str(seed)).glob(f"top*{suffix}")} == \
            {f"top.timing-failed{suffix}"}
    assert result.bitstream is None and (tmp_path / f"top.timing-failed{suffix}").exists()
    log = (tmp_path / "top.build.log").read_text()
    assert all(f"place and route again with --seed {seed} -" in log for seed in seeds[1:])
    runs = ", ".join(f"{seed} {tried[seed]:.2f}" for seed in seeds)
    assert f"seeds tried (Fmax MHz): {runs}; kept seed {kept}" in report.format_text()
    with pytest.raises(TimingError, match=r"MHz, the fastest of seeds 2, 1, 3\); lower --clock, "
                                          r"place with other seeds \(--seed 1,2,3\) or shrink"):
        report.check_timing()


def test_a_seed_nextpnr_cannot_take_is_refused_before_building(tmp_path):
    with pytest.raises(ValueError, match=r"^Seeds must be 32-bit integers \(-2147483648 to "
                                         r"2147483647\), not 1, 99999999999$"):
        build(_silenced(_Echo()), board="icebreaker", build_dir=tmp_path, seed=(1, 99999999999))
    assert list(tmp_path.iterdir()) == []


def test_seeds_stop_at_the_first_run_that_meets_the_clock(tmp_path):
    (tmp_path / "seeds" / "9").mkdir(parents=True)      # an earlier build's runs
    (tmp_path / "top.il").write_text("")                # (and its netlist)
    result = build(_Echo(), board="icebreaker", clock_mhz=48, build_dir=tmp_path, seed=(5, 6))
    assert result.report.timing_met and result.bitstream.exists()
    assert result.report.extra["seed"] == 5 and "fmax_by_seed" not in result.report.extra
    assert not (tmp_path / "seeds").exists()
    assert "seeds tried" not in result.report.format_text()


def test_a_seed_whose_place_and_route_fails_is_named(tmp_path):
    from addershift.boards.build import _place_again
    from addershift.boards.toolchain import ToolError, prepare_environment
    prepare_environment()
    board, log = get_board("icebreaker"), tmp_path / "top.build.log"
    script = tmp_path / "build_top.sh"
    script.write_text('set -e\n"$YOSYS" -q top.ys\n')
    with pytest.raises(ToolError, match=r"no nextpnr command in .*build_top.sh to place with "
                                        r"--seed 7"):
        _place_again(board, "top", tmp_path, log, 7)
    # (no netlist in the folder: nextpnr stops)
    script.write_text(': ${NEXTPNR_ICE40:=nextpnr-ice40}\n'
                      '"$NEXTPNR_ICE40" --seed 1 --up5k --json top.json --asc top.asc\n')
    with pytest.raises(ToolError, match=r"the icebreaker build failed placing with --seed 7: "):
        _place_again(board, "top", tmp_path, log, 7)
    assert "--seed 7 --up5k" in (tmp_path / "place_top.sh").read_text()


@pytest.mark.parametrize("seed, message", [
    ((), "Seed must be an integer or a list of them, not ()"),
    (True, "Seed must be an integer or a list of them, not True"),
    ((1, "2"), "Seed must be an integer or a list of them, not (1, '2')"),
    ((3, 1, 3), "Seeds must differ, not 3, 1, 3")])
def test_seed_lists_are_checked(seed, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(_silenced(_Echo()), board="icebreaker", build_dir=tmp_path, seed=seed)


def test_ecp5_core_reset_is_on_a_global_network(tmp_path):
    # The ULX3S core's reset reaches its flip-flops from a DCCA on one of the global networks
    # nextpnr can route to fabric inputs (0-7), beside the clock's, not on general routing.
    result = build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    routed = dict(re.findall(r"routing clock net (\S+) using global (\d+)",
                             (tmp_path / "top.tim").read_text()))
    assert len(routed) == 2 and result.report.timing_met
    (reset_net,) = [net for net in routed if "clk" not in net]
    assert int(routed[reset_net]) < 8


def test_ecp5_build_retried_when_yosys_fails(tmp_path, monkeypatch):
    # As for synthesize (test_report.py): a Yosys failure on ECP5, simulated, gets one more run
    # with -dff; the report says so.
    import addershift.boards.build as build_module
    real, runs = build_module._run_platform_build, []

    def failing_once(top, board, name, build_dir, log, **kwargs):
        runs.append(kwargs["synth_opts"])
        if len(runs) == 1:
            (build_dir / f"{name}.rpt").write_text("7.46.14.5. Executing ABC9.\n")
            return 1
        return real(top, board, name, build_dir, log, **kwargs)

    monkeypatch.setattr(build_module, "_run_platform_build", failing_once)
    result = build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert runs == [("-nowidelut",), ("-nowidelut", "-dff")]
    assert result.report.synth_opts == ("-nowidelut", "-dff") and result.bitstream.exists()
    assert result.report.extra["synth"] == "synth_ecp5 -nowidelut -dff: Yosys failed without -dff"


# nextpnr's last words on designs that pack within the iCE40UP5K's totals but do not place, from
# real logs: the iCEBreaker's 4x4 adder accelerator with two requantiser lanes (the heap placer,
# 2026-12-07, 13 minutes to fail), and its 5x4 (`--placer sa`, 2026-12-07, at commit 1f266cb).
_HEAP_FAILS = ("ERROR: Unable to find legal placement for all cells, design is probably at "
               "utilisation limit.\n")
# The heap placer's other last words (an array's build in the fit study of 2026-12-01).
_HEAP_REGION_FAILS = "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5214 ICESTORM_LCs\n"
# ... and on one cell (the iCEBreaker's 6x11 adder array, 2026-12-07, 80 % of the cells).
_HEAP_CELL_FAILS = ("ERROR: Unable to find legal placement for cell "
                    "'core.dut.spare_b.last_SB_DFFE_Q_DFFLC' of type 'ICESTORM_LC' after 2259939 "
                    "attempts, check constraints and utilisation. Use "
                    "`--placer-heap-cell-placement-timeout` to change the number of attempts.\n")
_SA_FAILS = ("Info: Legalising relative constraints...\n"
             "ERROR: failed to place chain starting at cell "
             "'core.framer.field_SB_DFFSR_Q_28_D_SB_LUT4_O_LC'\n"
             "ERROR: Placing design failed.\n")


@pytest.mark.parametrize("placer, last_words, how", [
    (None, _HEAP_FAILS, ""),
    (None, _HEAP_REGION_FAILS, ""),
    (None, _HEAP_CELL_FAILS, ""),
    ("sa", _SA_FAILS, " with its simulated-annealing placer, which fails to legalise iCE40 designs "
                      "that its default placer places")],
    ids=["heap", "heap-region", "heap-cell", "sa"])
def test_a_build_that_packs_but_does_not_place_says_how_full_it_is(tmp_path, monkeypatch,
                                                                   capsys, placer, last_words,
                                                                   how):
    # The build's log lines, simulated: the error names the fullest count (not the global
    # buffers' 100 %), and the CLI adds the hint for logic cells.
    import addershift.boards.build as build_module
    from addershift.sw.cli import main

    def unplaceable(top, board, name, build_dir, log, **kwargs):
        (build_dir / f"{name}.tim").write_text(
            "Info: Device utilisation:\n"
            "Info: \t         ICESTORM_LC:    5214/   5280    98%\n"
            "Info: \t        ICESTORM_RAM:      19/     30    63%\n"
            "Info: \t               SB_GB:       8/      8   100%\n"
            "Info: \t        ICESTORM_PLL:       1/      1   100%\n" + last_words)
        log.write_text(last_words)
        return 1

    monkeypatch.setattr(build_module, "_run_platform_build", unplaceable)
    with pytest.raises(build_module.DoesNotPlace) as e:
        build(_Echo(), board="icebreaker", build_dir=tmp_path, placer=placer)
    assert str(e.value).startswith(
        "the icebreaker build does not place on the iCE40UP5K: it packs into 5214 ICESTORM_LC of "
        f"5280 (98.8%), and nextpnr found no legal placement for it{how} (log: ")
    assert (e.value.cell, e.value.needed, e.value.available) == ("ICESTORM_LC", 5214, 5280)
    assert main(["build", "--board", "icebreaker", "-o", str(tmp_path / "cli"),
                 *(["--placer", placer] if placer else [])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("addershift build: the icebreaker build does not place on the "
                          "iCE40UP5K: it packs into 5214 ICESTORM_LC of 5280 (98.8%), and "
                          f"nextpnr found no legal placement for it{how} (log: ")
    # The board's own build has one requantiser lane and short pipelines already: the hint
    # names only what is left.
    assert err.endswith("; a smaller array (--rows, --cols) needs less, and --top array builds "
                        "the PE array alone\n")
    # Global buffers and the PLL read 100 % in most builds: they do not make a design full.
    from addershift.boards.build import _fullest
    assert _fullest("Info: \t               SB_GB:       8/      8   100%\n") is None


def test_ecp5_build_retried_when_yosys_writes_a_net_driven_twice(tmp_path, monkeypatch):
    # Yosys finished, but its CHECK pass warned of a net with two drivers (as ABC9 once mapped a
    # 16x16 accelerator) and nextpnr stopped on it: simulated, the build retries with -dff.
    import addershift.boards.build as build_module
    real, runs = build_module._run_platform_build, []

    def driven_twice_once(top, board, name, build_dir, log, **kwargs):
        runs.append(kwargs["synth_opts"])
        if len(runs) == 1:
            (build_dir / f"{name}.rpt").write_text(
                "Warning: multiple conflicting drivers for top.\\acc [14]:\n"
                "Found and reported 1 problems.\nEnd of script.\n")
            log.write_text("ERROR: Net 'acc[14]' is multiply driven\n")
            return 1
        return real(top, board, name, build_dir, log, **kwargs)

    monkeypatch.setattr(build_module, "_run_platform_build", driven_twice_once)
    result = build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert runs == [("-nowidelut",), ("-nowidelut", "-dff")] and result.bitstream.exists()
    assert result.report.extra["synth"] == ("synth_ecp5 -nowidelut -dff: Yosys wrote a netlist "
                                            "with a net driven twice (its CHECK pass warned) "
                                            "without -dff")


def test_a_net_driven_twice_in_every_attempt_is_named_in_the_error(tmp_path, monkeypatch):
    # Every synthesis (-dff and classic ABC included) writes a net with two drivers (simulated):
    # the error names that, not only nextpnr's complaint about it.
    import addershift.boards.build as build_module
    from addershift.boards.toolchain import ToolError
    runs = []

    def always_driven_twice(top, board, name, build_dir, log, **kwargs):
        runs.append(kwargs["synth_opts"])
        (build_dir / f"{name}.rpt").write_text(
            "Warning: multiple conflicting drivers for top.\\acc [14]:\nEnd of script.\n")
        log.write_text("ERROR: Net 'acc[14]' is multiply driven\n")
        return 1

    monkeypatch.setattr(build_module, "_run_platform_build", always_driven_twice)
    with pytest.raises(ToolError, match="^the ulx3s-12f build failed: Yosys wrote a netlist with a "
                                        "net driven twice"):
        build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert len(runs) == 3


def _abc9_failing_twice(monkeypatch):
    """Board builds whose first two Yosys runs fail inside ABC9 (simulated); returns the list
    each run's synthesis options and first four commands after synthesis go into."""
    import addershift.boards.build as build_module
    real, runs = build_module._run_platform_build, []

    def failing_twice(top, board, name, build_dir, log, **kwargs):
        runs.append((kwargs["synth_opts"], kwargs["after_synth"][:4]))
        if len(runs) <= 2:
            (build_dir / f"{name}.rpt").write_text("7.46.14.5. Executing ABC9.\n")
            return 1
        return real(top, board, name, build_dir, log, **kwargs)

    monkeypatch.setattr(build_module, "_run_platform_build", failing_twice)
    return runs


def test_ecp5_build_falls_back_to_classic_abc(tmp_path, monkeypatch):
    # ABC9 failing with and without -dff (simulated): the third run maps LUTs with classic ABC
    # in the middle of synth_ecp5, and the build still gives a bitstream.
    runs = _abc9_failing_twice(monkeypatch)
    result = build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert [opts for opts, _ in runs] == [("-nowidelut",), ("-nowidelut", "-dff"),
                                          ("-nowidelut", "-run", "begin:map_luts")]
    assert runs[2][1] == ["techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean",
                          "synth_ecp5 -nowidelut -top top -run map_cells:"]
    assert result.bitstream.exists() and result.report.timing_met
    assert result.report.extra["synth"].startswith("classic ABC (abc -lut 4)")
    assert "abc -lut 4 -dress" in (tmp_path / "top.ys").read_text()


class _ChainEcho(wiring.Component):
    """_Echo's roles, its status a sum on a carry chain made by hand (``hw.pe.ecp5_carry_chain``,
    as the ECP5 PEs' are): three sum bits, so the chain's last cell has one half (no S1) and no
    carry out."""
    rx: In(1)
    tx: Out(1)
    status: Out(3)

    def elaborate(self, platform):
        from addershift.hw.pe import ecp5_carry_chain
        m = Module()
        step = Signal(3)
        m.d.sync += [self.tx.eq(self.rx), step.eq(Cat(self.rx, self.tx, self.rx))]
        total, = ecp5_carry_chain(m, "count", [(self.status, step, 1, 0)])
        m.d.sync += self.status.eq(total)
        return m


def test_ecp5_classic_abc_build_of_hand_made_carry_chains(tmp_path, monkeypatch):
    # Classic ABC in the middle of synth_ecp5 writes a hand-made chain's cells without their
    # unconnected outputs, and nextpnr stopped on them while packing carries (an 8x8 ECP5
    # accelerator whose ABC9 runs failed, 2026-12-06): boards/carry_ends.py puts them back.
    _abc9_failing_twice(monkeypatch)
    result = build(_ChainEcho(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert result.report.extra["synth"].startswith("classic ABC (abc -lut 4)")
    assert result.bitstream.exists() and result.report.timing_met
    top = next(m for m in json.loads((tmp_path / "top.json").read_text())["modules"].values()
               if m.get("attributes", {}).get("top"))
    chain = [c for name, c in top["cells"].items()
             if c["type"] == "CCU2C" and name.rsplit(".", 1)[-1] in ("count0", "count1")]
    assert len(chain) == 2
    assert all({"S0", "S1", "COUT"} <= set(c["connections"]) for c in chain)


def test_ecp5_dff_retry_that_runs_too_long_goes_on_to_classic_abc(tmp_path, monkeypatch):
    # The -dff retry ran 25-35 minutes before failing on large accelerators: it gets a time
    # limit (simulated here: the retry reports it), after which the build maps with classic ABC.
    import addershift.boards.build as build_module
    real, runs = build_module._run_platform_build, []

    def slow_retry(top, board, name, build_dir, log, **kwargs):
        runs.append(kwargs.pop("synth_timeout", None))
        if len(runs) == 1:
            return 1
        if len(runs) == 2:
            return build_module.SYNTH_TIMED_OUT
        return real(top, board, name, build_dir, log, **kwargs)

    monkeypatch.setattr(build_module, "_run_platform_build", slow_retry)
    result = build(_Echo(), board="ulx3s-12f", clock_mhz=25, build_dir=tmp_path)
    assert runs == [None, build_module.DFF_RETRY_TIMEOUT_S, None]
    assert result.bitstream.exists()
    assert result.report.extra["synth"] == ("classic ABC (abc -lut 4): Yosys' ABC9 failed, and "
                                            "with -dff had not finished after 10 minutes")


def test_build_script_stopped_when_yosys_overruns(tmp_path):
    # The wait behind the -dff retry's limit, on real processes: a script whose Yosys log never
    # finishes is stopped with its children; once the log has finished, the rest of the script
    # (place and route) runs without a limit.
    import subprocess
    import time
    from addershift.boards.build import SYNTH_TIMED_OUT, _wait_for_build
    log = tmp_path / "top.rpt"
    marker = tmp_path / "child-survived"
    script = f"(sleep 3; touch {marker}) & wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    start = time.monotonic()
    assert _wait_for_build(proc, log, synth_timeout=0.5, poll_s=0.1) == SYNTH_TIMED_OUT
    assert time.monotonic() - start < 2.5
    time.sleep(3)
    assert not marker.exists()                  # the script's child was stopped too

    log.write_text("...\nEnd of script. Logfile hash: 0\n")
    proc = subprocess.Popen(["sh", "-c", "sleep 1; exit 3"], start_new_session=True)
    assert _wait_for_build(proc, log, synth_timeout=0.2, poll_s=0.1) == 3


def test_program_without_tools_gives_the_commands(tmp_path, monkeypatch):
    monkeypatch.setattr("addershift.boards.build.find_program", lambda name: None)
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff\x00Part: LFE5U-85F\x00\xff" + ULX3S_SYNC)
    with pytest.raises(NoProgrammer) as e:
        program(board="ulx3s-85f", bitstream=bit)
    assert e.value.commands == [f"openFPGALoader -b ulx3s {bit}", f"fujprog {bit}"]
    with pytest.raises(FileNotFoundError, match=r"no bitstream at .*nothing.bin: build one with "
                                                r"`addershift build --board icebreaker`"):
        program(board="icebreaker", bitstream=tmp_path / "nothing.bin")


def test_program_uses_the_first_installed_tool(tmp_path, monkeypatch):
    monkeypatch.setattr("addershift.boards.build.find_program",
                        lambda name: f"/opt/{name}" if name == "openFPGALoader" else None)
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\xff\x00\x00\xff" + ICE40_SYNC)
    assert program(board="icebreaker", bitstream=bit, dry_run=True) == \
        ["/opt/openFPGALoader", "-b", "icebreaker", str(bit)]


#: What starts the bitstreams icepack and ecppack write (after a comment block).
ICE40_SYNC, ULX3S_SYNC = b"\x7e\xaa\x99\x7e", b"\xff\xff\xbd\xb3"


def test_program_refuses_what_is_not_a_bitstream_of_the_board(tmp_path, monkeypatch):
    monkeypatch.setattr("addershift.boards.build.find_program", lambda name: "/opt/" + name)
    ecp5 = tmp_path / "top.bit"
    ecp5.write_bytes(b"\xff\x00Part: LFE5U-85F\x00\xff" + ULX3S_SYNC)
    text = tmp_path / "notes.txt"
    text.write_text("not a bitstream\n")
    for path in (ecp5, text, tmp_path / "empty.bin"):
        path.touch()
        with pytest.raises(ValueError, match=rf"^{path} is not a bitstream of the icebreaker's "
                                             rf"FPGA family, ice40 \(no sync word 7eaa997e\): "
                                             rf"it takes the top.bin of `addershift build"):
            program(board="icebreaker", bitstream=path, dry_run=True)
    with pytest.raises(ValueError, match=rf"^{tmp_path} is not a file$"):
        program(board="ulx3s-85f", bitstream=tmp_path, dry_run=True)
    assert program(board="ulx3s-85f", bitstream=ecp5, dry_run=True)[0] == "/opt/openFPGALoader"


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f"])
def test_every_board_elaborates_with_its_pins(name):
    """Build files for each board (no tools run): pins, PLL and the device in the nextpnr call."""
    board = get_board(name)
    plan = board.platform().prepare(BoardTop(_Echo(), board=board), "top")
    files = plan.files
    script = files["build_top.sh"]
    rtlil = files["top.il"]
    if board.family == "ice40":
        assert "--up5k" in script and "SB_PLL40_PAD" in rtlil
        assert "set_io uart_0__rx__io 6" in files["top.pcf"]
    else:
        assert f"--{board.device.split('-')[1][:-1].lower()}k" in script and "EHXPLLL" in rtlil
        assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in files["top.lpf"]


@pytest.mark.parametrize("kind", ["adder", "shift", "mul"])
@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f"])
def test_every_board_has_an_accelerator_build_for_each_kind(name, kind):
    """The build ``addershift build --board NAME -m models/digits_KIND.npz`` makes: the shipped
    model compiles for it, and the PLL reaches its clock (its fit and Fmax: docs/boards.md)."""
    from addershift.sw.compiler import default_config
    from addershift.sw.model import load_model
    board = get_board(name)
    options = board.accelerator_build(kind)
    assert {"rows", "cols"} <= set(options)
    least = {k: options.pop(k) for k in ("weight_depth", "act_depth", "param_depth")
             if k in options}
    model = load_model(pathlib.Path(__file__).parents[2] / "models" / f"digits_{kind}.npz")
    config = default_config(model, least=least, **options)
    assert config.pe.value == kind
    for depth, low in least.items():
        assert getattr(config, depth) >= low
    clock = board.accelerator_clock(kind)
    assert board.check_clock(clock) == pytest.approx(clock, rel=0.01)
    assert board.accelerator_clock(kind, 30.0) == 30.0


def test_accelerator_build_is_a_copy():
    board = get_board("icebreaker")
    board.accelerator_build("adder")["rows"] = 99
    assert board.accelerator_build("adder")["rows"] == 4
    assert board.accelerator_build("unknown") == {}


def test_an_overfull_device_is_read_from_the_nextpnr_log():
    from addershift.boards.build import _overflows
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:    6467/   5280   122%\n"
           "Info: \t        ICESTORM_RAM:      12/     30    40%\n")
    assert _overflows(log) == [("ICESTORM_LC", 6467, 5280)]
    assert _overflows(log.replace("6467", "5000")) == []
    # Every resource over, in nextpnr's order (the 4x4 accelerator on the iCE40UP5K).
    assert _overflows(log.replace("6467", "5666").replace("12/", "40/")) == \
        [("ICESTORM_LC", 5666, 5280), ("ICESTORM_RAM", 40, 30)]
    assert _overflows("Info:          TRELLIS_COMB:  90000/  83640   107%\n") == \
        [("TRELLIS_COMB", 90000, 83640)]


def test_a_folder_of_other_files_is_not_built_into(tmp_path):
    # A build replaces its own files and removes an earlier bitstream first: `-o .` in a project
    # must not write among (and remove) the project's files.
    project = tmp_path / "project"
    (project / "seeds").mkdir(parents=True)
    (project / "seeds" / "notes.txt").write_text("mine")
    (project / "top.bin").write_bytes(b"not ours")
    with pytest.raises(ValueError, match=r"build folder .*project holds other files and no "
                                         r"earlier build \(build_top\.sh, top\.il, "
                                         r"top\.addershift\.json\): give a new or empty folder"):
        build(_silenced(_Echo()), board="icebreaker", build_dir=project)
    assert (project / "top.bin").read_bytes() == b"not ours"
    with pytest.raises(ValueError, match=r"build folder .*top\.bin is a file$"):
        build(_silenced(_Echo()), board="icebreaker", build_dir=project / "top.bin")


def test_only_the_earlier_builds_seed_folders_are_removed(tmp_path):
    from addershift.boards.build import _remove_seed_folders
    (tmp_path / "seeds" / "2").mkdir(parents=True)
    (tmp_path / "seeds" / "2" / "top.asc").write_text("placed")
    (tmp_path / "seeds" / "notes.txt").write_text("mine")
    _remove_seed_folders(tmp_path)
    assert sorted(p.name for p in (tmp_path / "seeds").iterdir()) == ["notes.txt"]
    (tmp_path / "seeds" / "notes.txt").unlink()
    (tmp_path / "seeds" / "3").mkdir()
    _remove_seed_folders(tmp_path)
    assert not (tmp_path / "seeds").exists()
