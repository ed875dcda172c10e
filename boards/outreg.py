"""Move the flip-flops that register an ECP5 block RAM's outputs into the block RAM.

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
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re
import sys

__all__ = ["absorb_output_registers", "absorb_file", "with_outreg_step", "read_log", "OUTREG_LOG"]

#: The line this module's command prints into a build's log (parsed by :func:`read_log`).
OUTREG_LOG = "outreg: {flops} flip-flops moved into {ports} block RAM output registers"

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


def absorb_output_registers(netlist):
    """Merge output registers into the DP16KDs of the top module of ``netlist`` (Yosys JSON, as
    a dict; changed in place). Returns ``(block RAM ports changed, flip-flops removed)``."""
    modules = netlist.get("modules") if isinstance(netlist, dict) else None
    if not isinstance(modules, dict):
        raise ValueError("a Yosys netlist is an object with a 'modules' object")
    tops = [m for m in modules.values() if m.get("attributes", {}).get("top")]
    if len(tops) != 1:
        raise ValueError(f"a Yosys netlist has one top module, this one {len(tops)}")
    top = tops[0]
    cells = top["cells"]
    loads = {}                       # net bit -> [(cell name, port)]
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                for bit in bits:
                    if bit not in _CONSTANTS:
                        loads.setdefault(bit, []).append((name, port))
    module_ports = {bit for port in top.get("ports", {}).values() for bit in port["bits"]}

    ports_changed = removed = 0
    inverters = {}                   # enable net bit -> its inverse's
    used_bits = [b for cell in cells.values() for bits in cell["connections"].values()
                 for b in bits] + [b for net in top["netnames"].values() for b in net["bits"]]
    fresh_bits = itertools.count(1 + max([1, *(b for b in used_bits if isinstance(b, int))]))
    for cell in [c for c in cells.values() if c["type"] == "DP16KD"]:
        conn = cell["connections"]
        for outputs, clocks, resets, enables, regmodes in _groups(cell):
            if any(_param(cell, r, "NOREG") != "NOREG" for r in regmodes):
                continue
            if any(conn.get(r, ["0"]) != ["0"] for r in resets):
                continue
            if any(_param(cell, f"{c}MUX", c) != c for c in clocks) \
                    or len({tuple(conn.get(c, ["x"])) for c in clocks}) != 1:
                continue
            used = [(port, conn[port][0]) for port in outputs
                    if conn.get(port, ["x"])[0] not in _CONSTANTS
                    and (conn[port][0] in loads or conn[port][0] in module_ports)]
            regs = _registers(cells, loads, module_ports, used, conn.get(clocks[0]))
            if regs is None:
                continue
            enable = _enable_bit(top, regs[0][1], inverters, fresh_bits)
            for (port, _), (ff, _) in zip(used, regs):
                conn[port] = list(cells[ff]["connections"]["Q"])
                del cells[ff]
            for r in regmodes:
                cell["parameters"][r] = "OUTREG"
            for e in enables:
                conn[e] = [enable]
            ports_changed += 1
            removed += len(regs)
    return ports_changed, removed


def _registers(cells, loads, module_ports, used, clock):
    """The flip-flop behind each of ``used`` ((port, net bit)) and their shared enable (a net
    bit or ``"1"``), or None when one of them cannot move into the block RAM."""
    if not used or clock is None:
        return None
    regs = []
    for _, bit in used:
        users = loads.get(bit, [])
        if bit in module_ports or len(users) != 1 or users[0][1] != "DI":
            return None
        ff = cells[users[0][0]]
        c = ff["connections"]
        if ff["type"] != "TRELLIS_FF" or c["CLK"] != clock or _param(ff, "CLKMUX") != "CLK":
            return None
        # No reset (the block RAM's would act differently) and power-up zero, like the RAM's.
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


def _enable_bit(top, enable, inverters, fresh_bits):
    """The net bit for a block RAM's OCE that enables as the flip-flops did: ``"1"``, their CE
    net, or (``CEMUX = "INV"``) the output of a LUT4 that inverts it, one per net."""
    if enable == "1":
        return "1"
    mux, bit = enable
    if mux == "CE" or bit in _CONSTANTS:
        return bit if mux == "CE" else {"0": "1", "1": "0"}.get(bit, bit)
    if bit not in inverters:
        fresh = next(fresh_bits)
        top["cells"][f"$outreg$oce_inverter${fresh}"] = {
            "hide_name": 1, "type": "LUT4", "attributes": {},
            "parameters": {"INIT": format(0x5555, "016b")},       # Z = ~A
            "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input",
                                "Z": "output"},
            "connections": {"A": [bit], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [fresh]}}
        top["netnames"][f"$outreg$oce{fresh}"] = {"hide_name": 1, "bits": [fresh],
                                                  "attributes": {}}
        inverters[bit] = fresh
    return inverters[bit]


def absorb_file(path):
    """Rewrite the Yosys JSON netlist at ``path``; returns what :func:`absorb_output_registers`
    returns."""
    path = pathlib.Path(path)
    netlist = json.loads(path.read_text())
    result = absorb_output_registers(netlist)
    path.write_text(json.dumps(netlist))
    return result


def read_log(text):
    """``(ports, flops)`` from the line :func:`main` printed into a build's log, or None."""
    pattern = re.escape(OUTREG_LOG).replace(r"\{flops\}", r"(?P<flops>\d+)").replace(
        r"\{ports\}", r"(?P<ports>\d+)")
    found = re.search(pattern, text)
    return None if found is None else (int(found["ports"]), int(found["flops"]))


def with_outreg_step(platform_class):
    """A subclass of ``platform_class`` (an Amaranth ECP5 platform on the Trellis toolchain)
    whose build runs this module on Yosys' netlist before nextpnr reads it. The command names
    this Python and this file by their paths, so the build folder's script needs no package
    on the path (but is tied to this installation)."""
    command = f'"{sys.executable}" "{pathlib.Path(__file__).resolve()}" ' + "{{name}}.json"

    class OutregPlatform(platform_class):
        @property
        def command_templates(self):
            yosys, *rest = super().command_templates
            return [yosys, command, *rest]

    OutregPlatform.__name__ = OutregPlatform.__qualname__ = f"Outreg{platform_class.__name__}"
    return OutregPlatform


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m addershift.boards.outreg NETLIST.json", file=sys.stderr)
        return 2
    try:
        ports, flops = absorb_file(args[0])
    except (OSError, ValueError, KeyError) as e:      # json.JSONDecodeError is a ValueError
        print(f"outreg: {args[0]}: not a Yosys JSON netlist it can read: {e!r}", file=sys.stderr)
        return 1
    print(OUTREG_LOG.format(flops=flops, ports=ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
