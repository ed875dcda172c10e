"""Float vs quantised accuracy on the digits test split, for each PE kind and requantisation mode.

For every PE kind one float network is trained (the shipped models' settings, one seed per row
group); it is then quantised into each requantisation mode, once without fine-tuning (post-training
quantisation, PTQ) and once with the default quantisation-aware fine-tuning (QAT). Integer accuracy
is always the golden model's, on the exported model, i.e. what the accelerator computes.

    .venv/bin/python bench/accuracy.py                 # markdown table (about 5 minutes on one core)
    .venv/bin/python bench/accuracy.py --seeds 0 1 2   # more seeds
    .venv/bin/python bench/accuracy.py --json          # one JSON object
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from addershift.sw.data import load_dataset
from addershift.sw.quantize import golden_accuracy, quantize_net
from addershift.sw.train import FloatNet, PE_KINDS, default_config, digits_spec, set_determinism, train_float

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import int_range, nonnegative_int

MODES = ("shift", "pow2x2", "mul")


def run(pes, seeds, modes, dataset, qat_epochs, log):
    """The table's rows; ``dataset`` a name for ``load_dataset`` or a loaded ``Dataset``."""
    data = load_dataset(dataset) if isinstance(dataset, (str, pathlib.Path)) else dataset
    rows = []
    for pe in pes:
        for seed in seeds:
            cfg = default_config(pe, seed=seed)
            set_determinism(seed)
            net = FloatNet(digits_spec(cfg.channels, data.classes), data.input_shape, pe=pe,
                           variant=cfg.variant, p_min=cfg.p_min, p_max=cfg.p_max)
            start = time.perf_counter()
            float_acc = train_float(net, data, cfg)
            float_s = time.perf_counter() - start
            for mode in modes:
                row = {"pe": pe, "seed": seed, "mode": mode, "float": float_acc, "float_seconds": float_s,
                       "default": mode == cfg.mode}
                for label, epochs in (("ptq", 0), ("qat", cfg.qat_epochs if qat_epochs is None else qat_epochs)):
                    q = default_config(pe, seed=seed, mode=mode, qat_epochs=epochs)
                    start = time.perf_counter()
                    model, _ = quantize_net(net, data, q)
                    row[label] = golden_accuracy(model, data.test_x, data.test_y)
                    row[f"{label}_seconds"] = time.perf_counter() - start
                rows.append(row)
                log(f"{pe} seed {seed} {mode}: float {row['float']:.4f} ptq {row['ptq']:.4f} qat {row['qat']:.4f}")
    return rows


def table(rows):
    lines = ["| PE | seed | requant | float | int, PTQ | int, QAT | QAT - float |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = f"**{r['mode']}**" if r["default"] else r["mode"]
        lines.append(f"| {r['pe']} | {r['seed']} | {mode} | {100 * r['float']:.2f} | {100 * r['ptq']:.2f} | "
                     f"{100 * r['qat']:.2f} | {100 * (r['qat'] - r['float']):+.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pe", nargs="+", choices=PE_KINDS, default=list(PE_KINDS), help="PE kinds")
    # (TrainConfig takes seeds >= 0; NumPy's and PyTorch's generators take 32 bits of them.)
    p.add_argument("--seeds", nargs="+", type=int_range(0, 2**32 - 1), default=[0],
                   help="training seeds")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="requantisation modes")
    p.add_argument("--dataset", default="digits", help="'digits' or an IDX folder")
    p.add_argument("--qat-epochs", type=nonnegative_int,
                   help="fine-tuning epochs (default: per PE kind)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:        # before any training: a folder that is not a data set is an argument error
        data = load_dataset(args.dataset)
    except (TypeError, ValueError) as e:        # DataError is a ValueError
        p.error(f"argument --dataset: {e}")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    rows = run(args.pe, args.seeds, args.modes, data, args.qat_epochs, log)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "rows": rows}))
    else:
        name = "Digits" if args.dataset == "digits" else f"{args.dataset!r}"
        print(f"{name} test split ({len(data.test_x)} images); integer accuracy by the golden "
              f"model on the exported model. Bold: the mode `addershift train` uses for that PE "
              f"kind.\n")
        print(table(rows))


if __name__ == "__main__":
    main()
