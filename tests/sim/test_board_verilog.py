"""Each board's own accelerator build (what ``addershift build --board B`` makes for the shipped
digits models) as Verilog elaborated for the board's device: the vendor cells it instantiates
(iCE40UP: SB_SPRAM256KA weight memories; ECP5: the adder PEs' CCU2C carry chains) run as Yosys'
models of them, bit-exact with the golden model on Icarus and Verilator."""

import json
import pathlib

import pytest

from addershift.boards.board import get_board
from addershift.sim import accel_sim
from addershift.sim.accel_sim import simulate_model, write_verilog
from addershift.sw.cli import main
from addershift.sw.compiler import board_build, default_config
from addershift.sw.model import load_model

#: The shipped models, found from any working folder.
MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
ADDER, SHIFT = str(MODELS / "digits_adder.npz"), str(MODELS / "digits_shift.npz")

#: The iCEBreaker's three builds (the ULX3S-85F's 8x8s are the largest), the small ULX3S's 4x4.
CASES = [("icebreaker", kind, "icarus") for kind in ("adder", "shift", "mul")]
CASES += [("ulx3s-85f", kind, "icarus") for kind in ("adder", "shift", "mul")]
# Verilator's C++ build of an 8x8 takes over five minutes here: `make test-slow`.
CASES += [("ulx3s-12f", "adder", "icarus"), ("icebreaker", "adder", "verilator")]
CASES += [pytest.param("ulx3s-85f", kind, "verilator", marks=pytest.mark.slow)
          for kind in ("adder", "shift")]


def _cells(device, kind):
    """The vendor cells a device's build of PE ``kind`` instantiates."""
    if device.startswith("iCE40UP"):
        return "SB_SPRAM256KA"
    return "CCU2C" if kind == "adder" else None


def _run(board, kind, simulator, tmp_path, images=3):
    model = load_model(MODELS / f"digits_{kind}.npz")
    own, least = board_build(board, kind)
    x, _ = accel_sim.test_images(model, images)
    return simulate_model(model, x, simulator=simulator, least=least, build_dir=tmp_path,
                          device=get_board(board).device, **own)


@pytest.mark.cocotb
@pytest.mark.parametrize("board, kind, simulator", CASES)
def test_board_build_on_its_cells(board, kind, simulator, tmp_path):
    report = _run(board, kind, simulator, tmp_path)
    assert report["mismatch"] is None and report["bit_exact"]
    assert report["predictions"] == report["golden_predictions"]
    device = get_board(board).device
    assert report["device"] == device
    verilog = next(tmp_path.glob(f"*-{device}/accelerator.v")).read_text()
    cell = _cells(device, kind)
    if cell:
        assert f"module {cell}" in verilog                  # Yosys' model, appended
        assert f"  {cell} " in verilog                      # and instantiated


def test_the_generic_form_has_no_vendor_cells(tmp_path):
    own, least = board_build("icebreaker", "adder")
    config = default_config(load_model(MODELS / "digits_adder.npz"), least=least, **own)
    generic = write_verilog(config, tmp_path / "generic.v").read_text()
    spram = write_verilog(config, tmp_path / "spram.v", device="iCE40UP5K").read_text()
    assert "SB_SPRAM256KA" not in generic and "module SB_SPRAM256KA" in spram


def test_amaranth_refuses_a_device(tmp_path):
    with pytest.raises(ValueError, match="^Amaranth's simulator cannot run the iCE40UP5K's vendor "
                                         "cells: simulate its build on icarus or verilator$"):
        _run("icebreaker", "adder", "amaranth", tmp_path)


@pytest.mark.cocotb
def test_simulate_cli_runs_the_boards_own_verilog(tmp_path, capsys):
    assert main(["simulate", "-m", ADDER, "--board", "icebreaker",
                 "--simulator", "icarus", "-n", "2", "--build-dir", str(tmp_path),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "iCE40UP5K" and report["bit_exact"]
    assert report["config"]["rows"] == 4 and report["config"]["requant_lanes"] == 1
    assert main(["simulate", "-m", ADDER, "--board", "icebreaker",
                 "--simulator", "amaranth", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{ADDER} on amaranth: adder 4x4")


@pytest.mark.cocotb
def test_run_on_the_simulated_icebreaker(capsys):
    """`run --sim --board icebreaker`: the board's top level (UART, the framer without read
    registers that short pipelines give, the core with its SPRAMs) on Verilator, loaded and run
    by the host driver over the serial link."""
    assert main(["run", "--sim", "--board", "icebreaker", "-m", ADDER,
                 "--images", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] and report["images"] == 2
    assert report["predictions"] == report["golden_predictions"]
    assert report["cycles_per_inference"] == 2100          # the board's, docs/boards.md


def test_simulate_cli_names_the_device(tmp_path, capsys, monkeypatch):
    seen = []
    real = accel_sim.simulate_model
    monkeypatch.setattr(accel_sim, "simulate_model",
                        lambda *a, **kw: seen.append(kw["device"]) or real(
                            *a, **dict(kw, simulator="amaranth", device=None)))
    assert main(["simulate", "-m", SHIFT, "--board", "ulx3s-12f",
                 "--simulator", "icarus", "-n", "1", "--build-dir", str(tmp_path)]) == 0
    assert seen == ["LFE5U-12F"]
    assert capsys.readouterr().out.startswith(
        f"{SHIFT} on icarus (as built for the LFE5U-12F): shift 4x4")
