"""``addershift demo``: the main job, end to end, with the most complete flow this version has.

Each step says what it ran. Steps whose parts are not built yet are listed as such, never faked.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

__all__ = ["run_demo"]


def _step(title):
    print(f"\n== {title}", flush=True)


def run_demo(args):
    from .examples import digits_net
    from .golden import predict, trace

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _step(f"golden model: digits topology, {args.pe} array operations")
    model = digits_net(args.pe, mode="pow2x2" if args.pe != "mul" else "mul")
    x = np.random.default_rng(0).integers(0, 128, (1000, 1, 8, 8))
    start = time.perf_counter()
    y = predict(model, x)
    rate = len(x) / (time.perf_counter() - start)
    layers = trace(model, x[:1])
    for layer, t in zip(model.layers, layers):
        print(f"  {layer.name:<8} {layer.kind:<14} out {tuple(t.shape[1:])}")
    print(f"  {len(x)} images, {rate:,.0f} images/s; output range [{y.min()}, {y.max()}]")
    print("  (random parameters: this version has no trained model yet)")
    _step("not built yet in this version")
    print("  training, hardware generation, cycle-accurate simulation, simulated board, bitstream")
