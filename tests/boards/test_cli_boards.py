"""`addershift build` and `addershift program`: small iCEBreaker builds of every PE kind, with the
report checked, and the failures a user can act on."""

import json
import pathlib
import re

import pytest

from addershift.sw.cli import main

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """A 2x2 array of each kind (``--top array``: the array behind the two-pin harness) on the
    iCEBreaker at 24 MHz, through the CLI with --json."""
    out = {}
    for kind in ("adder", "shift", "mul"):
        folder = tmp_path_factory.mktemp(kind)
        code = main(["build", "--board", "icebreaker", "--top", "array", "--pe", kind,
                     "--rows", "2", "--cols", "2", "--clock", "24", "-o", str(folder), "--json"])
        out[kind] = (code, folder)
    return out


@pytest.mark.parametrize("kind", ["adder", "shift"])
def test_adder_and_shift_builds_are_multiplier_free(builds, kind):
    code, folder = builds[kind]
    assert code == 0
    report = json.loads((folder / "top.addershift.json").read_text())
    assert report["multipliers"] == {"premap_mul": 0, "dsp": 0, "multiplier_free": True}
    # Built with -dsp: Yosys was free to use SB_MAC16 blocks and found nothing to put there.
    assert report["synth_opts"] == ["-dsp"]
    assert report["timing_met"] and report["fmax_mhz"] > report["clock_mhz"] == 24
    assert report["resources"]["logic_cells"]["total"] == 5280
    assert 0 < report["resources"]["logic_cells"]["used"] < 1000
    assert report["resources"]["pll"]["used"] == 1
    assert (folder / "top.bin").stat().st_size > 100_000


def test_mul_build_counts_its_multipliers(builds):
    code, folder = builds["mul"]
    assert code == 0
    report = json.loads((folder / "top.addershift.json").read_text())
    assert report["multipliers"] == {"premap_mul": 4, "dsp": 4, "multiplier_free": False}
    assert report["resources"]["dsp"] == {"used": 4, "total": 8, "percent": 50.0}
    assert report["timing_met"]


def test_build_prints_one_json_object(builds, capsys, tmp_path):
    # The fixture's output went to an earlier capture; one more small build here, checked on stdout.
    assert main(["build", "--board", "icebreaker", "--top", "array", "--pe", "adder",
                 "--rows", "1", "--cols", "1", "--clock", "12", "-o", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clock_mhz"] == 12 and report["extra"]["pll"] is None
    assert report["bitstream"] == str(tmp_path / "top.bin")


def test_unreachable_clock_fails_before_building(capsys, tmp_path):
    assert main(["build", "--board", "icebreaker", "--clock", "500", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "PLL output frequency must be between 16 and 275 MHz, not 500" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_clock_the_design_cannot_meet_fails_clearly(capsys, tmp_path):
    assert main(["build", "--board", "icebreaker", "--top", "array", "--pe", "adder",
                 "--rows", "1", "--cols", "1", "--clock", "192", "--late-endpoints",
                 "-o", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "timing not met on icebreaker: Fmax" in captured.err
    assert "requested 192 MHz" in captured.err and "lower --clock" in captured.err
    assert "no usable bitstream (timing not met)" in captured.out
    # The bitstream is kept under another name, so `program` cannot load it by accident.
    assert not (tmp_path / "top.bin").exists() and (tmp_path / "top.timing-failed.bin").exists()
    saved = json.loads((tmp_path / "top.addershift.json").read_text())
    assert saved["timing_met"] is False and saved["bitstream"] is None
    # --late-endpoints: where the 192 MHz clock fails, the slowest endpoint the critical path's.
    late = saved["late_endpoints"]
    assert "late endpoints (arrival after the 5.208 ns period)" in captured.out
    assert late["period_ns"] == pytest.approx(1000 / 192, abs=1e-3) and late["endpoints"] > 0
    assert all(r["worst_ns"] > late["period_ns"] for r in late["by_register"] + late["by_net"])
    assert "core.dut.acc" in [r["register"] for r in late["by_register"]]
    assert max(r["worst_ns"] for r in late["by_register"]) >= 1000 / saved["fmax_mhz"] - 0.01


def _built(monkeypatch, tmp_path, *args):
    """The keyword arguments ``addershift build ARGS`` gives ``build_accelerator`` (not run)."""
    import addershift.boards.build as build
    from addershift.boards.toolchain import ToolError
    seen = {}

    def capture(**kwargs):
        seen.update(kwargs)
        raise ToolError("not built in this test")

    monkeypatch.setattr(build, "build_accelerator", capture)
    assert main(["build", *args, "-o", str(tmp_path)]) == 1
    return seen


def _shape(config):
    return (config.rows, config.cols, config.requant_lanes, config.requant_pipeline,
            config.writeback_pipeline, config.read_pipeline, config.weight_depth,
            config.act_depth, config.param_depth)


def test_build_takes_the_boards_accelerator_for_what_is_not_given(monkeypatch, tmp_path):
    adder = str(MODELS / "digits_adder.npz")
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder)
    assert _shape(seen["config"]) == (4, 4, 1, "short", "short", "short", 1024, 128, 64)
    assert seen["clock_mhz"] is None      # build_accelerator takes the board's (below)
    assert seen["late_endpoints"] is False
    # Options given win; a memory the model needs deeper than the board's least grows.
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder, "--rows", "2",
                  "--cols", "2", "--read-pipeline", "deep", "--act-depth", "256", "--clock", "30")
    assert _shape(seen["config"]) == (2, 2, 1, "short", "short", "deep", 1024, 256, 64)
    assert seen["clock_mhz"] == 30
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder, "--late-endpoints")
    assert seen["late_endpoints"] is True
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder, "--rows", "1",
                  "--cols", "1")
    assert _shape(seen["config"])[6:] == (2048, 128, 64)      # 1,960 weight words
    # Each kind has its own: the largest that fits the chip.
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m",
                  str(MODELS / "digits_shift.npz"))
    assert _shape(seen["config"])[:3] == (4, 3, 1)
    seen = _built(monkeypatch, tmp_path, "--board", "icebreaker", "--pe", "mul")
    assert _shape(seen["config"]) == (2, 3, 1, "short", "short", "short", 1024, 128, 64)
    seen = _built(monkeypatch, tmp_path, "--board", "ulx3s-85f", "-m", adder)
    assert _shape(seen["config"]) == (8, 8, None, "deep", "deep", "deep", 4096, 512, 256)


@pytest.mark.parametrize("command", [["serve-sim"], ["run", "--sim"], ["simulate"]])
def test_simulated_board_serves_the_boards_build(monkeypatch, tmp_path, command):
    # `--board B` gives a simulation the build `addershift build --board B` makes: the same hash.
    from addershift.sw import cli
    adder = str(MODELS / "digits_adder.npz")
    built = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder)["config"]
    args = cli.build_parser().parse_args([*command, "-m", adder, "--board", "icebreaker"])
    cli._resolve_build(args)
    assert cli._sim_build(args).build_hash == built.build_hash
    # ... elaborated for the board's device, its vendor cells by Yosys' models (not on Amaranth).
    assert cli._sim_device(args) == "iCE40UP5K"
    args.simulator = "amaranth"
    assert cli._sim_device(args) is None
    args = cli.build_parser().parse_args([*command, "-m", adder])
    cli._resolve_build(args)
    assert _shape(cli._sim_build(args)) == (4, 4, None, "deep", "deep", "deep", 4096, 512, 256)
    assert cli._sim_device(args) is None


def test_generate_writes_the_boards_build(monkeypatch, tmp_path, capsys):
    adder = str(MODELS / "digits_adder.npz")
    built = _built(monkeypatch, tmp_path, "--board", "icebreaker", "-m", adder)["config"]
    capsys.readouterr()
    assert main(["generate", "--unit", "accelerator", "-m", adder, "--board", "icebreaker",
                 "-o", str(tmp_path / "acc.v"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["build_hash"] == built.build_hash


def test_accelerator_builds_at_the_boards_accelerator_clock(monkeypatch):
    import addershift.boards.build as build
    from addershift.hw.config import ArrayConfig
    seen = []
    monkeypatch.setattr(build, "build", lambda core, **kwargs: seen.append(kwargs["clock_mhz"]))
    config = ArrayConfig(pe="adder", rows=2, cols=2)
    build.build_accelerator(board="icebreaker", config=config)
    build.build_accelerator(board="icebreaker", config=config, clock_mhz=30)
    build.build_accelerator(board="ulx3s-85f", config=config)
    assert seen == [34.5, 30, 100.0]
    build.build_accelerator(board="ulx3s-85f", config=ArrayConfig(pe="mul", rows=2, cols=2))
    assert seen[-1] == 90.0
    build.build_accelerator(board="ulx3s-85f", config=ArrayConfig(pe="shift", rows=2, cols=2))
    assert seen[-1] == 95.0
    build.build_accelerator(board="icebreaker", config=ArrayConfig(pe="mul", rows=2, cols=2))
    assert seen[-1] == 30.0
    build.build_accelerator(board="icebreaker", config=ArrayConfig(pe="shift", rows=2, cols=2))
    assert seen[-1] == 34.5


def test_build_help_names_the_boards_clocks(capsys):
    # The help spells the clocks out (the CLI does not import the boards' Amaranth code to
    # print it): it must follow them when they change.
    from addershift.boards.board import get_board
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    ice, ulx = get_board("icebreaker"), get_board("ulx3s-85f")

    def clocks(board):
        return ", ".join(f"{mhz:g} {kind}" for kind, mhz in board.accelerator_clocks.items())
    assert f"iCEBreaker {clocks(ice)}, ULX3S {clocks(ulx)};" in text
    assert (f"--top link iCEBreaker {ice.link_clock_mhz:g}, ULX3S {ulx.link_clock_mhz:g};"
            f" for --top array iCEBreaker {ice.default_clock_mhz:g}, "
            f"ULX3S {ulx.default_clock_mhz:g})") in text


def test_accelerator_builds_with_the_boards_placer(monkeypatch):
    """ULX3S-85F adder accelerators default to static placement (measured faster); other kinds
    and boards to nextpnr's own default; a placer given is kept."""
    import addershift.boards.build as build
    from addershift.hw.config import ArrayConfig
    seen = []
    monkeypatch.setattr(build, "build", lambda core, **kwargs: seen.append(kwargs["placer"]))
    for board, pe, placer in [("ulx3s-85f", "adder", None), ("ulx3s-85f", "adder", "heap"),
                              ("ulx3s-85f", "mul", None), ("ulx3s-12f", "adder", None),
                              ("icebreaker", "adder", None)]:
        build.build_accelerator(board=board, config=ArrayConfig(pe=pe, rows=2, cols=2),
                                placer=placer)
    assert seen == ["static", "heap", None, None, None]


def test_program_without_tools_prints_the_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("addershift.boards.build.find_program", lambda name: None)
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\xff\x00\x00\xff\x7e\xaa\x99\x7e")    # as icepack's begins
    assert main(["program", "--board", "icebreaker", "--bitstream", str(bit)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"iceprog {bit}", f"openFPGALoader -b icebreaker {bit}"]
    assert "no programmer for icebreaker is installed (iceprog, openFPGALoader)" in captured.err


def test_program_without_a_build_says_how_to_make_one(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["program", "--board", "ulx3s-12f"]) == 1
    assert ("no bitstream at build/ulx3s-12f/top.bit: build one with "
            "`addershift build --board ulx3s-12f`") in capsys.readouterr().err
    # a build that missed its clock left only its renamed bitstream: say so
    (tmp_path / "build/ulx3s-12f").mkdir(parents=True)
    (tmp_path / "build/ulx3s-12f/top.timing-failed.bit").write_bytes(b"")
    assert main(["program", "--board", "ulx3s-12f"]) == 1
    assert ("no bitstream at build/ulx3s-12f/top.bit: the build there missed its clock "
            "(top.timing-failed.bit): rebuild at a lower --clock with `addershift build "
            "--board ulx3s-12f`") in capsys.readouterr().err


def test_program_refuses_another_ecp5_devices_bitstream(capsys, tmp_path, monkeypatch):
    # As ecppack writes them: a comment, the sync word, then VERIFY_ID with the device's IDCODE.
    monkeypatch.setattr("addershift.boards.build.find_program", lambda name: None)
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff\x00comment\x00\xff\xff\xff\xff\xbd\xb3\xff\xff\xff\xff"
                    b"\xe2\x00\x00\x00\x41\x11\x30\x43")            # the 85F's
    assert main(["program", "--board", "ulx3s-12f", "--bitstream", str(bit)]) == 1
    assert (f"{bit} was built for another ecp5 device (ID 41113043), not the ulx3s-12f's "
            f"LFE5U-12F (21111043): build it with `addershift build --board ulx3s-12f`"
            ) in capsys.readouterr().err
    assert main(["program", "--board", "ulx3s-85f", "--bitstream", str(bit)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"openFPGALoader -b ulx3s {bit}"


def test_a_programmer_that_fails_is_one_line(capsys, tmp_path, monkeypatch):
    # iceprog installed, no board plugged in: its own message, then ours, no traceback.
    tool = tmp_path / "iceprog"
    tool.write_text("#!/bin/sh\necho 'Can't find iCE FTDI USB device' >&2\nexit 2\n")
    tool.chmod(0o755)
    monkeypatch.setattr("addershift.boards.build.find_program",
                        lambda name: str(tool) if name == "iceprog" else None)
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\xff\x00\x00\xff\x7e\xaa\x99\x7e")
    assert main(["program", "--board", "icebreaker", "--bitstream", str(bit)]) == 1
    err = capsys.readouterr().err
    assert f"iceprog failed (exit status 2; its output is above; is the board plugged in?): " \
           f"{tool} {bit}" in err and "Traceback" not in err


def test_a_failed_build_is_not_read_from_an_earlier_placement_log(capsys, tmp_path, monkeypatch):
    # An earlier build's nextpnr log that did not fit; this build's Yosys fails before nextpnr.
    (tmp_path / "top.tim").write_text("Info: \t         ICESTORM_LC:    5800/   5280   109%\n")
    (tmp_path / "build_top.sh").write_text("")
    monkeypatch.setenv("YOSYS", "/bin/false")
    assert main(["build", "--board", "icebreaker", "--top", "array", "--rows", "1", "--cols", "1",
                 "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "does not fit" not in err and "5800" not in err and "Traceback" not in err, err


def test_an_output_folder_under_a_file_is_named(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    assert main(["build", "--board", "icebreaker", "--top", "array", "-o",
                 str(tmp_path / "afile" / "sub")]) == 1
    err = capsys.readouterr().err
    assert f"-o {tmp_path / 'afile' / 'sub'} " in err and "Errno" not in err, err


def test_bad_baud_fails_before_building(capsys, tmp_path):
    assert main(["build", "--board", "icebreaker", "--top", "link", "--baud", "20000000",
                 "-o", str(tmp_path)]) == 1
    assert "Baud rate 20000000 is too high" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_seed_takes_a_list_of_seeds(monkeypatch, capsys, tmp_path):
    import addershift.boards.build as build
    from addershift.boards.toolchain import ToolError
    seen = []

    def fake_build_link(**kwargs):
        seen.append(kwargs["seed"])
        raise ToolError("not built in this test")
    monkeypatch.setattr(build, "build_link", fake_build_link)
    for given, seeds in [([], (1,)), (["--seed", "4"], (4,)), (["--seed", "3,1,7"], (3, 1, 7))]:
        assert main(["build", "--board", "icebreaker", "--top", "link", *given,
                     "-o", str(tmp_path)]) == 1
        assert seen.pop() == seeds
    for bad, why in [("1,1", "seeds must differ: '1,1'"),
                     ("1,x", "not an integer or a list of them: '1,x'")]:
        with pytest.raises(SystemExit):
            main(["build", "--board", "icebreaker", "--seed", bad])
        assert f"argument --seed: {why}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, refused", [
    (["build", "--top", "link", "--rows", "8"], "--top link does not use --rows"),
    (["build", "--top", "link", "--pe", "shift", "--multipliers", "luts", "--act-depth", "64"],
     "--top link does not use --pe, --multipliers, --act-depth"),
    (["build", "--top", "array", "-m", str(MODELS / "digits_shift.npz")],
     "--top array does not use --model"),
    (["build", "--top", "array", "--requant-lanes", "1", "--baud", "9600"],
     "--top array does not use --requant-lanes, --baud"),
    (["generate", "--unit", "pe", "-o", "x.v", "--cols", "3", "--board", "icebreaker"],
     "--unit pe does not use --board, --cols"),
    (["generate", "--unit", "array", "-o", "x.v", "--clock", "20"],
     "--unit array does not use --clock"),
    (["generate", "--unit", "accelerator", "-o", "x.v", "--max-length", "9"],
     "--unit accelerator does not use --max-length"),
])
def test_options_the_mode_does_not_use_are_refused(argv, refused, capsys, tmp_path,
                                                   monkeypatch):
    # Ignored, they would leave a user believing the build has them (--top array -m a shift
    # model built an adder array).
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert capsys.readouterr().err == f"addershift {argv[0]}: {refused}\n"
    assert not any(tmp_path.iterdir())


def test_options_at_their_defaults_are_not_refused(monkeypatch, tmp_path):
    import addershift.boards.build as build
    from addershift.boards.toolchain import ToolError
    seen = []

    def fake_build(**kwargs):
        seen.append(kwargs)
        raise ToolError("not built in this test")
    monkeypatch.setattr(build, "build_link", fake_build)
    monkeypatch.setattr(build, "build_array", fake_build)
    assert main(["build", "--top", "link", "--pe", "adder", "-o", str(tmp_path)]) == 1
    assert main(["build", "--top", "array", "--pe", "shift", "--rows", "2", "--cols", "3",
                 "--multipliers", "luts", "-o", str(tmp_path)]) == 1
    assert [k.get("pe") for k in seen] == [None, "shift"]


def test_the_link_top_is_built_at_the_boards_link_clock(monkeypatch, tmp_path):
    import addershift.boards.build as build
    from addershift.boards.board import get_board
    from addershift.boards.toolchain import ToolError
    seen = []

    def fake_build(core, **kwargs):
        seen.append(kwargs["clock_mhz"])
        raise ToolError("not built in this test")
    monkeypatch.setattr(build, "build", fake_build)
    for board in ("icebreaker", "ulx3s-85f"):
        assert main(["build", "--board", board, "--top", "link", "-o", str(tmp_path)]) == 1
        assert main(["build", "--board", board, "--top", "link", "--clock", "30",
                     "-o", str(tmp_path)]) == 1
    assert seen == [34.5, 30, 80.0, 30]
    assert [get_board(b).link_clock_mhz for b in ("icebreaker", "ulx3s-12f")] == [34.5, 80.0]


@pytest.mark.slow
def test_the_icebreakers_link_top_meets_its_default_clock(capsys, tmp_path):
    # About 30 s: at the board's old 48 MHz default it placed at 34.6 MHz and failed.
    assert main(["build", "--board", "icebreaker", "--top", "link", "-o", str(tmp_path),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clock_mhz"] == 34.5 and report["timing_met"] and report["fmax_mhz"] >= 34.5


@pytest.mark.slow
def test_the_icebreakers_default_accelerator_fits_and_meets_its_clock(capsys, tmp_path):
    # What `addershift build --board icebreaker -m models/digits_adder.npz` makes (about two
    # minutes): the 4x4 at 92 % of the chip, at 34.5 MHz.
    assert main(["build", "--board", "icebreaker", "-m", str(MODELS / "digits_adder.npz"),
                 "-o", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["extra"]["rows"], report["extra"]["cols"]) == (4, 4)
    assert report["clock_mhz"] == 34.5 and report["timing_met"]
    assert report["multipliers"]["multiplier_free"]
    assert (tmp_path / "top.bin").exists()


@pytest.mark.slow
def test_accelerator_that_does_not_fit_says_so(capsys, tmp_path):
    # The digits-sized 4x4 adder accelerator with the ECP5's options (a lane per column, deep
    # pipelines, 512-word activation buffers) needs more logic cells and more block RAMs (a bank
    # per row) than the iCE40UP5K has: the message names both, with a hint for each.
    model = MODELS / "digits_adder.npz"
    assert main(["build", "--board", "icebreaker", "-m", str(model), "--rows", "4", "--cols", "4",
                 "--requant-lanes", "4", "--requant-pipeline", "deep", "--writeback-pipeline",
                 "deep", "--read-pipeline", "deep", "--act-depth", "512",
                 "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.match(r"addershift build: the icebreaker build does not fit the iCE40UP5K: it needs "
                    r"\d+ ICESTORM_LC of 5280 \(\d+%\) and \d+ ICESTORM_RAM of 30 \(\d+%\)", err)
    assert "--requant-lanes 1" in err and "--top array builds the PE array alone" in err
    assert "fewer activation banks (--act-banks" in err and "shallower memories (--act-depth" in err
    assert len(err.splitlines()) == 1


def test_block_ram_that_does_not_fit_points_at_act_banks(capsys, tmp_path, monkeypatch):
    # What nextpnr's overflow becomes when the block RAMs run out (the real 16x16 build takes
    # 25 minutes): a hint at the option that needs fewer of them.
    import addershift.boards.build as build

    def overflowing(**kwargs):
        assert kwargs["config"].banks == 16
        raise build.DoesNotFit("the ulx3s-85f build does not fit the LFE5U-85F: it needs 240 "
                               "DP16KD of 208 (115%)", cell="DP16KD", needed=240, available=208)

    monkeypatch.setattr(build, "build_accelerator", overflowing)
    assert main(["build", "--board", "ulx3s-85f", "--rows", "16", "--cols", "16",
                 "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("addershift build: the ulx3s-85f build does not fit the LFE5U-85F: it "
                          "needs 240 DP16KD of 208 (115%); fewer activation banks (--act-banks")
    assert "narrow banks (--act-entry-lanes)" in err


def test_logic_that_does_not_fit_names_the_options_left(capsys, tmp_path, monkeypatch):
    # The hint for too many logic cells names only the options the build has not already at
    # their least: here the requantiser's deep pipeline, besides the array's size.
    import addershift.boards.build as build

    def overflowing(**kwargs):
        assert kwargs["config"].lanes == 1 and kwargs["config"].requant_pipeline == "deep"
        raise build.DoesNotFit("the icebreaker build does not fit the iCE40UP5K: it needs 5500 "
                               "ICESTORM_LC of 5280 (104%)", cell="ICESTORM_LC", needed=5500,
                               available=5280)

    monkeypatch.setattr(build, "build_accelerator", overflowing)
    assert main(["build", "--board", "icebreaker", "--requant-pipeline", "deep",
                 "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "addershift build: the icebreaker build does not fit the iCE40UP5K: it needs 5500 "
        "ICESTORM_LC of 5280 (104%); a smaller array (--rows, --cols) or short pipelines "
        "(--requant-pipeline) need less, and --top array builds the PE array alone\n")
