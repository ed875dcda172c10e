"""The demo's own logic: plots from a report, a board build that does not fit, build reuse; the
whole demo is a slow test (it compiles the simulated board and places a design)."""

import argparse
import json

import pytest

from addershift.boards.board import get_board
from addershift.sw import demo


def _report():
    return {"pe": "adder", "board": "icebreaker", "config": {"rows": 2, "cols": 2, "pes": 4},
            "simulation": {"stages": [{"name": "conv1", "cycles": 100, "busy_pe": 300},
                                      {"name": "fc", "cycles": 50, "busy_pe": 40}]}}


def test_plots_are_written(tmp_path, monkeypatch):
    cost = [{"kind": k, "pes": n, "target": "ice40-up5k", "unit": "array", "fits": n < 64 or k == "adder",
             "cells": 50 * n} for k in ("adder", "shift", "mul") for n in (4, 16, 64)]
    monkeypatch.setattr(demo, "_array_cost", lambda board: cost)
    paths = demo._plots(tmp_path, _report())
    assert [p.name for p in paths] == ["cycles_per_layer.png", "resources_per_pe.png"]
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("board, kind", [("icebreaker", "adder"), ("icebreaker", "mul"),
                                         ("ulx3s-85f", "shift"), ("ulx3s-12f", "adder")])
def test_the_demo_makes_the_boards_own_build(tmp_path, capsys, board, kind):
    # What `addershift build --board B -m MODEL` (and `make bitstream`) makes, by its build hash.
    from addershift.sw.cli import main
    from addershift.sw.model import load_model
    model = demo._model_path(kind)
    assert main(["generate", "--unit", "accelerator", "--board", board, "-m", str(model),
                 "-o", str(tmp_path / "acc.v"), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)["build_hash"]
    assert demo.board_config(load_model(model), board=board).build_hash == built
    # Options given replace the board's.
    config = demo.board_config(load_model(model), board=board, rows=2, cols=2, requant_lanes=1)
    assert (config.rows, config.cols, config.lanes) == (2, 2, 1)


def test_a_build_that_does_not_fit_is_reported_and_reused(tmp_path, monkeypatch):
    from addershift.boards import build as board_build
    from addershift.hw.config import ArrayConfig
    calls = []

    def no_room(*args, **kwargs):
        calls.append(kwargs["board"].name)
        raise board_build.DoesNotFit("the icebreaker build does not fit the iCE40UP5K: it needs "
                                     "6467 ICESTORM_LC of 5280 (122%) (log: x)\n...",
                                     cell="ICESTORM_LC", needed=6467, available=5280)
    monkeypatch.setattr(board_build, "build", no_room)
    config = ArrayConfig(pe="adder", rows=2, cols=2, requant_mode="pow2x2")
    outcome, reused = demo._board_build(config, "icebreaker", tmp_path)
    assert (outcome["fits"], outcome["needed_cells"], outcome["available_cells"],
            outcome["cell_type"], reused) == (False, 6467, 5280, "ICESTORM_LC", False)
    again, reused = demo._board_build(config, "icebreaker", tmp_path)
    assert again == outcome and reused and calls == ["icebreaker"]


def test_other_tool_errors_are_not_hidden(tmp_path, monkeypatch):
    from addershift.boards import build as board_build
    from addershift.boards.toolchain import ToolError
    from addershift.hw.config import ArrayConfig

    def broken(*args, **kwargs):
        raise ToolError("the icebreaker build failed with status 1 (log: x):\nERROR: syntax error")
    monkeypatch.setattr(board_build, "build", broken)
    with pytest.raises(ToolError, match="syntax error"):
        demo._board_build(ArrayConfig(pe="adder", rows=2, cols=2), "icebreaker", tmp_path)


@pytest.mark.parametrize("board, first_fmax, retry", [
    ("icebreaker", 32.2, 30),       # floor(32.2 * 0.95)
    ("ulx3s-85f", 80.0, 75),        # 76 MHz is no ECP5 PLL setting from 25 MHz: the next below
])
def test_a_build_that_misses_timing_is_built_again_below_its_fmax(tmp_path, monkeypatch, board,
                                                                  first_fmax, retry):
    import types
    from addershift.boards import build as board_build
    from addershift.hw.config import ArrayConfig
    clocks = []

    board_clock = get_board(board).accelerator_clock("adder")

    def fake(*args, clock_mhz, **kwargs):
        clocks.append(clock_mhz)
        fmax = first_fmax if clock_mhz == board_clock else first_fmax + 2
        report = types.SimpleNamespace(timing_met=fmax >= clock_mhz, fmax=fmax)
        return types.SimpleNamespace(report=report, to_dict=lambda: {
            "clock_mhz": float(clock_mhz), "fmax_mhz": fmax, "timing_met": fmax >= clock_mhz})
    monkeypatch.setattr(board_build, "build", fake)
    outcome, _ = demo._board_build(ArrayConfig(pe="adder", rows=2, cols=2), board, tmp_path)
    # The board's clock for adder accelerators, then the highest it makes below 95 % of Fmax.
    assert clocks == [board_clock, retry]
    assert outcome["timing_met"] and outcome["clock_mhz"] == retry
    assert outcome["first_attempt"] == {"clock_mhz": board_clock, "fmax_mhz": first_fmax}


def test_the_demo_says_why_its_build_does_not_place(tmp_path, monkeypatch, capsys):
    # The whole demo with a board build that packs but does not place (nextpnr's own failure,
    # as for the iCEBreaker 5x4): the line names the cell count, and the report still comes.
    from addershift.boards import build as board_build
    monkeypatch.setattr(demo, "_generate", lambda config, out: _written(out / "accelerator.v"))
    devices = []

    def simulated_board(model, config, n, out, device):
        devices.append(device)
        return {"accuracy": 1.0, "mismatches": 0, "bit_exact": True, "cycles_per_inference": 6000,
                "utilisation": 0.5, "stages": _report()["simulation"]["stages"],
                "link": {"load_bytes_per_s_device": 9000.0, "line_bytes_per_s": 11520.0,
                         "load_bytes": 4000, "baud": 115200}}
    monkeypatch.setattr(demo, "_simulated_board", simulated_board)

    def no_placement(*args, **kwargs):
        raise board_build.DoesNotPlace(
            "the icebreaker build does not place on the iCE40UP5K: it packs into 5107 ICESTORM_LC "
            "of 5280 (96.7%), and nextpnr found no legal placement for it (log: x)\n...",
            cell="ICESTORM_LC", needed=5107, available=5280)
    monkeypatch.setattr(board_build, "build", no_placement)
    demo.run_demo(_demo_args(tmp_path, images=4))
    out = capsys.readouterr().out
    assert devices == ["iCE40UP5K"] and "socket (iCE40UP5K cells by Yosys' models)" in out
    assert ("  DOES NOT FIT: the icebreaker build does not place on the iCE40UP5K: it packs into "
            "5107 ICESTORM_LC of 5280 (96.7%), and nextpnr found no legal placement for it "
            "(log: x); see docs/accelerator.md (area) and try --board ulx3s-85f") in out
    assert "Fmax" not in out and "bitstream" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["build"]["fits"] is False and report["build"]["needed_cells"] == 5107
    assert report["resources"] is None and report["images_per_second_at_fmax"] is None
    assert report["images_per_second_at_clock"] is None
    assert (tmp_path / "cycles_per_layer.png").read_bytes()[:4] == b"\x89PNG"


def _demo_args(out, *, images):
    """``addershift demo``'s arguments for the adder model on the iCEBreaker."""
    return argparse.Namespace(pe="adder", board="icebreaker", rows=None, cols=None,
                              requant_lanes=None, requant_pipeline=None,
                              writeback_pipeline=None, read_pipeline=None, images=images,
                              out=str(out))


def _written(path):
    path.write_text("module addershift_top; endmodule\n")
    return path


def test_a_bad_build_option_stops_the_demo_before_it_starts(tmp_path, capsys):
    from addershift.sw.cli import main
    assert main(["demo", "--requant-lanes", "3", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "addershift demo: --requant-lanes must divide cols (4), not 3"
    assert "[1/5]" not in captured.out and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    demo.run_demo(_demo_args(tmp_path, images=3))
    out = capsys.readouterr().out
    assert "outputs bit-exact with the golden model: 3/3" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["simulation"]["bit_exact"] and report["accuracy_golden"] > 0.97
    # The iCEBreaker build fits, is multiplier-free and meets timing at the clock it was built for.
    build = report["build"]
    assert build["fits"] and build["timing_met"], build
    assert build["multipliers"]["premap_mul"] == 0 and build["multipliers"]["dsp"] == 0
    assert report["images_per_second_at_clock"] > 1000
