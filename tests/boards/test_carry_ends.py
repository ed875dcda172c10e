"""boards.carry_ends: the carry outs nothing reads leave the netlist, and nextpnr then ends no chain
with a cell of its own."""

import json

import pytest

from addershift.boards import carry_ends


def _cell(cell_type, connections):
    directions = {"COUT": "output", "S0": "output", "S1": "output", "Z": "output"}
    return {"type": cell_type, "parameters": {}, "attributes": {},
            "port_directions": {p: directions.get(p, "input") for p in connections},
            "connections": connections}


@pytest.fixture
def netlist():
    """Four chains of one CCU2C each after a first one: a chain into the next (bit 10), a carry
    out nothing reads (11), one a LUT reads (12), one the top module's port carries (13), and a
    LUT whose output nothing reads (not a carry: kept)."""
    cells = {
        "first": _cell("CCU2C", {"CIN": ["0"], "A0": [2], "COUT": [10], "S0": [20]}),
        "unread": _cell("CCU2C", {"CIN": [10], "A0": [3], "COUT": [11], "S0": [21]}),
        "read": _cell("CCU2C", {"CIN": ["0"], "A0": [4], "COUT": [12], "S0": [22]}),
        "port": _cell("CCU2C", {"CIN": ["0"], "A0": [5], "COUT": [13], "S0": [23]}),
        "lut": _cell("LUT4", {"A": [12], "B": [20], "C": [21], "D": [22], "Z": [14]}),
        "lonely": _cell("LUT4", {"A": [23], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [15]}),
    }
    top = {"attributes": {"top": "00000000000000000000000000000001"},
           "ports": {"q": {"direction": "output", "bits": [13]}},
           "cells": cells, "netnames": {"carry": {"bits": [11], "attributes": {}}}}
    return {"modules": {"top": top}}


def test_only_unread_carry_outs_are_dropped(netlist):
    assert carry_ends.drop_unused_carry_outs(netlist) == 1
    cells = netlist["modules"]["top"]["cells"]
    assert cells["unread"]["connections"]["COUT"] == ["x"]
    assert [cells[n]["connections"]["COUT"] for n in ("first", "read", "port")] == \
        [[10], [12], [13]]
    assert cells["lonely"]["connections"]["Z"] == [15]
    assert carry_ends.drop_unused_carry_outs(netlist) == 0     # a second pass changes nothing


def test_outputs_left_out_are_put_back_unconnected(netlist):
    # Classic ABC's netlists leave a hand-made chain's unconnected outputs out of its last cell.
    cells = netlist["modules"]["top"]["cells"]
    cells["last"] = _cell("CCU2C", {"CIN": [16], "A0": [6], "S0": [24]})
    cells["unread"]["connections"]["COUT"] = [16]        # (now the chain into "last")
    assert carry_ends.drop_unused_carry_outs(netlist) == 1
    last = cells["last"]
    assert (last["connections"]["COUT"], last["connections"]["S1"]) == (["x"], ["x"])
    assert last["connections"]["S0"] == [24]
    assert last["port_directions"]["COUT"] == last["port_directions"]["S1"] == "output"
    assert cells["unread"]["connections"]["COUT"] == [16]


def test_command_line(netlist, tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(netlist))
    assert carry_ends.main([str(path)]) == 0
    assert carry_ends.CARRY_ENDS_LOG.format(count=1) in capsys.readouterr().out
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert cells["unread"]["connections"]["COUT"] == ["x"]
    assert carry_ends.main([]) == 2


def _nextpnr_carry_cells(folder, netlist):
    """The carry cells nextpnr adds when it packs ``netlist`` (feed-ins, feed-outs)."""
    from addershift.boards.toolchain import run_tool
    (folder / "pack.json").write_text(json.dumps(netlist))
    run_tool("NEXTPNR_ECP5", ["--85k", "--package", "CABGA381", "--no-place", "--no-route",
                              "--json", "pack.json", "--write", "packed.json", "--quiet"],
             cwd=folder, log_name="pack.log")
    packed = json.loads((folder / "packed.json").read_text())
    cells = next(iter(packed["modules"].values()))["cells"]
    return {name.split("$")[1] for name in cells if name.startswith("$nextpnr_CCU2C")}


def test_nextpnr_adds_no_cell_after_a_chain_whose_carry_out_is_unconnected(tmp_path):
    # A 2x2 ECP5 adder array through Yosys: each PE's carry chain (hw.pe.ecp5_carry_chain) ends
    # in a carry out nothing reads. nextpnr puts a cell of its own before each chain and, as
    # Yosys wrote it, one after; with the carry outs dropped, none after.
    from addershift.boards.report import synthesize
    from addershift.hw.array import SystolicArray
    synthesize(SystolicArray(kind="adder", rows=2, cols=2, max_length=16), target="ecp5-85f",
               build_dir=tmp_path, place=False)
    netlist = json.loads((tmp_path / "top.json").read_text())
    before = len(_nextpnr_carry_cells(tmp_path, netlist))
    dropped = carry_ends.drop_unused_carry_outs(netlist)
    after = len(_nextpnr_carry_cells(tmp_path, netlist))
    assert dropped >= 4                                    # one per PE at least
    assert after == before - dropped
