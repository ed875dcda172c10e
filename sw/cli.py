"""The ``addershift`` command line: one console script, one subcommand per job.

Each subcommand's work lives in the module that owns it; this file only parses arguments and
reports. Subcommands whose work is not built yet say so and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading

from .model import ModelFileError
from .protocol import DEFAULT_BAUD

PE_KINDS = ("adder", "shift", "mul")
BOARDS = ("icebreaker", "ulx3s-85f", "ulx3s-45f", "ulx3s-25f", "ulx3s-12f")
ROUTERS = ("router1", "router2")     # boards.build.ROUTERS, spelled out: --help imports no HDL
PLACERS = ("heap", "sa", "static")   # boards.build.PLACERS, likewise
SIMULATORS = ("amaranth", "icarus", "verilator")


class CliError(Exception):
    """An error the user can act on: printed as one line, exit status 1."""


class NotBuilt(CliError):
    pass


def _not_built(what):
    raise NotBuilt(f"{what} is not built yet in this version of addershift")


def _emit(args, report, text):
    """Print ``report`` as one JSON object with ``--json``, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(report, indent=None, sort_keys=True))
    else:
        print(text)


def seed_list(text):
    """``--seed``: one nextpnr seed or a comma-separated list of distinct ones."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or a list of them: {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must differ: {text!r}")
    return seeds


# --- subcommands -------------------------------------------------------------------------------

def _requant_mode(args):
    """``--requant-mode`` if given, else the shipped models' mode for ``--pe``: pow2x2 for adder
    and shift, mul for mul (what ``train`` and ``import`` quantise them to by default)."""
    given = getattr(args, "requant_mode", None)
    if given is not None:
        return given
    return "mul" if args.pe == "mul" else "pow2x2"


def _accelerator_unit(args):
    """The accelerator top (UART pins, framer, core) for ``generate --unit accelerator``: the build
    that fits ``--model`` if given, else ``--pe`` with the requantisation mode of the shipped
    models (``_requant_mode``) and the ``ArrayConfig`` defaults (or ``--board``'s build)."""
    from ..hw.accelerator import AcceleratorTop
    from ..hw.config import ArrayConfig
    from .compiler import CompileError, default_config
    if not 0 < args.clock < float("inf"):
        raise CliError(f"--clock must be a positive number of MHz, not {args.clock}")
    try:
        if args.model:
            from .model import load_model
            config = default_config(load_model(args.model), rows=args.rows, cols=args.cols,
                                    least=args.least_depths, **_build_options(args))
        else:
            config = ArrayConfig(pe=args.pe, rows=args.rows, cols=args.cols,
                                 requant_mode=_requant_mode(args),
                                 **{**args.least_depths, **_build_options(args)})
        return AcceleratorTop(config=config, clk_freq=int(args.clock * 1e6), baud=args.baud)
    except (CompileError, TypeError, ValueError) as e:
        raise CliError(str(e)) from None


def _write_verilog(unit, args):
    """``hw.generate.generate`` of ``unit`` to ``--output`` (module ``--top``); its sidecar dict."""
    from ..hw.generate import generate
    try:
        return generate(unit, args.output, top=args.top)
    except ValueError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e}") from None


#: ``generate``'s default shift exponent range (``--p-min``, ``--p-max``).
_GENERATE_SHIFT_RANGE = (0, 7)


def cmd_generate(args):
    import pathlib
    from ..hw.generate import build_unit
    if args.unit == "accelerator":
        unit = _accelerator_unit(args)
        info = _write_verilog(unit, args)
        sidecar = str(pathlib.Path(args.output).with_suffix(".json"))
        text = (f"{args.rows}x{args.cols} {unit.config.pe.value} accelerator -> {args.output} "
                f"(module {info['top']}, build {info['build_hash'][:16]}, "
                f"{info['derived']['acc_bits']}-bit accumulators), sidecar {sidecar}")
        _emit(args, dict(info, output=args.output, sidecar=sidecar), text)
        return
    if args.pe != "shift" and (args.p_min, args.p_max) != _GENERATE_SHIFT_RANGE:     # given
        raise CliError(f"--p-min and --p-max are the shift exponents' range; --pe {args.pe} "
                       f"has none (its weights are --w-bits wide)")
    try:
        unit = build_unit(
            args.unit, kind=args.pe, rows=args.rows if args.unit == "array" else None,
            cols=args.cols if args.unit == "array" else None, x_bits=args.x_bits,
            w_bits=args.w_bits, max_length=args.max_length,
            p_min=args.p_min if args.pe == "shift" else None,
            p_max=args.p_max if args.pe == "shift" else None)
    except (TypeError, ValueError) as e:
        raise CliError(str(e)) from None
    info = _write_verilog(unit, args)
    sidecar = str(pathlib.Path(args.output).with_suffix(".json"))
    shape = f"{args.rows}x{args.cols} " if args.unit == "array" else ""
    text = (f"{shape}{args.pe} {args.unit} -> {args.output} (module {info['top']}, "
            f"{info['derived']['acc_bits']}-bit accumulators, latency {info['timing']['latency']}), "
            f"sidecar {sidecar}")
    _emit(args, dict(info, output=args.output, sidecar=sidecar), text)


def _check_writable(path, what):
    """A ``CliError`` now, before any work, if ``path`` cannot be written (a folder, or a folder
    that does not exist or takes no new file): a training run's model would be lost at its end."""
    import pathlib
    import tempfile
    path = pathlib.Path(path)
    if path.is_dir():
        raise CliError(f"{what} {path} is a folder, not a file")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as e:
        raise CliError(f"cannot write {what} {path}: {e.strerror or e}") from None


def _check_folder(path, option):
    """A ``CliError`` now if the folder ``path`` (to create or fill) is a file or lies under one
    (else the error comes later, as an errno text that does not name the option)."""
    from .files import folder_problem
    problem = folder_problem(path)
    if problem:
        raise CliError(f"{option} {path} {problem}")


def _training_call(func, args, **kwargs):
    """Run a training/import flow; its domain errors become one-line CLI errors. The files it
    writes are checked for writability first."""
    _check_writable(args.output, "output")
    if getattr(args, "save_float", None):
        _check_writable(args.save_float, "--save-float")
        import pathlib
        if pathlib.Path(args.save_float).resolve() == pathlib.Path(args.output).resolve():
            raise CliError(f"--save-float {args.save_float} is the model's output file too: the "
                           f"model would overwrite the checkpoint")
    try:
        from .data import DataError
        from .quantize import QuantizeError
        from . import importers
    except ImportError as e:
        raise CliError(f"needs PyTorch (pip install -e '.[train]'): {e}") from None
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        report = func(**kwargs, log=log)
    except (DataError, QuantizeError, importers.CheckpointError, ValueError) as e:
        raise CliError(str(e)) from None      # all of them: a setting or a file the user can fix
    text = (f"float accuracy {100 * report['float_accuracy']:.2f}%, integer accuracy (golden model) "
            f"{100 * report['int_accuracy']:.2f}% on {report['test_images']} test images "
            f"[{report['pe']}, requant {report['mode']}]; wrote {report['output']} "
            f"({report['bytes']} bytes) in {report['seconds']:.1f} s ({report['cpu_seconds']:.1f} s CPU)")
    _emit(args, report, text)


def _mode(args):
    return None if args.mode == "auto" else args.mode


def cmd_train(args):
    from .train import train_command
    if args.variant == "ps" and args.pe != "shift":
        raise CliError("--variant ps is DeepShift's, for --pe shift only")
    _training_call(train_command, args, pe=args.pe, dataset=args.dataset, output=args.output,
                   mode=_mode(args), variant=args.variant, epochs=args.epochs, qat_epochs=args.qat_epochs,
                   seed=args.seed, x_bits=args.x_bits, save_float=args.save_float)


def cmd_quantize(args):
    from .importers import quantize_command
    _training_call(quantize_command, args, checkpoint=args.checkpoint, output=args.output,
                   dataset=args.dataset, mode=_mode(args), qat_epochs=args.qat_epochs, seed=args.seed,
                   x_bits=args.x_bits)


def cmd_import(args):
    from .importers import import_command
    _training_call(import_command, args, checkpoint=args.checkpoint, output=args.output,
                   fmt=args.format, arch=args.arch, dataset=args.dataset, mode=_mode(args),
                   qat_epochs=args.qat_epochs, seed=args.seed, x_bits=args.x_bits)


def cmd_predict(args):
    import numpy as np
    from .model import load_model
    from .golden import trace
    _check_timeout(args)
    model = load_model(args.model)
    x = _load_inputs(args.input)
    _check_writable(args.output, "output")
    if args.backend != "golden":
        if args.trace:
            raise CliError("--trace needs --backend golden (the accelerator returns the last "
                           "layer's output)")
        y = _predict_on_backend(args, model, x)
        _save_array(args.output, y)
        report = {"backend": args.backend, "images": int(y.shape[0]), "output": args.output,
                  "output_shape": list(y.shape)}
        _emit(args, report, f"{y.shape[0]} images on {args.backend} -> {args.output} "
                            f"(shape {tuple(y.shape)})")
        return
    try:
        outputs = trace(model, x)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.trace:
        import pathlib
        out_dir = pathlib.Path(args.trace)
        _check_folder(out_dir, "--trace")
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, (layer, y) in enumerate(zip(model.layers, outputs)):
            _save_array(out_dir / f"{i:02d}_{layer.name}.npy", y)
    y = outputs[-1]
    _save_array(args.output, y)
    report = {"backend": args.backend, "images": int(y.shape[0]), "output": args.output,
              "output_shape": list(y.shape)}
    _emit(args, report, f"{y.shape[0]} images -> {args.output} (shape {tuple(y.shape)})")


def _load_inputs(path):
    """The images of an ``.npy`` file, or a ``CliError`` that says what the file is instead."""
    import numpy as np
    try:
        x = np.load(path, allow_pickle=False)
    except EOFError:
        raise CliError(f"cannot read input {path}: the file is empty") from None
    except ValueError as e:
        if "pickled" in str(e):      # NumPy's advice to load it unsafely does not apply here
            raise CliError(f"cannot read input {path}: not an .npy array file") from None
        raise CliError(f"cannot read input {path}: {e}") from None
    except OSError as e:
        raise CliError(f"cannot read input {path}: {e.strerror or e}") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise CliError(f"input {path} is an .npz archive, not one .npy array of images")
    if x.ndim == 0 or x.shape[0] == 0:
        raise CliError(f"input {path} holds no images (shape {x.shape})")
    return x


def _save_array(path, y):
    """Write ``y`` as ``.npy`` to exactly ``path`` (``np.save`` would add ``.npy`` to another
    name), through a temporary file (``files.write_atomically``)."""
    import numpy as np
    from .files import write_atomically
    write_atomically(path, lambda f: np.save(f, y))


def _predict_on_backend(args, model, x):
    """The last layer's outputs of ``x`` on a simulator (``sim.accel_sim``, checked against the
    golden model) or on the board behind a serial URL (``sw.host``)."""
    from .compiler import CompileError
    from .driver import LinkError
    from .golden import check_inputs
    try:                   # before a simulator is built or a board is connected to
        x = check_inputs(x, input_shape=model.input_shape, x_bits=model.x_bits)
    except ValueError as e:
        raise CliError(str(e)) from None              # as the golden path says it
    if args.backend in SIMULATORS:
        from ..sim.accel_sim import simulate_model
        from ..sim.runner import SimulatorMissing
        _check_folder(args.build_dir, "--build-dir")
        try:
            rep = simulate_model(model, x, simulator=args.backend, build_dir=args.build_dir)
        except (CompileError, ValueError, SimulatorMissing) as e:
            raise CliError(str(e)) from None
        if rep["mismatch"] is not None:
            raise CliError(f"mismatch with the golden model: {rep['mismatch']['message']}")
        # simulate_model checked every output bit for bit against the golden model's
        from .golden import predict
        return predict(model, x)
    if "://" not in args.backend and not args.backend.startswith("/dev/"):
        raise CliError(f"--backend must be golden, {', '.join(SIMULATORS)} or a serial URL "
                       f"(/dev/ttyUSB1, socket://127.0.0.1:7777), not {args.backend!r}")
    from .host import connect
    try:
        with connect(args.backend, timeout=args.timeout) as acc:
            acc.load(model)
            return acc.predict(x)
    except LinkError as e:
        done = getattr(e, "done_outputs", None)
        if done is not None and len(done):       # the images that finished are kept
            import pathlib
            out = pathlib.Path(args.output)
            partial = out.with_name(f"{out.stem}.partial{out.suffix or '.npy'}")
            _save_array(partial, done)
            raise CliError(f"{_timeout_hint(e, args)}; the outputs of those {len(done)} are in "
                           f"{partial}") from None
        raise CliError(_timeout_hint(e, args)) from None
    except (CompileError, ValueError) as e:
        raise CliError(str(e)) from None


def cmd_simulate(args):
    from .model import load_model
    from .compiler import CompileError
    from ..sim.accel_sim import simulate_model, test_images
    from ..sim.runner import SimulatorMissing
    if args.images < 1:
        raise CliError(f"--images must be at least 1, not {args.images}")
    _check_folder(args.build_dir, "--build-dir")
    model = load_model(args.model)
    x, labels = test_images(model, args.images)
    device = _sim_device(args)
    try:
        report = simulate_model(model, x, simulator=args.simulator, rows=args.rows,
                                cols=args.cols, per_layer=args.per_layer,
                                least=args.least_depths, **_build_options(args),
                                build_dir=args.build_dir, device=device)
    except (CompileError, ValueError, SimulatorMissing) as e:
        raise CliError(str(e)) from None
    report.update(model=args.model, labels=labels)
    built_for = f" (as built for the {device})" if device else ""
    lines = [f"{args.model} on {args.simulator}{built_for}: {report['config']['pe']} "
             f"{args.rows}x{args.cols} array, requant {report['config']['requant_mode']}",
             f"{'image':>5} {'label':>5} {'predicted':>9} {'golden':>6}"]
    for n, (p, g) in enumerate(zip(report["predictions"], report["golden_predictions"])):
        label = "-" if labels is None else labels[n]
        lines.append(f"{n:>5} {label:>5} {'-' if p is None else p:>9} {g:>6}")
    pes = args.rows * args.cols
    per_stage = ", ".join(f"{s['name']} {s['cycles']} ({100 * s['utilisation']:.0f}%)"
                          for s in report["stages"])
    lines.append(f"cycles per inference: {report['cycles_per_inference']} ({per_stage}); "
                 f"utilisation {100 * report['utilisation']:.1f}% of {pes} PEs "
                 f"(ideal {report['ideal_cycles']} cycles)")
    if report["mismatch"] is None:
        fewer = (f" (the test split has {len(x)}, not {args.images})"
                 if len(x) < args.images else "")
        lines.append(f"all {len(x)} images bit-exact with the golden model{fewer}")
    _emit(args, report, "\n".join(lines))
    if report["mismatch"] is not None:
        raise CliError(f"mismatch with the golden model: {report['mismatch']['message']}")


def cmd_build(args):
    from addershift.boards.build import (BLOCK_RAM_CELLS, DoesNotFit, build_accelerator,
                                         build_array, build_link)
    from addershift.boards.report import TimingError
    from addershift.boards.toolchain import ToolError
    if args.out is not None:
        _check_folder(args.out, "-o")
    config = _sim_build(args) if args.top == "accelerator" else None
    try:
        if args.top == "accelerator":
            result = build_accelerator(board=args.board, config=config,
                                       clock_mhz=args.clock, baud=args.baud, build_dir=args.out,
                                       seed=args.seed, router=args.router, placer=args.placer,
                                       multipliers=args.multipliers, check_timing=False,
                                       bram_outreg=args.bram_outreg,
                                       late_endpoints=args.late_endpoints)
        elif args.top == "link":
            result = build_link(board=args.board, clock_mhz=args.clock, baud=args.baud,
                                build_dir=args.out, seed=args.seed, router=args.router,
                                placer=args.placer, check_timing=False,
                                bram_outreg=args.bram_outreg,
                                late_endpoints=args.late_endpoints)
        else:
            result = build_array(board=args.board, pe=args.pe, rows=args.rows, cols=args.cols,
                                 clock_mhz=args.clock, build_dir=args.out, seed=args.seed,
                                 router=args.router, placer=args.placer,
                                 multipliers=args.multipliers, check_timing=False,
                                 bram_outreg=args.bram_outreg,
                                 late_endpoints=args.late_endpoints)
    except DoesNotFit as e:
        hint = ""
        if args.top == "accelerator":
            kinds = {cell in BLOCK_RAM_CELLS for cell, _, _ in e.overflows}
            if False in kinds:
                hint += f"; {_fewer_cells(config)}, and --top array builds the PE array alone"
            if True in kinds:
                hint += ("; fewer activation banks (--act-banks, a divisor of --rows) or "
                         "shallower memories (--act-depth, down to what the model needs) take "
                         "fewer block RAMs, as do narrow banks (--act-entry-lanes) where a "
                         "bank per row is wider than its data")
        raise CliError(str(e).splitlines()[0] + hint) from None
    except ToolError as e:
        # The first line says what failed; the log has the rest.
        raise CliError(str(e).splitlines()[0]) from None
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    report = result.report
    where = (f"bitstream: {result.bitstream}" if result.bitstream else
             "no usable bitstream (timing not met)")
    _emit(args, result.to_dict(), f"{report.format_text()}\n  {where}\n  report: "
          f"{result.build_dir / 'top.addershift.json'}")
    try:
        report.check_timing()
    except TimingError as e:
        raise CliError(str(e)) from None


def cmd_program(args):
    from addershift.boards.build import NoProgrammer, ProgrammerFailed, program
    try:
        argv = program(board=args.board, bitstream=args.bitstream)
    except (FileNotFoundError, ValueError, ProgrammerFailed) as e:
        raise CliError(str(e)) from None
    except NoProgrammer as e:
        # The exact command lines on stdout, so they can be copied or piped to a shell.
        for line in e.commands:
            print(line)
        raise CliError(f"{e}; run one of the commands above on the machine the board is "
                       f"plugged into") from None
    print(f"programmed {args.board}: {' '.join(argv)}")


#: The build options when neither they nor ``--board`` are given.
_BUILD_DEFAULTS = {"rows": 4, "cols": 4, "requant_pipeline": "deep", "writeback_pipeline": "deep",
                   "read_pipeline": "deep"}


#: The options only an accelerator uses (``add_build``'s beyond the PE kind and array shape).
_ACCELERATOR_OPTIONS = ("model", "requant_mode", "requant_lanes", "requant_pipeline",
                        "writeback_pipeline", "read_pipeline", "act_banks", "act_entry_lanes",
                        "weight_relays", "weight_depth", "act_depth", "param_depth")


#: ``ArrayConfig``'s fields that are build options: its and the compiler's messages name the
#: fields, which the CLI shows as the options.
_OPTION_FIELDS = re.compile(r"\b(" + "|".join(_ACCELERATOR_OPTIONS[1:]) + r")\b")


def _with_option_names(message, args):
    """``message`` with the build fields that are options of ``args``' command as the options."""
    return _OPTION_FIELDS.sub(lambda m: "--" + m[1].replace("_", "-") if hasattr(args, m[1])
                              else m[1], message)


def _refuse_unused(args):
    """A ``CliError`` for options given that the command's mode (``build --top``, ``generate
    --unit``) does not use: ignored, they would leave a user believing the build has them."""
    mode, unused, defaults = args.unused_options
    value = getattr(args, mode)
    given = [name for name in unused.get(value, ())
             if hasattr(args, name) and getattr(args, name) != defaults[name]]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CliError(f"--{mode} {value} does not use {flags}")


def _model_kind(args):
    """The PE kind of ``--model`` (None if it mixes kinds: compiling it says so), else ``--pe``."""
    if getattr(args, "model", None):
        from .model import load_model
        kinds = {layer.op.value for layer in load_model(args.model).compute_layers()}
        return kinds.pop() if len(kinds) == 1 else None
    return getattr(args, "pe", None)


def _resolve_build(args):
    """Fill in the build options not given (``add_build``'s): ``--board``'s accelerator build for
    the PE kind (``boards.Board.accelerator_builds``), then ``_BUILD_DEFAULTS``. Sets
    ``args.least_depths``: the memory depths the board asks for at least."""
    from .compiler import board_build
    defaults = dict(_BUILD_DEFAULTS)
    args.least_depths = {}
    if getattr(args, "board", None):
        own, args.least_depths = board_build(args.board, _model_kind(args))
        defaults.update(own)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _build_options(args):
    """``ArrayConfig`` keyword arguments of ``--requant-lanes``, the ``--*-pipeline`` options,
    ``--act-banks``, ``--act-entry-lanes``, ``--weight-relays`` and the memory depths given (the
    others stay the model's or the defaults)."""
    depths = {name: getattr(args, name) for name in ("weight_depth", "act_depth", "param_depth")
              if getattr(args, name) is not None}
    return {"requant_lanes": args.requant_lanes, "requant_pipeline": args.requant_pipeline,
            "writeback_pipeline": args.writeback_pipeline, "read_pipeline": args.read_pipeline,
            "act_banks": args.act_banks, "act_entry_lanes": args.act_entry_lanes,
            "weight_relays": args.weight_relays, **depths}


def _fewer_cells(config):
    """The accelerator options that take fewer logic cells than ``config``'s."""
    ways = ["a smaller array (--rows, --cols)"]
    if config.lanes > 1:
        ways.append("--requant-lanes 1")
    deep = [f"--{name}-pipeline" for name in ("requant", "writeback", "read")
            if getattr(config, f"{name}_pipeline") != "short"]
    if deep:
        ways.append(f"short pipelines ({', '.join(deep)})")
    if len(ways) == 1:
        return f"{ways[0]} needs less"
    return f"{', '.join(ways[:-1])} or {ways[-1]} need less"


def _sim_build(args):
    """The accelerator build a simulated board runs: the one that fits ``--model`` (if given),
    else ``--pe`` and ``--requant-mode`` (``_requant_mode``) with the ``ArrayConfig`` defaults;
    ``--rows``/``--cols``, ``--requant-lanes`` and the ``--*-pipeline`` options."""
    from ..hw.config import ArrayConfig
    from .compiler import CompileError, default_config
    try:
        if getattr(args, "model", None):
            from .model import load_model
            return default_config(load_model(args.model), rows=args.rows, cols=args.cols,
                                  least=args.least_depths, **_build_options(args))
        return ArrayConfig(pe=args.pe, rows=args.rows, cols=args.cols,
                           requant_mode=_requant_mode(args),
                           **{**args.least_depths, **_build_options(args)})
    except (CompileError, TypeError, ValueError) as e:
        raise CliError(str(e)) from None


#: ``--timeout``'s help (run, predict), before each command's own end.
TIMEOUT_HELP = ("seconds to wait for each answer of the board before asking again (None: 2 on a "
                "serial port, 8 on socket://")


#: The end of ``--board``'s help where a simulator runs the build.
BOARD_CELLS = ("; on icarus and verilator also its device's own cells, as Yosys simulates them "
               "(iCE40UP: SB_SPRAM256KA weight memories; ECP5: the adder PEs' CCU2C carry "
               "chains)")


def _sim_device(args):
    """The device whose Verilog a simulator runs: ``--board``'s on Icarus and Verilator, its
    vendor cells by Yosys' models; None (the generic form) without a board or on Amaranth's
    simulator, which cannot run them."""
    if not getattr(args, "board", None) or args.simulator == "amaranth":
        return None
    from ..boards.board import get_board
    return get_board(args.board).device


#: The largest scratch memory ``serve-sim --link-test`` simulates.
SIM_MEM_MAX = 1 << 16


def _check_port_free(port):
    """A ``CliError`` now if ``port`` on 127.0.0.1 cannot be listened on (in use, or not allowed),
    rather than from the simulator after its build, in a log file."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the board's server
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen(1)
        except OSError as e:
            raise CliError(f"cannot serve on port {port}: {e.strerror or e}") from None


def cmd_serve_sim(args):
    from ..hw.link_top import LinkTop
    from ..sim.board import accelerator_top, serve, sim_timeout
    if args.baud < 1:
        raise CliError(f"--baud must be at least 1, not {args.baud}")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be a TCP port, 0 to 65535, not {args.port}")
    if args.link_test and not 1 <= args.mem_size <= SIM_MEM_MAX:
        # (the protocol allows 16 MiB regions; the simulator then took more than 8 GB)
        raise CliError(f"--mem-size must be 1 to {SIM_MEM_MAX} bytes on the simulated board, "
                       f"not {args.mem_size}")
    _check_port_free(args.port)
    try:
        device = None
        if args.link_test:   # the host-link test top (UART, framer, scratch memories)
            top = LinkTop(clk_freq=args.clock, baud=args.baud, mem_size=args.mem_size,
                          timeout=sim_timeout(args.clock, args.baud))
            what = "link test top"
        else:
            config = _sim_build(args)
            top = accelerator_top(config, clock=args.clock, baud=args.baud)
            device = _sim_device(args)
            what = (f"accelerator {config.describe()}, build {config.build_hash[:16]}"
                    + (f", as built for the {device}" if device else ""))
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"starting the simulated board ({what}, {args.simulator}, {args.baud} baud at "
          f"{args.clock} Hz) on socket://127.0.0.1:{args.port}; it accepts connections once it "
          f"prints the address it listens on (the first start builds the simulator, a minute or "
          f"two); Ctrl-C stops it", file=sys.stderr, flush=True)
    # The simulator's own logs (Verilator's build, cocotb's) go to stderr with this command's
    # lines, as `simulate`'s do: serve-sim writes nothing on stdout.
    sys.stdout.flush()
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        serve(top, divisor=top.divisor, port=args.port, simulator=args.simulator,
              device=device)
    # The port was free a moment ago (another board took it while this one built), or the
    # simulator is missing: one line, which names the simulator's log.
    except (OSError, RuntimeError) as e:
        raise CliError(f"cannot start the simulated board: {e}") from None
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)


#: ``--timeout``'s default for ``run --sim`` per simulator: Icarus and Amaranth's simulator run
#: the board tens of times slower than Verilator (an image's RUN took 11 s of wall time on Icarus
#: here), so the socket's 8 s would cut off answers that are merely slow.
SIM_TIMEOUTS = {"verilator": 8.0, "icarus": 60.0, "amaranth": 120.0}


def _check_timeout(args):
    if args.timeout is not None and not args.timeout > 0:
        raise CliError(f"--timeout must be a number of seconds above 0, not {args.timeout:g}")


def _timeout_hint(error, args):
    """A link error's message; for a timeout on a socket (a simulated board, which may just be
    slow), with how to wait longer."""
    from .driver import LinkTimeout
    url = args.port if getattr(args, "port", None) else getattr(args, "backend", "")
    waited_out = isinstance(error, LinkTimeout) or getattr(error, "waited_out", False)
    if waited_out and str(url).startswith("socket://"):
        return (f"{error} (a simulated board on Icarus or on a loaded machine answers slowly: "
                f"a longer --timeout waits for it)")
    return str(error)


def cmd_run(args):
    from .compiler import CompileError
    from .driver import LinkError
    from .model import load_model
    from .host import NotAnAccelerator, run_model
    if args.images < 1:
        raise CliError(f"--images must be at least 1, not {args.images}")
    _check_timeout(args)
    model = load_model(args.model)
    board = None
    timeout = args.timeout
    try:
        if args.sim:
            from ..sim.board import BoardProcess
            board = BoardProcess(accelerator=_sim_build(args), simulator=args.simulator,
                                 device=_sim_device(args))
            timeout = timeout or SIM_TIMEOUTS[args.simulator]
        url = board.url if board else args.port
        report = run_model(url, model, args.images, baudrate=args.baud, timeout=timeout)
    except NotAnAccelerator as e:
        raise NotBuilt(str(e)) from None
    except LinkError as e:
        raise CliError(_timeout_hint(e, args)) from None
    except (CompileError, RuntimeError) as e:
        raise CliError(str(e)) from None
    finally:
        if board is not None:
            board.stop()
    report["model"] = args.model
    _emit(args, report, report.pop("text"))
    if not report["bit_exact"]:
        raise CliError(f"{report['mismatches']} of {report['images']} outputs differ from the "
                       f"golden model")


def cmd_demo(args):
    from addershift.boards.toolchain import ToolError
    from .demo import DemoError, run_demo
    if args.images < 1:
        raise CliError(f"--images must be at least 1, not {args.images}")
    _check_folder(args.out, "--out")
    try:
        run_demo(args)
    except DemoError as e:
        raise CliError(str(e)) from None
    except ToolError as e:      # the board build's tools failed: the first line says how
        raise CliError(str(e).splitlines()[0]) from None


# --- parser ------------------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of each option that takes a value; a flag's (its True or False, inverted
    for a ``--no-...`` one) would read as whether the flag is given, and a None as a value (the
    help says what an option not given means)."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="addershift", formatter_class=fmt,
        description="Generate, simulate, build and run FPGA accelerators for multiplier-free "
                    "(AdderNet / DeepShift) neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, func, help):
        p = sub.add_parser(name, help=help, description=help, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    def add_json(p):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def refuse_unused(p, mode, unused):
        """Have ``_refuse_unused`` refuse the options ``unused[value]`` with ``--mode value``
        (given: not at their defaults)."""
        names = {name for names in unused.values() for name in names}
        p.set_defaults(unused_options=(mode, unused, {n: p.get_default(n) for n in names}))

    def add_build(p, *, pe=True, note="", board=None, board_note=""):
        """The build a command makes: PE kind, array shape, requantiser (``note`` marks options
        that only some modes of the command use). ``board``: ``"always"`` (the command's
        ``--board`` gives the defaults), ``"optional"`` (adds ``--board`` to give them, its help
        ending with ``board_note``) or None."""
        p.set_defaults(resolve_build=True)
        if board == "optional":
            p.add_argument("--board", choices=BOARDS,
                           help=f"the build 'addershift build --board BOARD' makes: that board's "
                                f"defaults for the options below that are not given{note}"
                                f"{board_note}")
        if pe:
            p.add_argument("--pe", choices=PE_KINDS, default="adder",
                           help="processing element kind")
        # With a board the defaults are its build's (filled in by _resolve_build), else fixed.
        dflt = {"always": "the board's, docs/boards.md",
                "optional": "--board's, else {}"}.get(board)

        def default(name, generic):
            if dflt is None:
                return {"default": _BUILD_DEFAULTS.get(name), "help": ""}
            return {"help": f" (None: {dflt.format(generic)})"}

        for flag, name, what in (("-r", "rows", "array rows"), ("-c", "cols", "array columns")):
            d = default(name, 4)
            p.add_argument(flag, f"--{name}", type=int, default=d.get("default"),
                           help=f"{what}{note}{d['help']}")
        d = default("requant_lanes", "--cols")
        p.add_argument("--requant-lanes", type=int, metavar="N",
                       help=f"values the requantiser takes per cycle, a divisor of --cols "
                            f"({'default: --cols; ' if dflt is None else ''}1 is the smallest "
                            f"build){d['help']}")
        for option, what in (
                ("requant", "the requantiser's pipeline: short has a quarter fewer cells and a "
                            "lower Fmax (small devices)"),
                ("writeback", "the write-back's pipeline: deep registers the block RAM's output "
                              "before the max-pool merge (ECP5 clock), short saves those "
                              "flip-flops (small devices)"),
                ("read", "block RAM reads: deep registers the words read (for the array and the "
                         "host) before any logic selects from them (ECP5 clock), short saves "
                         "those flip-flops (small devices)")):
            d = default(f"{option}_pipeline", "deep")
            p.add_argument(f"--{option}-pipeline", choices=("deep", "short"),
                           default=d.get("default"), help=f"{what}{d['help']}")
        p.add_argument("--act-banks", type=int, metavar="N",
                       help="read banks (copies) of each activation buffer, a divisor of "
                            "--rows (default: --rows); fewer take fewer block RAMs, and the "
                            "rows sharing a bank fetch each activation word ahead: layers "
                            "with fewer than rows/N + 2 input channels stall")
        p.add_argument("--act-entry-lanes", type=int, metavar="E",
                       help="narrow banks: each row's bank holds E activations per block RAM "
                            "word (a power of two from --requant-lanes to --cols; activations "
                            "narrower than 8 bits may need a larger E), copied from "
                            "a whole-word copy of the buffer, so a row reads only the entry it "
                            "needs and no word is held in registers; a bank per row "
                            "(no --act-banks)")
        p.add_argument("--weight-relays", type=int, metavar="N",
                       help="with the deep read pipeline: the weight memory's accesses pass "
                            "one more register, a copy per group of cols/N columns, before "
                            "each column's copy (N divides --cols): a weight read takes four "
                            "cycles, and no register drives every column's copy across the die "
                            "(large ECP5 arrays)")
        for option, memory, word in (
                ("weight", "the weight memory", "cols weights, or descriptor bits"),
                ("act", "each activation buffer", "cols activations of one pixel"),
                ("param", "the parameter memory", "the requantiser lanes' parameters")):
            p.add_argument(f"--{option}-depth", type=int, metavar="WORDS",
                           help=f"words of {memory} (a word: {word}); default: what --model "
                                f"needs, at least the ArrayConfig default or the board's; "
                                f"fewer take fewer block RAMs")

    p = add("generate", cmd_generate, "write Verilog for a PE, an array or the accelerator")
    add_build(p, board="optional")
    p.add_argument("--unit", choices=("pe", "array", "accelerator"), default="array",
                   help="what to generate (options the unit does not use are refused)")
    p.add_argument("-o", "--output", required=True,
                   help="Verilog file to write (a JSON sidecar goes beside it)")
    p.add_argument("--x-bits", type=int, default=8, help="activation width (signed)")
    p.add_argument("--w-bits", type=int, help="weight width for adder/mul (default: --x-bits)")
    p_min, p_max = _GENERATE_SHIFT_RANGE
    p.add_argument("--p-min", type=int, default=p_min, help="smallest shift exponent (shift only)")
    p.add_argument("--p-max", type=int, default=p_max, help="largest shift exponent (shift only)")
    p.add_argument("--max-length", type=int, default=128,
                   help="longest reduction K; sets the accumulator width")
    p.add_argument("--top", help="Verilog module name (default: the output file's name)")
    p.add_argument("-m", "--model", help="--unit accelerator: the build that fits this model")
    p.add_argument("--clock", type=float, default=12.0, help="--unit accelerator: clock in MHz")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help="--unit accelerator: UART baud rate (the host driver's default)")
    add_json(p)
    not_accelerator = _ACCELERATOR_OPTIONS + ("clock", "baud")
    refuse_unused(p, "unit", {
        "pe": not_accelerator + ("board", "rows", "cols"), "array": not_accelerator,
        "accelerator": ("x_bits", "w_bits", "p_min", "p_max", "max_length")})

    def add_quant_args(p, qat_default, dataset="digits",
                       dataset_help="'digits' (built in) or a folder of MNIST-style IDX files"):
        p.add_argument("--dataset", default=dataset, help=dataset_help)
        p.add_argument("--mode", choices=("auto", "shift", "pow2x2", "mul"), default="auto",
                       help="requantisation mode; auto: pow2x2 for adder and shift networks, mul for "
                            "mul networks")
        p.add_argument("--qat-epochs", type=int, default=qat_default,
                       help="epochs of quantisation-aware fine-tuning" +
                            ("; None: 10" if qat_default is None else ""))
        p.add_argument("--x-bits", type=int, default=8, help="activation width (signed bits)")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
        p.add_argument("-v", "--verbose", action="store_true", help="print progress on stderr")
        add_json(p)

    p = add("train", cmd_train, "train a network and write its quantised model file")
    p.add_argument("--pe", choices=PE_KINDS, default="adder", help="processing element kind")
    p.add_argument("--variant", choices=("q", "ps"), default="q",
                   help="DeepShift variant of shift networks, --pe shift only (Q: rounded "
                        "weights, PS: trained exponent and sign)")
    p.add_argument("--epochs", type=int, help="float training epochs; None: 30 (60 for --variant ps)")
    p.add_argument("--save-float", metavar="FILE", help="also write the float checkpoint (.pt)")
    add_quant_args(p, None)

    p = add("quantize", cmd_quantize, "quantise a float checkpoint (train --save-float) into a model file")
    p.add_argument("checkpoint", help="float checkpoint written by 'addershift train --save-float'")
    add_quant_args(p, None, dataset=None,
                   dataset_help="'digits' (built in) or a folder of MNIST-style IDX files (None: "
                                "the one the checkpoint was trained on)")

    p = add("import", cmd_import, "import an AdderNet or DeepShift state_dict")
    p.add_argument("checkpoint", help="PyTorch state_dict file")
    p.add_argument("--format", choices=("auto", "addernet", "deepshift-q", "deepshift-ps", "float"),
                   default="auto", help="checkpoint kind (auto tells AdderNet and DeepShift-PS apart)")
    p.add_argument("--arch", default="digits",
                   help="'digits' or a JSON file naming the checkpoint's layers")
    add_quant_args(p, 0)

    p = add("predict", cmd_predict, "run a model on integer inputs and save its outputs")
    p.add_argument("--backend", default="golden",
                   help="golden, amaranth, icarus, verilator or a serial URL")
    p.add_argument("-m", "--model", required=True, help="quantised model file (.npz)")
    p.add_argument("-i", "--input", required=True, help="integer inputs (.npy, N x C x H x W)")
    p.add_argument("-o", "--output", required=True, help="outputs to write (.npy)")
    p.add_argument("--trace", metavar="DIR", help="also write every layer's output to DIR")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help=TIMEOUT_HELP + ") (--backend URL)")
    p.add_argument("--build-dir", default="build/sim",
                   help="folder for Verilog and simulator builds (--backend amaranth, icarus or "
                        "verilator)")
    add_json(p)

    p = add("simulate", cmd_simulate, "cycle-accurate inference checked against the golden model")
    p.add_argument("-m", "--model", required=True, help="quantised model file (.npz)")
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator", help="simulator")
    p.add_argument("-n", "--images", type=int, default=10, help="number of test images")
    add_build(p, pe=False, board="optional", board_note=BOARD_CELLS)
    p.add_argument("--per-layer", action="store_true",
                   help="run one stage at a time and compare every layer's output")
    p.add_argument("--build-dir", default="build/sim", help="folder for Verilog and simulator builds")
    add_json(p)

    p = add("build", cmd_build, "build a bitstream and its resource and timing report")
    p.add_argument("--board", choices=BOARDS, default="icebreaker", help="target board")
    add_build(p, board="always")
    p.add_argument("--clock", type=float,
                   help="core clock in MHz (None: the board's; for --top accelerator its build's, "
                        "iCEBreaker 34.5 adder, 34.5 shift, 30 mul, ULX3S 100 adder, 95 shift, "
                        "90 mul; for --top link iCEBreaker 34.5, ULX3S 80; for --top array "
                        "iCEBreaker 48, ULX3S 100)")
    p.add_argument("-o", "--out", help="build folder: new, empty or an earlier build's (None: "
                                        "build/BOARD, where program looks)")
    p.add_argument("--seed", type=seed_list, default="1", metavar="N[,N...]",
                   help="nextpnr's placement seed; with a list (1,2,3), place and route the "
                        "netlist with each in turn until one meets the clock and keep the "
                        "fastest (the others' reports in OUT/seeds/N/)")
    p.add_argument("--router", choices=ROUTERS,
                   help="nextpnr's router (None: its default, router1); router2 routes large, "
                        "full ECP5 arrays that router1 does not finish")
    p.add_argument("--placer", choices=PLACERS,
                   help="nextpnr's placer (None: the board's for the accelerator's PE kind, "
                        "static for adder ones on the ULX3S-45F/85F; otherwise nextpnr's "
                        "default, heap)")
    p.add_argument("--no-bram-outreg", dest="bram_outreg", action="store_false",
                   help="ECP5: leave the registers after block RAMs and multipliers in the "
                        "fabric (by default they move into the block RAMs' output registers, 1 "
                        "ns from clock to data instead of 5.8, and the MULT18X18Ds' own)")
    p.add_argument("--multipliers", choices=("dsp", "luts"), default="dsp",
                   help="map multipliers to DSP blocks or to LUTs (mul PEs)")
    p.add_argument("--late-endpoints", action="store_true",
                   help="have nextpnr time every net (--detailed-timing-report) and list the "
                        "registers and nets whose endpoints miss the clock, the most first")
    p.add_argument("--top", choices=("accelerator", "array", "link"), default="accelerator",
                   help="accelerator: UART, host link and the accelerator core; array: the PE "
                        "array alone behind a two-pin I/O harness (its cost on the board: "
                        "--pe, --rows, --cols, --multipliers); link: the host-link test top "
                        "(UART, framer, scratch memories). Options a top does not use are "
                        "refused")
    p.add_argument("--requant-mode", choices=("shift", "pow2x2", "mul"),
                   help="the accelerator's requantisation mode (None: the shipped models', "
                        "pow2x2 for adder and shift, mul for mul)")
    p.add_argument("-m", "--model", help="build the accelerator that fits this model (sets --pe, "
                   "--requant-mode and the memories)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help="UART baud rate of the accelerator and link tops (the host driver's "
                        "default)")
    add_json(p)
    refuse_unused(p, "top", {
        "array": _ACCELERATOR_OPTIONS + ("baud",),
        "link": ("pe", "rows", "cols", "multipliers") + _ACCELERATOR_OPTIONS})

    p = add("program", cmd_program, "program a built bitstream onto a board")
    p.add_argument("--board", choices=BOARDS, default="icebreaker", help="target board")
    p.add_argument("--bitstream", help="bitstream file (None: build/BOARD/top.bin or top.bit, "
                                       "where addershift build writes without -o)")

    p = add("serve-sim", cmd_serve_sim, "serve the simulated board on a TCP port")
    p.add_argument("-p", "--port", type=int, default=7777, help="TCP port on 127.0.0.1")
    p.add_argument("--simulator", choices=("verilator", "icarus", "amaranth"),
                   default="verilator", help="simulator running the top level")
    p.add_argument("--baud", type=int, default=1_500_000,
                   help="UART baud rate (8 clock cycles per bit keeps the simulation fast)")
    p.add_argument("--clock", type=int, default=12_000_000, help="nominal clock in Hz")
    p.add_argument("--mem-size", type=int, default=4096,
                   help=f"bytes per scratch memory (--link-test; at most {SIM_MEM_MAX})")
    add_build(p, board="optional", board_note=BOARD_CELLS)
    p.add_argument("--requant-mode", choices=("shift", "pow2x2", "mul"),
                   help="the build's requantisation mode (None: the shipped models', pow2x2 for "
                        "adder and shift, mul for mul)")
    p.add_argument("-m", "--model", help="serve the build that fits this model (sets --pe, "
                   "--requant-mode and the memories)")
    p.add_argument("--link-test", action="store_true",
                   help="serve the host-link test top instead of the accelerator")

    p = add("run", cmd_run, "load a model onto a board (or the simulated one) and run inference")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial URL, e.g. /dev/ttyUSB1 or socket://127.0.0.1:7777")
    where.add_argument("--sim", action="store_true", help="start a simulated board for this run")
    p.add_argument("-m", "--model", required=True, help="quantised model file (.npz)")
    p.add_argument("-n", "--images", type=int, default=10, help="number of test images")
    add_build(p, pe=False, note=" (--sim)", board="optional", board_note=BOARD_CELLS)
    p.add_argument("--simulator", choices=("verilator", "icarus", "amaranth"),
                   default="verilator", help="simulator of the board (--sim)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help="serial baud rate (--port; the build's, 115200 unless built otherwise)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help=TIMEOUT_HELP + "; with "
                   "--sim 8 on verilator, 60 on icarus, 120 on amaranth)")
    add_json(p)

    p = add("demo", cmd_demo, "the main job: the most complete flow this version has, end to end")
    p.add_argument("--pe", choices=PE_KINDS, default="adder", help="processing element kind")
    p.add_argument("--board", choices=BOARDS, default="icebreaker", help="board to build for")
    # (Not given: the board's own build for the PE kind, as `build --board` makes it.)
    p.add_argument("-r", "--rows", type=int,
                   help="array rows (default: the board's own build's: 4 on icebreaker, 2 for "
                        "mul; 8 on ulx3s-85f/45f, 4 on ulx3s-25f/12f)")
    p.add_argument("-c", "--cols", type=int,
                   help="array columns (default: the board's own build's: 4 on icebreaker for "
                        "adder, 3 for shift and mul; as --rows on the ULX3S)")
    p.add_argument("--requant-lanes", type=int, metavar="N",
                   help="values the requantiser takes per cycle (default: 1 on icebreaker, "
                        "else --cols)")
    p.add_argument("--requant-pipeline", choices=("deep", "short"),
                   help="the requantiser's pipeline (default: short on icebreaker, else deep)")
    p.add_argument("--writeback-pipeline", choices=("deep", "short"),
                   help="the write-back's pipeline (default: short on icebreaker, else deep)")
    p.add_argument("--read-pipeline", choices=("deep", "short"),
                   help="the host's memory reads (default: short on icebreaker, else deep)")
    p.add_argument("-n", "--images", type=int, default=20, help="test images run on the simulated board")
    p.add_argument("--out", default="build/demo", help="folder for the report and plots")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM (a `kill`, a service manager) ends a command as Ctrl-C does: through its cleanups
    # (the simulated board's run folder, a board process), not around them.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _run(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args):
    try:
        if getattr(args, "unused_options", None):
            _refuse_unused(args)
        if getattr(args, "resolve_build", False):
            _resolve_build(args)
        args.func(args)
    except NotBuilt as e:
        print(f"addershift {args.command}: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        print(f"addershift {args.command}: {_with_option_names(str(e), args)}", file=sys.stderr)
        return 1
    except ModelFileError as e:
        print(f"addershift {args.command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # a file that cannot be read or written: its name and the reason
        print(f"addershift {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was started has been stopped; no traceback
        print(f"addershift {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
