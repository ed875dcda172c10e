"""Where the LUTs go: attribute every cell of a synthesised netlist to the registers it feeds.

Yosys names most mapped LUTs after nets ABC invented, so names do not say which part of the
design a LUT belongs to. Flip-flops do keep the source location of the Amaranth statement that
assigns them (their ``src`` attribute). :func:`breakdown` walks the netlist from every
combinational cell (LUT4, carry, wide-LUT mux) forward to the registers, memory or DSP blocks,
or top-level outputs it feeds, and charges the cell to their source lines (split evenly when it
feeds several). The result answers "which statement costs how many LUTs" without trusting names.
"""

from __future__ import annotations

import collections
import json
import sys
import linecache
import pathlib
import re

# Source paths in reports are shown relative to the project (the folder holding boards/).
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent

__all__ = ["breakdown", "format_breakdown"]

# Combinational cell types per family (everything else with outputs is a sink: FF, RAM, DSP, IO).
_COMB = {
    "ice40": {"SB_LUT4": "lut4", "SB_CARRY": "carry"},
    "ecp5": {"LUT4": "lut4", "CCU2C": "carry", "PFUMX": "wide_mux", "L6MUX21": "wide_mux"},
}
_FF_PREFIX = {"ice40": "SB_DFF", "ecp5": "TRELLIS_FF"}


def _location(src, root):
    """The first source location in a Yosys ``src`` attribute that is not a techmap library file,
    as ``path:line`` (relative to ``root`` when inside it)."""
    for part in (src or "").split("|"):
        if not part or part.startswith("/share/"):
            continue
        path, _, pos = part.rpartition(":")
        line = pos.split(".")[0]
        try:
            path = str(pathlib.Path(path).resolve().relative_to(root))
        except ValueError:
            pass
        return f"{path}:{line}"
    return "(unknown)"


def breakdown(netlist, *, family, top=None, root=None):
    """Per source location: flip-flops, and LUT4 / carry / wide-mux cells charged to it.

    Parameters
    ----------
    netlist : path or dict
        Yosys ``write_json`` output after synthesis (``top.json`` of a build).
    family : str
        ``"ice40"`` or ``"ecp5"``.
    root : path, optional
        Source paths are shown relative to this folder (default: the project folder).

    Returns a list of dicts ``{"where", "code", "ff", "lut4", "carry", ...}`` sorted by LUT4.
    """
    if family not in _COMB:
        raise ValueError(f"Family must be one of {', '.join(_COMB)}, not {family!r}")
    if not isinstance(netlist, dict):
        netlist = json.loads(pathlib.Path(netlist).read_text())
    root = pathlib.Path(root or _PROJECT_ROOT).resolve()
    modules = netlist["modules"]
    if top is None:
        top = next(name for name, mod in modules.items()
                   if mod.get("attributes", {}).get("top"))
    mod = modules[top]
    comb_types = _COMB[family]

    sinks_of = collections.defaultdict(list)     # net bit -> [cell name] reading it
    outputs_of = {}                              # cell -> [net bits] it drives
    for name, cell in mod["cells"].items():
        dirs = cell.get("port_directions", {})
        outs = []
        for port, bits in cell["connections"].items():
            if dirs.get(port) == "output":
                outs.extend(b for b in bits if isinstance(b, int))
            elif dirs.get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        sinks_of[b].append(name)
        outputs_of[name] = outs
    port_bits = {}
    for pname, port in mod.get("ports", {}).items():
        if port["direction"] == "output":
            for b in port["bits"]:
                if isinstance(b, int):
                    port_bits[b] = f"(output port {pname})"

    # Net bit -> a readable signal name: public names first (Yosys names mapped nets after the
    # cells they connect, "x_SB_DFF_Q_D..."; those only as a fallback, cut at the cell name), the
    # shortest first, indices folded to "*" so the 64 accumulators of an 8x8 array share a label.
    bit_name = {}
    for net, info in mod.get("netnames", {}).items():
        if net.startswith("$"):
            continue
        base = net.split("$")[0]
        cut = re.split(r"_(?:SB_|TRELLIS_|LUT4|CCU2C|PFUMX|L6MUX21)", base)
        rank = (len(cut) > 1, len(cut[0]))
        name = re.sub(r"\d+", "*", cut[0])
        for b in info["bits"]:
            if isinstance(b, int) and (b not in bit_name or rank < bit_name[b][0]):
                bit_name[b] = (rank, name)
    bit_name = {b: name for b, (rank, name) in bit_name.items()}

    cells = mod["cells"]
    tag_of_sink = {}

    def sink_tag(name):
        if name not in tag_of_sink:
            cell = cells[name]
            tag = _location(cell.get("attributes", {}).get("src"), root)
            q = [b for b in outputs_of[name]]
            label = bit_name.get(q[0], "?") if q else "?"
            if not cell["type"].startswith(_FF_PREFIX[family]):
                label = f"{label} [{cell['type']}]"
            tag_of_sink[name] = f"{tag} {label}"
        return tag_of_sink[name]

    memo = {}
    visiting = set()

    def destinations(name):
        """Source tags of every sink reached from ``name`` through combinational cells."""
        if name in memo:
            return memo[name]
        visiting.add(name)       # a combinational loop ends the walk instead of recursing forever
        tags = set()
        for b in outputs_of[name]:
            if b in port_bits:
                tags.add(port_bits[b])
            for s in sinks_of[b]:
                if cells[s]["type"] in comb_types:
                    if s not in visiting:
                        tags |= destinations(s)
                else:
                    tags.add(sink_tag(s))
        visiting.discard(name)
        memo[name] = frozenset(tags)
        return memo[name]

    # Carry chains make the walk as deep as the widest adder; leave room for very wide ones.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    rows = collections.defaultdict(lambda: collections.Counter())
    for name, cell in cells.items():
        kind = comb_types.get(cell["type"])
        if kind is not None:
            tags = destinations(name) or {"(feeds nothing)"}
            for t in tags:
                rows[t][kind] += 1 / len(tags)
        elif cell["type"].startswith(_FF_PREFIX[family]):
            rows[sink_tag(name)]["ff"] += 1

    out = []
    for where, counts in rows.items():
        code = ""
        loc, _, name = where.partition(" ")
        path, _, line = loc.rpartition(":")
        if line.isdigit():
            code = linecache.getline(str(root / path), int(line)).strip()
        out.append({"where": loc, "name": name, "code": code, "ff": int(counts["ff"]),
                    **{k: round(counts[k], 1) for k in sorted(set(comb_types.values()))}})
    out.sort(key=lambda r: (-r["lut4"], -r["ff"], r["where"]))
    return out


def format_breakdown(rows, *, limit=20):
    """A text table of :func:`breakdown`'s rows (the ``limit`` largest by LUT4)."""
    kinds = [k for k in ("lut4", "carry", "wide_mux") if rows and k in rows[0]]
    head = f"{'LUT4':>8} {'carry':>7} {'FF':>6}  {'register fed':<24} source"
    lines = [head]
    for r in rows[:limit]:
        lines.append(f"{r['lut4']:>8.1f} {r.get('carry', 0):>7.1f} {r['ff']:>6}  {r['name']:<24} "
                     f"{r['where']}  {r['code'][:50]}")
    if len(rows) > limit:
        rest = rows[limit:]
        lines.append(f"{sum(r['lut4'] for r in rest):>8.1f} {sum(r.get('carry', 0) for r in rest):>7.1f} "
                     f"{sum(r['ff'] for r in rest):>6}  ({len(rest)} more locations)")
    total = {k: sum(r.get(k, 0) for r in rows) for k in kinds + ["ff"]}
    lines.append(f"{total['lut4']:>8.1f} {total.get('carry', 0):>7.1f} {total['ff']:>6}  total")
    return "\n".join(lines)
