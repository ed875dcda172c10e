"""Synthesis, place and route of any Amaranth design, and the resource and timing report.

Two ways in, one :class:`Report` out:

- :func:`synthesize` runs Yosys and nextpnr off-board on a :class:`Target` (iCE40UP5K with or
  without DSPs, ECP5), with the design wrapped in a two-pin :class:`~.harness.SerialHarness` so a
  PE or an array of any width can be placed. This is what the cost benchmark uses.
- :func:`read_report` parses the files a board build (``boards/build.py``) leaves in its build
  folder; the board build inserts the same Yosys statistics commands (:func:`yosys_stat_commands`).

Numbers come from machine-readable outputs, never from logs: Yosys ``stat -json`` before
technology mapping (``$mul`` cells) and after it (LUT4, carry, FF, RAM, DSP cells), and nextpnr's
``--report`` JSON (placed logic cells with device totals, Fmax per clock). Multipliers are counted
twice so "multiplier-free" is a measured claim: no ``$mul`` in the design Yosys reads and no DSP
cell in the netlist it writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

from . import carry_ends, outreg
from .late_endpoints import format_late_endpoints, late_endpoints
from .toolchain import ToolError, run_tool

# Source paths in reports are shown relative to the project (the folder holding boards/).
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent

__all__ = ["Target", "TARGETS", "Resource", "Report", "TimingError", "yosys_input_commands",
           "ECP5_RETRY_OPTS", "ecp5_retry_opts", "ecp5_classic_abc", "DOUBLE_DRIVER_WARNING",
           "yosys_netlist_problem", "yosys_stat_commands",
           "premap_multipliers", "netlist_counts", "parse_nextpnr_report", "critical_path",
           "read_synthesis", "read_report",
           "synthesize"]


class TimingError(RuntimeError):
    """The placed design does not reach the requested clock."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A device and the synthesis options used on it."""
    name: str
    family: str            # "ice40" or "ecp5"
    device: str            # as Amaranth's platforms spell it
    synth_opts: tuple      # extra synth_<family> options
    nextpnr_args: tuple    # device and package options for nextpnr
    default_clock_mhz: float  # the clock constraint when none is given (drives timing-driven placement)


#: Off-board targets of the cost benchmark. ECP5 runs ``-nowidelut`` by default: see docs/cost.md
#: for the measurement that chose it (``ecp5-85f-widelut`` keeps Yosys' default for comparison).
TARGETS = {t.name: t for t in [
    Target("ice40-up5k", "ice40", "iCE40UP5K", (), ("--up5k", "--package", "sg48"), 100.0),
    Target("ice40-up5k-dsp", "ice40", "iCE40UP5K", ("-dsp",), ("--up5k", "--package", "sg48"),
           100.0),
    Target("ecp5-85f", "ecp5", "LFE5U-85F", ("-nowidelut",),
           ("--85k", "--package", "CABGA381", "--speed", "6"), 250.0),
    Target("ecp5-85f-widelut", "ecp5", "LFE5U-85F", (),
           ("--85k", "--package", "CABGA381", "--speed", "6"), 250.0),
]}

FAMILIES = ("ice40", "ecp5")

# Post-mapping netlist cell types per resource (Yosys names); prefixes end with "*".
_NETLIST_CELLS = {
    "ice40": {
        "lut4": ["SB_LUT4"],
        "carry": ["SB_CARRY"],
        "ff": ["SB_DFF*"],
        "bram": ["SB_RAM40_4K*"],
        "spram": ["SB_SPRAM256KA"],
        "dsp": ["SB_MAC16"],
        "pll": ["SB_PLL40*"],
    },
    "ecp5": {
        "lut4": ["LUT4"],
        "carry": ["CCU2C"],
        "ff": ["TRELLIS_FF"],
        "bram": ["DP16KD", "PDPW16KD"],
        "spram": [],
        "dsp": ["MULT18X18D"],
        "alu54": ["ALU54B"],
        "wide_mux": ["PFUMX", "L6MUX21"],
        "lutram": ["TRELLIS_DPR16X4"],
        "pll": ["EHXPLLL"],
    },
}

# nextpnr's bel types per resource, for placed counts and device totals.
_PNR_BELS = {
    "ice40": {"logic_cells": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP", "io": "SB_IO", "pll": "ICESTORM_PLL"},
    "ecp5": {"logic_cells": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D", "io": "TRELLIS_IO", "pll": "EHXPLLL"},
}

# Yosys cells that are multipliers before technology mapping (Amaranth's `*` becomes $mul;
# alumacc would turn it into $macc, so count that too in case a flow runs it first).
_PREMAP_MUL_CELLS = ("$mul", "$macc", "$macc_v2")

# Resource keys in report order.
RESOURCE_ORDER = ("logic_cells", "lut4", "carry", "ff", "bram", "spram", "dsp", "io", "pll",
                  "wide_mux", "lutram")


@dataclasses.dataclass(frozen=True)
class Resource:
    """Used and available units of one resource (``total`` is None when the device has none)."""
    used: int
    total: int | None

    @property
    def percent(self):
        if not self.total:
            return None
        return 100.0 * self.used / self.total

    def to_dict(self):
        return {"used": self.used, "total": self.total,
                "percent": None if self.percent is None else round(self.percent, 2)}


@dataclasses.dataclass
class Report:
    """Resources, timing and multiplier counts of one placed design.

    ``fmax_mhz`` maps each clock nextpnr timed to its achieved frequency (post-route); ``fmax`` is
    the slowest of them. ``harness`` is the wrapper's own cost when the design was placed inside a
    :class:`~.harness.SerialHarness` (None on a board build).
    """
    design: str
    target: str
    family: str
    device: str
    synth_opts: tuple
    clock_mhz: float | None
    resources: dict
    fmax_mhz: dict
    premap_mul: int
    cells: dict
    premap_cells: dict
    harness: dict | None = None
    seconds: dict = dataclasses.field(default_factory=dict)
    critical_path: dict | None = None
    late_endpoints: dict | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def fmax(self):
        """Slowest clock's achieved Fmax in MHz, or None when there is no register-to-register path."""
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None

    @property
    def timing_met(self):
        """True when every timed clock reaches the requested clock (None when nothing to check)."""
        if self.clock_mhz is None or self.fmax is None:
            return None
        return self.fmax >= self.clock_mhz

    @property
    def dsp_cells(self):
        return self.resources["dsp"].used

    @property
    def multiplier_free(self):
        """No ``$mul`` before technology mapping and no DSP cell after it."""
        return self.premap_mul == 0 and self.dsp_cells == 0

    def used(self, key):
        return self.resources[key].used if key in self.resources else 0

    @property
    def design_cells(self):
        """Logic cells of the design alone: placed cells minus the harness's own (iCE40: each
        harness flip-flop is one cell; ECP5: each harness XOR LUT is one TRELLIS_COMB); None
        when the design was not placed."""
        if "logic_cells" not in self.resources:
            return None
        cells = self.used("logic_cells")
        if not self.harness:
            return cells
        own = self.harness["ice40_cells"] if self.family == "ice40" else self.harness["luts"]
        return cells - own

    def note_moved_registers(self, brams, multipliers):
        """Record what :mod:`.outreg` moved: ``brams`` (block RAM ports, flip-flops) and
        ``multipliers`` (MULT18X18Ds, flip-flops). Yosys counted those flip-flops; they are in
        the block RAMs and multipliers now, so the flip-flop count leaves them out."""
        self.extra["bram_outreg"] = {"ports": brams[0], "flip_flops": brams[1]}
        self.extra["mult_outreg"] = {"multipliers": multipliers[0], "flip_flops": multipliers[1]}
        ff = self.resources["ff"]
        self.resources["ff"] = dataclasses.replace(ff, used=ff.used - brams[1] - multipliers[1])

    def check_timing(self):
        """Raise :class:`TimingError` unless the design meets the requested clock."""
        if self.timing_met is False:
            slow = ", ".join(f"{clk}: {f:.2f} MHz" for clk, f in sorted(self.fmax_mhz.items()))
            tried = self.extra.get("fmax_by_seed")
            best = f", the fastest of seeds {', '.join(tried)}" if tried else ""
            raise TimingError(
                f"timing not met on {self.target}: Fmax {self.fmax:.2f} MHz < requested "
                f"{self.clock_mhz:g} MHz ({slow}{best}); lower --clock, place with other seeds "
                f"(--seed 1,2,3) or shrink the design")

    def to_dict(self):
        return {
            "design": self.design, "target": self.target, "family": self.family,
            "device": self.device, "synth_opts": list(self.synth_opts),
            "clock_mhz": self.clock_mhz,
            "fmax_mhz": None if self.fmax is None else round(self.fmax, 2),
            "fmax_per_clock_mhz": {k: round(v, 2) for k, v in sorted(self.fmax_mhz.items())},
            "timing_met": self.timing_met,
            "resources": {k: self.resources[k].to_dict()
                          for k in RESOURCE_ORDER if k in self.resources},
            "multipliers": {"premap_mul": self.premap_mul, "dsp": self.dsp_cells,
                            "multiplier_free": self.multiplier_free},
            "harness": self.harness,
            "design_cells": self.design_cells,
            "cells": dict(sorted(self.cells.items())),
            "premap_cells": dict(sorted(self.premap_cells.items())),
            "critical_path": self.critical_path,
            **({"late_endpoints": self.late_endpoints} if self.late_endpoints else {}),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            **({"extra": self.extra} if self.extra else {}),
        }

    def format_text(self):
        """A human-readable table (what ``addershift build`` prints)."""
        lines = [f"{self.design} on {self.target} ({self.device}"
                 + (f", synth {' '.join(self.synth_opts)}" if self.synth_opts else "") + ")"]
        names = {"logic_cells": "logic cells" if self.family == "ice40" else "logic cells (COMB)",
                 "lut4": "LUT4", "carry": "SB_CARRY" if self.family == "ice40" else "CCU2C",
                 "ff": "flip-flops", "bram": "block RAM", "spram": "SPRAM",
                 "dsp": "SB_MAC16" if self.family == "ice40" else "MULT18X18D", "io": "I/O",
                 "pll": "PLL", "wide_mux": "wide-LUT muxes", "lutram": "LUT RAM"}
        for key in RESOURCE_ORDER:
            if key not in self.resources:
                continue
            r = self.resources[key]
            total = "-" if r.total is None else f"{r.total}"
            pct = "" if r.percent is None else f"{r.percent:6.1f} %"
            lines.append(f"  {names[key]:<20} {r.used:>7} / {total:<7} {pct}")
        moved = self.extra.get("bram_outreg")
        if moved:
            lines.append(f"  ({moved['flip_flops']} flip-flops moved into {moved['ports']} block RAM "
                         f"output registers)")
        moved = self.extra.get("mult_outreg")
        if moved and moved["multipliers"]:
            lines.append(f"  ({moved['flip_flops']} flip-flops moved into {moved['multipliers']} "
                         f"multiplier output registers)")
        if self.harness:
            lines.append(f"  (harness: {self.harness['ffs']} FF, {self.harness['luts']} LUT; "
                         f"without it ~{self.design_cells} logic cells)")
        lines.append(f"  multipliers: {self.premap_mul} $mul before mapping, {self.dsp_cells} DSP "
                     f"after -> {'multiplier-free' if self.multiplier_free else 'uses multipliers'}")
        if self.fmax is None:
            lines.append("  Fmax: no register-to-register path")
        else:
            verdict = {True: "met", False: "NOT MET", None: ""}[self.timing_met]
            asked = self.extra.get("requested_clock_mhz")
            # The PLL's frequency is the one timed; a request it only approximates is named too.
            how = (f" (the PLL's; {asked:g} requested)" if asked and abs(asked - self.clock_mhz)
                   > 1e-9 else " requested")
            req = f" against {self.clock_mhz:g} MHz{how}: {verdict}" if self.clock_mhz else ""
            lines.append(f"  Fmax {self.fmax:.2f} MHz{req}")
            tried = self.extra.get("fmax_by_seed")
            if tried:
                runs = ", ".join(f"{seed} {'-' if f is None else f'{f:.2f}'}"
                                 for seed, f in tried.items())
                lines.append(f"  seeds tried (Fmax MHz): {runs}; kept seed {self.extra['seed']}")
            cp = self.critical_path
            if cp:
                where = ", ".join(cp["sources"][:4]) + (" ..." if len(cp["sources"]) > 4 else "")
                lines.append(f"  critical path: {cp['delay_ns']:.1f} ns, {cp['logic_levels']} "
                             f"logic steps" + (f", through {where}" if where else ""))
        if self.late_endpoints:
            lines += format_late_endpoints(self.late_endpoints)
        return "\n".join(lines)


# --- parsing ------------------------------------------------------------------------------------

def yosys_input_commands():
    """Yosys commands, right after reading the design: they mark the registers the hardware copies
    on purpose (names containing :data:`~addershift.hw.array.REPLICA_SUFFIX`) ``keep``, since
    each copy cuts a high-fanout net and Yosys would otherwise merge equal registers back into
    one; and they drop the initial value of the registers that hold a block RAM's word (names
    containing :data:`~addershift.hw.memories.BRAM_WORD_SUFFIX`, every name of their net), which
    an iCE40 block RAM's output register cannot have.

    They also have Yosys recode Amaranth's state machines one-hot (their state registers,
    :data:`FSM_STATE`): ``fsm_detect`` skips a register with an initial value, which every
    Amaranth FSM has, and the ``auto`` encoding keeps the framer's 32 states binary, whose decode
    took 7 LUT levels on a 16x12 ECP5 accelerator's slowest path. The initial value goes (a
    recoded register does not keep it anyway): every board build holds the core in reset from
    configuration until its clock is stable (``Board.add_clock``), and the reset sets the
    state."""
    from ..hw.array import REPLICA_SUFFIX
    from ..hw.memories import BRAM_WORD_SUFFIX
    return ["proc", f"setattr -set keep 1 w:*{REPLICA_SUFFIX}* %a %ci1:+$dff[Q] t:$dff %i",
            f"setattr -unset init w:*{BRAM_WORD_SUFFIX}* %x1:+$dff[Q] %x1:+$dff[Q] w:* %i",
            f"setattr -unset init w:{FSM_STATE} %x1:+$dff[Q] %x1:+$dff[Q] w:* %i",
            f'setattr -set fsm_encoding "one-hot" w:{FSM_STATE}']


#: The name Amaranth gives the state register of ``m.FSM()``.
FSM_STATE = "fsm_state"


#: Added to ``synth_ecp5``'s options for a second run when Yosys fails without them: YoWASP's Yosys
#: 0.70 exits inside ABC9 on some ECP5 netlists (the 4x4 mul array, small arrays of 2x2 tiles),
#: and with the flip-flops shown to ABC9 the same netlists map. Board builds and
#: :func:`synthesize` retry with them and say so in the report's ``synth_opts``.
ECP5_RETRY_OPTS = ("-dff",)


#: What Yosys' CHECK pass says of a net with two drivers. YoWASP's Yosys 0.70 (ABC9) wrote such a
#: netlist for a 16x16 ECP5 accelerator (code of 5b2d2b1), warned and went on, and nextpnr then
#: stopped on it ("multiply driven"); builds and :func:`synthesize` treat it as a failed
#: synthesis, so their retries run. (``check -assert`` would stop Yosys itself, but in that Yosys
#: it also failed ``-dff`` runs of designs that map cleanly.)
DOUBLE_DRIVER_WARNING = "multiple conflicting drivers"


def yosys_netlist_problem(log_text):
    """Why the netlist a finished Yosys run wrote cannot be placed, or None (see
    :data:`DOUBLE_DRIVER_WARNING`)."""
    if DOUBLE_DRIVER_WARNING in log_text:
        return "Yosys wrote a netlist with a net driven twice (its CHECK pass warned)"
    return None


def ecp5_classic_abc(synth_opts, top):
    """A last ECP5 synthesis when ABC9 fails with and without ``-dff`` (YoWASP's Yosys 0.70
    exhausts its WebAssembly stack inside ABC9 on some netlists, the 8x8 accelerator among
    them): ``synth_ecp5`` up to its LUT mapping, ABC's classic ``abc -lut 4`` in its place, then
    the rest. Returns ``(synth_opts, commands_after_synth)``."""
    base = tuple(o for o in synth_opts if o not in ECP5_RETRY_OPTS)
    return base + ("-run", "begin:map_luts"), [
        "techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean",
        f"synth_ecp5 {' '.join(base)} -top {top} -run map_cells:"]


def ecp5_retry_opts(family, synth_opts):
    """The options for a second synthesis after a failed one, or None when there is none to try."""
    if family != "ecp5" or all(opt in synth_opts for opt in ECP5_RETRY_OPTS):
        return None
    return tuple(synth_opts) + tuple(o for o in ECP5_RETRY_OPTS if o not in synth_opts)


def yosys_stat_commands(prefix):
    """Yosys commands around synthesis that write ``{prefix}.premap.json`` and ``{prefix}.stat.json``.

    Returns ``(after_read, after_synth)``. ``after_read`` counts cells of a flattened, optimised
    copy of the design (the design itself is restored, so synthesis sees it unchanged).
    """
    after_read = [
        "design -save addershift_input",
        "hierarchy -auto-top",
        "proc",
        "flatten",
        "opt",
        f"tee -q -o {prefix}.premap.json stat -json",
        "design -load addershift_input",
    ]
    after_synth = [f"tee -q -o {prefix}.stat.json stat -json"]
    return after_read, after_synth


def _cells_by_type(stat):
    """Cell counts of the whole design from a Yosys ``stat -json`` object."""
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        return dict(stat["design"]["num_cells_by_type"])
    total = {}
    for mod in stat.get("modules", {}).values():
        for k, v in mod.get("num_cells_by_type", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def premap_multipliers(premap_cells):
    """Multiplier cells in the design before technology mapping."""
    return sum(premap_cells.get(t, 0) for t in _PREMAP_MUL_CELLS)


def _match(cell_type, patterns):
    return any(cell_type.startswith(p[:-1]) if p.endswith("*") else cell_type == p
               for p in patterns)


def netlist_counts(cells, family):
    """Resource counts (``lut4``, ``carry``, ``ff``, ...) from post-synthesis cell counts."""
    if family not in FAMILIES:
        raise ValueError(f"Family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return {key: sum(n for t, n in cells.items() if _match(t, pats))
            for key, pats in _NETLIST_CELLS[family].items()}


def parse_nextpnr_report(report, family):
    """``(placed, available, fmax)`` from nextpnr's ``--report`` JSON object.

    ``placed`` and ``available`` map resource keys to counts; ``fmax`` maps each timed clock's
    name to its achieved MHz.
    """
    if family not in FAMILIES:
        raise ValueError(f"Family must be one of {', '.join(FAMILIES)}, not {family!r}")
    util = report.get("utilization", {})
    placed, available = {}, {}
    for key, bel in _PNR_BELS[family].items():
        if bel in util:
            placed[key] = int(util[bel]["used"])
            available[key] = int(util[bel]["available"])
    fmax = {clk: float(v["achieved"]) for clk, v in report.get("fmax", {}).items()}
    return placed, available, fmax


def critical_path(report, *, root=None):
    """The slowest register-to-register path of nextpnr's ``--report`` JSON, summarised:
    ``{"delay_ns", "logic_levels", "from", "to", "sources"}`` (``sources``: the design's own
    source locations along the path, in order), or None when there is no such path."""
    root = pathlib.Path(root or _PROJECT_ROOT).resolve()
    best = None
    for cp in report.get("critical_paths", []):
        if cp.get("from") == "<async>" or cp.get("to") == "<async>" or not cp.get("path"):
            continue
        delay = sum(step.get("delay", 0.0) for step in cp["path"])
        if best is None or delay > best[0]:
            best = (delay, cp)
    if best is None:
        return None
    delay, cp = best
    sources = []
    for step in cp["path"]:
        for src in step.get("sources", []):
            if src.startswith("/share/"):
                continue
            path, _, pos = src.rpartition(":")
            try:
                path = str(pathlib.Path(path).resolve().relative_to(root))
            except ValueError:
                pass
            loc = f"{path}:{pos.split('.')[0]}"
            if loc not in sources:
                sources.append(loc)
    return {"delay_ns": round(delay, 2),
            "logic_levels": sum(1 for step in cp["path"] if step.get("type") == "logic"),
            "from": cp["path"][0]["from"]["cell"], "to": cp["path"][-1]["to"]["cell"],
            "sources": sources}


def _resources(family, counts, placed, available):
    cells_total = available.get("logic_cells")
    if family == "ice40":
        totals = {"lut4": cells_total, "carry": cells_total, "ff": cells_total}
    else:
        totals = {"lut4": cells_total, "carry": None if cells_total is None else cells_total // 2,
                  "ff": available.get("ff"), "wide_mux": None, "lutram": None}
    res = {} if not placed else {"logic_cells": Resource(placed.get("logic_cells", 0), cells_total)}
    for key in ("lut4", "carry", "ff"):
        res[key] = Resource(counts[key], totals[key])
    for key in ("bram", "spram", "dsp", "pll"):
        # Placed count when nextpnr has the bel type, else the netlist's (ECP5 has no SPRAM).
        used = placed.get(key, counts.get(key, 0))
        res[key] = Resource(used, available.get(key) or None)
    if placed:
        res["io"] = Resource(placed.get("io", 0), available.get("io"))
    if family == "ecp5":
        res["wide_mux"] = Resource(counts["wide_mux"], None)
        res["lutram"] = Resource(counts["lutram"], None)
    return res


def _load(build_dir, prefix, suffix):
    path = pathlib.Path(build_dir) / f"{prefix}.{suffix}"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: did Yosys/nextpnr run with the "
                                f"addershift statistics options?") from None


def read_synthesis(build_dir, *, prefix):
    """Yosys' side alone (for a design that did not place): ``(premap_cells, cells)``, the cell
    counts before and after technology mapping."""
    return (_cells_by_type(_load(build_dir, prefix, "premap.json")),
            _cells_by_type(_load(build_dir, prefix, "stat.json")))


def read_report(build_dir, *, prefix, design, target, family, device, synth_opts=(),
                clock_mhz=None, harness=None, seconds=None, placed=True, late=False):
    """Build a :class:`Report` from ``{prefix}.premap.json``, ``{prefix}.stat.json`` and (when
    ``placed``) ``{prefix}.report.json`` in ``build_dir``; with ``late``, the endpoints that miss
    ``clock_mhz`` too (:mod:`.late_endpoints`; nextpnr must have run with
    ``--detailed-timing-report``)."""
    premap, cells = read_synthesis(build_dir, prefix=prefix)
    # Yosys only (placed=False): no placed counts, device totals or Fmax.
    pnr = _load(build_dir, prefix, "report.json") if placed else {}
    placed_counts, available, fmax = parse_nextpnr_report(pnr, family)
    return Report(design=design, target=target, family=family, device=device,
                  synth_opts=tuple(synth_opts), clock_mhz=clock_mhz,
                  resources=_resources(family, netlist_counts(cells, family), placed_counts, available),
                  fmax_mhz=fmax, premap_mul=premap_multipliers(premap), cells=cells,
                  premap_cells=premap, harness=harness, seconds=dict(seconds or {}),
                  critical_path=critical_path(pnr),
                  late_endpoints=late_endpoints(pnr, clock_mhz) if late else None)


# --- the off-board flow -------------------------------------------------------------------------

def _check_clock(clock_mhz):
    if clock_mhz is None:
        return
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) \
            or not math.isfinite(clock_mhz) or clock_mhz <= 0:
        raise ValueError(f"Clock must be a positive number of MHz, not {clock_mhz!r}")


def synthesize(design, *, target, build_dir, name="top", clock_mhz=None, harness=True, seed=1,
               check_timing=False, place=True, platform=None):
    """Synthesise, place and route ``design`` off-board on ``target``; return its :class:`Report`.

    On ECP5 the registers after block RAMs and multipliers move into them before nextpnr places
    the design (:mod:`.outreg`), and unread carry outs are left unconnected (:mod:`.carry_ends`),
    as in board builds.

    Parameters
    ----------
    design : wiring.Component
        Any component; with ``harness=True`` (the default) it is wrapped in a
        :class:`~.harness.SerialHarness` so only two pins (plus clock and reset) leave the chip.
    target : str or Target
        A key of :data:`TARGETS` or a :class:`Target`.
    build_dir : path
        Folder for the files (created). The tools run inside it with relative paths.
    clock_mhz : float, optional
        The clock constraint nextpnr places against (default: the target's).
    seed : int
        nextpnr's placement seed (results vary a little with it).
    check_timing : bool
        Raise :class:`TimingError` when the design misses ``clock_mhz``.
    place : bool
        With ``False``, Yosys only: the report has the netlist's counts and the multipliers, no
        placed cells or Fmax (a quick multiplier count of a design too big to place).
    platform : optional
        Passed to Amaranth's RTLIL back end (designs that pick primitives by ``platform.device``);
        by default the target itself, so a design maps as in a board build for its device.
    """
    from amaranth.back import rtlil
    from amaranth.lib import wiring
    from .harness import SerialHarness

    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"Target must be one of {', '.join(TARGETS)}, not {target!r}")
        target = TARGETS[target]
    elif not isinstance(target, Target):
        raise TypeError(f"Target must be a target name or a Target, not {target!r}")
    if not isinstance(design, wiring.Component):
        raise TypeError(f"Design must be a wiring.Component, not {design!r}")
    _check_clock(clock_mhz)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Name must be an identifier, not {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Seed must be an integer, not {seed!r}")
    clock = float(clock_mhz if clock_mhz is not None else target.default_clock_mhz)

    top = SerialHarness(design) if harness else design
    build_dir = pathlib.Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = target if platform is None else platform
    (build_dir / f"{name}.il").write_text(rtlil.convert(top, name=name, platform=platform))

    after_read, after_synth = yosys_stat_commands(name)
    synth_opts = tuple(target.synth_opts)

    def run_yosys():
        script = [f"read_rtlil {name}.il", *yosys_input_commands(), *after_read,
                  f"synth_{target.family} {' '.join(synth_opts)} -top {name}",
                  *after_synth, f"write_json {name}.json"]
        (build_dir / f"{name}.ys").write_text("\n".join(script) + "\n")
        seconds = run_tool("YOSYS", ["-q", f"{name}.ys"], cwd=build_dir,
                           log_name=f"{name}.yosys.log")
        problem = yosys_netlist_problem((build_dir / f"{name}.yosys.log").read_text(
            errors="replace"))
        if problem:
            raise ToolError(f"{problem} (log: {build_dir / f'{name}.yosys.log'})")
        return seconds

    try:
        seconds = {"yosys": run_yosys()}
    except ToolError:
        retry = ecp5_retry_opts(target.family, synth_opts)
        if retry is None:
            raise
        synth_opts = retry
        seconds = {"yosys": run_yosys()}
    if not place:
        return read_report(build_dir, prefix=name, design=type(design).__name__,
                           target=target.name, family=target.family, device=target.device,
                           synth_opts=synth_opts, clock_mhz=None,
                           harness=top.cost if harness else None, seconds=seconds, placed=False)

    nextpnr = "NEXTPNR_ICE40" if target.family == "ice40" else "NEXTPNR_ECP5"
    unconstrained = ("--pcf-allow-unconstrained" if target.family == "ice40"
                     else "--lpf-allow-unconstrained")
    args = [*target.nextpnr_args, "--json", f"{name}.json", "--report", f"{name}.report.json",
            "--freq", f"{clock:g}", "--seed", seed, "--timing-allow-fail", unconstrained,
            "--log", f"{name}.tim", "--quiet"]
    moved = None
    if target.family == "ecp5":
        # As board builds do: registers after block RAMs and multipliers into them, and the
        # carry chains' unused carry outs left unconnected.
        moved = outreg.absorb_file(build_dir / f"{name}.json")
        carry_ends.drop_file(build_dir / f"{name}.json")
    seconds["nextpnr"] = run_tool(nextpnr, args, cwd=build_dir, log_name=f"{name}.nextpnr.log")

    report = read_report(build_dir, prefix=name, design=type(design).__name__,
                         target=target.name, family=target.family, device=target.device,
                         synth_opts=synth_opts, clock_mhz=clock,
                         harness=top.cost if harness else None, seconds=seconds)
    if moved is not None:
        report.note_moved_registers(*moved)
    if check_timing:
        report.check_timing()
    return report
