"""The accelerator seen from the host: load a model onto a board (or the simulated board) and run it.

:class:`Accelerator` wraps a :class:`driver.Device` whose identify block describes an accelerator
build (``hw.accelerator.accelerator_identity``: the build parameters and the memory regions). It
rebuilds that build's ``ArrayConfig`` from identify, compiles models for it, loads programs with
CRC read-back, and runs images the way ``sim/accel_host.py`` does in simulation::

    with connect("socket://127.0.0.1:7777") as acc:
        acc.load(load_model("models/digits_adder.npz"))
        y = acc.predict(x)            # == golden.predict(model, x), bit for bit
        acc.counters()                # cycles, busy PE-cycles and stalls per stage, last image

Every byte that reaches the caller passed a check: each answer's frame CRC, and the CRC-32 of the
region computed on the device after every write and for every output read. A failed check raises
(``driver.LinkError`` and its subclasses), never returns.
"""

from __future__ import annotations

import time

import numpy as np

from . import protocol as P
from .compiler import PERF_COUNTERS, PERF_STAGES, Program, compile_model
from .driver import BuildMismatch, Device, LinkError, RunUnconfirmed, check_build
from .golden import check_inputs

__all__ = ["Accelerator", "connect", "NotAnAccelerator", "run_model"]


class NotAnAccelerator(LinkError):
    """The board answered, but its build is not an accelerator (the link test design, say)."""


def _check_images(program, images):
    """``images`` as int64 if ``golden.predict`` would take them for ``program``'s model; else
    its ValueError (the board would silently wrap a value that does not fit its lanes)."""
    return check_inputs(images, input_shape=program.input_shape, x_bits=program.config.x_bits)


def connect(url, *, baudrate=P.DEFAULT_BAUD, timeout=None, **device_options):
    """Open ``url`` (a pyserial URL) and return an :class:`Accelerator`. ``timeout`` defaults to
    8 s on ``socket://`` (a simulated board answers slowly) and 2 s on a serial port."""
    if timeout is None:
        timeout = 8.0 if isinstance(url, str) and url.startswith("socket://") else 2.0
    return Accelerator(Device(url, baudrate=baudrate, timeout=timeout, **device_options))


class Accelerator:
    """An accelerator board behind a :class:`driver.Device` (which it closes when closed).

    Raises :class:`NotAnAccelerator` if identify does not carry an accelerator build, and
    :class:`driver.BuildMismatch` if its build parameters do not hash to the build hash it reports.
    """

    def __init__(self, device):
        if not isinstance(device, Device):
            raise TypeError(f"device must be a driver.Device, not {device!r}")
        from ..hw.config import ArrayConfig
        self._device = device
        ident = device.identity
        try:
            self._config = ArrayConfig.from_dict(dict(ident.build))
        except (TypeError, ValueError) as e:
            device.close()
            design = ident.build.get("design") if isinstance(ident.build, dict) else None
            if design == "addershift-link-test":
                raise NotAnAccelerator(f"the board at {device.url} runs the host-link test design "
                                       f"(build {ident.build_hash[:16]}), which has no "
                                       f"accelerator to run a model on") from None
            raise NotAnAccelerator(f"the board at {device.url} is not an accelerator (build "
                                   f"{ident.build_hash[:16]} {P.canonical_build(ident.build).decode()}"
                                   f"): {e}") from None
        if self._config.build_hash != ident.build_hash:
            device.close()
            raise BuildMismatch(f"the board at {device.url} reports build hash "
                                f"{ident.build_hash[:16]} but its parameters hash to "
                                f"{self._config.build_hash[:16]}")
        self._program = None
        self._last_counters = None
        #: What the link carried and how long it took (wall clock and the device's own cycles).
        self.stats = {"load_bytes": 0, "load_s": 0.0, "load_cycles": 0, "images": 0,
                      "image_bytes": 0, "image_s": 0.0, "image_cycles": 0, "run_cycles": 0,
                      "images_redone": 0}

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def device(self):
        return self._device

    @property
    def config(self):
        """The board's build (``hw.config.ArrayConfig``), rebuilt from identify."""
        return self._config

    @property
    def program(self):
        """The loaded :class:`compiler.Program`, or ``None``."""
        return self._program

    def close(self):
        self._device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _uptime(self):
        return self._device.status().uptime

    def _cycles_since(self, start):
        """Uptime cycles since ``start`` (an earlier ``_uptime``): the counter wraps around at
        ``counter_bits`` (a 32-bit one every 43 s at 100 MHz), so a plain difference may be
        negative."""
        return (self._uptime() - start) % (1 << self._config.counter_bits)

    # --- load ----------------------------------------------------------------------------------

    def compile(self, model, *, name="model"):
        """Compile ``model`` for this board's build (``compiler.CompileError`` if it does not
        fit: the message names the layer and the build parameter to change)."""
        return compile_model(model, self._config, name=name)

    def load(self, model, *, progress=None):
        """Load ``model`` (a ``model.QModel``, compiled for this build) or a ``compiler.Program``
        (refused with :class:`driver.BuildMismatch` unless compiled for this build). Writes the
        program images, each checked by the CRC-32 the device computes; returns the program."""
        program = model if isinstance(model, Program) else self.compile(model)
        check_build(self._device.identity, build_hash=program.config.build_hash,
                    build=program.config.to_dict())
        self._program = None     # a half-written program is no program
        t, c = time.perf_counter(), self._uptime()
        images = program.images()
        for region, data in images.items():
            self._device.write(region, 0, data, verify=True, progress=progress)
        self.stats["load_cycles"] += self._cycles_since(c)
        self.stats["load_s"] += time.perf_counter() - t
        self.stats["load_bytes"] += sum(len(d) for d in images.values())
        self._program = program
        return program

    # --- run -----------------------------------------------------------------------------------

    def _read_counters(self, stages):
        cb = -(-self._config.counter_bits // 8)
        stride = 1 << (cb - 1).bit_length()
        n = min(stages, PERF_STAGES)
        raw = self._device.read("counters", 0, 4 * n * stride)
        words = [int.from_bytes(raw[i * stride:i * stride + cb], "little") for i in range(4 * n)]
        return [dict(zip(PERF_COUNTERS, words[4 * s:4 * s + 4])) for s in range(n)]

    def predict_one(self, x, *, timeout=60.0):
        """Run one image ``(C, H, W)``; return its output (shaped like one row of
        ``golden.predict``). An image ``golden.predict`` refuses raises its ValueError before
        anything is sent."""
        program = self._program
        if program is None:
            raise RuntimeError("no program is loaded: call load(model) first")
        return self._run_one(_check_images(program, np.asarray(x)[None])[0], timeout)

    def _run_one(self, x, timeout):
        """predict_one for an image already checked (int64, the model's shape)."""
        program, dev = self._program, self._device
        data = program.input_image(x)
        t, c = time.perf_counter(), self._uptime()
        n = len(program.stages)
        for attempt in range(dev.retries + 1):
            dev.write("act0", 0, data, verify=True, progress=False)
            try:
                status = dev.run(0 | 0 << 8, wait=True, timeout=timeout)   # all stages, first on
                break
            except RunUnconfirmed:
                # RUN's answer was lost and the run may have happened: a later stage may have
                # overwritten the input, so the image starts again from writing it.
                if attempt == dev.retries:
                    raise
                self.stats["images_redone"] += 1
        cumulative = self._read_counters(n)
        region, length = program.output_extent(n - 1)
        raw = dev.read(region, 0, length, verify=True)
        # The per-stage record and STATUS count the same run: they must agree.
        last = cumulative[-1] if cumulative else {}
        if n <= PERF_STAGES and (last.get("busy_pe"), last.get("stall")) != (
                status.busy_pe_cycles, status.stall_cycles):
            raise LinkError(f"the counters region ({last}) disagrees with STATUS "
                            f"({status.counters}) after the run")
        self.stats["image_cycles"] += self._cycles_since(c)
        self.stats["image_s"] += time.perf_counter() - t
        self.stats["image_bytes"] += (attempt + 1) * len(data) + length   # redone inputs too
        self.stats["images"] += 1
        prev = dict.fromkeys(PERF_COUNTERS, 0)
        per_stage = []
        for stage, cnt in zip(program.stages, cumulative):
            per_stage.append({"name": stage.name, "layers": list(stage.layers),
                              **{k: cnt[k] - prev[k] for k in PERF_COUNTERS}})
            prev = cnt
        self._last_counters = per_stage
        self.stats["run_cycles"] += status.total_cycles
        self.last_status = status
        return program.decode_output(raw, n - 1)

    def predict(self, images, *, timeout=60.0):
        """Run every image of ``images`` (N x C x H x W integers, the model's input shape) and
        return the last layer's integer outputs, exactly as ``golden.predict`` does (shape
        included).

        Raises
        ------
        ValueError
            Before anything is sent, for inputs ``golden.predict`` refuses (not integers, another
            shape, values outside the model's activation width), with its message.
        driver.LinkError
            Or a subclass, when the link fails part way. Its ``done_outputs`` attribute (an int64
            array, shaped like this method's result, with one row per image that finished, in
            order: possibly none) holds the outputs that passed every check before the failure;
            the message says how many of the N images finished.
        """
        program = self._program
        if program is None:
            raise RuntimeError("no program is loaded: call load(model) first")
        x = _check_images(program, images)
        out = np.zeros((len(x), *program.stages[-1].trace_shape), dtype=np.int64)
        done = 0
        try:
            for img in x:
                out[done] = self._run_one(img, timeout)
                done += 1
        except LinkError as e:
            # The images that finished passed every check: hand them over, do not lose them.
            e.done_outputs = out[:done].copy()
            e.args = (f"{e}; {done} of {len(x)} images finished",)
            raise
        return out

    def counters(self):
        """The last image's counters per stage: ``[{name, layers, cycles, issue, busy_pe, stall,
        utilisation}]`` (utilisation: busy PE-cycles over PEs times cycles)."""
        if self._last_counters is None:
            raise RuntimeError("no image has run yet")
        pes = self._config.pe_count
        return [{**c, "utilisation": c["busy_pe"] / (pes * c["cycles"]) if c["cycles"] else 0.0}
                for c in self._last_counters]

    def link_report(self):
        """Bytes moved and the rate, in wall-clock seconds and in the device's time (its uptime
        cycles at its nominal clock: what a real board at that clock and baud would see)."""
        ident = self._device.identity
        s = dict(self.stats)
        hz = ident.clk_hz
        for what in ("load", "image"):
            b, sec, cyc = s[f"{what}_bytes"], s[f"{what}_s"], s[f"{what}_cycles"]
            s[f"{what}_bytes_per_s_wall"] = b / sec if sec else 0.0
            s[f"{what}_bytes_per_s_device"] = b * hz / cyc if cyc else 0.0
            s[f"{what}_device_s"] = cyc / hz
        s["baud"] = ident.baud
        s["line_bytes_per_s"] = ident.baud / 10
        return s


def run_model(url, model, count, *, baudrate=P.DEFAULT_BAUD, progress=None, timeout=None):
    """``addershift run``: load ``model`` onto the board at ``url`` (a serial port at ``baudrate``;
    ``timeout`` as :func:`connect`'s), run ``count`` images of its test set
    (``sim.accel_sim.test_images``: the digits test split for an 8x8 model) and compare every
    output with ``golden.predict``. Returns a report dict (``text`` holds the human form)."""
    from ..sim.accel_sim import test_images
    from .golden import predict
    x, labels = test_images(model, count)
    x = np.asarray(x, dtype=np.int64)
    want = predict(model, x)
    with connect(url, baudrate=baudrate, timeout=timeout) as acc:
        t = time.perf_counter()
        acc.load(model, progress=progress)
        try:
            got = acc.predict(x)
        except LinkError as e:
            # What the finished images showed is the run's result so far: say it.
            done = getattr(e, "done_outputs", None)
            if done is not None and len(done):
                same = sum(np.array_equal(g, w) for g, w in zip(done, want))
                e.args = (f"{e}, {same} of them bit-exact with the golden model",)
            raise
        wall = time.perf_counter() - t
        counters = acc.counters()
        link = acc.link_report()
        config = acc.config
    exact = [bool(np.array_equal(g, w)) for g, w in zip(got, want)]
    flat = lambda a: a.reshape(len(a), -1)
    pred = [int(v) for v in np.argmax(flat(got), axis=1)]
    golden_pred = [int(v) for v in np.argmax(flat(want), axis=1)]
    correct = None if labels is None else sum(p == t for p, t in zip(pred, labels))
    cycles = sum(c["cycles"] for c in counters)
    busy = sum(c["busy_pe"] for c in counters)
    util = busy / (config.pe_count * cycles) if cycles else 0.0
    report = {
        "url": url, "config": config.to_dict(), "build_hash": config.build_hash,
        "images": len(x), "labels": labels, "predictions": pred,
        "golden_predictions": golden_pred,
        "accuracy": None if labels is None else correct / len(x),
        "bit_exact": all(exact), "mismatches": exact.count(False),
        "mismatched_images": [i for i, ok in enumerate(exact) if not ok],
        "cycles_per_inference": cycles, "utilisation": util, "stages": counters,
        "link": link, "wall_s": wall,
    }
    lines = [f"{url}: {config.describe()} (build {config.build_hash[:16]})",
             f"loaded {link['load_bytes']} bytes of program in {link['load_s']:.2f} s "
             f"({link['load_bytes_per_s_wall'] / 1024:.1f} KiB/s wall; "
             f"{link['load_bytes_per_s_device'] / 1024:.1f} KiB/s at the board's clock, line "
             f"{link['line_bytes_per_s'] / 1024:.1f} KiB/s)"]
    if labels is not None:
        lines.append(f"accuracy {correct}/{len(x)} = {100 * correct / len(x):.1f}%")
    lines.append(f"outputs bit-exact with the golden model: {sum(exact)}/{len(x)}"
                 + ("" if all(exact) else f" (differ: images {report['mismatched_images'][:10]})")
                 + (f" (the test split has {len(x)}, not {count})" if len(x) < count else ""))
    per_stage = ", ".join(f"{c['name']} {c['cycles']} ({100 * c['utilisation']:.0f}%)"
                          for c in counters)
    lines.append(f"cycles per inference: {cycles} ({per_stage}); utilisation {100 * util:.1f}% "
                 f"of {config.pe_count} PEs")
    per_image = link["image_s"] / max(link["images"], 1)
    dev_image = link["image_device_s"] / max(link["images"], 1)
    lines.append(f"per image over the link: {1000 * per_image:.0f} ms wall, "
                 f"{1000 * dev_image:.2f} ms of board time ({link['image_bytes']} bytes of "
                 f"inputs and outputs)"
                 + (f"; {link['images_redone']} redone from their inputs after a RUN's answer "
                    f"was lost" if link["images_redone"] else ""))
    report["text"] = "\n".join(lines)
    return report
