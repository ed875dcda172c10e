"""Yosys' ECP5 cell models for the benches (sim/ecp5_cells.py)."""

import pytest

from addershift.sim.ecp5_cells import CARRY_CELLS, cell_models


def test_carry_cell_models_come_whole_without_timing():
    text = cell_models()
    for name in CARRY_CELLS:
        assert f"module {name}(" in text
    assert text.count("endmodule") == len(CARRY_CELLS)
    assert "specify" not in text


def test_a_module_the_library_lacks_is_named():
    with pytest.raises(LookupError, match="^Yosys' ECP5 simulation library has no module NOPE$"):
        cell_models(("CCU2C", "NOPE"))
