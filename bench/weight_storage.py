"""Weight storage by PE kind: what a model's weights take in bits, in the program and on the chip.

AdderNet keeps a weight per product, so it stores as many weights as the network it replaces;
DeepShift stores a sign and an exponent. This counts, for each model and board build:

- the weights and the bits each takes in the accelerator's weight memory
  (``ArrayConfig.weight_bits``: adder and mul weights in the activations' format, a shift weight's
  sign (+1, 0, -1: 2 bits) and exponent), their product, and the program's weight words (each
  layer's output channels padded to the array's columns; the descriptors apart);
- the requantisation parameters, BatchNorm folded in: bits per output channel;
- the weight and parameter memories as the build provisions them, and as Yosys maps them
  (SB_SPRAM256KA and SB_RAM40_4K on iCE40, DP16KD on ECP5; ``bench/module_area.py``'s synthesis).

``--train`` also trains each kind once on the digits data and quantises it at several widths
(adder and mul: activations and weights of :data:`X_BITS`; shift: 8-bit activations and
``2**shift_bits`` exponents per layer, :data:`SHIFT_BITS`): accuracy against bits per weight (the
golden model, i.e. what the hardware computes).

    .venv/bin/python bench/weight_storage.py                    # the shipped models (~2 min)
    .venv/bin/python bench/weight_storage.py --boards icebreaker --no-synth
    .venv/bin/python bench/weight_storage.py --train --no-synth # + accuracy by width (~35 s)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from addershift.boards.board import get_board
from addershift.boards.toolchain import prepare_environment
from addershift.sw.cli import BOARDS
from addershift.sw.compiler import CompileError, board_build, compile_model, default_config
from addershift.sw.model import ModelFileError, load_model

# The bench's shared argument types and the per-module synthesis (bench/ is on sys.path when a
# script runs).
from _args import out_dir
from module_area import measure

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = [ROOT / "models" / f"digits_{kind}.npz" for kind in ("adder", "shift", "mul")]
#: ``--train``'s widths: activation bits for adder and mul, ``shift_bits`` for shift.
X_BITS = (4, 5, 6, 8)
SHIFT_BITS = (1, 2, 3)


def storage(model, config):
    """What ``model``'s weights and requantisation parameters take in the build ``config``."""
    program = compile_model(model, config)
    layers = model.compute_layers()
    weights = sum(next(iter(layer.weights.values())).size for layer in layers)
    channels = sum(layer.out_channels for layer in layers)
    words = sum(stage.w_words for stage in program.stages)
    return {
        "weights": weights,
        "bits_per_weight": config.weight_bits,
        "weight_bits": weights * config.weight_bits,
        "weight_words": words,
        "descriptor_words": len(program.weight_words) - words,
        "word_bits": config.weight_word_bits,
        "program_weight_bits": words * config.weight_word_bits,
        "weight_memory_bits": config.weight_depth * config.weight_word_bits,
        "channels": channels,
        "bits_per_channel": config.param_channel_bits,
        "param_bits": channels * config.param_channel_bits,
    }


def board_config(model, board):
    """The board's own build for the model's PE kind (what ``addershift build --board`` makes);
    :class:`CompileError` for a model no build takes (the compiler's checks name why)."""
    options, least = board_build(board, default_config(model).pe.value)
    return default_config(model, least=least, **options)


def on_chip(config, family, out):
    """The weight and parameter memories' blocks, as Yosys maps them in the whole accelerator."""
    rows = measure(config, family, out)
    return {part: {kind: rows[f"top.core.{module}"].get(kind, 0)
                   for kind in ("bram", "spram")}
            for part, module in (("weights", "wmem"), ("params", "pmem"))}


def storage_rows(models, boards, synth, out, log):
    """A row per model and board; every build is compiled before the first synthesis, so a
    model that does not fit a board stops the bench at once (:class:`CompileError`)."""
    builds = []
    for path in models:
        model = load_model(path)
        for board in boards:
            config = board_config(model, board)
            builds.append((path, board, config, {
                "model": str(path), "pe": config.pe.value, "board": board,
                "shape": f"{config.rows}x{config.cols}", **storage(model, config)}))
    for path, board, config, row in builds:
        if synth:
            start = time.perf_counter()
            row["on_chip"] = on_chip(config, get_board(board).family,
                                     out / f"{pathlib.Path(path).stem}_{board}")
            log(f"{path} on {board}: synthesised in {time.perf_counter() - start:.0f} s")
    return [row for *_, row in builds]


def train_rows(log):
    """One float network per kind, quantised at each of :data:`X_BITS` (:data:`SHIFT_BITS`)."""
    from addershift.sw.data import load_dataset
    from addershift.sw.quantize import golden_accuracy, quantize_net
    from addershift.sw.train import FloatNet, default_config as train_config, digits_spec, \
        set_determinism, train_float
    data = load_dataset("digits")
    rows = []
    for pe in ("adder", "shift", "mul"):
        cfg = train_config(pe)
        set_determinism(cfg.seed)
        net = FloatNet(digits_spec(cfg.channels, data.classes), data.input_shape, pe=pe,
                       variant=cfg.variant, p_min=cfg.p_min, p_max=cfg.p_max)
        float_acc = train_float(net, data, cfg)
        widths = [{"shift_bits": b} for b in SHIFT_BITS] if pe == "shift" else \
            [{"x_bits": b} for b in X_BITS]
        for width in widths:
            q = train_config(pe, **width)
            model, _ = quantize_net(net, data, q)
            config = default_config(model)
            s = storage(model, config)
            rows.append({"pe": pe, "x_bits": model.x_bits, **width, "float": float_acc,
                         "int": golden_accuracy(model, data.test_x, data.test_y),
                         "bits_per_weight": s["bits_per_weight"], "weights": s["weights"],
                         "weight_bits": s["weight_bits"]})
            log(f"{pe} {width}: int {rows[-1]['int']:.4f}")
    return rows


def _kib(bits):
    return f"{bits / 8192:.2f}"


def storage_table(rows):
    synth = any("on_chip" in r for r in rows)
    head = ["model", "board (array)", "weights", "bits / weight", "weights, KiB",
            "program's weight words x bits, KiB", "filled", "weight memory, KiB",
            "requant. bits / channel (channels)"]
    if synth:
        head += ["weight memory blocks (Yosys)", "parameter memory blocks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [pathlib.Path(r["model"]).name, f"{r['board']} ({r['shape']})", f"{r['weights']:,}",
                 str(r["bits_per_weight"]), _kib(r["weight_bits"]),
                 f"{r['weight_words']:,} x {r['word_bits']} = {_kib(r['program_weight_bits'])}",
                 f"{r['weight_bits'] / r['program_weight_bits']:.0%}",
                 _kib(r["weight_memory_bits"]), f"{r['bits_per_channel']} ({r['channels']})"]
        if synth:
            cells += [_blocks(r["on_chip"]["weights"]), _blocks(r["on_chip"]["params"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _blocks(counts):
    parts = [f"{n} SPRAM" for n in [counts["spram"]] if n] + \
            [f"{n} BRAM" for n in [counts["bram"]] if n]
    return ", ".join(parts) or "none (LUTs)"


def train_table(rows):
    lines = ["| PE | activation bits | exponents | bits / weight | weights, KiB | float "
             "| integer |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        exps = str(1 << r["shift_bits"]) if "shift_bits" in r else ""
        lines.append(f"| {r['pe']} | {r['x_bits']} | {exps} | {r['bits_per_weight']} | "
                     f"{_kib(r['weight_bits'])} | {r['float']:.2%} | {r['int']:.2%} |")
    return "\n".join(lines)


def _model_file(text):
    """A model file that loads (argparse type): its path."""
    try:
        load_model(text)
    except (ModelFileError, OSError) as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-m", "--models", nargs="+", type=_model_file,
                        default=[str(p) for p in MODELS], help="model files")
    parser.add_argument("--boards", nargs="+", choices=BOARDS,
                        default=["icebreaker", "ulx3s-85f"], help="each board's own build")
    parser.add_argument("--no-synth", action="store_true",
                        help="skip the Yosys runs that count the memories' blocks")
    parser.add_argument("--train", action="store_true",
                        help="also: accuracy against bits per weight (trains three networks)")
    parser.add_argument("--out", type=out_dir, default="build/bench/weight_storage",
                        help="folder for the Yosys runs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if not args.no_synth:
        prepare_environment()
    try:
        result = {"storage": storage_rows(args.models, args.boards, not args.no_synth,
                                          pathlib.Path(args.out), log)}
    except CompileError as e:               # a model too large for a board's own build
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    if args.train:
        result["accuracy"] = train_rows(log)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(storage_table(result["storage"]))
    if args.train:
        print()
        print(train_table(result["accuracy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
