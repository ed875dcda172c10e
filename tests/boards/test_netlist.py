"""The LUT breakdown charges each cell to the register it feeds, on a design of known structure."""

import pathlib

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from addershift.boards.netlist import breakdown, format_breakdown
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


@pytest.mark.parametrize("target, family", [("ice40-up5k", "ice40"), ("ecp5-85f", "ecp5")])
def test_deliberate_register_copies_survive_synthesis(tmp_path, monkeypatch, target, family):
    """The array's per-group copies of its read-out control stay apart (Yosys merges equal
    registers unless they are marked keep): one flip-flop each in the netlist, where without
    the mark there is one in all."""
    import addershift.hw.array as array_module
    monkeypatch.setattr(array_module, "PES_PER_REPLICA", 2)
    synthesize(array_module.SystolicArray(kind="adder", rows=3, cols=2, max_length=4),
               target=target, build_dir=tmp_path, place=False)
    by_name = {row["name"]: row for row in breakdown(tmp_path / "top.json", family=family,
                                                      root=ROOT)}
    # (The breakdown groups names that differ in numbers; the last row shifts nothing in.)
    assert by_name["dut.load_replica*"]["ff"] == 3
    assert by_name["dut.full_replica*"]["ff"] == 2
