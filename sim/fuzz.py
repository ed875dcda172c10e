"""Differential fuzzing: random small networks on random builds, simulated against the golden model.

A case (one seed) draws a network (one to four conv and linear layers with ReLU, max and global
average pooling and flatten; 4- to 10-bit activations; a PE kind and a requantisation mode) and a
build it fits (an array of 1-5 x 1-5 PEs, requantiser lanes, shared or narrow activation banks,
weight relays, each pipeline deep or short, other counter widths, memories at their least or
larger), runs one or two images (one of them sometimes stage by stage too) in a simulator and
compares every stage's output with the golden trace (:func:`~addershift.sim.accel_sim.check`). A
build the compiler refuses counts as refused: its :class:`~addershift.sw.compiler.CompileError`
names the layer and the parameter.

The layer cases and the digits network (``tests/hw/test_accelerator.py``) pin the known corners;
this finds the combinations nobody listed (it found the narrow banks that lost the host's words
with 4-bit activations, now refused by ``ArrayConfig``)::

    .venv/bin/python -m addershift.sim.fuzz --seeds 0:200                 # ~8 minutes
    .venv/bin/python -m addershift.sim.fuzz --seeds 0:20 --simulator icarus
    .venv/bin/python -m addershift.sim.fuzz --seeds 0:20 --simulator icarus --board icebreaker

With ``--board`` the Verilog is elaborated for the board's device (the iCE40UP's SPRAM weight
memory, the ECP5's carry cells in adder PEs) and simulated with Yosys' models of those cells.
A case's Verilog build (a folder per seed under ``--build-dir``; a Verilator one is tens of
megabytes) is removed once it matches, and kept when it mismatches (``--keep-builds``: always).

Exits 1 if any case mismatches or its simulation fails (``error``; its build folder is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time

import numpy as np

from ..boards.board import get_board
from ..hw.config import ArrayConfig
from ..sw.cli import BOARDS
from ..sw.compiler import CompileError, compile_model, default_config
from ..sw.examples import random_requant, random_weights
from ..sw.model import Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, QModel, ReLU
from ..sw.numerics import Op, RequantMode, acc_width, int_range
from .accel_sim import SIMULATORS, check, simulate_batch

__all__ = ["Case", "random_network", "random_build", "run_case", "main"]


@dataclasses.dataclass
class Case:
    """One seed's outcome: ``"ok"``, ``"refused"`` (``message``: the compiler's),
    ``"mismatch"`` (``message``: the first difference, an
    :class:`~addershift.sim.accel_sim.Mismatch`) or ``"error"`` (the simulation failed: a
    Verilog build that fails, a run that times out; ``message``: the exception)."""
    seed: int
    network: str
    build: str
    outcome: str
    message: str = ""
    seconds: float = 0.0

    def __str__(self):
        line = (f"seed {self.seed}: {self.outcome} [{self.build}] [{self.network}] "
                f"{self.seconds:.1f} s")
        return line + (f"\n    {self.message}" if self.message else "")


def _layer(rng, name, op, mode, shape, x_bits, w_bits, p_min, p_max, conv):
    """A random conv (``conv``: kernel, stride, padding) or linear layer on inputs of ``shape``."""
    out = int(rng.integers(1, 13))
    weights_shape = (out, shape[0], *conv[0]) if conv else (out, shape[0])
    k = int(np.prod(weights_shape[1:]))
    widths = ({"x_bits": x_bits, "p_min": p_min, "p_max": p_max} if op is Op.SHIFT
              else {"x_bits": x_bits, "w_bits": w_bits})
    requant = random_requant(rng, mode, out, acc_bits=acc_width(op, k, **widths), out_bits=x_bits)
    if rng.random() < 0.3:        # smaller biases: fewer outputs saturate
        requant.bias = (requant.bias >> int(rng.integers(0, 12))).astype(np.int32)
    common = dict(name=name, op=op, requant=requant, w_bits=w_bits, p_min=p_min, p_max=p_max,
                  weights=random_weights(rng, op, weights_shape, w_bits=w_bits, p_min=p_min,
                                         p_max=p_max))
    if conv:
        kernel, stride, padding = conv
        return Conv2d(**common, kernel=kernel, stride=stride, padding=padding)
    return Linear(**common)


def random_network(rng):
    """A random valid :class:`~addershift.sw.model.QModel` and a one-line summary of it."""
    op = Op(str(rng.choice([o.value for o in Op])))
    mode = str(rng.choice([m.value for m in RequantMode]))
    x_bits = int(rng.choice([8, 8, 8, 8, 4, 6, 10]))
    w_bits = x_bits if op is Op.ADDER else int(rng.choice([x_bits, x_bits, 4, 6, 8]))
    p_min = int(rng.integers(-4, 2))
    p_max = p_min + int(rng.integers(0, 8))
    if rng.random() < 0.08:
        shape = (int(rng.integers(1, 25)),)
    else:
        shape = (int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9)))
    input_shape, layers = shape, []
    summary = [f"{op.value}/{mode} x{x_bits} in{'x'.join(map(str, shape))}"]
    count = int(rng.integers(1, 5))
    for i in range(count):
        if len(shape) == 3 and not (i == count - 1 and rng.random() < 0.35):
            kernel = [int(rng.integers(1, 4))] * 2
            if rng.random() < 0.2:
                kernel[1] = int(rng.integers(1, 4))
            padding, stride = int(rng.integers(0, 3)), int(rng.integers(1, 3))
            if any(n + 2 * padding < k for n, k in zip(shape[1:], kernel)):
                kernel, padding = [1, 1], 0
            block = [_layer(rng, f"conv{i}", op, mode, shape, x_bits, w_bits, p_min, p_max,
                            (tuple(kernel), stride, padding))]
            pool = rng.random()
            if pool < 0.3:
                size = min(int(rng.integers(1, 3)), *block[0].out_shape(shape)[1:])
                block.append(MaxPool2d(f"pool{i}", kernel=size,
                                       stride=int(rng.integers(size, 4))))
            elif pool < 0.45:
                block.append(GlobalAvgPool(f"gap{i}", shift=int(rng.integers(0, 8))))
            if rng.random() < 0.6:     # ReLU after the conv, or after its max pooling
                after_pool = isinstance(block[-1], MaxPool2d) and rng.random() < 0.2
                block.insert(2 if after_pool else 1, ReLU(f"relu{i}"))
        else:
            block = [Flatten(f"flatten{i}")] if len(shape) == 3 else []
            block.append(_layer(rng, f"fc{i}", op, mode, _shape_after(shape, block), x_bits,
                                w_bits, p_min, p_max, None))
            if i < count - 1 and rng.random() < 0.5:
                block.append(ReLU(f"relu{i}"))
        layers += block
        shape = _shape_after(shape, block)
        summary.append("+".join(map(_label, block)) + "->" + "x".join(map(str, shape)))
    model = QModel(input_shape=input_shape, layers=layers, x_bits=x_bits)
    model.validate()
    return model, " ".join(summary)


def _label(layer):
    """A short name of ``layer`` for a case's summary."""
    if isinstance(layer, Conv2d):
        (kh, kw), stride, padding = layer.kernel, layer.stride, layer.padding
        return f"conv{kh}x{kw}s{stride}p{padding}"
    if isinstance(layer, MaxPool2d):
        return f"max{layer.kernel}s{layer.stride}"
    return {Linear: "fc", ReLU: "relu", GlobalAvgPool: "gap", Flatten: "flatten"}[type(layer)]


def _shape_after(shape, layers):
    """The shape ``layers`` make of inputs of ``shape``."""
    shape = tuple(shape)
    for layer in layers:
        shape = tuple(layer.out_shape(shape))
    return shape


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def random_build(rng, model):
    """A random valid :class:`~addershift.hw.config.ArrayConfig` that ``model`` fits, each
    memory at its least or larger (:class:`~addershift.sw.compiler.CompileError` if the drawn
    options leave no room for it)."""
    rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    options = {name: str(rng.choice(["deep", "short"]))
               for name in ("requant_pipeline", "writeback_pipeline", "read_pipeline")}
    if rng.random() < 0.6:
        options["requant_lanes"] = int(rng.choice(_divisors(cols)))
    lanes = options.get("requant_lanes", cols)
    banks = rng.random()
    if banks < 0.35:
        options["act_banks"] = int(rng.choice(_divisors(rows)))
    elif banks < 0.65:
        # Narrow banks: entries from the requantiser's lanes up, and no more entries per word
        # than the word's used bytes (ArrayConfig's rule).
        word_bytes = -(-cols * model.x_bits // 8)
        entries = [1 << e for e in range(7) if lanes <= 1 << e <= cols
                   and -(-cols // (1 << e)) <= word_bytes]
        if entries:
            options["act_entry_lanes"] = int(rng.choice(entries))
    if options["read_pipeline"] == "deep" and rng.random() < 0.4:
        options["weight_relays"] = int(rng.choice(_divisors(cols)))
    params = default_config(model, rows=rows, cols=cols,
                            least={"weight_depth": 16, "act_depth": 16, "param_depth": 16},
                            **options).to_dict()
    # Then options wider than the model needs (default_config sized the memories without them).
    if rng.random() < 0.3:
        params["counter_bits"] = int(rng.choice([16, 24, 33, 64]))
    if params["pe"] == "shift" and rng.random() < 0.3:        # a wider exponent range
        span = params["p_max"] - params["p_min"] + int(rng.integers(0, 4))
        params["p_min"] = int(rng.integers(-3, 3))
        params["p_max"] = params["p_min"] + span
    if params["pe"] == "mul" and rng.random() < 0.3:          # wider weights
        params["w_bits"] = min(16, params["w_bits"] + int(rng.integers(0, 4)))
    if rng.random() < 0.3:
        params["global_pool"] = True
    if rng.random() < 0.25:
        params["max_k"] += int(rng.integers(1, 300))
    if rng.random() < 0.25:
        params["bias_bits"] = min(32, params["bias_bits"] + int(rng.integers(1, 10)))
    # Wider weights take more of the weight memory, and a longer max_k wider descriptors there.
    while not _fits(model, params) and params["weight_depth"] < 1 << 16:
        params["weight_depth"] *= 2
    # Each memory at its least depth, a little more, or as it is, one at a time and only to a
    # depth that fits: a depth's address width is in the descriptors the weight memory holds,
    # so more words of one memory may need more of the weight memory.
    for name in ("param_depth", "act_depth", "weight_depth"):
        least, most = 16, params[name]        # the least depth that fits, by bisection
        while least < most:
            middle = (least + most) // 2
            if _fits(model, {**params, name: middle}):
                most = middle
            else:
                least = middle + 1
        draw = rng.random()
        depth = least if draw < 0.45 else least + int(rng.integers(1, 40)) if draw < 0.75 else None
        if depth is not None and _fits(model, {**params, name: depth}):
            params[name] = depth
    return ArrayConfig.from_dict(params)


def _fits(model, params):
    try:
        compile_model(model, ArrayConfig.from_dict(params))
        return True
    except CompileError:
        return False


def _summary(config):
    """The build's parameters that differ from ``ArrayConfig``'s defaults, in one line."""
    defaults = {f.name: f.default for f in dataclasses.fields(ArrayConfig)}
    return " ".join(f"{name}={value}" for name, value in config.to_dict().items()
                    if name in ("pe", "rows", "cols") or value != defaults.get(name))


def run_case(seed, *, simulator="amaranth", device=None, build_dir="build/fuzz",
             keep_build=False):
    """Draw, compile and simulate case ``seed`` (on Icarus or Verilator: as built for
    ``device``, if given, in ``build_dir/seed``); return its :class:`Case`. The build folder is
    removed if the case matches, unless ``keep_build``."""
    start = time.perf_counter()
    rng = np.random.default_rng([seed, 0x5eed])
    model, network = random_network(rng)
    try:
        config = random_build(rng, model)
        program = compile_model(model, config)
    except CompileError as e:
        return Case(seed, network, "-", "refused", str(e), time.perf_counter() - start)
    lo, hi = int_range(model.x_bits)
    images = rng.integers(lo, hi + 1, (int(rng.integers(1, 3)),) + tuple(model.input_shape))
    if rng.random() < 0.2:
        images = rng.choice([lo, hi, 0, -1], size=images.shape)
    jobs, per_stage = [(program, images)], [False]
    if rng.random() < 0.35:
        jobs.append((program, images[:1]))
        per_stage.append(True)
    case_dir = f"{build_dir}/{seed}"
    try:
        results = simulate_batch(jobs, simulator=simulator, per_stage=per_stage,
                                 build_dir=case_dir, device=device)
    except Exception as e:     # one seed's failure is reported, and the campaign goes on
        return Case(seed, network, _summary(config), "error", f"{type(e).__name__}: {e}",
                    time.perf_counter() - start)
    mismatch = next((m for (_, x), r in zip(jobs, results)
                     if (m := check(model, program, x, r)) is not None), None)
    if mismatch is None and not keep_build:
        shutil.rmtree(case_dir, ignore_errors=True)  # the Amaranth simulator makes none
    return Case(seed, network, _summary(config), "ok" if mismatch is None else "mismatch",
                "" if mismatch is None else str(mismatch), time.perf_counter() - start)


def _seeds(text):
    try:
        first, _, last = text.partition(":")
        seeds = range(int(first), int(last)) if last else range(int(first), int(first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be N or FIRST:END, not {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"seeds {text!r} are empty")
    return seeds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m addershift.sim.fuzz",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=_seeds, default="0:100",
                        help="cases to run: N or FIRST:END (END not included)")
    parser.add_argument("--simulator", choices=SIMULATORS, default="amaranth")
    parser.add_argument("--board", choices=BOARDS,
                        help="icarus, verilator: the Verilog as built for this board's device")
    parser.add_argument("--build-dir", default="build/fuzz",
                        help="Verilog builds (icarus, verilator), a folder per seed, removed "
                             "when the seed matches")
    parser.add_argument("--keep-builds", action="store_true",
                        help="keep every seed's build folder, also of those that match")
    args = parser.parse_args(argv)
    if args.board and args.simulator == "amaranth":
        parser.error("--board needs --simulator icarus or verilator (Amaranth's simulator cannot "
                     "run the device's vendor cells)")
    device = get_board(args.board).device if args.board else None
    counts = {"ok": 0, "refused": 0, "mismatch": 0, "error": 0}
    for seed in args.seeds:
        case = run_case(seed, simulator=args.simulator, device=device, build_dir=args.build_dir,
                        keep_build=args.keep_builds)
        counts[case.outcome] += 1
        print(case, flush=True)
    print(", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
    return 1 if counts["mismatch"] or counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
