"""Golden-model throughput: the digits topology (8x8 input, two conv layers, one linear layer) per
operation kind and requantisation mode, images per second on this machine.

    .venv/bin/python bench/golden_speed.py [--images N]
"""

import argparse
import time

import numpy as np

from addershift.sw.examples import digits_net
from addershift.sw.golden import predict

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import positive_int


def measure(op, mode, images, repeats=3):
    model = digits_net(op, mode=mode)
    x = np.random.default_rng(0).integers(0, 128, (images, 1, 8, 8))
    predict(model, x[:8])                       # warm-up
    best = min(_timed(predict, model, x) for _ in range(repeats))
    return images / best


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive_int, default=2000, help="batch size")
    args = parser.parse_args(argv)
    print(f"golden model, digits topology (conv 1->8, conv 8->16, linear 64->10), batch {args.images}")
    print(f"{'op':<7} {'requant':<8} {'images/s':>10}")
    for op in ("adder", "shift", "mul"):
        for mode in ("shift", "pow2x2", "mul"):
            print(f"{op:<7} {mode:<8} {measure(op, mode, args.images):>10,.0f}")


if __name__ == "__main__":
    main()
