"""Leave the unused carry out of each ECP5 carry chain unconnected, so nextpnr adds no cell for it.

Yosys writes the ``COUT`` of every ``CCU2C`` as a net, whether anything reads it or not, and
nextpnr (``ecp5/pack.cc``, ``split_carry_chain``) ends every chain whose last carry out is a net
with a carry cell of its own, two logic cells that bring the carry to the fabric, read or not:
a 32x32 ECP5 accelerator had 1,255 such chains (its PEs' accumulators among them), 2,510 logic
cells that did nothing. No Yosys pass leaves a cell's output port unconnected, so this module
does it on the netlist Yosys writes (``write_json``), before nextpnr reads it: a ``COUT`` whose
net no cell reads and no port of the top module carries is connected to nothing (``"x"``).
Nothing that reads the netlist changes (the net had no reader).

An output a ``CCU2C`` leaves out of its connections altogether (``COUT``, ``S0``, ``S1``) is put
back, connected to nothing: nextpnr's reader stops on a port left out (``Packing carries``,
with no message), and the builds' last synthesis, classic ABC in the middle of ``synth_ecp5``
(:func:`.report.ecp5_classic_abc`), writes the hand-made chains' cells (``hw.pe``) without their
unconnected outputs (an ECP5 8x8 accelerator whose ABC9 runs failed, 2026-12-06).
"""

from __future__ import annotations

import sys

try:
    from . import netlist_step
except ImportError:      # run as a build's step, by its path: this folder is on sys.path
    import netlist_step

__all__ = ["drop_unused_carry_outs", "drop_file", "CARRY_ENDS_LOG"]

#: The line this module's command prints into a build's log.
CARRY_ENDS_LOG = "carry_ends: {count} unused carry outs left unconnected"


#: A ``CCU2C``'s outputs: its sums and its carry out.
_CCU2C_OUTPUTS = ("S0", "S1", "COUT")


def drop_unused_carry_outs(netlist):
    """Disconnect every ``CCU2C``'s ``COUT`` that nothing reads in the top module of
    ``netlist`` (a Yosys JSON netlist as a dict, changed in place), and connect each output a
    ``CCU2C`` left out to nothing; returns how many carry outs are newly unconnected."""
    top = netlist_step.top_module(netlist)
    read = {bit for port in top.get("ports", {}).values() for bit in port["bits"]}
    for cell in top["cells"].values():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                read.update(bits)
    dropped = 0
    for cell in top["cells"].values():
        if cell["type"] != "CCU2C":
            continue
        for port in _CCU2C_OUTPUTS:
            if port not in cell["connections"]:
                cell["connections"][port] = ["x"]
                cell["port_directions"][port] = "output"
                dropped += port == "COUT"
        cout = cell["connections"]["COUT"]
        if cout and isinstance(cout[0], int) and cout[0] not in read:
            # ("x", as Yosys writes an unconnected bit)
            cell["connections"]["COUT"] = ["x"]
            dropped += 1
    return dropped


def drop_file(path):
    """Rewrite the Yosys JSON netlist at ``path``; returns :func:`drop_unused_carry_outs`'."""
    return netlist_step.rewrite_file(path, drop_unused_carry_outs)


def main(argv=None):
    return netlist_step.run(argv, "carry_ends", drop_unused_carry_outs,
                            lambda count: [CARRY_ENDS_LOG.format(count=count)])


if __name__ == "__main__":
    sys.exit(main())
