"""The LUT breakdown charges each cell to the register it feeds, on a design of known structure."""

import importlib.util
import json
import pathlib

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from addershift.boards.netlist import breakdown, format_breakdown, format_depth, logic_depth
from addershift.boards.report import synthesize

ROOT = pathlib.Path(__file__).resolve().parents[2]


class _TwoParts(wiring.Component):
    """An 8-bit difference register feeding a 16-bit accumulator, and a 4-bit mux."""
    a: In(8)
    b: In(8)
    sel: In(1)
    y: Out(16)
    z: Out(4)

    def elaborate(self, platform):
        m = Module()
        diff = Signal(9, name="diff")
        m.d.sync += diff.eq(self.a - self.b)
        m.d.sync += self.y.eq(self.y + diff.as_signed())
        m.d.sync += self.z.eq(self.sel.replicate(4) & self.a[:4] | ~self.sel.replicate(4) & self.b[:4])
        return m


@pytest.mark.parametrize("target, family", [("ice40-up5k", "ice40"), ("ecp5-85f", "ecp5")])
def test_luts_are_charged_to_the_registers_they_feed(tmp_path, target, family):
    r = synthesize(_TwoParts(), target=target, build_dir=tmp_path)
    rows = breakdown(tmp_path / "top.json", family=family, root=ROOT)
    by_name = {row["name"]: row for row in rows}
    assert by_name["dut.diff"]["ff"] == 9 and by_name["dut.y"]["ff"] == 16
    assert by_name["dut.z"]["ff"] == 4
    # Every LUT, carry and flip-flop of the netlist is charged exactly once.
    assert sum(row["lut4"] for row in rows) == pytest.approx(r.used("lut4"), abs=0.5)
    assert sum(row["carry"] for row in rows) == pytest.approx(r.used("carry"), abs=0.5)
    assert sum(row["ff"] for row in rows) == r.used("ff")
    # The accumulator's adder is a carry chain in front of y; the mux is a LUT per bit of z.
    assert by_name["dut.y"]["carry"] > 0 and by_name["dut.z"]["carry"] == 0
    assert by_name["dut.z"]["lut4"] == pytest.approx(4, abs=0.5)
    # Source locations point at this file's statements.
    assert by_name["dut.y"]["where"].startswith("tests/boards/test_netlist.py:")
    text = format_breakdown(rows)
    assert "dut.y" in text and text.splitlines()[-1].endswith("total")


def test_bad_family():
    with pytest.raises(ValueError, match=r"Family must be one of ice40, ecp5, not 'xc7'"):
        breakdown({"modules": {}}, family="xc7")


def _flip_flops_by_line(netlist, family):
    """The netlist's flip-flops counted by the source line (``path:line``) that declares each."""
    counts = {}
    for row in breakdown(netlist, family=family, root=ROOT):
        where = row["where"].split()[0] if row["where"] else ""
        counts[where] = counts.get(where, 0) + row["ff"]
    return counts


def _declared(counts, path, text):
    """The flip-flops declared on the line of ``path`` that holds ``text`` (0 when merged away)."""
    lines = (ROOT / path).read_text().splitlines()
    line = next(n for n, line_text in enumerate(lines, 1) if text in line_text)
    return counts.get(f"{path}:{line}", 0)


@pytest.mark.parametrize("target, family", [("ice40-up5k", "ice40"), ("ecp5-85f", "ecp5")])
def test_deliberate_register_copies_survive_synthesis(tmp_path, monkeypatch, target, family):
    """The array's per-tile copies of its read-out and PE control and of its operand registers
    stay apart (Yosys merges equal registers unless they are marked keep): one per tile in the
    netlist, where without the mark there is one in all. Counted by the source line that declares
    each copy, since a copy can carry the name of the PE port it drives."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "TILE", 2)
    # (5x3: YoWASP's ABC9 exits on 3x2 to 4x3 ECP5 netlists and only the -dff retry maps them,
    # boards.report.ECP5_RETRY_OPTS; 5x3 maps at the first try.)
    synthesize(array_module.SystolicArray(kind="adder", rows=5, cols=3, max_length=4),
               target=target, build_dir=tmp_path, place=False)
    flip_flops = _flip_flops_by_line(tmp_path / "top.json", family)

    def declared(text):
        return _declared(flip_flops, "hw/array.py", text)

    # Six tiles (rows 0-1, 2-3, 4 by columns 0-1, 2). `load` and `acc_enable` have a copy per
    # row of each tile, and so has `update`, but for row 4, which shifts nothing in.
    assert {name: declared(text) for name, text in (
        ("ends", 'ends = Signal(name=f"ends{tile}"'),
        ("update", 'update = Signal(name=f"update{where}"'),
        ("load, acc_enable", 'load, acc_enable = (Signal(name=f"{name}{where}"'),
        ("queue flags", 'queue([Signal(name=f"{name}{REPLICA_SUFFIX}{k}"'),
        ("take_ahead", 'Signal(name=f"take_ahead{REPLICA_SUFFIX}{tr}")'),
        ("take_ahead's original", 'Signal(name=f"take_ahead{REPLICA_SUFFIX}_central'),
    )} == {"ends": 6, "update": 4 * 2, "load, acc_enable": 2 * 5 * 2,
           "queue flags": 4 * 2,   # the output queue's valid bits and order: per column block
           "take_ahead": 2,        # the read-out's shift two cycles ahead: per row of tiles
                                   # (but for the one of row 4 alone, which has no `update`)
           "take_ahead's original": 1}   # apart from them (merged into one up to 1e6506f)
    # What reaches a tile from the edge passes HOPS registers of the tile: its reset, `valid`,
    # `last`, and each 8-bit operand of the rows and columns it crosses (x in two tiles, w in
    # three).
    assert declared("reg = Signal(shape, name=name if last_hop") == \
        array_module.HOPS * (6 + 2 * 6 + (5 * 2 + 3 * 3) * 8)


class _SkidWithParts(wiring.Component):
    """An 8-bit stream through a skid register whose two halves take copies of ``held``."""
    i_valid: In(1)
    i_data: In(8)
    o_ready: In(1)
    o_valid: Out(1)
    o_data: Out(8)
    i_ready: Out(1)

    def elaborate(self, platform):
        from addershift.hw.skid import skid
        m = Module()
        out = skid(m, self.i_valid, self.i_data, self.o_ready, "s",
                   parts=(lambda v: v[:4], lambda v: v[4:]))
        m.d.comb += [self.o_valid.eq(out.valid), self.o_data.eq(out.payload),
                     self.i_ready.eq(out.ready)]
        return m


def test_registers_with_deliberate_copies_stay_apart_from_them(tmp_path):
    """A register that has copies kept apart stays apart from them too: Yosys merges an unmarked
    register into a marked equal one (and its loads with it), so, up to 1e6506f, the generator's
    `hold` and its two copies of the start were each one register with row 0's or the walker's,
    and a skid's `held` one with a part's copy. Each original is one flip-flop of its own; so
    is each row's shadow write token."""
    from addershift.hw.config import ArrayConfig
    from addershift.hw.im2col import Im2colGenerator
    config = ArrayConfig(pe="adder", rows=3, cols=2, max_k=8, act_depth=64, weight_depth=64)
    synthesize(Im2colGenerator(config=config, ready_ahead=True), target="ecp5-85f",
               build_dir=tmp_path / "gen", place=False)
    counts = _flip_flops_by_line(tmp_path / "gen" / "top.json", "ecp5")
    im2col = "hw/im2col.py"
    assert {name: _declared(counts, im2col, text) for name, text in (
        ("hold", 'hold = Signal(init=1, name=f"hold{REPLICA_SUFFIX}_central'),
        ("rows' copies", 'return Signal(init=init, name=f"{name}{REPLICA_SUFFIX}_row{r}'),
        ("rows' skid flags", 'Signal(name=f"step_held{REPLICA_SUFFIX}_row{r}")'),
        ("start", 'start = Signal(name=f"start{REPLICA_SUFFIX}_central'),
        ("walker's start", 'walker_start = Signal(name=f"start{REPLICA_SUFFIX}_walker")'),
        ("fill tokens", 'fill_at = [Signal(name=f"fill_at_{r}"'),
    )} == {"hold": 1, "rows' copies": 7 * 3, "rows' skid flags": 3, "start": 1,
           "walker's start": 1, "fill tokens": 3}
    synthesize(_SkidWithParts(), target="ecp5-85f", build_dir=tmp_path / "skid", place=False)
    counts = _flip_flops_by_line(tmp_path / "skid" / "top.json", "ecp5")
    assert _declared(counts, "hw/skid.py", "    held = Signal(") == 1
    assert _declared(counts, "hw/skid.py", "held_copies = tuple(Signal(") == 2


def _cell(kind, inputs, outputs, src="design.py:1"):
    """A cell of a hand-made Yosys JSON netlist: ``inputs`` and ``outputs`` map ports to bits."""
    return {"type": kind, "attributes": {"src": src},
            "port_directions": {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}},
            "connections": {**inputs, **outputs}}


def test_logic_depth_counts_levels_from_register_to_register():
    """a -> LUT -> LUT -> b and a -> 3 carries -> LUT -> c: 2 and 1.3 levels; d straight from a."""
    cells = {
        "ff_a": _cell("SB_DFF", {"D": [10]}, {"Q": [2]}, "design.py:1"),
        "lut1": _cell("SB_LUT4", {"I0": [2], "I1": ["0"]}, {"O": [3]}),
        "lut2": _cell("SB_LUT4", {"I0": [3], "I1": [2]}, {"O": [4]}),
        "ff_b": _cell("SB_DFFE", {"D": [4], "E": [2]}, {"Q": [5]}, "design.py:2"),
        "c1": _cell("SB_CARRY", {"I0": [2], "CI": ["0"]}, {"CO": [6]}),
        "c2": _cell("SB_CARRY", {"I0": [2], "CI": [6]}, {"CO": [7]}),
        "c3": _cell("SB_CARRY", {"I0": [2], "CI": [7]}, {"CO": [8]}),
        "lut3": _cell("SB_LUT4", {"I3": [8]}, {"O": [9]}),
        "ff_c": _cell("SB_DFF", {"D": [9]}, {"Q": [10]}, "design.py:3"),
        "ff_d": _cell("SB_DFF", {"D": [2]}, {"Q": [11]}, "design.py:4"),
    }
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells, "ports": {},
                                   "netnames": {"a": {"bits": [2]}, "b": {"bits": [5]},
                                                "c": {"bits": [10]}, "d": {"bits": [11]},
                                                "mid": {"bits": [3]}}}}}
    rows = {r["name"]: r for r in logic_depth(netlist, family="ice40")}
    assert rows["b"]["depth"] == 2.0 and rows["b"]["deep"] == {1: 1, 2: 1}
    assert rows["b"]["path"] == ["a", "mid", "(lut)"]
    assert rows["c"]["depth"] == 1.3 and rows["c"]["path"] == ["a", "(carry)", "(lut)"]
    assert rows["d"]["depth"] == 0.0 and rows["a"]["depth"] == 0.0     # a register from c
    assert [r["name"] for r in logic_depth(netlist, family="ice40")][:2] == ["b", "c"]
    text = format_depth(list(rows.values()), min_depth=2)
    assert "1 sinks in 1 groups at least 2 levels deep" in text


class _Deep(wiring.Component):
    """An 8-input AND (two LUT4 levels at least) and a 2-input XOR (one), each registered."""
    a: In(8)
    y: Out(1)
    z: Out(1)

    def elaborate(self, platform):
        m = Module()
        a = Signal(8, name="a_reg")
        m.d.sync += [a.eq(self.a), self.y.eq(a.all()), self.z.eq(a[0] ^ a[1])]
        return m


def test_logic_depth_of_a_synthesised_design(tmp_path):
    synthesize(_Deep(), target="ice40-up5k", build_dir=tmp_path)
    rows = {r["name"]: r for r in logic_depth(tmp_path / "top.json", family="ice40", root=ROOT)}
    # (The harness's registers drive the ports: y and z are the output registers' names.)
    assert rows["y"]["depth"] == 2.0 and rows["z"]["depth"] == 1.0
    assert rows["y"]["where"].startswith("tests/boards/test_netlist.py:")
    assert rows["dut.a_reg"]["depth"] == 0.0       # straight from the harness's input chain
    assert rows["y"]["path"][0] == "dut.a_reg" and rows["z"]["path"][0] == "dut.a_reg"


def test_logic_depth_bad_family():
    with pytest.raises(ValueError, match=r"Family must be one of ice40, ecp5, not 'xc7'"):
        logic_depth({"modules": {}}, family="xc7")


def _bench_logic_depth():
    path = ROOT / "bench" / "logic_depth.py"
    spec = importlib.util.spec_from_file_location("logic_depth_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logic_depth_command(tmp_path, capsys):
    """bench/logic_depth.py on a build's netlist: the histogram, the table and the paths; a file
    that is not a netlist is refused with its name."""
    bench = _bench_logic_depth()
    synthesize(_Deep(), target="ice40-up5k", build_dir=tmp_path)
    bench.main([str(tmp_path / "top.json"), "--min-depth", "2", "--paths"])
    out = capsys.readouterr().out
    # y, z, the harness's output register and the 7 bits of its input chain after the first (an
    # XOR each) at least 1 level deep, y 2.
    assert out.startswith("flip-flops and other sinks at least N levels deep: 1: 10, 2: 1\n")
    assert "1 sinks in 1 groups at least 2 levels deep" in out
    assert "2.0 levels into y (tests/boards/test_netlist.py:" in out
    bench.main([str(tmp_path / "top.json"), "--json"])
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert {g["name"]: g["depth"] for g in groups}["y"] == 2.0
    bad = tmp_path / "bad.json"
    bad.write_text('{"creator": "not yosys"}')
    with pytest.raises(SystemExit):
        bench.main([str(bad)])
    assert "is not a Yosys JSON netlist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "missing.json")])
    assert "cannot read the netlist" in capsys.readouterr().err
    # Read as another family's, it has none of that family's cells: said, not an empty table.
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "top.json"), "--family", "ecp5"])
    assert ("top.json: the netlist's top module 'top' has no ecp5 cells (no CCU2C, L6MUX21, "
            "LUT4, PFUMX or TRELLIS_FF*): a netlist of another family?") in capsys.readouterr().err
    unmarked = tmp_path / "unmarked.json"
    unmarked.write_text(json.dumps({"modules": {"top": {"cells": {}, "ports": {}}}}))
    with pytest.raises(SystemExit):
        bench.main([str(unmarked)])
    assert "unmarked.json: the netlist marks no module as its top" in capsys.readouterr().err


def test_logic_depth_sums_carries_without_drift():
    """Six LUTs, ten carry stages and a LUT are 8 levels exactly (summed as floats in that order,
    7.9999999999999964): counted at 8, shown as 8.0."""
    cells = {"ff_a": _cell("SB_DFF", {"D": [2]}, {"Q": [2]})}
    bit = 2
    for k, kind in enumerate(["SB_LUT4"] * 6 + ["SB_CARRY"] * 10 + ["SB_LUT4"]):
        cells[f"c{k}"] = _cell(kind, {"CI" if kind == "SB_CARRY" else "I3": [bit]},
                               {"CO" if kind == "SB_CARRY" else "O": [100 + k]})
        bit = 100 + k
    cells["ff_b"] = _cell("SB_DFF", {"D": [bit]}, {"Q": [300]}, "design.py:2")
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells, "ports": {},
                                   "netnames": {"a": {"bits": [2]}, "b": {"bits": [300]}}}}}
    b = next(r for r in logic_depth(netlist, family="ice40") if r["name"] == "b")
    assert b["depth"] == 8.0 and b["deep"][8] == 1
    assert b["path"] == ["a"] + ["(lut)"] * 6 + ["(carry)", "(lut)"]
