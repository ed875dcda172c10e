"""How many LUT levels deep each register's logic is: the pipeline registers a clock needs.

Reads the synthesised netlist of a board build (``top.json`` in the folder of ``addershift build
-o DIR``) and prints, per register (grouped by the Amaranth statement that assigns it), the
deepest combinational path into it and how many of its flip-flops are at least ``--min-depth``
levels deep (:func:`addershift.boards.netlist.logic_depth`). Unlike nextpnr's one critical path
(which moves with the placement seed by several MHz) the count does not depend on placement, so
it shows whether a change shortened the logic before a place and route says by how much.

On an iCE40UP5K a level (a LUT and the route into it) took 2.3-3.7 ns after place and route
(``docs/board_log.md``): 48 MHz (20.8 ns) leaves room for about 5-6 levels, 32 MHz for about 8.

    .venv/bin/addershift build --board icebreaker -m models/digits_adder.npz --rows 2 --cols 2 \\
        --requant-lanes 1 --requant-pipeline short --writeback-pipeline short \\
        --read-pipeline short -o build/b22
    .venv/bin/python bench/logic_depth.py build/b22/top.json --min-depth 7
"""

from __future__ import annotations

import argparse
import json
import pathlib

from addershift.boards.netlist import format_depth, logic_depth

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import nonnegative_int, positive_int


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("netlist", help="Yosys JSON netlist after synthesis (a build's top.json)")
    parser.add_argument("--family", choices=("ice40", "ecp5"), default="ice40")
    parser.add_argument("--min-depth", type=nonnegative_int, default=7,
                        help="list registers at least this many levels deep")
    parser.add_argument("--limit", type=positive_int, default=40, help="groups to list")
    parser.add_argument("--paths", action="store_true",
                        help="print the deepest path into each group listed")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    path = pathlib.Path(args.netlist)
    try:
        netlist = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        parser.error(f"cannot read the netlist {path}: {e}")
    if not isinstance(netlist, dict) or "modules" not in netlist:
        parser.error(f"{path} is not a Yosys JSON netlist (no 'modules')")
    try:
        rows = logic_depth(netlist, family=args.family)
    except ValueError as e:
        parser.error(f"{path}: {e}")
    if args.json:
        print(json.dumps({"netlist": str(path), "family": args.family, "groups": rows}))
        return
    histogram = {d: sum(r["deep"].get(d, 0) for r in rows)
                 for d in range(1, int(max((r["depth"] for r in rows), default=0)) + 1)}
    print("flip-flops and other sinks at least N levels deep: "
          + ", ".join(f"{d}: {n}" for d, n in histogram.items()))
    print(format_depth(rows, min_depth=args.min_depth, limit=args.limit))
    if args.paths:
        for r in [r for r in rows if r["depth"] >= args.min_depth][:args.limit]:
            print(f"\n{r['depth']:.1f} levels into {r['name']} ({r['where']}):\n  "
                  + " > ".join(r["path"]))


if __name__ == "__main__":
    main()
