"""The bench scripts (bench/*.py) refuse bad arguments with one argparse line (exit status 2)
naming the option and the value, before any build, simulation or training; the fit study
records only nextpnr's own "does not fit"/"does not place" as such, and stops on any other tool
failure."""

import functools
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from addershift.boards.build import DoesNotFit, DoesNotPlace
from addershift.boards.toolchain import ToolError

_ROOT = pathlib.Path(__file__).resolve().parents[2]

#: What each script would start after its arguments: a test fails if any of it runs.
_WORK = {
    "accel_area": ("measure", "measure_parts", "prepare_environment"),
    "accel_cycles": ("simulate",),
    "accuracy": ("run",),
    "array_variants": ("measure",),
    "fit_study": ("attempt", "prepare_environment"),
    "golden_speed": ("measure",),
    "host_inference": ("BoardProcess",),
    "link": ("BoardProcess", "uart_margin"),
    "logic_depth": ("logic_depth",),
    "module_area": ("measure", "prepare_environment"),
    "pe_cost": ("measure", "prepare_environment"),
    "postproc_cost": ("full", "quick"),
    "weight_storage": ("storage_rows", "train_rows", "prepare_environment"),
}
_WITH_OUT = {"accel_area", "array_variants", "fit_study", "module_area", "pe_cost",
             "postproc_cost", "weight_storage"}


@functools.cache
def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refuse(monkeypatch, capsys, name, argv):
    """Run ``name``'s main on ``argv`` with its work stubbed out; its exit status and stderr."""
    module = _script(name)
    for attr in _WORK[name]:
        monkeypatch.setattr(module, attr, lambda *a, _attr=attr, **k: pytest.fail(f"{_attr} ran"))
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name, argv, option, value", [
    # Known from the audit.
    ("accel_cycles", ["--shapes", "4"], "--shapes", "'4'"),
    ("link", ["--baud", "0"], "--baud", "'0'"),
    ("link", ["--windows", "0"], "--windows", "'0'"),      # used to hang
    ("fit_study", ["--max-side", "0"], "--max-side", "'0'"),
    ("fit_study", ["--clock", "nan"], "--clock", "'nan'"),
    ("host_inference", ["--model", "no/such/model.npz"], "--model", "no/such/model.npz"),
    # Zero, negative, nan and inf, out of range, wrong formats, missing files.
    ("accel_cycles", ["--shapes", "4x4,0x4"], "--shapes", "'0x4'"),
    ("accel_cycles", ["--ops", "adder,div"], "--ops", "'div'"),
    ("accel_cycles", ["--channels", "8"], "--channels", "'8'"),
    ("accel_cycles", ["--channels", "8,-16"], "--channels", "'-16'"),
    ("accel_cycles", ["--requant-lanes", "0"], "--requant-lanes", "'0'"),
    ("accel_cycles", ["--act-banks", "1,x"], "--act-banks", "'x'"),
    ("accel_area", ["--build", "adder:4x4:shift"], "--build", "'adder:4x4:shift'"),
    ("accel_area", ["--build", "adder:4:shift:1"], "--build", "'4'"),
    ("accel_area", ["--parts", "adder:4x4:shift:0"], "--parts", "not 0"),
    ("accuracy", ["--dataset", "no/such/folder"], "--dataset", "no/such/folder"),
    ("accuracy", ["--seeds", "0", "-1"], "--seeds", "'-1'"),
    ("accuracy", ["--qat-epochs", "-1"], "--qat-epochs", "'-1'"),
    ("fit_study", ["--clock", "inf"], "--clock", "'inf'"),
    ("fit_study", ["--clock", "0"], "--clock", "'0'"),
    ("fit_study", ["--clock", "1000"], "--clock", "1000"),     # beyond the iCE40 PLL
    ("fit_study", ["--max-side", "-2"], "--max-side", "'-2'"),
    ("fit_study", ["--seed", "4294967296"], "--seed", "4294967296"),
    ("fit_study", ["--top", "accelerator", "--rows-per-bank", "0"], "--rows-per-bank", "'0'"),
    ("fit_study", ["--top", "accelerator", "--act-depth", "0"], "--act-depth", "'0'"),
    ("golden_speed", ["--images", "0"], "--images", "'0'"),
    ("host_inference", ["--images", "-1"], "--images", "'-1'"),
    ("host_inference", ["--images", "400"], "--images", "400"),   # more than the test split
    ("host_inference", ["--rows", "0"], "--rows", "'0'"),
    ("link", ["--clock", "0"], "--clock", "'0'"),
    ("link", ["--baud", "7000000"], "--baud", "7000000"),        # under 8 cycles per bit
    ("link", ["--windows", "1", "65"], "--windows", "'65'"),
    ("link", ["--kib", "0"], "--kib", "'0'"),
    ("link", ["--round-trips", "-1"], "--round-trips", "'-1'"),
    ("logic_depth", ["top.json", "--limit", "0"], "--limit", "'0'"),
    ("logic_depth", ["top.json", "--min-depth", "-1"], "--min-depth", "'-1'"),
    ("module_area", ["--rows", "0"], "--rows", "'0'"),
    ("module_area", ["-m", "no/such/model.npz"], "--model", "no/such/model.npz"),
    ("pe_cost", ["--max-length", "0"], "--max-length", "'0'"),
    ("pe_cost", ["--seed", "2147483648"], "--seed", "'2147483648'"),
    ("postproc_cost", ["--seed", "-2147483649"], "--seed", "'-2147483649'"),
    ("weight_storage", ["-m", "no/such/model.npz"], "--models", "no/such/model.npz"),
    ("weight_storage", ["--boards", "icestick"], "--boards", "'icestick'"),
])
def test_bad_argument_is_one_line_error(monkeypatch, capsys, tmp_path, name, argv, option, value):
    if name in _WITH_OUT:
        argv = [*argv, "--out", str(tmp_path / "out")]      # nothing written in the repository
    status, err = _refuse(monkeypatch, capsys, name, argv)
    line = err.strip().splitlines()[-1]
    assert status == 2 and re.search(f"error: argument (-./)?{option}: ", line)
    assert value in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["array_variants", "pe_cost", "postproc_cost"])
def test_out_that_is_a_file(monkeypatch, capsys, tmp_path, name):
    (tmp_path / "file").write_text("")
    status, err = _refuse(monkeypatch, capsys, name, ["--out", str(tmp_path / "file" / "x")])
    assert status == 2 and (f"argument --out: {tmp_path / 'file' / 'x'} lies under "
                            f"{tmp_path / 'file'}, a file, not a folder") in err


@pytest.mark.parametrize("argv, option", [
    (["bench/accel_cycles.py", "--shapes", "4"], "--shapes"),
    (["bench/link.py", "--windows", "0"], "--windows"),
    (["bench/fit_study.py", "--clock", "nan"], "--clock"),
])
def test_scripts_exit_with_status_2_and_no_traceback(argv, option):
    # As a person runs them: from the repository root, with bench/_args.py found beside them.
    proc = subprocess.run([sys.executable, *argv], cwd=_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: argument {option}: " in proc.stderr.splitlines()[-1]


# --- the fit study: what counts as "does not fit" ------------------------------------------------

def _build_raising(monkeypatch, error):
    fit_study = _script("fit_study")
    monkeypatch.setattr(fit_study, "prepare_environment", lambda: None)

    def build_array(**kwargs):
        raise error
    monkeypatch.setattr(fit_study, "build_array", build_array)
    return fit_study


@pytest.mark.parametrize("error, reason", [
    (DoesNotPlace("the icebreaker build does not place on the iCE40UP5K\nlog tail",
                  cell="ICESTORM_LC", needed=5214, available=5280),
     "does not place: 5214 ICESTORM_LC of 5280"),
    (DoesNotFit("the icebreaker build does not fit the iCE40UP5K\nlog tail",
                cell="ICESTORM_LC", needed=6000, available=5280),
     "does not fit: 6000 ICESTORM_LC of 5280"),
])
def test_nextpnrs_verdict_is_a_shape_that_does_not_fit(monkeypatch, tmp_path, error, reason):
    fit_study = _build_raising(monkeypatch, error)
    rec = fit_study.attempt("icebreaker", "adder", 2, 2, clock_mhz=48, out=tmp_path, seed=(1,))
    assert rec["placed"] is False and rec["ok"] is False and rec["reason"] == reason


def test_any_other_tool_failure_stops_the_study(monkeypatch, capsys, tmp_path):
    failure = ToolError("the icebreaker build failed: Yosys failed (log: top.build.log)\ntail")
    fit_study = _build_raising(monkeypatch, failure)
    with pytest.raises(fit_study.ToolFailure, match="icebreaker adder 2x2: .*Yosys failed"):
        fit_study.attempt("icebreaker", "adder", 2, 2, clock_mhz=48, out=tmp_path, seed=(1,))
    with pytest.raises(SystemExit) as exit_info:
        fit_study.main(["--kinds", "adder", "--max-side", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1
    assert "icebreaker adder 1x1: the build failed, and not because the design does not fit: " \
           "the icebreaker build failed: Yosys failed (log: top.build.log)" in err
    assert not (tmp_path / "fit_study.json").exists()      # no table of wrong "does not place"


def test_pe_cost_counts_only_a_design_too_big_as_one_that_does_not_fit(monkeypatch, tmp_path):
    # A tool that failed for another reason made a "does not fit" row as well (the README's
    # table of array costs is pe_cost's).
    pe_cost = _script("pe_cost")
    build_dir = tmp_path / "ice40-up5k" / "adder_pe"

    def failing_synthesize(design, *, build_dir, **kwargs):
        build_dir.mkdir(parents=True, exist_ok=True)
        raise ToolError("nextpnr-ice40 failed: it could not be started")
    monkeypatch.setattr(pe_cost, "synthesize", failing_synthesize)
    with pytest.raises(ToolError, match="could not be started"):
        pe_cost.measure("adder", "pe", "ice40-up5k", out=tmp_path, max_length=128, seed=1,
                        show_breakdown=False)
    # nextpnr's own last words on a design too big (a real log's lines), then the row.
    (build_dir / "top.tim").write_text(
        "Info: \t         ICESTORM_LC:    5341/   5280   101%\n"
        "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5341 ICESTORM_LCs\n")
    monkeypatch.setattr(pe_cost, "read_synthesis", lambda *a, **k: ({}, {}))
    monkeypatch.setattr(pe_cost, "netlist_counts",
                        lambda cells, family: {"lut4": 1, "carry": 2, "ff": 3, "dsp": 0})
    monkeypatch.setattr(pe_cost, "premap_multipliers", lambda premap: 0)
    row = pe_cost.measure("adder", "pe", "ice40-up5k", out=tmp_path, max_length=128, seed=1,
                          show_breakdown=False)
    assert row["fits"] is False and row["lut4"] == 1


def test_fit_study_builds_accelerators_at_the_boards_accelerator_clock(monkeypatch, tmp_path):
    # As `addershift build` does without --clock (it built them at the board's 48 MHz).
    fit_study = _script("fit_study")
    clocks = []

    def attempt(board, variant, rows, cols, *, clock_mhz, **kwargs):
        clocks.append((board, variant, clock_mhz))
        raise fit_study.ToolFailure("stop here")
    monkeypatch.setattr(fit_study, "attempt", attempt)
    monkeypatch.setattr(fit_study, "prepare_environment", lambda: None)
    for top, kinds, want in [("accelerator", ["adder", "shift"], [34.5, 34.5]),
                             ("array", ["adder"], [48.0])]:
        for kind in kinds:
            with pytest.raises(SystemExit):
                fit_study.main(["--top", top, "--kinds", kind, "--shapes", "2x2",
                                "--out", str(tmp_path)])
        assert [c for _, _, c in clocks] == want
        clocks.clear()


def test_array_variants_pe_formulations_elaborate():
    # The PE variants subclass hw/pe.py's PEs and override its hooks: a hook's signature
    # changed there (2026-12) and broke `--only pe` (a TypeError at the first row).
    from amaranth.back import verilog
    array_variants = _script("array_variants")
    names = []
    for name, make in array_variants.designs("pe"):
        assert "module" in verilog.convert(make(), name="pe", emit_src=False), name
        names.append(name)
    assert names == ["pe/naive", "pe/onescomp", "pe/nopipe", "pe/gate"]
