"""``addershift demo``: the main job, end to end, on the shipped digits model of one PE kind.

1. the quantised model and its golden-model accuracy on the digits test split;
2. Verilog of the accelerator (array, memories, sequencer, requantiser, UART host link);
3. the accelerator, cycle-accurate in Verilator behind a TCP socket (the simulated board: its
   Verilog elaborated for the board's device, whose vendor cells run as Yosys' models), loaded
   and run by the unchanged host driver; every output compared with the golden model;
4. the iCEBreaker (or ULX3S) bitstream build of the same design, the board's own build for the
   PE kind (:func:`board_config`): resources and Fmax;
5. a report (``report.json``) and PNG plots in ``--out``.

Every number printed is measured in this run (or read from a build this run made or reused, which
the output says). Nothing is estimated.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import sys
import time


__all__ = ["run_demo"]

SIM_BAUD = 1_000_000
SIM_CLOCK_HZ = 12_000_000


def _step(n, total, title):
    print(f"\n[{n}/{total}] {title}", flush=True)


def _model_path(pe):
    path = pathlib.Path(__file__).resolve().parents[1] / "models" / f"digits_{pe}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make models` to train it")
    return path


def _sources_hash():
    """A hash of the hardware and board sources: a cached build is reused only if they match."""
    root = pathlib.Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(list((root / "hw").glob("*.py")) + list((root / "boards").glob("*.py"))):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def board_config(model, *, board, rows=None, cols=None, requant_lanes=None,
                 requant_pipeline=None, writeback_pipeline=None, read_pipeline=None):
    """The build the demo generates, simulates and builds: the board's own build for the model's
    PE kind (``Board.accelerator_builds``, what ``addershift build --board BOARD -m MODEL`` and
    ``make bitstream`` make), with the options given instead of its own, memories sized for the
    model and at least the board's."""
    from .compiler import board_build, default_config
    kinds = {layer.op.value for layer in model.compute_layers()}
    own, least = board_build(board, kinds.pop() if len(kinds) == 1 else None)
    given = {"rows": rows, "cols": cols, "requant_lanes": requant_lanes,
             "requant_pipeline": requant_pipeline, "writeback_pipeline": writeback_pipeline,
             "read_pipeline": read_pipeline}
    own.update({name: value for name, value in given.items() if value is not None})
    return default_config(model, least=least, **own)


def _generate(config, out):
    from amaranth.back import verilog
    from ..hw.accelerator import AcceleratorTop
    top = AcceleratorTop(config=config, clk_freq=SIM_CLOCK_HZ, baud=SIM_BAUD)
    path = out / "accelerator.v"
    path.write_text(verilog.convert(top, name="addershift_top", emit_src=False))
    return path


def _simulated_board(model, config, count, out, device):
    """Start the simulated board with this build (elaborated for ``device``), then load and run
    the model with the host driver exactly as on a real board (``addershift run``)."""
    from ..sim.board import BoardProcess
    from .host import run_model
    with BoardProcess(accelerator=config, log=out / "board.log", device=device) as board:
        return run_model(board.url, model, count, progress=sys.stderr)


def _board_build(config, board, out):
    """Build the accelerator for ``board``, or reuse this run's earlier build of the same design.

    Returns the build report (``boards.build.BuildResult.to_dict``) and whether it was reused. A
    design that does not fit the device returns ``{"fits": False, ...}`` with the logic cells
    nextpnr asked for (or packed into, where it found no legal placement), read from its error.
    """
    key = f"{board}-{config.build_hash[:12]}-{_sources_hash()}"
    build_dir = out / "boards" / key
    cached = build_dir / "demo-build.json"
    if cached.exists():
        return json.loads(cached.read_text()), True
    outcome = _run_board_build(config, board, build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(outcome, indent=1))
    return outcome, False


#: Builds again at a lower clock after a build that missed timing, at most.
_RETRIES = 2


def _run_board_build(config, board, build_dir):
    from ..boards.board import get_board
    from ..boards.build import DoesNotFit, build_accelerator

    def attempt(clock_mhz):
        # (The UART runs at the driver's default rate, so that the bitstream answers `addershift
        # run --port` as it is.)
        return build_accelerator(board=board, config=config, clock_mhz=clock_mhz,
                                 build_dir=build_dir, check_timing=False)
    try:
        result = attempt(None)      # the board's clock for the PE kind (Board.accelerator_clocks)
    except DoesNotFit as e:
        return {"fits": False, "build_dir": str(build_dir), "needed_cells": e.needed,
                "available_cells": e.available, "cell_type": e.cell,
                "error": str(e).splitlines()[0]}
    first = None
    for _ in range(_RETRIES):
        if result.report.timing_met is not False or not result.report.fmax:
            break
        # A bitstream that misses timing is no use on a board: build again at a clock below the
        # Fmax found (with a margin: placement changes with the constraint).
        first = first or {"clock_mhz": result.to_dict()["clock_mhz"],
                          "fmax_mhz": result.report.fmax}
        result = attempt(_retry_clock(get_board(board), result.report.fmax))
    return {"fits": True, **result.to_dict(), "first_attempt": first}


def _retry_clock(board, fmax):
    """The highest whole MHz at or below 95 % of ``fmax`` (a margin: placement changes with the
    constraint) that ``board``'s PLL makes (within its 1 %) without going above that."""
    target = math.floor(fmax * 0.95)
    for mhz in range(target, 0, -1):
        try:
            if board.check_clock(mhz) <= fmax * 0.95:
                return mhz
        except ValueError:          # not a frequency the PLL makes
            continue
    raise DemoError(f"no clock below the {fmax:.2f} MHz the build placed at is reachable on "
                    f"{board.name}")


def _save(fig, ax, path):
    import matplotlib.pyplot as plt
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plots(out, report):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    stages = report["simulation"]["stages"]
    if stages:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = [s["name"] for s in stages]
        ax.bar(names, [s["cycles"] for s in stages], label="cycles")
        ax.bar(names, [s["busy_pe"] / report["config"]["pes"] for s in stages], label="busy PE-cycles / PEs")
        ax.set_ylabel("cycles per inference")
        ax.set_title(f"{report['pe']} {report['config']['rows']}x{report['config']['cols']}: cycles per layer")
        paths.append(_save(fig, ax, out / "cycles_per_layer.png"))
    cost = _array_cost(report["board"])
    if cost:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        sizes = sorted({r["pes"] for r in cost})
        kinds = ("adder", "shift", "mul")
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            rows = {r["pes"]: r for r in cost if r["kind"] == kind}
            xs = [j + i * width for j in range(len(sizes))]
            heights = [rows[n]["cells"] if n in rows and rows[n]["fits"] else 0 for n in sizes]
            label = "mul (in LUTs)" if kind == "mul" and cost[0]["target"] == "ice40-up5k" else kind
            ax.bar(xs, heights, width, label=label)
            for x, n in zip(xs, sizes):
                if n in rows and not rows[n]["fits"]:
                    ax.text(x, 0, "does not fit", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks([j + width for j in range(len(sizes))],
                      [f"{int(n ** 0.5)}x{int(n ** 0.5)}" for n in sizes])
        ax.set_ylabel("logic cells (placed)")
        ax.set_title(f"{cost[0]['target']}: array cost per PE kind (bench/pe_cost.py)")
        paths.append(_save(fig, ax, out / "resources_per_pe.png"))
    return paths


def _array_cost(board):
    """Arrays of each PE kind on ``board``'s device, as measured by ``bench/pe_cost.py`` and kept
    in ``docs/cost/pe_cost.json`` (multipliers in LUTs on the iCE40, on DSPs on the ECP5)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cost" / "pe_cost.json"
    if not path.exists():
        return []
    target = "ice40-up5k" if board == "icebreaker" else "ecp5-85f"
    return [r for r in json.loads(path.read_text())["rows"]
            if r["target"] == target and r["unit"] != "pe"]


def _resources(build_dict):
    """The resource counts a plot and the report show, from a build's report dict."""
    return {name: entry["used"] for name, entry in build_dict["resources"].items()
            if isinstance(entry, dict) and entry.get("used") is not None}


class DemoError(ValueError):
    """The demo cannot run as asked (a build option that does not fit the model or the array)."""


def run_demo(args):
    from ..boards.board import get_board
    from .data import load_digits_split
    from .golden import predict
    from .model import load_model
    from .quantize import quantize_images

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 5
    started = time.perf_counter()

    model = load_model(_model_path(args.pe))
    try:     # the build first: a bad option stops here, before minutes of work
        config = board_config(model, board=args.board, rows=args.rows, cols=args.cols,
                              requant_lanes=args.requant_lanes,
                              requant_pipeline=args.requant_pipeline,
                              writeback_pipeline=args.writeback_pipeline,
                              read_pipeline=args.read_pipeline)
    except ValueError as e:      # CompileError included
        raise DemoError(str(e)) from None

    _step(1, steps, f"model: models/digits_{args.pe}.npz on the golden model")
    data = load_digits_split()
    x = quantize_images(model, data.test_x)
    golden = predict(model, x)
    accuracy = float((golden.argmax(axis=1) == data.test_y).mean())
    print(f"  integer accuracy on the digits test split: {accuracy:.2%} ({len(x)} images)")

    _step(2, steps, f"Verilog: {args.pe} accelerator, {config.rows}x{config.cols} array")
    vpath = _generate(config, out)
    print(f"  {vpath} ({vpath.stat().st_size // 1024} KiB), build hash {config.build_hash[:16]}")

    n = min(args.images, len(x))
    device = get_board(args.board).device
    _step(3, steps, f"simulated board: Verilator behind a TCP socket ({device} cells by Yosys' "
                    f"models), host driver, {n} test images")
    print("  (the first run compiles the simulation, a minute or two; later runs reuse it)", flush=True)
    sim = _simulated_board(model, config, n, out, device)
    link = sim["link"]
    link["efficiency"] = link["load_bytes_per_s_device"] / link["line_bytes_per_s"]
    print(f"  accuracy {sim['accuracy']:.2%} on {n} images; outputs bit-exact with the golden model: "
          f"{n - sim['mismatches']}/{n}")
    print(f"  cycles per inference {sim['cycles_per_inference']:,}, array utilisation "
          f"{sim['utilisation']:.1%} of {config.rows * config.cols} PEs")
    print(f"  link: {link['load_bytes']:,} bytes of program loaded at {link['efficiency']:.1%} of "
          f"baud/10 (board time, {link['baud']:,} baud)")

    _step(4, steps, f"{args.board} build of the same accelerator (Yosys, nextpnr)")
    print("  (place and route takes a few minutes the first time; later runs reuse it)", flush=True)
    build_dict, reused = _board_build(config, args.board, out)
    print(f"  {'reused the ' if reused else ''}build in {build_dict['build_dir']}")
    fmax = build_dict.get("fmax_mhz")
    if not build_dict["fits"]:
        # (nextpnr's words: more cells than the device has, or no legal placement for them.)
        print(f"  DOES NOT FIT: {build_dict['error']}; see docs/accelerator.md (area) and try "
              f"--board ulx3s-85f")
    else:
        for name, entry in build_dict["resources"].items():
            if isinstance(entry, dict) and entry.get("total") and entry.get("used") is not None:
                print(f"  {name:<12} {entry['used']:>6} / {entry['total']:<6} "
                      f"({entry['used'] / entry['total']:.0%})")
        mult = build_dict["multipliers"]
        first = build_dict.get("first_attempt")
        if first:
            print(f"  at the board's {first['clock_mhz']:g} MHz: Fmax {first['fmax_mhz']:.1f} MHz, "
                  f"timing not met; built again at a lower clock:")
        print(f"  Fmax {fmax:.1f} MHz against {build_dict['clock_mhz']:g} MHz requested "
              f"(timing {'met' if build_dict['timing_met'] else 'NOT met'})")
        print(f"  multipliers: {mult['premap_mul']} $mul cells before mapping, {mult['dsp']} DSP "
              f"blocks after")
        if build_dict.get("bitstream"):
            print(f"  bitstream {build_dict['bitstream']}: on a board, `addershift program --board "
                  f"{args.board} --bitstream {build_dict['bitstream']}`, then `addershift run "
                  f"--port {get_board(args.board).host_port} -m {_model_path(args.pe)}` (not "
                  f"run here: no board)")
        cycles = sim["cycles_per_inference"]
        print(f"  projected: {fmax * 1e6 / cycles:,.0f} images/s at Fmax, "
              f"{build_dict['clock_mhz'] * 1e6 / cycles:,.0f} at the bitstream's "
              f"{build_dict['clock_mhz']:g} MHz ({cycles:,} cycles per inference, compute only)")

    report = {
        "pe": args.pe, "board": args.board, "accuracy_golden": accuracy,
        "config": {**config.to_dict(), "pes": config.rows * config.cols},
        "simulation": sim, "build": build_dict, "build_reused": reused,
        "resources": _resources(build_dict) if build_dict["fits"] else None,
        "array_cost_by_pe": _array_cost(args.board),
        "images_per_second_at_fmax": fmax * 1e6 / sim["cycles_per_inference"] if fmax else None,
        "images_per_second_at_clock": build_dict["clock_mhz"] * 1e6 / sim["cycles_per_inference"]
        if build_dict.get("timing_met") else None,
        "seconds": time.perf_counter() - started,
    }
    _step(5, steps, f"report and plots in {out}")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    for path in _plots(out, report):
        print(f"  {path}")
    print(f"  {out / 'report.json'}")
    print(f"\ndone in {report['seconds']:.0f} s")
    if not sim["bit_exact"]:
        raise SystemExit(f"{sim['mismatches']} of {n} outputs differ from the golden model")
