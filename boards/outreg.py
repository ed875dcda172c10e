"""Move the flip-flops that register an ECP5 block RAM's or multiplier's outputs into it.

An ECP5 DP16KD has an output register (``REGMODE_A``/``REGMODE_B = "OUTREG"``) whose clock-to-data
is about 1 ns instead of the 5.8 ns of its unregistered outputs, but Yosys' ``memory_libmap``
always writes ``"NOREG"`` and leaves a register after the memory in the fabric (YosysHQ/yosys#5814
asks for the option). No Yosys pass or other package does this merge, so this module does it on
the netlist Yosys writes (``write_json``), before nextpnr reads it: for each port whose every used
output bit drives exactly one flip-flop and nothing else, with the port's clock, no reset, no
initial one and one clock enable shared by all of them, the flip-flops are removed, the port's
outputs drive their nets, ``REGMODE`` becomes ``"OUTREG"`` and the output clock enable (``OCE``)
takes the flip-flops' enable. The read latency is unchanged: the register moves, it does not go.

A DP16KD with ``DATA_WIDTH_B = 36`` is a 36-bit pseudo-dual-port memory that reads through both
``DOA`` and ``DOB`` with port B's clock: its 36 outputs are one group, and both REGMODEs and OCEs
are set (as nextpnr does for a ``PDPW16KD``).

A MULT18X18D has an output register too, and Yosys' ECP5 flow maps ``$mul`` to one with none of
its registers (``synth_ice40`` packs SB_MAC16 registers, ``synth_ecp5`` has no such pass): the
flip-flops after a multiplier move in by the same rules (``REG_OUTPUT_CLK = "CLK0"``, ``CE0``
their enable), so the multiplier baseline is built as a DSP block is meant to be used.
"""

from __future__ import annotations

import itertools
import re
import sys

try:
    from . import netlist_step
except ImportError:      # run as a build's step, by its path: this folder is on sys.path
    import netlist_step

__all__ = ["absorb_output_registers", "absorb_multiplier_registers", "absorb_file",
           "read_log", "OUTREG_LOG", "MULTREG_LOG"]

#: The lines this module's command prints into a build's log (parsed by :func:`read_log`).
OUTREG_LOG = "outreg: {flops} flip-flops moved into {count} block RAM output registers"
MULTREG_LOG = "outreg: {flops} flip-flops moved into {count} multiplier output registers"

_CONSTANTS = ("0", "1", "x", "z")


def _param(cell, name, default=None):
    """A cell parameter as Yosys' JSON writes it: strings that look like bit vectors carry a
    trailing space, numbers are bit strings."""
    value = cell["parameters"].get(name, default)
    if isinstance(value, str) and value.endswith(" "):
        return value[:-1]
    return value


def _width(cell, name):
    value = _param(cell, name, 18)
    if isinstance(value, str) and value and set(value) <= {"0", "1"}:
        return int(value, 2)
    return int(value)


def _groups(cell):
    """The DP16KD's output groups: (outputs, clock ports, reset ports, enable ports, REGMODEs)."""
    outputs = {side: [f"DO{side}{i}" for i in range(18)] for side in "AB"}
    if _width(cell, "DATA_WIDTH_B") == 36:
        # Which clock each half's output register takes is not documented: both must be the
        # flip-flops' clock.
        return [(outputs["A"] + outputs["B"], ("CLKA", "CLKB"), ("RSTA", "RSTB"),
                 ("OCEA", "OCEB"), ("REGMODE_A", "REGMODE_B"))]
    return [(outputs[s], (f"CLK{s}",), (f"RST{s}",), (f"OCE{s}",), (f"REGMODE_{s}",))
            for s in "AB"]


class _Top:
    """The top module of a Yosys JSON netlist (a dict), indexed for moving flip-flops into the
    cells whose outputs they register."""

    def __init__(self, netlist):
        self.module = top = netlist_step.top_module(netlist)
        self.cells = cells = top["cells"]
        self.loads = {}                  # net bit -> [(cell name, port)]
        for name, cell in cells.items():
            for port, bits in cell["connections"].items():
                if cell["port_directions"].get(port) != "output":
                    for bit in bits:
                        if bit not in _CONSTANTS:
                            self.loads.setdefault(bit, []).append((name, port))
        self.module_ports = {bit for port in top.get("ports", {}).values() for bit in port["bits"]}
        used_bits = [b for cell in cells.values() for bits in cell["connections"].values()
                     for b in bits] + [b for net in top["netnames"].values() for b in net["bits"]]
        self._fresh_bits = itertools.count(
            1 + max([1, *(b for b in used_bits if isinstance(b, int))]))
        self._inverters = {}             # enable net bit -> its inverse's

    def of_type(self, cell_type):
        return [c for c in self.cells.values() if c["type"] == cell_type]

    def used_outputs(self, cell, outputs):
        """``(port, net bit)`` of each of ``outputs`` that something reads."""
        conn = cell["connections"]
        return [(port, conn[port][0]) for port in outputs
                if conn.get(port, ["x"])[0] not in _CONSTANTS
                and (conn[port][0] in self.loads or conn[port][0] in self.module_ports)]

    def registers(self, used, clock=None):
        """The flip-flop behind each of ``used`` ((port, net bit)) and their shared enable (a
        net bit or ``"1"``), or None when one of them cannot move into the cell: each must be
        the bit's only load, on ``clock`` (None: the first one's), with no reset and power-up
        zero (the cell's register has neither), and all share one enable."""
        if not used:
            return None
        regs = []
        for _, bit in used:
            users = self.loads.get(bit, [])
            if bit in self.module_ports or len(users) != 1 or users[0][1] != "DI":
                return None
            ff = self.cells[users[0][0]]
            c = ff["connections"]
            clock = c.get("CLK") if clock is None else clock
            if ff["type"] != "TRELLIS_FF" or c["CLK"] != clock or _param(ff, "CLKMUX") != "CLK":
                return None
            if c.get("LSR", ["0"]) != ["0"] and _param(ff, "LSRMUX", "LSR") != "0":
                return None
            if _param(ff, "REGSET", "RESET") != "RESET":
                return None
            cemux = _param(ff, "CEMUX", "CE")
            if cemux == "1":
                enable = "1"
            elif cemux in ("CE", "INV"):
                enable = (cemux, c.get("CE", ["1"])[0])
            else:
                return None
            regs.append((users[0][0], enable))
        if len({enable for _, enable in regs}) != 1:
            return None
        return regs

    def move(self, cell, used, regs):
        """Remove the flip-flops ``regs`` (:meth:`registers` of ``used``): the cell's outputs
        drive their nets. Returns ``(clock bits, enable bit)`` for the cell's register."""
        clock = list(self.cells[regs[0][0]]["connections"]["CLK"])
        enable = self._enable_bit(regs[0][1])
        for (port, _), (ff, _) in zip(used, regs):
            cell["connections"][port] = list(self.cells[ff]["connections"]["Q"])
            del self.cells[ff]
        return clock, enable

    def _enable_bit(self, enable):
        """The net bit that enables as the flip-flops did: ``"1"``, their CE net, or
        (``CEMUX = "INV"``) the output of a LUT4 that inverts it, one per net."""
        if enable == "1":
            return "1"
        mux, bit = enable
        if mux == "CE" or bit in _CONSTANTS:
            return bit if mux == "CE" else {"0": "1", "1": "0"}.get(bit, bit)
        if bit not in self._inverters:
            fresh = next(self._fresh_bits)
            self.cells[f"$outreg$oce_inverter${fresh}"] = {
                "hide_name": 1, "type": "LUT4", "attributes": {},
                "parameters": {"INIT": format(0x5555, "016b")},       # Z = ~A
                "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input",
                                    "Z": "output"},
                "connections": {"A": [bit], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [fresh]}}
            self.module["netnames"][f"$outreg$oce{fresh}"] = {"hide_name": 1, "bits": [fresh],
                                                              "attributes": {}}
            self._inverters[bit] = fresh
        return self._inverters[bit]


def absorb_output_registers(netlist):
    """Merge output registers into the DP16KDs of the top module of ``netlist`` (Yosys JSON, as
    a dict; changed in place). Returns ``(block RAM ports changed, flip-flops removed)``."""
    top = _Top(netlist)
    ports_changed = removed = 0
    for cell in top.of_type("DP16KD"):
        conn = cell["connections"]
        for outputs, clocks, resets, enables, regmodes in _groups(cell):
            if any(_param(cell, r, "NOREG") != "NOREG" for r in regmodes):
                continue
            if any(conn.get(r, ["0"]) != ["0"] for r in resets):
                continue
            if any(_param(cell, f"{c}MUX", c) != c for c in clocks) \
                    or len({tuple(conn.get(c, ["x"])) for c in clocks}) != 1 \
                    or conn.get(clocks[0]) is None:
                continue
            used = top.used_outputs(cell, outputs)
            regs = top.registers(used, conn[clocks[0]])
            if regs is None:
                continue
            _, enable = top.move(cell, used, regs)
            for r in regmodes:
                cell["parameters"][r] = "OUTREG"
            for e in enables:
                conn[e] = [enable]
            ports_changed += 1
            removed += len(regs)
    return ports_changed, removed


#: A MULT18X18D's registers (Yosys uses none) and the control ports its output register takes.
_MULT_REGISTERS = ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_INPUTC_CLK", "REG_PIPELINE_CLK",
                   "REG_OUTPUT_CLK")
_MULT_CONTROLS = tuple(f"{p}{i}" for p in ("CLK", "CE", "RST") for i in range(4))


def absorb_multiplier_registers(netlist):
    """Merge output registers into the MULT18X18Ds of the top module of ``netlist`` (as
    :func:`absorb_output_registers`): ``REG_OUTPUT_CLK = "CLK0"`` with ``CE0`` the flip-flops'
    enable and ``RST0`` tied low. Returns ``(multipliers changed, flip-flops removed)``."""
    top = _Top(netlist)
    changed = removed = 0
    for cell in top.of_type("MULT18X18D"):
        conn = cell["connections"]
        if any(_param(cell, r, "NONE") != "NONE" for r in _MULT_REGISTERS):
            continue
        if any(conn.get(p, ["0"])[0] not in _CONSTANTS for p in _MULT_CONTROLS):
            continue
        used = top.used_outputs(cell, [f"P{i}" for i in range(36)])
        regs = top.registers(used)
        if regs is None:
            continue
        clock, enable = top.move(cell, used, regs)
        cell["parameters"].update(REG_OUTPUT_CLK="CLK0", REG_OUTPUT_CE="CE0",
                                  REG_OUTPUT_RST="RST0")
        for port, bits in (("CLK0", clock), ("CE0", [enable]), ("RST0", ["0"])):
            conn[port] = bits
            cell["port_directions"][port] = "input"
        changed += 1
        removed += len(regs)
    return changed, removed


def absorb_file(path):
    """Rewrite the Yosys JSON netlist at ``path``; returns what
    :func:`absorb_output_registers` and :func:`absorb_multiplier_registers` return."""
    return netlist_step.rewrite_file(path, _absorb)


def _absorb(netlist):
    return absorb_output_registers(netlist), absorb_multiplier_registers(netlist)


def read_log(text, line=OUTREG_LOG):
    """``(cells, flops)`` from ``line`` (:data:`OUTREG_LOG` or :data:`MULTREG_LOG`) as
    :func:`main` printed it into a build's log, or None."""
    pattern = re.escape(line).replace(r"\{flops\}", r"(?P<flops>\d+)").replace(
        r"\{count\}", r"(?P<count>\d+)")
    found = re.search(pattern, text)
    return None if found is None else (int(found["count"]), int(found["flops"]))


def main(argv=None):
    return netlist_step.run(argv, "outreg", _absorb, lambda moved: [
        OUTREG_LOG.format(flops=moved[0][1], count=moved[0][0]),
        MULTREG_LOG.format(flops=moved[1][1], count=moved[1][0])])


if __name__ == "__main__":
    sys.exit(main())
