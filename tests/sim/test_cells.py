"""Yosys' vendor cell models for the benches (sim/cells.py)."""

import pytest

from addershift.sim.cells import CARRY_CELLS, SPRAM_CELLS, cell_models, models_for


@pytest.mark.parametrize("family, names", [("ecp5", CARRY_CELLS), ("ice40", SPRAM_CELLS)])
def test_cell_models_come_whole_without_timing(family, names):
    text = cell_models(names, family)
    for name in names:
        assert f"module {name}" in text
    assert text.count("endmodule") == len(names)
    assert "specify" not in text


def test_a_module_the_library_lacks_is_named():
    with pytest.raises(LookupError, match="^Yosys' ECP5 simulation library has no module NOPE$"):
        cell_models(("CCU2C", "NOPE"))


def test_models_for_the_cells_a_text_instantiates():
    spram = "  SB_SPRAM256KA spram_0_0 (\n    .ADDRESS(a)\n  );\n"
    carry = "  CCU2C #(\n    .INIT0(16'h9696)\n  ) c0 (\n"
    assert models_for("module top;\nendmodule\n") == ""
    assert models_for(spram) == cell_models(SPRAM_CELLS, "ice40")
    assert models_for(spram + carry) == cell_models(CARRY_CELLS) + cell_models(SPRAM_CELLS,
                                                                                "ice40")
