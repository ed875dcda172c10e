"""Cost of each PE kind, alone and in arrays: LUT4, carries, FFs, DSPs, placed logic cells, Fmax.

For every PE kind (adder, shift, mul) a lone PE with registered inputs and square arrays (2x2, 4x4,
8x8 by default) go through Yosys and nextpnr on iCE40UP5K (``synth_ice40`` without and with
``-dsp``) and ECP5-85F (``synth_ecp5 -nowidelut``), one place-and-route at a time. Each design sits
in the two-pin :class:`~addershift.boards.harness.SerialHarness`; "cells" below exclude the
harness's own (its flip-flops on iCE40, its XOR LUTs on ECP5), "placed" includes them. A design that
does not fit is reported with its Yosys counts and the reason nextpnr gave.

    .venv/bin/python bench/pe_cost.py                      # everything (about an hour)
    .venv/bin/python bench/pe_cost.py --kinds adder --units 8 --targets ice40-up5k --breakdown

Writes a table on stdout, ``pe_cost.json``, ``pe_cost.md`` (the table in Markdown) and a bar chart
``pe_cost.png`` in ``--out``. With
``--breakdown`` it also prints, per design, which registers the LUTs feed
(:func:`addershift.boards.netlist.breakdown`), the answer to "where do the LUTs go".
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import time

from addershift.boards.build import too_full
from addershift.boards.netlist import breakdown, format_breakdown
from addershift.boards.report import (TARGETS, netlist_counts, premap_multipliers, read_synthesis,
                                      synthesize)
from addershift.boards.toolchain import (ToolError, last_error, prepare_environment,
                                         tool_command)

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import NEXTPNR_SEED, out_dir, positive_int

KINDS = ("adder", "shift", "mul")
UNITS = ("pe", "2", "4", "8")
DEFAULT_TARGETS = ("ice40-up5k", "ice40-up5k-dsp", "ecp5-85f")


def make_design(kind, unit, max_length):
    """A lone PE with registered inputs (``unit="pe"``) or an n x n :class:`SystolicArray`."""
    from addershift.hw.array import SystolicArray
    from addershift.hw.pe import make_pe
    if unit == "pe":
        return make_pe(kind, register_inputs=True, max_length=max_length), 1
    n = int(unit)
    return SystolicArray(kind=kind, rows=n, cols=n, max_length=max_length), n * n


def measure(kind, unit, target, *, out, max_length, seed, show_breakdown):
    design, pes = make_design(kind, unit, max_length)
    acc_bits = design.acc_bits
    build_dir = out / target / f"{kind}_{unit}"
    row = {"kind": kind, "unit": unit, "pes": pes, "target": target, "acc_bits": acc_bits,
           "max_length": max_length}
    start = time.monotonic()
    try:
        r = synthesize(design, target=target, build_dir=build_dir, seed=seed)
    except ToolError:
        # Only a design too big for the device makes a "does not fit" row; a tool that failed
        # for another reason stops the table (its rows would otherwise claim a limit).
        logs = [build_dir / name for name in ("top.tim", "top.nextpnr.log")]
        if not any(log.exists() and too_full(log.read_text(errors="replace")) for log in logs):
            raise
        family = TARGETS[target].family
        premap, cells = read_synthesis(build_dir, prefix="top")
        counts = netlist_counts(cells, family)
        reason = last_error(build_dir / "top.nextpnr.log", missing="nextpnr did not run",
                            default="nextpnr failed")
        row.update(fits=False, reason=reason, lut4=counts["lut4"],
                   carry=counts["carry"], ff=counts["ff"], dsp=counts["dsp"],
                   premap_mul=premap_multipliers(premap), placed=None, cells=None,
                   per_pe=None, fmax_mhz=None)
    else:
        row.update(fits=True, reason=None, lut4=r.used("lut4"), carry=r.used("carry"),
                   ff=r.used("ff"), dsp=r.dsp_cells, premap_mul=r.premap_mul,
                   placed=r.used("logic_cells"), cells=r.design_cells,
                   per_pe=round(r.design_cells / pes, 1), harness=r.harness,
                   fmax_mhz=None if r.fmax is None else round(r.fmax, 2),
                   clock_mhz=r.clock_mhz)
        if "wide_mux" in r.resources:
            row["wide_mux"] = r.used("wide_mux")
    row["seconds"] = round(time.monotonic() - start, 1)
    if show_breakdown:
        rows = breakdown(build_dir / "top.json", family=TARGETS[target].family,
                         root=pathlib.Path(__file__).resolve().parent.parent)
        row["breakdown"] = rows[:15]   # the largest; the printed table has the totals
        print(f"\n-- where the LUTs go: {kind} {unit} on {target} --")
        print(format_breakdown(rows, limit=14))
    return row


def _fmt(v, spec=""):
    return "-" if v is None else format(v, spec)


HEADER = (f"{'kind':<6} {'unit':<5} {'target':<16} {'acc':>3} {'LUT4':>6} {'carry':>6} {'FF':>6} "
          f"{'DSP':>4} {'$mul':>4} {'placed':>6} {'cells':>6} {'/PE':>6} {'Fmax':>7}")


def print_table(rows, *, header=True, file=sys.stdout):
    if header:
        print(HEADER, file=file)
    for r in rows:
        unit = "PE" if r["unit"] == "pe" else f"{r['unit']}x{r['unit']}"
        line = (f"{r['kind']:<6} {unit:<5} {r['target']:<16} {r['acc_bits']:>3} {r['lut4']:>6} "
                f"{r['carry']:>6} {r['ff']:>6} {r['dsp']:>4} {r['premap_mul']:>4} "
                f"{_fmt(r['placed']):>6} {_fmt(r['cells']):>6} {_fmt(r['per_pe']):>6} "
                f"{_fmt(r['fmax_mhz'], '.1f'):>7}")
        if not r["fits"]:
            line += f"  does not fit: {r['reason']}"
        print(line, file=file, flush=True)


def markdown(rows):
    """The table as Markdown (what docs/cost.md shows)."""
    out = ["| kind | unit | target | acc bits | LUT4 | carry | FF | DSP | `$mul` | placed cells "
           "| cells (no harness) | cells / PE | Fmax MHz |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "PE" if r["unit"] == "pe" else f"{r['unit']}x{r['unit']}"
        if r["fits"]:
            tail = (f"{r['placed']} | {r['cells']} | {r['per_pe']} | "
                    f"{_fmt(r['fmax_mhz'], '.1f')} |")
        else:
            tail = "does not fit | | | |"
        out.append(f"| {r['kind']} | {unit} | {r['target']} | {r['acc_bits']} | {r['lut4']} | "
                   f"{r['carry']} | {r['ff']} | {r['dsp']} | {r['premap_mul']} | {tail}")
    return "\n".join(out) + "\n"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in rows))
    units = list(dict.fromkeys(r["unit"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    colours = {"adder": "#2a9d8f", "shift": "#e9c46a", "mul": "#e76f51"}
    fig, axes = plt.subplots(2, len(targets), figsize=(5 * len(targets), 7), squeeze=False)
    width = 0.8 / len(kinds)
    for col, target in enumerate(targets):
        ax_c, ax_f = axes[0][col], axes[1][col]
        for i, kind in enumerate(kinds):
            xs, cells, fmax, missing = [], [], [], []
            for j, unit in enumerate(units):
                r = next((r for r in rows if (r["target"], r["kind"], r["unit"]) ==
                          (target, kind, unit)), None)
                if r is None:
                    continue
                x = j + (i - (len(kinds) - 1) / 2) * width
                if r["fits"]:
                    xs.append(x)
                    cells.append(r["cells"])
                    fmax.append(r["fmax_mhz"] or 0)
                else:
                    missing.append((x, r["lut4"]))
            ax_c.bar(xs, cells, width, color=colours.get(kind), label=kind)
            ax_f.bar(xs, fmax, width, color=colours.get(kind), label=kind)
            for x, lut4 in missing:   # did not fit: hatched bar at the Yosys LUT4 count
                ax_c.bar([x], [lut4], width, color="none", edgecolor=colours.get(kind),
                         hatch="//")
        labels = ["PE" if u == "pe" else f"{u}x{u}" for u in units]
        for ax in (ax_c, ax_f):
            ax.set_xticks(range(len(units)), labels)
        ax_c.set_yscale("log")
        ax_c.set_title(target)
        if target.startswith("ice40"):
            ax_c.axhline(5280, color="grey", lw=0.8, ls="--")
            ax_c.text(-0.4, 5600, "iCE40UP5K: 5280 cells", fontsize=7, color="grey")
        ax_c.set_ylabel("logic cells (harness excluded)")
        ax_f.set_ylabel("Fmax (MHz)")
        ax_c.legend(fontsize=8)
    fig.suptitle("addershift PE cost (hatched: does not fit, Yosys LUT4 count)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tool_versions():
    out = {}
    for var in ("YOSYS", "NEXTPNR_ICE40", "NEXTPNR_ECP5"):
        try:
            proc = subprocess.run([tool_command(var), "--version" if "NEXTPNR" in var else "-V"],
                                  capture_output=True, text=True, timeout=120)
            lines = [l for l in (proc.stdout + proc.stderr).splitlines()
                     if "Yosys" in l or "nextpnr" in l]
            out[var.lower()] = lines[-1].strip() if lines else ""
        except (OSError, subprocess.TimeoutExpired):
            out[var.lower()] = None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS),
                        help="'pe' (a lone PE) or an array side")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=list(DEFAULT_TARGETS))
    parser.add_argument("--max-length", type=positive_int, default=128,
                        help="longest reduction; sets the accumulator width")
    parser.add_argument("--seed", type=NEXTPNR_SEED, default=1, help="nextpnr placement seed")
    parser.add_argument("--out", type=out_dir, default="build/bench/pe_cost",
                        help="folder for builds and results")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print which registers the LUTs feed, per design")
    args = parser.parse_args(argv)

    prepare_environment()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print_table([])
    for target in args.targets:
        for kind in args.kinds:
            for unit in args.units:
                row = measure(kind, unit, target, out=out, max_length=args.max_length,
                              seed=args.seed, show_breakdown=args.breakdown)
                rows.append(row)
                print_table([row], header=args.breakdown)
    result = {
        "command": " ".join(["bench/pe_cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "seed": args.seed,
        "clock_mhz": {t: TARGETS[t].default_clock_mhz for t in args.targets},
        "rows": rows,
    }
    (out / "pe_cost.json").write_text(json.dumps(result, indent=1))
    (out / "pe_cost.md").write_text(markdown(rows))
    plot(rows, out / "pe_cost.png")
    print(f"\nwrote {out / 'pe_cost.json'}, {out / 'pe_cost.md'} and {out / 'pe_cost.png'}")


if __name__ == "__main__":
    main()
