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
    assert s[:5] == [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)] and s[-1] == (4, 4)
    assert all(a[0] * a[1] < b[0] * b[1] for a, b in zip(s, s[1:]))


def test_area_limit(monkeypatch):
    calls = _fake(monkeypatch, capacity=81, timing_ok=lambda pes: False)
    best, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64,
                                    ignore_timing=True)
    assert best["pes"] == 81 and len(calls) == len(set(calls)) < 16


def test_timing_limit_below_the_area_limit_with_a_hole(monkeypatch):
    # Fits up to 81 PEs; meets the clock up to 42 PEs, except a placement-noise failure at 16.
    calls = _fake(monkeypatch, capacity=81, timing_ok=lambda pes: pes <= 42 and pes != 16)
    best, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64)
    assert best["pes"] == 42
    assert len(calls) == len(set(calls)) < 25


def test_nothing_meets_the_clock(monkeypatch):
    _fake(monkeypatch, capacity=9, timing_ok=lambda pes: False)
    best, tried = fit_study.largest("b", "v", clock_mhz=48, out=None, seed=1, max_side=64)
    assert best is None and tried[0]["pes"] == 1
