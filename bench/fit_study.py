"""Fit study: the largest array per PE kind and board that places and meets the board's clock.

Each candidate is a full board build (``addershift build``: PLL, reset, UART pins, LEDs) of the
array behind the two-pin I/O harness (``--top array``), or of the whole accelerator (``--top
accelerator``: UART, host link, memories, sequencer, array, requantiser, sized for the shipped
digits model of each kind). Shapes go in order of PE count, the squarest for each count with ``cols <= 2 * rows``. The search first finds the area
limit (the largest shape that places), then walks down from it to the largest that also meets the
board's clock (see :func:`largest`). The multiplier baseline runs twice: on DSP blocks and in
LUTs.

    .venv/bin/python bench/fit_study.py --boards icebreaker                 # ~10 minutes
    .venv/bin/python bench/fit_study.py --boards ulx3s-85f --kinds adder    # hours: 32x32 takes
                                                                            # 10-30 min per build
    .venv/bin/python bench/fit_study.py --boards ulx3s-85f --kinds adder --top accelerator \
        --rows-per-bank 4       # rows share activation banks: fewer block RAMs
    .venv/bin/python bench/fit_study.py --boards ulx3s-85f --kinds adder --top accelerator \
        --requant-lanes 8 --act-entry-lanes 8 --act-depth 64 --weight-relays 4 \
        --shapes 16x32 24x32    # only these shapes, with narrow banks and weight relays

Lanes and relays are upper bounds, fitted to each shape's columns (:func:`lane_options`).

Peak throughput is one operand pair (a term accumulated) per PE per cycle: ``PEs`` per cycle and
``PEs x clock`` per second. Writes ``fit_study.json`` and ``fit_study.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

from addershift.boards.board import get_board
from addershift.boards.build import (PLACERS, DoesNotFit, DoesNotPlace, build_accelerator,
                                     build_array)
from addershift.boards.toolchain import ToolError, prepare_environment

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import (MAX_SIDE, int_range, nextpnr_seeds, out_dir, positive_float,
                   positive_int, shape)

MODELS = pathlib.Path(__file__).resolve().parent.parent / "models"

#: Variant name -> (PE kind, multipliers): the baseline once on DSPs, once in LUTs.
VARIANTS = {"adder": ("adder", "dsp"), "shift": ("shift", "dsp"), "mul-dsp": ("mul", "dsp"),
            "mul-luts": ("mul", "luts")}


def shapes(max_side=64):
    """Array shapes in increasing PE count: for every count ``rows * cols`` with
    ``rows <= cols <= 2 * rows``, the squarest such shape (1x1, 1x2, 2x2, 2x3, 2x4, 3x3, ...)."""
    best = {}
    for rows in range(1, max_side + 1):
        for cols in range(rows, min(2 * rows, max_side) + 1):
            pes = rows * cols
            if pes not in best or cols - rows < best[pes][1] - best[pes][0]:
                best[pes] = (rows, cols)
    return [best[pes] for pes in sorted(best)]


def act_banks(rows, rows_per_bank):
    """The fewest activation banks (a divisor of ``rows``) that leave at most ``rows_per_bank``
    rows sharing one; ``None`` (a bank per row) when ``rows_per_bank`` is ``None``."""
    if rows_per_bank is None:
        return None
    return min(d for d in range(1, rows + 1) if rows % d == 0 and d * rows_per_bank >= rows)


def _divisor_at_most(cols, limit):
    """The largest divisor of ``cols`` that is at most ``limit``."""
    return max(d for d in range(1, min(limit, cols) + 1) if cols % d == 0)


def lane_options(cols, requant_lanes=None, act_entry_lanes=None, weight_relays=None):
    """The lane and relay options, each taken as an upper bound, that a shape of ``cols``
    columns can have (``ArrayConfig`` keyword arguments; an option not given is left out):
    narrow-bank entries of the largest power of two up to ``act_entry_lanes`` and ``cols``,
    requantiser lanes and weight relays of the largest divisors of ``cols`` up to theirs (the
    lanes at most the entries, also when only the entries are given). So one search can run
    over every shape, from 1x1 up."""
    out = {}
    if act_entry_lanes is not None:
        out["act_entry_lanes"] = 1 << (min(act_entry_lanes, cols).bit_length() - 1)
    if requant_lanes is not None or act_entry_lanes is not None:
        out["requant_lanes"] = _divisor_at_most(cols, min(requant_lanes or cols,
                                                          out.get("act_entry_lanes", cols)))
    if weight_relays is not None:
        out["weight_relays"] = _divisor_at_most(cols, weight_relays)
    return out


def _accelerator_config(kind, rows, cols, overrides=None):
    """The accelerator build for the shipped digits model of ``kind``, at ``rows`` x ``cols``
    (``overrides``: ``ArrayConfig`` keyword arguments, ``rows_per_bank`` for :func:`act_banks`,
    and upper bounds on the lanes and relays for :func:`lane_options`)."""
    from addershift.sw.compiler import default_config
    from addershift.sw.model import load_model
    overrides = dict(overrides or {})
    banks = act_banks(rows, overrides.pop("rows_per_bank", None))
    overrides.update(lane_options(cols, *(overrides.pop(name, None) for name in (
        "requant_lanes", "act_entry_lanes", "weight_relays"))))
    return default_config(load_model(MODELS / f"digits_{kind}.npz"), rows=rows, cols=cols,
                          act_banks=banks, **overrides)


class ToolFailure(RuntimeError):
    """A build failed for a reason other than the design's size (a tool missing or stopping with
    an error): the study cannot go on, and that shape must not count as one that does not fit."""


def _overflow(e):
    """What a :class:`DoesNotFit` (or :class:`DoesNotPlace`) says is too full, for the table."""
    return " and ".join(f"{used} {cell} of {total}" for cell, used, total in e.overflows)


def attempt(board, variant, rows, cols, *, clock_mhz, out, seed, ignore_timing=False,
            top="array", overrides=None, placer=None):
    """Build one shape; its record. Only nextpnr's own verdict that the design does not fit or
    does not place (:class:`DoesNotFit`, :class:`DoesNotPlace`) makes a record with ``placed``
    false; any other tool failure raises :class:`ToolFailure`."""
    kind, multipliers = VARIANTS[variant]
    build_dir = out / board / top / variant / f"{rows}x{cols}"
    start = time.monotonic()
    rec = {"rows": rows, "cols": cols, "pes": rows * cols}
    try:
        if top == "accelerator":
            config = _accelerator_config(kind, rows, cols, overrides)
            result = build_accelerator(board=board, config=config,
                                       clock_mhz=clock_mhz, build_dir=build_dir, seed=seed,
                                       placer=placer, multipliers=multipliers,
                                       check_timing=False)
        else:
            result = build_array(board=board, pe=kind, rows=rows, cols=cols,
                                 clock_mhz=clock_mhz, build_dir=build_dir, seed=seed,
                                 placer=placer, multipliers=multipliers, check_timing=False)
    except DoesNotFit as e:
        what = "does not place" if isinstance(e, DoesNotPlace) else "does not fit"
        rec.update(ok=False, placed=False, reason=f"{what}: {_overflow(e)}")
    except ToolError as e:
        raise ToolFailure(f"{board} {variant} {rows}x{cols}: the build failed, and not because "
                          f"the design does not fit: {str(e).splitlines()[0]}") from e
    else:
        r = result.report
        rec.update(ok=bool(r.timing_met) or ignore_timing, timing_met=bool(r.timing_met),
                   placed=True, fmax_mhz=round(r.fmax, 2), seed=r.extra["seed"],
                   critical_path=r.critical_path,
                   clock_mhz=r.clock_mhz,
                   logic_cells=r.resources["logic_cells"].to_dict(),
                   dsp=r.resources["dsp"].to_dict(), premap_mul=r.premap_mul,
                   reason=None if r.timing_met else f"Fmax {r.fmax:.1f} < {r.clock_mhz:g} MHz")
    rec["seconds"] = round(time.monotonic() - start, 1)
    verdict = ("ok" if rec.get("timing_met") else f"placed, {rec['reason']}") if rec["placed"] \
        else rec["reason"]
    pct = rec.get("logic_cells", {}).get("percent")
    cells = "" if pct is None else f"{pct:5.1f}% cells"
    fmax = f"Fmax {rec['fmax_mhz']:.1f}" if "fmax_mhz" in rec else ""
    print(f"  {board:<10} {variant:<8} {rows:>2}x{cols:<2} {rows * cols:>5} PEs  {cells}  {fmax}  "
          f"{verdict}  [{rec['seconds']:.0f} s]", flush=True)
    return rec


def largest(board, variant, *, clock_mhz, out, seed, max_side, ignore_timing=False,
            top="array", overrides=None, placer=None):
    """``(best, area_limit, tried)``: the largest passing shape (None if none), the largest that
    places, and every attempt. Two phases over :func:`shapes`:

    1. The area limit: doubling in PE count (or what the cell budget suggests), then a binary
       search for the largest shape that places (timing ignored).
    2. Unless ``ignore_timing``: from that shape down, the largest that also meets the clock.
       Fmax is not monotonic in the array size (placement noise, and the slowest path may be
       control logic rather than PEs), so this walks down from the area limit in steps of
       about 15 % of the PEs, then searches between the last failure and the first success.
    """
    order = shapes(max_side)
    tried = {}

    def run(i):
        if i not in tried:
            rows, cols = order[i]
            tried[i] = attempt(board, variant, rows, cols, clock_mhz=clock_mhz, out=out,
                               seed=seed, ignore_timing=True, top=top, overrides=overrides,
                               placer=placer)
        return tried[i]

    def placed(i):
        return run(i)["placed"]

    def met(i):
        return run(i)["placed"] and run(i)["timing_met"]

    def bisect(lo, hi, ok):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return lo

    def records():
        return sorted(tried.values(), key=lambda r: r["pes"])

    if not placed(0):
        return None, None, records()
    lo, hi = 0, None                  # lo places; hi (if known) does not
    while hi is None and lo < len(order) - 1:
        rec = tried[lo]
        target_pes = 2 * rec["pes"]
        pct = rec.get("logic_cells", {}).get("percent")
        if pct:
            target_pes = min(target_pes, max(rec["pes"] + 1, int(rec["pes"] * 100 / pct * 1.05)))
        nxt = next((i for i, (r, c) in enumerate(order) if r * c >= target_pes), len(order) - 1)
        nxt = max(nxt, lo + 1)
        if placed(nxt):
            lo = nxt
        else:
            hi = nxt
    area = bisect(lo, hi, placed) if hi is not None else lo
    if ignore_timing:
        return tried[area], tried[area], records()

    # (No shortcut when one PE misses the clock: a whole accelerator's periphery sets its
    # Fmax, and on the iCEBreaker the 1x1 placed at 33.7 MHz against 34.5 where the 3x5 and the
    # 3x4 shift accelerator met it.)
    i, fail = area, None
    while not met(i):
        fail = i
        if i == 0:
            return None, tried[area], records()
        pes = order[i][0] * order[i][1]
        i = max([j for j in range(i) if order[j][0] * order[j][1] <= 0.85 * pes] or [i - 1])
    best = bisect(i, fail, met) if fail is not None else i
    return tried[best], tried[area], records()


def largest_of(board, variant, candidates, *, clock_mhz, out, seed, ignore_timing=False,
               top="array", overrides=None, placer=None):
    """:func:`largest` over the given shapes only (``candidates``, ``(rows, cols)`` pairs): each
    is built, and the largest that meets the clock (or that places) is the best."""
    tried = sorted((attempt(board, variant, rows, cols, clock_mhz=clock_mhz, out=out, seed=seed,
                            ignore_timing=True, top=top, overrides=overrides, placer=placer)
                    for rows, cols in candidates), key=lambda r: r["pes"])
    placed = [r for r in tried if r["placed"]]
    area = placed[-1] if placed else None
    if ignore_timing:
        return area, area, tried
    met = [r for r in placed if r["timing_met"]]
    return (met[-1] if met else None), area, tried


def plot(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = list(dict.fromkeys(r["board"] for r in results))
    variants = list(dict.fromkeys(r["variant"] for r in results))
    colours = {"adder": "#2a9d8f", "shift": "#e9c46a", "mul-dsp": "#e76f51", "mul-luts": "#9b2226"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs, pes, gops, area = [], [], [], []
        for j, b in enumerate(boards):
            r = next((r for r in results if (r["board"], r["variant"]) == (b, v)), None)
            if r is None:
                continue
            xs.append(j + (i - (len(variants) - 1) / 2) * width)
            pes.append(r["pes"])
            gops.append(r["peak_gops"])
            area.append((r.get("area_limit") or {}).get("pes") or 0)
        # Hatched outline: the area limit (the largest array that places, at any Fmax).
        axes[0].bar(xs, area, width, color="none", edgecolor=colours.get(v), hatch="//")
        axes[0].bar(xs, pes, width, color=colours.get(v), label=v)
        axes[1].bar(xs, gops, width, color=colours.get(v), label=v)
        for x, p in zip(xs, pes):
            axes[0].text(x, p, str(p), ha="center", va="bottom", fontsize=7)
    for ax, label in ((axes[0], "PEs"),
                      (axes[1], "peak G operand pairs / s")):
        ax.set_xticks(range(len(boards)), boards)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boards", nargs="+", default=["icebreaker"],
                        choices=["icebreaker", "ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f"])
    parser.add_argument("--kinds", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--clock", type=positive_float,
                        help="core clock in MHz (default: each board's; with --top accelerator "
                             "its accelerator clock for the kind, as addershift build's)")
    parser.add_argument("--max-side", type=int_range(1, MAX_SIDE), default=MAX_SIDE,
                        help="largest rows or cols to try")
    parser.add_argument("--seed", type=nextpnr_seeds, default="1", metavar="N[,N...]",
                        help="nextpnr placement seed; a list (1,2,3) places each build with each "
                             "seed in turn until one meets the clock (`addershift build --seed`)")
    parser.add_argument("--placer", choices=PLACERS,
                        help="nextpnr's placer (default: the board's for an accelerator's PE "
                             "kind, static for adder ones on the ULX3S-45F/85F; otherwise "
                             "nextpnr's own, heap)")
    parser.add_argument("--top", choices=("array", "accelerator"), default="array",
                        help="array: the array behind the two-pin harness; accelerator: the whole "
                             "accelerator (UART, host link, core) sized for the shipped digits "
                             "model of each kind")
    parser.add_argument("--shapes", nargs="+", type=shape, metavar="RxC",
                        help="build only these shapes (e.g. 16x32 24x32 32x32) instead of "
                             "searching from 1x1: the largest of them that meets the clock")
    parser.add_argument("--requant-lanes", type=positive_int, metavar="N",
                        help="--top accelerator: the requantiser's lanes, at most N (the "
                             "largest divisor of each shape's cols; 1: the smallest)")
    parser.add_argument("--act-entry-lanes", type=positive_int, metavar="E",
                        help="--top accelerator: narrow activation banks of E-lane entries, at "
                             "most E (a power of two, at most cols; default: off)")
    parser.add_argument("--weight-relays", type=positive_int, metavar="N",
                        help="--top accelerator: weight-address relays, at most N (the largest "
                             "divisor of each shape's cols; default: off)")
    parser.add_argument("--requant-pipeline", choices=("deep", "short"), default="deep",
                        help="--top accelerator: the requantiser's pipeline")
    parser.add_argument("--writeback-pipeline", choices=("deep", "short"), default="deep",
                        help="--top accelerator: the write-back's pipeline")
    parser.add_argument("--read-pipeline", choices=("deep", "short"), default="deep",
                        help="--top accelerator: the block RAM reads' pipeline")
    parser.add_argument("--rows-per-bank", type=positive_int, metavar="G",
                        help="--top accelerator: at most G rows share an activation bank "
                             "(--act-banks; default: a bank per row)")
    parser.add_argument("--act-depth", type=positive_int, metavar="WORDS",
                        help="--top accelerator: words of each activation buffer (default: what "
                             "the model needs, at least 512; the digits models need 64)")
    parser.add_argument("--ignore-timing", action="store_true",
                        help="the largest array that places, whatever its Fmax (the area limit)")
    parser.add_argument("--out", type=out_dir, default="build/bench/fit_study",
                        help="builds and results")
    args = parser.parse_args(argv)

    overrides = {"requant_lanes": args.requant_lanes, "act_entry_lanes": args.act_entry_lanes,
                 "weight_relays": args.weight_relays, "requant_pipeline": args.requant_pipeline,
                 "writeback_pipeline": args.writeback_pipeline,
                 "read_pipeline": args.read_pipeline, "rows_per_bank": args.rows_per_bank,
                 **({"act_depth": args.act_depth} if args.act_depth is not None else {})}
    for board in args.boards if args.clock is not None else ():
        try:        # a clock the board's PLL cannot make fails now, not in the first build
            get_board(board).check_clock(args.clock)
        except ValueError as e:
            parser.error(f"argument --clock: {board}: {e}")
    if args.top == "accelerator":
        # Options that no shape can take (relays with the short read pipeline, say) fail here,
        # with the configuration's own message, not after hours of builds.
        for kind, _ in (VARIANTS[v] for v in args.kinds):
            for rows, cols in args.shapes or [(1, 1)]:
                try:
                    _accelerator_config(kind, rows, cols, overrides)
                except (TypeError, ValueError) as e:
                    parser.error(f"{kind} {rows}x{cols}: {e}")
    prepare_environment()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for board in args.boards:
        for variant in args.kinds:
            # The clock an `addershift build` of the same top takes without --clock.
            clock = args.clock or (
                get_board(board).accelerator_clock(VARIANTS[variant][0])
                if args.top == "accelerator" else get_board(board).default_clock_mhz)
            print(f"{board} {variant} at {clock:g} MHz", flush=True)
            common = dict(clock_mhz=clock, out=out, seed=args.seed,
                          ignore_timing=args.ignore_timing, top=args.top, placer=args.placer,
                          overrides=overrides)
            try:
                if args.shapes:
                    best, area, tried = largest_of(board, variant, args.shapes, **common)
                else:
                    best, area, tried = largest(board, variant, max_side=args.max_side, **common)
            except ToolFailure as e:
                parser.exit(1, f"{parser.prog}: error: {e}\n")
            row = {"board": board, "variant": variant, "clock_mhz": clock, "tried": tried,
                   "area_limit": None if area is None else
                   {k: area.get(k) for k in ("rows", "cols", "pes", "fmax_mhz", "logic_cells")}}
            if best is None:
                row.update(rows=0, cols=0, pes=0, peak_gops=0.0, fmax_mhz=None)
            else:
                row.update(rows=best["rows"], cols=best["cols"], pes=best["pes"],
                           fmax_mhz=best["fmax_mhz"], logic_cells=best["logic_cells"],
                           dsp=best["dsp"], premap_mul=best["premap_mul"],
                           timing_met=best["timing_met"], peak_ops_per_cycle=best["pes"],
                           # At the clock it was built for when it met it, else at its Fmax.
                           peak_gops=round(best["pes"] * min(best["clock_mhz"],
                                                             best["fmax_mhz"]) / 1e3, 2))
            results.append(row)

    print(f"\n{'board':<10} {'variant':<8} {'array':>6} {'PEs':>5} {'cells':>12} {'DSP':>7} "
          f"{'$mul':>4} {'clock':>6} {'Fmax':>6} {'ops/cyc':>7} {'Gops/s':>7}  area limit")
    for r in results:
        a = r["area_limit"]
        limit = "-" if a is None else f"{a['rows']}x{a['cols']} ({a['pes']} PEs, {a['fmax_mhz']} MHz)"
        if not r["pes"]:
            print(f"{r['board']:<10} {r['variant']:<8} nothing meets {r['clock_mhz']:g} MHz"
                  f"{'':>60}{limit}")
            continue
        cells = f"{r['logic_cells']['used']} ({r['logic_cells']['percent']:.0f}%)"
        dsp = f"{r['dsp']['used']}/{r['dsp']['total']}"
        print(f"{r['board']:<10} {r['variant']:<8} {r['rows']:>2}x{r['cols']:<3} {r['pes']:>5} "
              f"{cells:>12} {dsp:>7} {r['premap_mul']:>4} {r['clock_mhz']:>6g} "
              f"{r['fmax_mhz']:>6.1f} {r['peak_ops_per_cycle']:>7} {r['peak_gops']:>7.2f}  {limit}")
    payload = {"command": " ".join(["bench/fit_study.py", *(argv if argv is not None
                                                             else sys.argv[1:])]),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "seed": list(args.seed), "placer": args.placer or "default", "top": args.top,
               "ignore_timing": args.ignore_timing,
               "results": results}
    (out / "fit_study.json").write_text(json.dumps(payload, indent=1))
    what = "places (any Fmax)" if args.ignore_timing else "meets the board clock"
    plot([r for r in results if r["pes"] or r["area_limit"]], out / "fit_study.png",
         f"addershift fit study ({args.top}): largest array that {what} (hatched: that places)")
    print(f"\nwrote {out / 'fit_study.json'} and {out / 'fit_study.png'}")


if __name__ == "__main__":
    main()
