"""Cycle-accurate inference on the accelerator core, checked against the golden model.

:func:`simulate` runs a compiled program on ``amaranth`` (its Python simulator), ``icarus`` or
``verilator`` (the core's Verilog through cocotb) and returns every image's outputs and per-stage
counters. All three run the same host session (``sim/accel_host.py``): program images written over
the core's host interface, inputs written, runs started, outputs and counters read back.
:func:`check` compares the outputs with the golden trace and names the first layer and index that
differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys

import numpy as np

from ..sw.compiler import PERF_COUNTERS
from .accel_host import HostPort, run_session

__all__ = ["SIMULATORS", "SimResult", "Mismatch", "simulate", "simulate_batch", "check",
           "write_verilog", "test_images", "simulate_model"]

SIMULATORS = ("amaranth", "icarus", "verilator")


@dataclasses.dataclass
class SimResult:
    """What a simulation returned: ``outputs[n][s]`` is image ``n``'s stage ``s`` output (decoded,
    shaped like the golden trace entry) for every stage that was read; ``counters[n]`` image
    ``n``'s runs, each a list of per-stage counters (dicts of :data:`compiler.PERF_COUNTERS`,
    cumulative within the run); ``errors[n]`` the core's error code; ``sim_cycles`` every clock
    cycle simulated (host transfers included)."""
    outputs: list
    counters: list
    errors: list
    sim_cycles: int

    def stage_counts(self, image=0):
        """Per-stage ``{counter: value}`` of one image, each stage's own counts."""
        out = []
        for run in self.counters[image]:
            prev = dict.fromkeys(PERF_COUNTERS, 0)
            for c in run:
                out.append({k: c[k] - prev[k] for k in PERF_COUNTERS})
                prev = c
        return out


@dataclasses.dataclass
class Mismatch:
    image: int
    stage: str
    layer: str
    index: tuple
    expected: int
    got: int

    def __str__(self):
        return (f"image {self.image}: layer {self.layer} (stage {self.stage}) differs first at "
                f"index {list(self.index)}: expected {self.expected}, got {self.got}")


def _port_signals(dut):
    b = dut.bus
    return {"bus__write__valid": b.write.valid, "bus__write__payload": b.write.payload,
            "bus__read_addr__valid": b.read_addr.valid, "bus__read_addr__ready": b.read_addr.ready,
            "bus__read_addr__payload": b.read_addr.payload,
            "bus__read_data__valid": b.read_data.valid, "bus__read_data__ready": b.read_data.ready,
            "bus__read_data__payload": b.read_data.payload, "bus__run": b.run,
            "bus__run_arg": b.run_arg, "bus__done": b.done, "bus__error": b.error,
            "bus__busy": b.busy}


class _AmaranthPort(HostPort):
    def __init__(self, ctx, dut):
        from amaranth.hdl import Value
        self.ctx = ctx
        self.cycles = 0
        self.signals = {k: Value.cast(v) for k, v in _port_signals(dut).items()}

    async def tick(self):
        await self.ctx.tick()
        self.cycles += 1

    def set(self, name, value):
        self.ctx.set(self.signals[name], value)

    def get(self, name):
        return self.ctx.get(self.signals[name])


def write_verilog(config, path, *, device=None):
    """The core's Verilog (top module ``accelerator``; ports ``bus__*``, ``clk``, ``rst``).

    ``device`` (a board's, such as ``iCE40UP5K``): elaborated as for that device, with the vendor
    cells it instantiates (SB_SPRAM256KA weight memories, CCU2C carry chains) and Yosys' models
    of them appended; ``None``: the generic form, which any simulator runs."""
    from amaranth.back import verilog
    from ..hw.accelerator import Accelerator
    from .cells import Device, models_for
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(Accelerator(config=config), name="accelerator", emit_src=False,
                           platform=Device(device) if device else None)
    path.write_text(text + models_for(text))
    return path


def _decode(program, raw):
    return {int(s): program.decode_output(data, int(s)) for s, data in raw.items()}


def simulate(program, images, *, simulator="amaranth", per_stage=False, build_dir="build/sim",
             vcd=None, device=None):
    """Run ``images`` (N x C x H x W integers) through ``program`` on ``simulator``.

    With ``per_stage`` every stage runs on its own and every stage's output is read (to find the
    first layer that differs); otherwise each image runs in one go and only the output is read.
    ``vcd`` (Amaranth only) writes a waveform file. ``device`` (Icarus and Verilator only):
    simulate the Verilog as built for that device, its vendor cells by Yosys' models
    (:func:`write_verilog`). Returns a :class:`SimResult`.
    """
    return simulate_batch([(program, images)], simulator=simulator, per_stage=per_stage,
                          build_dir=build_dir, vcd=vcd, device=device)[0]


def simulate_batch(jobs, *, simulator="amaranth", per_stage=False, build_dir="build/sim", vcd=None,
                   device=None):
    """:func:`simulate` for several ``(program, images)`` jobs of one build in one simulation (one
    elaboration or Verilog build): the programs are loaded and run one after another.
    ``per_stage`` is one flag for every job or a sequence of one per job (so one simulation can
    check whole inferences, whose stages overlap, and each stage's output)."""
    if simulator not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if device and simulator == "amaranth":
        raise ValueError(f"Amaranth's simulator cannot run the {device}'s vendor cells: "
                         f"simulate its build on icarus or verilator")
    jobs = [(program, [np.asarray(x, dtype=np.int64) for x in images]) for program, images in jobs]
    per_stage = [per_stage] * len(jobs) if isinstance(per_stage, bool) else list(per_stage)
    if len(per_stage) != len(jobs) or not all(isinstance(f, bool) for f in per_stage):
        raise ValueError(f"per_stage must be a bool or one bool per job ({len(jobs)}), "
                         f"not {per_stage!r}")
    configs = {program.config for program, _ in jobs}
    if len(configs) != 1:
        raise ValueError(f"Every program of a batch must be compiled for one build, not "
                         f"{len(configs)}")
    if simulator == "amaranth":
        raws, cycles = _simulate_amaranth(jobs, per_stage=per_stage, vcd=vcd)
    else:
        raws, cycles = _simulate_cocotb(jobs, simulator=simulator, per_stage=per_stage,
                                        build_dir=pathlib.Path(build_dir), device=device)
    return [SimResult(outputs=[_decode(program, r["stages"]) for r in raw["images"]],
                      counters=[r["counters"] for r in raw["images"]],
                      errors=[r["error"] for r in raw["images"]], sim_cycles=cycles)
            for (program, _), raw in zip(jobs, raws)]


def _simulate_amaranth(jobs, *, per_stage, vcd):
    from amaranth.sim import Simulator
    from ..hw.accelerator import Accelerator
    dut = Accelerator(config=jobs[0][0].config)
    raws, cycles = [], []

    async def bench(ctx):
        port = _AmaranthPort(ctx, dut)
        for (program, images), flag in zip(jobs, per_stage):
            raws.append(await run_session(port, program, images, per_stage=flag))
        cycles.append(port.cycles)

    with _int_digits_unlimited():
        sim = Simulator(dut)
        sim.add_clock(1e-7)
        sim.add_testbench(bench)
        if vcd:
            with sim.write_vcd(str(vcd)):
                sim.run()
        else:
            sim.run()
    return raws, cycles[0]


@contextlib.contextmanager
def _int_digits_unlimited():
    """Lift Python's limit on int-string conversions while the simulator runs: Amaranth's
    simulator writes each signal's constants into the Python code it compiles as decimal
    literals, and the read stage of an array of 2,048 PEs or more holds values past the default
    4,300 digits (a ValueError). Restored after: the limit guards the parsing of untrusted files
    (a model file's header) elsewhere in the process."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(limit)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to file descriptor 1 (the simulator's build and run logs, from
    child processes too) to stderr, so that stdout keeps only the caller's report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _simulate_cocotb(jobs, *, simulator, per_stage, build_dir, device):
    from .runner import run_cocotb
    build_dir = build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog = write_verilog(jobs[0][0].config, build_dir / "accelerator.v", device=device)
    files = []
    for i, ((program, images), flag) in enumerate(zip(jobs, per_stage)):
        (build_dir / f"program{i}.bin").write_bytes(program.to_bytes())
        np.save(build_dir / f"images{i}.npy", np.stack(images))
        files.append({"program": str(build_dir / f"program{i}.bin"),
                      "images": str(build_dir / f"images{i}.npy"), "per_stage": flag})
    result = build_dir / "result.json"
    result.unlink(missing_ok=True)
    bench = pathlib.Path(__file__).parent / "accelerator" / "accel_bench.py"
    with _stdout_to_stderr():
        run_cocotb(simulator=simulator, verilog=verilog, toplevel="accelerator",
                   test_module=bench, build_dir=build_dir / simulator,
                   params={"jobs": files, "out": str(result)})
    if not result.exists():
        raise RuntimeError(f"the {simulator} session wrote no result (see its log above)")
    raw = json.loads(result.read_text())
    for job in raw["jobs"]:
        for image in job["images"]:
            image["stages"] = {k: bytes.fromhex(v) for k, v in image["stages"].items()}
    return raw["jobs"], raw["cycles"]


def check(model, program, images, result):
    """The first difference between ``result`` and the golden trace, or ``None``.

    Stages are compared in order, so the first mismatch names the earliest layer that differs
    (its golden trace entry: the stage's last fused layer) and the first flat index into it.
    """
    from ..sw.golden import trace
    expected = trace(model, np.stack(images))
    for n, outputs in enumerate(result.outputs):
        if result.errors[n]:
            return Mismatch(n, "-", "-", (), 0, result.errors[n])
        for s in sorted(outputs):
            stage = program.stages[s]
            want = expected[stage.trace_index][n]
            got = outputs[s]
            if not np.array_equal(got, want):
                idx = tuple(int(i) for i in np.argwhere(got != want)[0])
                return Mismatch(n, stage.name, model.layers[stage.trace_index].name, idx,
                                int(want[idx]), int(got[idx]))
    return None


def test_images(model, count, *, seed=0):
    """``count`` inputs for ``model`` and their labels: the digits test split (quantised onto the
    model's input grid) for an 8x8 one-channel model, else uniform integers in ``[0, qmax]``
    with no labels."""
    from ..sw.numerics import int_range
    if tuple(model.input_shape) == (1, 8, 8):
        from ..sw.data import load_digits_split
        from ..sw.quantize import quantize_images
        data = load_digits_split()
        x = quantize_images(model, data.test_x[:count])
        return x, [int(v) for v in data.test_y[:count]]
    rng = np.random.default_rng(seed)
    return rng.integers(0, int_range(model.x_bits)[1] + 1, (count,) + tuple(model.input_shape)), None


def simulate_model(model, images, *, simulator="verilator", rows=4, cols=4, per_layer=False,
                   build_dir="build/sim", device=None, **build):
    """Compile ``model`` for the ``rows x cols`` build that fits it (``compiler.default_config``,
    with ``build``'s ``ArrayConfig`` overrides), run ``images`` on ``simulator`` (the Verilog as
    built for ``device``, if given: :func:`write_verilog`) and compare with the golden model.

    Returns a report dict: predictions, golden predictions, cycles and utilisation per stage and
    per inference, and ``mismatch`` (``None``, or the first layer and index that differ, found by
    running the first differing image again one stage at a time).
    """
    from ..sw.compiler import compile_model, default_config
    from ..sw.golden import predict
    config = default_config(model, rows=rows, cols=cols, **build)
    program = compile_model(model, config)
    images = np.asarray(images, dtype=np.int64)
    build_dir = pathlib.Path(build_dir) / (config.build_hash[:12] + (f"-{device}" if device
                                                                      else ""))
    result = simulate(program, images, simulator=simulator, per_stage=per_layer,
                      build_dir=build_dir, device=device)
    golden = predict(model, images)
    last = len(program.stages) - 1
    mismatch = check(model, program, images, result)
    if mismatch is None:
        got = np.stack([outputs[last] for outputs in result.outputs])
        if not np.array_equal(got, golden):          # cannot happen when check() passed
            raise AssertionError("outputs differ from the golden model")
    elif not per_layer:
        again = simulate(program, images[mismatch.image:mismatch.image + 1], simulator=simulator,
                         per_stage=True, build_dir=build_dir, device=device)
        found = check(model, program, images[mismatch.image:mismatch.image + 1], again)
        if found is not None:
            found.image = mismatch.image
            mismatch = found
    pes = config.rows * config.cols
    counts = result.stage_counts(0)
    stages = []
    for stage, c in zip(program.stages, counts):
        stages.append({"name": stage.name, "layers": list(stage.layers), **c,
                       "utilisation": c["busy_pe"] / (pes * c["cycles"]) if c["cycles"] else 0.0})
    totals = {k: sum(c[k] for c in counts) for k in PERF_COUNTERS}
    per_image = [sum(c["cycles"] for c in result.stage_counts(n)) for n in range(len(images))]
    outputs = [o.get(last) for o in result.outputs]
    return {
        "simulator": simulator, "device": device, "config": config.to_dict(),
        "build_hash": config.build_hash, "images": len(images),
        "predictions": [None if o is None else int(np.argmax(o)) for o in outputs],
        "golden_predictions": [int(np.argmax(g)) for g in golden],
        "bit_exact": mismatch is None,
        "mismatch": None if mismatch is None else {**dataclasses.asdict(mismatch),
                                                   "message": str(mismatch)},
        "cycles_per_inference": per_image[0] if per_image else 0,
        "cycles_per_image": per_image,
        "utilisation": totals["busy_pe"] / (pes * totals["cycles"]) if totals["cycles"] else 0.0,
        "ideal_cycles": -(-program.busy_pe_cycles // pes),
        "stages": stages,
        "sim_cycles": result.sim_cycles,
    }
