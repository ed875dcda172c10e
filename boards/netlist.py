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

__all__ = ["breakdown", "format_breakdown", "logic_depth", "format_depth"]

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


def _top_module(netlist, *, family, top, root):
    """``(module, root)``: the netlist's top module (``top``, or the one Yosys marked) and the
    folder source paths are shown relative to. ``netlist`` is a path or the loaded JSON."""
    if family not in _COMB:
        raise ValueError(f"Family must be one of {', '.join(_COMB)}, not {family!r}")
    if not isinstance(netlist, dict):
        netlist = json.loads(pathlib.Path(netlist).read_text())
    modules = netlist["modules"]
    if top is None:
        top = next((name for name, mod in modules.items()
                    if mod.get("attributes", {}).get("top")), None)
        if top is None:
            raise ValueError("the netlist marks no module as its top (Yosys marks it in "
                             "synthesis: a netlist written before synth_* has none)")
    mod = modules[top]
    # A netlist of the other family has none of this one's cells: every count would be 0.
    types = {cell.get("type") for cell in mod.get("cells", {}).values()}
    known = set(_COMB[family]) | {t for t in types if t.startswith(_FF_PREFIX[family])}
    if types and not types & known:
        raise ValueError(f"the netlist's top module {top!r} has no {family} cells (no "
                         f"{', '.join(sorted(_COMB[family]))} or {_FF_PREFIX[family]}*): "
                         f"a netlist of another family?")
    return mod, pathlib.Path(root or _PROJECT_ROOT).resolve()


def _bit_names(mod):
    """Net bit -> a readable signal name: public names first (Yosys names mapped nets after the
    cells they connect, "x_SB_DFF_Q_D..."; those only as a fallback, cut at the cell name), the
    shortest first, indices folded to "*" so the 64 accumulators of an 8x8 array share a label."""
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
    return {b: name for b, (rank, name) in bit_name.items()}


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
    mod, root = _top_module(netlist, family=family, top=top, root=root)
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

    bit_name = _bit_names(mod)

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


#: Levels a combinational cell adds to a path in :func:`logic_depth`. A LUT and the route into it
#: is one level (on an iCE40UP5K about 1.2 ns of LUT and 1.5-3 ns of routing); a carry stage is a
#: dedicated wire of about a tenth of that, so a 16-bit adder counts 1.6 levels plus its sum LUT.
DEPTH_WEIGHTS = {"lut4": 1.0, "carry": 0.1, "wide_mux": 0.5}


def logic_depth(netlist, *, family, top=None, root=None, weights=DEPTH_WEIGHTS):
    """Per register (grouped by source location): the deepest combinational path into it.

    Each path starts at a flip-flop, a memory or DSP block, or an input port (depth 0) and adds
    ``weights`` per combinational cell; it ends at any input of a flip-flop (data, enable, reset),
    memory, DSP block or output port. On an iCE40UP5K a level took 2.3-3.7 ns after place and
    route (``docs/board_log.md``), so the groups deeper than a clock allows are where pipeline
    registers must go: Yosys' count, before placement, of what nextpnr's one critical path and
    its slack histogram's long tail show. (On ECP5 a CCU2C counts as a carry stage.)

    Returns ``[{"where", "name", "code", "depth", "endpoints", "deep", "path"}]`` sorted deepest
    first: ``endpoints`` is the group's sink cells, ``deep`` maps each whole depth to how many of
    them reach at least it, ``path`` is the deepest path into the group: the register (or port)
    it starts from, then the name of each net on it (ABC names most nets after the register
    they feed; ``(lut)`` and ``(carry)`` where it left one unnamed).
    """
    mod, root = _top_module(netlist, family=family, top=top, root=root)
    cells = mod["cells"]
    comb_types = _COMB[family]
    driver = {}                                  # net bit -> combinational cell driving it
    for name, cell in cells.items():
        if cell["type"] in comb_types:
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port) == "output":
                    driver.update((b, name) for b in bits if isinstance(b, int))

    def inputs(cell):
        dirs = cell.get("port_directions", {})
        return [b for port, bits in cell["connections"].items() if dirs.get(port) == "input"
                for b in bits if isinstance(b, int)]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    memo = {}
    came_from = {}                               # comb cell -> the input bit of its deepest path

    def arrival(bit):
        """Levels from the nearest register (or port) to net ``bit``."""
        name = driver.get(bit)
        if name is None:
            return 0.0
        if name not in memo:
            memo[name] = 0.0             # a combinational loop ends the walk
            cell = cells[name]
            best = max(((arrival(b), b) for b in inputs(cell)), default=(0.0, None))
            # Rounded at each step: ten carries of 0.1 make 1.0, not 0.9999999999999999 (a
            # drift that put paths shown as 8.0 levels below the count at 8).
            memo[name] = round(weights[comb_types[cell["type"]]] + best[0], 6)
            came_from[name] = best[1]
        return memo[name]

    def path_to(bit):
        """The deepest path into net ``bit``: where it starts, then each net on it that has a
        name (ABC leaves most LUT outputs unnamed and without a source location), carry chains
        as one step."""
        steps = []
        while bit in driver and len(steps) < 1000:
            name = driver[bit]
            label = names.get(bit) or ("(carry)" if comb_types[cells[name]["type"]] == "carry"
                                       else "(lut)")
            if not steps or steps[-1] != label or label != "(carry)":
                steps.append(label)
            bit = came_from.get(name)
        start = names.get(bit, "(port)") if bit is not None else "(constant)"
        return [start] + steps[::-1]

    names = _bit_names(mod)
    groups = collections.defaultdict(list)
    for name, cell in cells.items():
        if cell["type"] in comb_types or cell["type"].startswith("$"):
            continue
        bits = inputs(cell)
        if not bits:
            continue
        outs = [b for port, bs in cell["connections"].items()
                if cell.get("port_directions", {}).get(port) == "output"
                for b in bs if isinstance(b, int)]
        label = names.get(outs[0], "?") if outs else "?"
        if not cell["type"].startswith(_FF_PREFIX[family]):
            label = f"{label} [{cell['type']}]"
        where = _location(cell.get("attributes", {}).get("src"), root)
        groups[(where, label)].append(max((arrival(b), b) for b in bits))
    for pname, port in mod.get("ports", {}).items():
        if port["direction"] == "output":
            depths = [(arrival(b), b) for b in port["bits"] if isinstance(b, int)]
            if depths:
                groups[("(output port)", pname)].append(max(depths))

    out = []
    for (where, label), ends in groups.items():
        path, _, line = where.rpartition(":")
        code = linecache.getline(str(root / path), int(line)).strip() if line.isdigit() else ""
        top_depth, top_bit = max(ends)
        out.append({"where": where, "name": label, "code": code,
                    "depth": round(top_depth, 1), "endpoints": len(ends),
                    "deep": {d: sum(1 for x, _ in ends if x >= d)
                             for d in range(1, int(top_depth) + 1)},
                    "path": path_to(top_bit)})
    out.sort(key=lambda r: (-r["depth"], -r["endpoints"], r["where"]))
    return out


def format_depth(rows, *, min_depth=0, limit=40):
    """A text table of :func:`logic_depth`'s groups at least ``min_depth`` levels deep."""
    shown = [r for r in rows if r["depth"] >= min_depth]
    lines = [f"{'levels':>6} {'sinks':>6} {'deep':>6}  {'register fed':<28} source"]
    for r in shown[:limit]:
        deep = r["deep"].get(int(min_depth), r["endpoints"]) if min_depth else r["endpoints"]
        lines.append(f"{r['depth']:>6.1f} {r['endpoints']:>6} {deep:>6}  {r['name']:<28} "
                     f"{r['where']}  {r['code'][:50]}")
    if len(shown) > limit:
        lines.append(f"({len(shown) - limit} more groups at least {min_depth:g} levels deep)")
    total = sum(r["deep"].get(int(min_depth), r["endpoints"]) if min_depth else r["endpoints"]
                for r in shown)
    lines.append(f"{total} sinks in {len(shown)} groups at least {min_depth:g} levels deep")
    return "\n".join(lines)
