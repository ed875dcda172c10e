"""Cycles per inference and array utilisation of the accelerator on the digits network.

For each array shape and PE kind, the digits topology (8x8 input, conv 3x3 -> 8 channels, ReLU,
2x2 max pool, conv 3x3 -> 16 channels, ReLU, 2x2 max pool, linear 64 -> 10; random parameters,
``sw.examples.digits_net``) runs one inference cycle-accurately on the accelerator core
(``sim.accel_sim.simulate``, checked bit-exact against the golden model) and the core's own
per-stage counters are read back. Utilisation is busy PE-cycles / (PEs x cycles).

Where the cycles of a stage go (columns of the second table):

- ``ideal``: busy PE-cycles / PEs, the bound if every PE did useful work every cycle;
- ``partial``: k-steps issued with some PEs idle (the last tile has fewer pixels than rows, the last
  group fewer channels than columns; a linear layer has one pixel, so one busy row);
- ``clear``: one cycle per reduction in which the array takes no step (its accumulators clear,
  ``SystolicArray.idle_after_last``);
- ``other stall``: k-steps waiting for the array (its readout when K < rows), the im2col walker
  filling the first tile (``rows`` cycles), parameters not loaded yet, and with ``--act-banks``
  the rows' fetches of each new activation word from their shared banks;
- ``overhead``: descriptor load before the stage and pipeline drain after its last k-step (array
  latency, readout of the last tile's rows, requantiser, write-back).

    .venv/bin/python bench/accel_cycles.py                     # 4x4 and 8x8, all PE kinds
    .venv/bin/python bench/accel_cycles.py --shapes 8x8 --ops adder --simulator verilator --json
    .venv/bin/python bench/accel_cycles.py --shapes 4x4 --requant-lanes 1   # a smaller requantiser
    .venv/bin/python bench/accel_cycles.py --shapes 2x2 --ops adder --requant-lanes 1 --pipelines short
    .venv/bin/python bench/accel_cycles.py --shapes 4x4,8x8 --ops adder --act-banks 1,2,4
    .venv/bin/python bench/accel_cycles.py --shapes 8x8 --ops adder --channels 32,32 --act-banks 2,8
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from addershift.sim.accel_sim import check, simulate
from addershift.sw.compiler import compile_model, default_config
from addershift.sw.examples import digits_net

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import comma_list, one_of, positive_int, shape

OPS = ("adder", "shift", "mul")


def prepare(op, rows, cols, lanes=None, pipeline="deep", act_banks=None, channels=(8, 16)):
    """``(model, config, program)`` of one run; ``ValueError`` (``CompileError`` is one) or
    ``TypeError`` for options the build does not take."""
    model = digits_net(op, mode="shift", channels=channels)
    config = default_config(model, rows=rows, cols=cols, requant_lanes=lanes,
                            requant_pipeline=pipeline, writeback_pipeline=pipeline,
                            read_pipeline=pipeline, act_banks=act_banks)
    return model, config, compile_model(model, config)


def measure(op, rows, cols, simulator, lanes=None, pipeline="deep", act_banks=None,
            channels=(8, 16), prepared=None):
    model, config, program = prepared or prepare(op, rows, cols, lanes, pipeline, act_banks,
                                                 channels)
    x = np.random.default_rng(0).integers(0, 128, (1, 1, 8, 8))
    name = (f"{op} {rows}x{cols} channels {channels[0]}-{channels[1]}"
            + (f" act_banks {act_banks}" if act_banks else ""))
    result = simulate(program, x, simulator=simulator,
                      build_dir=f"build/bench/{name.replace(' ', '_')}")
    if result.errors[0] or check(model, program, x, result) is not None:
        raise SystemExit(f"{name}: the simulation differs from the golden model")
    pes = rows * cols
    stages = []
    for stage, c in zip(program.stages, result.stage_counts(0)):
        ideal = stage.busy_pe_cycles / pes
        clear = stage.tiles * stage.groups
        stages.append({
            "stage": stage.name, "kind": "conv" if stage.kernel != stage.in_shape[1:] else "linear",
            "K": stage.reduction, "tiles": stage.tiles, "groups": stage.groups,
            "cycles": c["cycles"], "utilisation": c["busy_pe"] / (pes * c["cycles"]),
            "ideal": ideal, "partial": c["issue"] - ideal, "clear": clear,
            "other_stall": c["stall"] - clear,
            "overhead": c["cycles"] - c["issue"] - c["stall"],
            "issue": c["issue"], "stall": c["stall"], "busy_pe": c["busy_pe"],
        })
    total = sum(s["cycles"] for s in stages)
    busy = sum(s["busy_pe"] for s in stages)
    return {"op": op, "rows": rows, "cols": cols, "lanes": config.lanes,
            "banks": config.banks, "cycles": total,
            "utilisation": busy / (pes * total), "ideal": busy / pes, "stages": stages,
            "config": config.to_dict()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shapes", type=comma_list(shape), default="4x4,8x8",
                        help="array shapes, rows x cols")
    parser.add_argument("--ops", type=comma_list(one_of(OPS)), default=",".join(OPS),
                        help="PE kinds")
    parser.add_argument("--simulator", default="amaranth",
                        choices=("amaranth", "icarus", "verilator"))
    parser.add_argument("--requant-lanes", type=positive_int,
                        help="values the requantiser takes per cycle (None: cols)")
    parser.add_argument("--pipelines", choices=("deep", "short"), default="deep",
                        help="the requantiser's, write-back's and block RAM reads' pipelines "
                             "(short: the iCEBreaker builds)")
    parser.add_argument("--channels", type=comma_list(positive_int, count=2), default="8,16",
                        help="output channels of the two conv layers (wider layers have longer "
                             "activation words)")
    parser.add_argument("--act-banks", type=comma_list(positive_int), default=None,
                        help="read banks of each activation buffer, comma-separated (each a "
                             "divisor of rows; default: rows, one per row)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    channels = args.channels
    # Every run's build and program first: a bad combination (lanes that do not divide cols,
    # say) fails now, before the simulations of the others.
    plans = []
    for rows, cols in args.shapes:
        for op in args.ops:
            for banks in args.act_banks or [None]:
                options = (op, rows, cols, args.requant_lanes, args.pipelines, banks, channels)
                try:
                    plans.append((options, prepare(*options)))
                except (TypeError, ValueError) as e:
                    parser.error(f"{op} {rows}x{cols}"
                                 f"{f' act_banks {banks}' if banks else ''}: {e}")
    runs = []
    for (op, rows, cols, lanes, pipeline, banks, channels), prepared in plans:
        runs.append(measure(op, rows, cols, args.simulator, lanes, pipeline, banks, channels,
                            prepared=prepared))
        print(f"measured {op} {rows}x{cols} ({runs[-1]['banks']} banks)",
              file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"simulator": args.simulator, "runs": runs}))
        return
    lanes = f", requantiser {args.requant_lanes} lanes" if args.requant_lanes else ""
    lanes += f", {args.pipelines} pipelines"
    print(f"digits network (conv channels {channels[0]}, {channels[1]}), one inference, "
          f"{args.simulator} simulator (bit-exact with the golden model){lanes}\n")
    print(f"{'array':<6}{'pe':<7}{'banks':>5}{'cycles':>7}{'ideal':>7}{'util':>7}"
          f"   per stage: cycles (util)")
    for r in runs:
        per = "  ".join(f"{s['stage']} {s['cycles']} ({100 * s['utilisation']:.0f}%)"
                        for s in r["stages"])
        print(f"{r['rows']}x{r['cols']:<4}{r['op']:<7}{r['banks']:>5}{r['cycles']:>7}"
              f"{r['ideal']:>7.0f}{100 * r['utilisation']:>6.1f}%   {per}")
    print("\nwhere the cycles go (cycles = ideal + partial + clear + other stall + overhead)\n")
    print(f"{'array':<6}{'pe':<7}{'banks':>5} {'stage':<7}{'K':>4}{'tiles':>6}{'grp':>4}"
          f"{'cycles':>7}{'ideal':>7}{'partial':>8}{'clear':>6}{'stall':>6}{'overh':>6}{'util':>6}")
    for r in runs:
        for s in r["stages"]:
            print(f"{r['rows']}x{r['cols']:<4}{r['op']:<7}{r['banks']:>5} {s['stage']:<7}{s['K']:>4}"
                  f"{s['tiles']:>6}"
                  f"{s['groups']:>4}{s['cycles']:>7}{s['ideal']:>7.0f}{s['partial']:>8.0f}"
                  f"{s['clear']:>6}{s['other_stall']:>6}{s['overhead']:>6}"
                  f"{100 * s['utilisation']:>5.0f}%")


if __name__ == "__main__":
    main()
