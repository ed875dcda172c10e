"""Where the time of one inference over the host link goes, on the simulated accelerator board.

Starts the simulated board with the build that fits the model (``compiler.default_config``), loads
the model through ``sw.host.Accelerator`` and runs ``--images`` digits test images; then times the
steps of one more image, done one by one the way ``Accelerator.predict_one`` does them: write the
input (pipelined frames), its CRC-32 read-back, STATUS (idle check) + RUN + STATUS polls until
done, the counters read, the output read and its CRC-32 read-back. Each step is measured in the
board's own cycles (STATUS uptime before and after, whose own round trip is subtracted: the cost of
an empty STATUS measured just before) and in wall-clock seconds.

Board time includes the bridge's pacing (bytes handed over every 16 byte times while the line is
busy) and the simulated clock advancing while the host is computing, so it is an upper bound of
what a real board at the same clock and baud needs with a host that answers at once.

    .venv/bin/python bench/host_inference.py                      # digits_adder, 4x4, 5 images
    .venv/bin/python bench/host_inference.py --model models/digits_shift.npz --images 3
"""

import argparse
import pathlib
import time

import numpy as np

from addershift.sim.accel_sim import test_images
from addershift.sim.board import BoardProcess
from addershift.sw.compiler import default_config
from addershift.sw.golden import predict
from addershift.sw.host import connect
from addershift.sw.model import load_model

# The bench's shared argument types (bench/ is on sys.path when a script runs).
from _args import positive_int


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # (the shipped model, found from any working folder)
    p.add_argument("--model", default=str(pathlib.Path(__file__).resolve().parents[1] / "models"
                                          / "digits_adder.npz"))
    p.add_argument("--images", type=positive_int, default=5)
    p.add_argument("--rows", type=positive_int, default=4)
    p.add_argument("--cols", type=positive_int, default=4)
    args = p.parse_args(argv)
    try:
        model = load_model(args.model)
    except ValueError as e:         # ModelFileError is one: a missing file too
        p.error(f"argument --model: {e}")
    try:        # before the simulated board starts (minutes with Verilator)
        config = default_config(model, rows=args.rows, cols=args.cols)
    except (TypeError, ValueError) as e:
        p.error(f"{args.rows}x{args.cols}: {e}")
    x, _ = test_images(model, args.images + 1)
    if len(x) < args.images + 1:        # the digits test split has only so many
        p.error(f"argument --images: at most {len(x) - 1} for {args.model}, not {args.images}")
    x = np.asarray(x, dtype=np.int64)
    with BoardProcess(accelerator=config) as board, connect(board.url) as acc:
        dev = acc.device
        hz = dev.identity.clk_hz
        program = acc.load(model)
        got = acc.predict(x[:-1])
        assert np.array_equal(got, predict(model, x[:-1])), "outputs differ from the golden model"
        link = acc.link_report()

        # one STATUS round trip, to subtract from every step's uptime difference
        a = dev.status().uptime
        b = dev.status().uptime
        status_cycles = b - a

        steps = []

        def step(name, fn, nbytes):
            t, c = time.perf_counter(), dev.status().uptime
            out = fn()
            cyc = dev.status().uptime - c - status_cycles
            steps.append((name, nbytes, cyc, time.perf_counter() - t))
            return out

        data = program.input_image(x[-1])
        region, length = program.output_extent(-1)
        n = len(program.stages)
        step("write input", lambda: dev.write("act0", 0, data, verify=False, progress=False),
             len(data))
        step("CRC of input", lambda: dev.crc("act0", 0, len(data)), 0)
        st = step("run (STATUS, RUN, STATUS polls)", lambda: dev.run(0, wait=True), 0)
        step("read counters", lambda: acc._read_counters(n), 0)
        raw = step("read output", lambda: dev.read(region, 0, length), length)
        step("CRC of output", lambda: dev.crc(region, 0, length), 0)
        assert np.array_equal(program.decode_output(raw, n - 1), predict(model, x[-1:])[0])

    print(f"{args.model} on {config.describe()}, {dev.identity.baud} baud at {hz} Hz "
          f"(simulated board)")
    print(f"program load: {link['load_bytes']} bytes, {1000 * link['load_device_s']:.2f} ms board "
          f"time ({link['load_bytes_per_s_device'] / 1024:.1f} KiB/s), {link['load_s']:.1f} s wall")
    print(f"{args.images} images through Accelerator.predict: "
          f"{1000 * link['image_device_s'] / link['images']:.2f} ms board time and "
          f"{link['image_s'] / link['images']:.2f} s wall per image; bit-exact")
    print(f"compute: {st.total_cycles} cycles per inference "
          f"({1000 * st.total_cycles / hz:.3f} ms at {hz / 1e6:g} MHz)")
    print(f"one STATUS round trip: {status_cycles} cycles")
    print()
    print("| step | bytes | board cycles | board ms | wall s |")
    print("|---|---|---|---|---|")
    for name, nbytes, cyc, wall in steps:
        print(f"| {name} | {nbytes} | {cyc} | {1000 * cyc / hz:.3f} | {wall:.2f} |")
    total = sum(s[2] for s in steps)
    print(f"| total | {sum(s[1] for s in steps)} | {total} | {1000 * total / hz:.3f} | "
          f"{sum(s[3] for s in steps):.2f} |")


if __name__ == "__main__":
    main()
