"""Leave the unused carry out of each ECP5 carry chain unconnected, so nextpnr adds no cell for it.

Yosys writes the ``COUT`` of every ``CCU2C`` as a net, whether anything reads it or not, and
nextpnr (``ecp5/pack.cc``, ``split_carry_chain``) ends every chain whose last carry out is a net
with a carry cell of its own, two logic cells that bring the carry to the fabric, read or not:
a 32x32 ECP5 accelerator had 1,255 such chains (its PEs' accumulators among them), 2,510 logic
cells that did nothing. No Yosys pass leaves a cell's output port unconnected, so this module
does it on the netlist Yosys writes (``write_json``), before nextpnr reads it: a ``COUT`` whose
net no cell reads and no port of the top module carries is connected to nothing (``"x"``).
Nothing that reads the netlist changes (the net had no reader).
"""

from __future__ import annotations

import json
import pathlib
import sys

__all__ = ["drop_unused_carry_outs", "drop_file", "with_carry_ends_step", "CARRY_ENDS_LOG"]

#: The line this module's command prints into a build's log.
CARRY_ENDS_LOG = "carry_ends: {count} unused carry outs left unconnected"


def _top(netlist):
    modules = netlist.get("modules") if isinstance(netlist, dict) else None
    if not isinstance(modules, dict):
        raise ValueError("a Yosys netlist is an object with a 'modules' object")
    tops = [m for m in modules.values() if m.get("attributes", {}).get("top")]
    if len(tops) != 1:
        raise ValueError(f"a Yosys netlist has one top module, this one {len(tops)}")
    return tops[0]


def drop_unused_carry_outs(netlist):
    """Disconnect every ``CCU2C``'s ``COUT`` that nothing reads in the top module of
    ``netlist`` (a Yosys JSON netlist as a dict, changed in place); returns how many."""
    top = _top(netlist)
    read = {bit for port in top.get("ports", {}).values() for bit in port["bits"]}
    for cell in top["cells"].values():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                read.update(bits)
    dropped = 0
    for cell in top["cells"].values():
        cout = cell["connections"].get("COUT")
        if cell["type"] == "CCU2C" and cout and isinstance(cout[0], int) and cout[0] not in read:
            # ("x", as Yosys writes an unconnected bit: nextpnr's reader stops on a port
            # left out of the connections)
            cell["connections"]["COUT"] = ["x"]
            dropped += 1
    return dropped


def drop_file(path):
    """Rewrite the Yosys JSON netlist at ``path``; returns :func:`drop_unused_carry_outs`'."""
    path = pathlib.Path(path)
    netlist = json.loads(path.read_text())
    dropped = drop_unused_carry_outs(netlist)
    path.write_text(json.dumps(netlist))
    return dropped


def with_carry_ends_step(platform_class):
    """A subclass of ``platform_class`` (an Amaranth ECP5 platform on the Trellis toolchain)
    whose build runs this module on Yosys' netlist before nextpnr reads it (by the paths of this
    Python and this file, as :func:`.outreg.with_outreg_step`)."""
    command = f'"{sys.executable}" "{pathlib.Path(__file__).resolve()}" ' + "{{name}}.json"

    class CarryEndsPlatform(platform_class):
        @property
        def command_templates(self):
            yosys, *rest = super().command_templates
            return [yosys, command, *rest]

    CarryEndsPlatform.__name__ = CarryEndsPlatform.__qualname__ = \
        f"CarryEnds{platform_class.__name__}"
    return CarryEndsPlatform


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m addershift.boards.carry_ends NETLIST.json", file=sys.stderr)
        return 2
    try:
        count = drop_file(args[0])
    except (OSError, ValueError, KeyError) as e:      # json.JSONDecodeError is a ValueError
        print(f"carry_ends: {args[0]}: not a Yosys JSON netlist it can read: {e!r}",
              file=sys.stderr)
        return 1
    print(CARRY_ENDS_LOG.format(count=count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
