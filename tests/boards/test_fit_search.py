"""The fit study's search (bench/fit_study.py) on a stand-in for the builds: area limit first, then
the largest shape below it that meets the clock, even when Fmax is not monotonic."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "fit_study.py"
_spec = importlib.util.spec_from_file_location("fit_study", _PATH)
fit_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_study)


def _fake(monkeypatch, *, capacity, timing_ok):
    calls = []

    def attempt(board, variant, rows, cols, **kwargs):
        pes = rows * cols
        calls.append(pes)
        if pes > capacity:
            return {"rows": rows, "cols": cols, "pes": pes, "ok": False, "placed": False,
                    "reason": "full"}
        met = timing_ok(pes)
        return {"rows": rows, "cols": cols, "pes": pes, "ok": True, "placed": True,
                "timing_met": met, "fmax_mhz": 50.0, "clock_mhz": 48.0,
                "logic_cells": {"percent": 100.0 * pes / capacity * 0.9}}

    monkeypatch.setattr(fit_study, "attempt", attempt)
    return calls


def test_shapes_grow_by_pe_count():
    s = fit_study.shapes(4)
    assert s[:6] == [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 3)] and s[-1] == (4, 4)
    assert (3, 4) in s and (3, 7) not in s and (2, 8) not in s
    assert all(a[0] * a[1] < b[0] * b[1] for a, b in zip(s, s[1:]))


def test_area_limit(monkeypatch):
    calls = _fake(monkeypatch, capacity=81, timing_ok=lambda pes: False)
    best, area, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64,
                                          ignore_timing=True)
    assert best["pes"] == area["pes"] == 81 and len(calls) == len(set(calls)) < 16


def test_timing_limit_below_the_area_limit_with_a_hole(monkeypatch):
    # Fits up to 81 PEs; meets the clock up to 42 PEs, except a placement-noise failure at 16.
    calls = _fake(monkeypatch, capacity=81, timing_ok=lambda pes: pes <= 42 and pes != 16)
    best, area, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64)
    assert best["pes"] == 42 and area["pes"] == 81
    assert len(calls) == len(set(calls)) < 25


def test_one_pe_missing_the_clock_does_not_end_the_search(monkeypatch):
    # A whole accelerator's Fmax is its periphery's: placement noise can fail the smallest
    # build while larger ones meet the clock (the iCEBreaker's 1x1 against 34.5 MHz).
    _fake(monkeypatch, capacity=18, timing_ok=lambda pes: 1 < pes <= 16)
    best, area, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64)
    assert best["pes"] == 16 and area["pes"] == 18


def test_nothing_meets_the_clock(monkeypatch):
    _fake(monkeypatch, capacity=9, timing_ok=lambda pes: False)
    best, area, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64)
    assert best is None and area["pes"] == 9 and tried[0]["pes"] == 1


def test_main_writes_table_json_and_plot(monkeypatch, tmp_path, capsys):
    def attempt(board, variant, rows, cols, **kwargs):
        assert kwargs["seed"] == (4, 2)
        pes = rows * cols
        placed = pes <= 30
        rec = {"rows": rows, "cols": cols, "pes": pes, "placed": placed, "ok": placed,
               "reason": None if placed else "full"}
        if placed:
            rec.update(timing_met=pes <= 12 or variant == "shift", fmax_mhz=50.0,
                       clock_mhz=48.0, premap_mul=0,
                       logic_cells={"used": 100 * pes, "total": 5280, "percent": 1.9 * pes},
                       dsp={"used": 0, "total": 8, "percent": 0.0})
        return rec

    monkeypatch.setattr(fit_study, "attempt", attempt)
    fit_study.main(["--boards", "icebreaker", "--kinds", "adder", "shift", "--seed", "4,2",
                    "--out", str(tmp_path)])
    out = capsys.readouterr().out
    adder = next(line for line in out.splitlines() if line.startswith("icebreaker adder ") and
                 "x" in line)
    assert adder.split()[2:4] == ["3x4", "12"] and adder.endswith("5x6 (30 PEs, 50.0 MHz)")
    import json
    payload = json.loads((tmp_path / "fit_study.json").read_text())
    assert [r["pes"] for r in payload["results"]] == [12, 30] and payload["seed"] == [4, 2]
    assert payload["results"][0]["peak_gops"] == round(12 * 48 / 1e3, 2)
    assert (tmp_path / "fit_study.png").stat().st_size > 10_000


@pytest.mark.parametrize("rows, rows_per_bank, banks", [
    (32, 4, 8), (32, 3, 16), (12, 5, 3), (7, 4, 7), (7, 7, 1), (16, None, None), (1, 4, 1)])
def test_rows_per_bank_picks_the_fewest_banks_that_divide_rows(rows, rows_per_bank, banks):
    assert fit_study.act_banks(rows, rows_per_bank) == banks
    config = fit_study._accelerator_config("adder", rows, rows + 1,
                                           {"rows_per_bank": rows_per_bank})
    assert config.act_banks == banks


@pytest.mark.parametrize("cols, bounds, options", [
    (32, (8, 8, 4), {"requant_lanes": 8, "act_entry_lanes": 8, "weight_relays": 4}),
    (3, (8, 8, 4), {"requant_lanes": 1, "act_entry_lanes": 2, "weight_relays": 3}),
    (12, (8, None, 5), {"requant_lanes": 6, "weight_relays": 4}),
    (1, (8, 8, 4), {"requant_lanes": 1, "act_entry_lanes": 1, "weight_relays": 1}),
    (24, (None, 16, None), {"requant_lanes": 12, "act_entry_lanes": 16}),
    (6, (None, None, None), {})])
def test_lane_options_fit_every_shape(cols, bounds, options):
    assert fit_study.lane_options(cols, *bounds) == options
    # Every shape of a search builds (ArrayConfig accepts what the bounds give).
    fit_study._accelerator_config("adder", 2, cols, dict(zip(
        ("requant_lanes", "act_entry_lanes", "weight_relays"), bounds)))


def test_given_shapes_only(monkeypatch, tmp_path, capsys):
    built = []

    def attempt(board, variant, rows, cols, **kwargs):
        built.append((rows, cols, kwargs["overrides"]["weight_relays"]))
        pes = rows * cols
        rec = {"rows": rows, "cols": cols, "pes": pes, "placed": pes <= 768, "ok": True,
               "reason": None}
        if rec["placed"]:
            rec.update(timing_met=pes <= 512, fmax_mhz=105.0 if pes <= 512 else 80.0,
                       clock_mhz=100.0, premap_mul=0, critical_path=[],
                       logic_cells={"used": 80 * pes, "total": 83640, "percent": pes / 12.0},
                       dsp={"used": 0, "total": 156, "percent": 0.0})
        return rec

    monkeypatch.setattr(fit_study, "attempt", attempt)
    fit_study.main(["--boards", "ulx3s-85f", "--kinds", "adder", "--top", "accelerator",
                    "--weight-relays", "4", "--shapes", "24x32", "16x32", "32X32",
                    "--out", str(tmp_path)])
    assert built == [(24, 32, 4), (16, 32, 4), (32, 32, 4)]
    import json
    (row,) = json.loads((tmp_path / "fit_study.json").read_text())["results"]
    assert (row["rows"], row["cols"], row["area_limit"]["pes"]) == (16, 32, 768)
    assert [r["pes"] for r in row["tried"]] == [512, 768, 1024]
    with pytest.raises(SystemExit):
        fit_study.main(["--shapes", "16by32"])
    assert "a shape is ROWSxCOLS" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--shapes", "0x4"], "rows and cols must be between 1 and 64, not '0x4'"),
    (["--shapes", "16x65"], "rows and cols must be between 1 and 64"),
    (["--requant-lanes", "0"], "must be an integer of at least 1, not '0'"),
    (["--seed", "3,3"], "argument --seed: seeds must differ: '3,3'"),
    (["--weight-relays", "two"], "must be an integer of at least 1, not 'two'"),
    (["--top", "accelerator", "--weight-relays", "4", "--read-pipeline", "short",
      "--shapes", "8x8"], "adder 8x8: weight_relays needs the deep read pipeline")])
def test_bad_options_fail_before_any_build(monkeypatch, capsys, args, message):
    monkeypatch.setattr(fit_study, "attempt", lambda *a, **k: pytest.fail("a build ran"))
    with pytest.raises(SystemExit):
        fit_study.main(["--boards", "ulx3s-85f", "--kinds", "adder", *args])
    assert message in capsys.readouterr().err
