"""Import checkpoints trained elsewhere (AdderNet, DeepShift-Q, DeepShift-PS, plain CNNs) and our own
float checkpoints, as a :class:`train.FloatNet` ready for :func:`quantize.quantize_net`.

A PyTorch ``state_dict`` names tensors but not the network around them, so an import takes an
*architecture*: a spec (see :func:`train.digits_spec`) whose layer names are the checkpoint's module
names. The reference codes' parameter names are read as they are:

- AdderNet (huawei-noah/AdderNet ``adder2d``): ``<layer>.adder`` (O, C, K, K), optional ``<layer>.b``;
  a linear layer may be a 1x1 ``adder2d`` (``(O, I, 1, 1)``).
- DeepShift-Q (``Conv2dShiftQ``, ``LinearShiftQ``): ``<layer>.weight``, optional ``<layer>.bias``;
  weights are rounded to signed powers of two in the log domain, as the reference does.
- DeepShift-PS (``Conv2dShift``, ``LinearShift``): ``<layer>.shift`` and ``<layer>.sign``;
  ``round(sign)`` may be 0.
- plain convolution / linear (``mul``): ``<layer>.weight``, optional ``<layer>.bias``.
- BatchNorm: ``<bn>.weight``, ``<bn>.bias``, ``<bn>.running_mean``, ``<bn>.running_var``
  (``num_batches_tracked`` is ignored).

Wrappers such as ``{"state_dict": ...}`` and DataParallel's ``module.`` prefix are accepted. Every
problem raises :class:`CheckpointError` naming the tensor. This module imports torch.
"""

from __future__ import annotations

import json
import pathlib

import torch

from .files import write_atomically
from .model import layer_name_problem
from .train import FloatNet, PE_KINDS, digits_spec, spec_shapes

__all__ = ["CheckpointError", "FORMATS", "FLOAT_FORMAT", "load_state_dict", "detect_format",
           "import_state_dict", "load_arch", "save_float_checkpoint", "load_float_checkpoint",
           "quantize_command", "import_command", "DEFAULT_IMPORT_MODE"]

#: Adder and shift imports default to post-training quantisation with two powers of two per channel:
#: multiplier-free and close to float without fine-tuning (one power of two needs fine-tuning).
DEFAULT_IMPORT_MODE = "pow2x2"

#: Checkpoint formats: the reference codes' layer kinds, plus plain float layers.
FORMATS = ("auto", "addernet", "deepshift-q", "deepshift-ps", "float")
_FORMAT_PE = {"addernet": ("adder", "q"), "deepshift-q": ("shift", "q"), "deepshift-ps": ("shift", "ps"),
              "float": ("mul", "q")}
#: The ``format`` tag of the float checkpoints ``addershift train --save-float`` writes.
FLOAT_FORMAT = "addershift-float"
FLOAT_VERSION = 1
_COMPUTE = ("conv2d", "linear")
#: An architecture's integer fields per layer kind and their least values; ``out`` and a conv's
#: ``kernel`` have no default.
_SPEC_INTS = {"conv2d": {"out": 1, "kernel": 1, "stride": 1, "padding": 0}, "linear": {"out": 1},
              "maxpool2d": {"kernel": 1, "stride": 1}, "relu": {}, "flatten": {}}
_SPEC_REQUIRED = {"conv2d": ("out", "kernel"), "linear": ("out",)}
#: Names a compute layer or BatchNorm cannot take: FloatNet makes each an attribute of itself.
_RESERVED_NAMES = frozenset(dir(FloatNet)) | {"training", "spec", "input_shape", "pe", "variant",
                                              "p_min", "p_max", "out_shape"}
#: The exponent range a model file holds (``model.Layer``'s ``p_min``; ``p_max`` at most 30 above).
_P_LIMIT = 32


class CheckpointError(ValueError):
    """A checkpoint that does not fit: the message names the file or tensor and what is wrong."""


def _unwrap(obj, where):
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{where}: not a state_dict (a dict of named tensors)")
    out = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{where}: key {name!r} is not a tensor name")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {name!r} is a {type(value).__name__}, not a tensor")
        short = name[len("module."):] if name.startswith("module.") else name
        if short in out:
            raise CheckpointError(f"{where}: tensor {short!r} is there twice, with and without "
                                  f"DataParallel's 'module.' prefix")
        out[short] = value
    return out


def _torch_load(path):
    """``torch.load`` without code execution (``weights_only``); every failure is one line."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises many kinds (pickle, zip, runtime) for a bad file
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def load_state_dict(path):
    """Read a PyTorch checkpoint file safely and return its flat state_dict."""
    return _unwrap(_torch_load(path), f"checkpoint {path}")


def detect_format(state_dict, spec):
    """The reference format a state_dict is in, from its first compute layer's tensor names.

    DeepShift-Q weights look exactly like plain float weights, so a checkpoint with ``weight``
    tensors needs the format said explicitly.
    """
    first = next(e for e in spec if e["kind"] in _COMPUTE)["name"]
    if f"{first}.adder" in state_dict:
        return "addernet"
    shift, sign = f"{first}.shift" in state_dict, f"{first}.sign" in state_dict
    if shift and sign:
        return "deepshift-ps"
    if shift or sign:
        missing = f"{first}.sign" if shift else f"{first}.shift"
        raise CheckpointError(f"tensor {missing!r} is missing from the checkpoint (a DeepShift-PS "
                              f"layer has both 'shift' and 'sign')")
    if f"{first}.weight" in state_dict:
        raise CheckpointError(f"tensor {first + '.weight'!r}: DeepShift-Q and plain float weights look "
                              f"alike; say which with --format deepshift-q or --format float")
    raise CheckpointError(f"no tensor {first + '.adder'!r}, {first + '.shift'!r} or {first + '.weight'!r}: "
                          f"the architecture's first layer {first!r} is not in the checkpoint")


def _checked(name, t, where="tensor"):
    """``t`` as the network's float32, if it is a dense floating-point tensor with finite values
    there (a float64 value past 3.4e38 becomes inf in float32) and, for a BatchNorm's
    ``running_var``, no negative one; else a CheckpointError naming it."""
    what = f"{where} {name!r}"
    if t.layout != torch.strided or t.is_meta:
        raise CheckpointError(f"{what}: a {'meta' if t.is_meta else str(t.layout)} tensor, not "
                              f"a dense one with values")
    if not t.is_floating_point():
        raise CheckpointError(f"{what}: dtype {t.dtype} is not floating point")
    t = t.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise CheckpointError(f"{what}: holds NaN or infinite values (in float32)")
    if name.endswith(".running_var") and bool((t < 0).any()):
        raise CheckpointError(f"{what}: holds negative variances")
    return t


def _tensor(sd, used, name, shape=None, *, required=True):
    if name not in sd:
        if required:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        return None
    used.add(name)
    t = sd[name]
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"tensor {name!r}: shape {tuple(t.shape)} does not fit the architecture, "
                              f"which needs {tuple(shape)}")
    return _checked(name, t)


def _weight_names(fmt, name):
    return {"addernet": [f"{name}.adder"], "deepshift-ps": [f"{name}.shift", f"{name}.sign"]}.get(
        fmt, [f"{name}.weight"])


def _exponent_range(sd, spec, fmt):
    """The float model's exponent range: wide enough to hold every weight of the checkpoint (the
    quantiser then picks each layer's hardware window)."""
    lo, hi = None, None            # (exponent, the tensor it is in)
    for e in spec:
        if e["kind"] not in _COMPUTE:
            continue
        name = f"{e['name']}.{'shift' if fmt == 'deepshift-ps' else 'weight'}"
        if name not in sd:
            continue                  # (the import names it)
        t = _checked(name, sd[name])
        if fmt == "deepshift-ps":
            vals = torch.round(t)
        else:
            nz = t.abs()[t != 0]
            vals = torch.round(torch.log2(nz))
        if vals.numel():
            lo = min(lo or (int(vals.min()), name), (int(vals.min()), name))
            hi = max(hi or (int(vals.max()), name), (int(vals.max()), name))
    if lo is None:
        return -7, 0
    p_min = max(lo[0], hi[0] - 30)
    if not -_P_LIMIT <= p_min <= _P_LIMIT:
        exponent, name = hi if p_min > _P_LIMIT else lo
        raise CheckpointError(f"tensor {name!r}: weights of 2**{exponent} need an exponent range "
                              f"that starts at {p_min}, outside the [-{_P_LIMIT}, {_P_LIMIT}] a "
                              f"model file holds")
    return p_min, hi[0]


def import_state_dict(state_dict, *, spec, input_shape, fmt="auto"):
    """A :class:`train.FloatNet` holding ``state_dict``'s weights, checked tensor by tensor."""
    if fmt not in FORMATS:
        raise ValueError(f"Checkpoint format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    sd = dict(state_dict)
    if fmt == "auto":
        fmt = detect_format(sd, spec)
    pe, variant = _FORMAT_PE[fmt]
    spec = [dict(e) for e in spec]
    for e in spec:   # a layer has a bias exactly when the checkpoint holds one
        if e["kind"] in _COMPUTE:
            e["bias"] = f"{e['name']}.{'b' if fmt == 'addernet' else 'bias'}" in sd
    p_min, p_max = _exponent_range(sd, spec, fmt) if pe == "shift" else (-7, 0)
    try:
        net = FloatNet(spec, input_shape, pe=pe, variant=variant, p_min=p_min, p_max=p_max)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"architecture: {e}") from None
    used, target = set(), net.state_dict()
    values = {}
    for e in spec:
        if e["kind"] not in _COMPUTE:
            continue
        name = e["name"]
        for wname in _weight_names(fmt, name):
            key = wname
            want = target[key].shape
            t = _tensor(sd, used, wname)
            if e["kind"] == "linear" and t.dim() == 4 and t.shape[2:] == (1, 1):
                t = t.reshape(t.shape[0], t.shape[1])      # a 1x1 adder2d used as a linear layer
            if tuple(t.shape) != tuple(want):
                raise CheckpointError(f"tensor {wname!r}: shape {tuple(t.shape)} does not fit the "
                                      f"architecture, which needs {tuple(want)}")
            values[key] = t
        bias_key = f"{name}.{'b' if fmt == 'addernet' else 'bias'}"
        if e["bias"]:
            values[bias_key] = _tensor(sd, used, bias_key, target[bias_key].shape)
        if e.get("bn"):
            bn = e["bn"]
            for field in ("weight", "bias", "running_mean", "running_var"):
                values[f"{bn}.{field}"] = _tensor(sd, used, f"{bn}.{field}", target[f"{bn}.{field}"].shape)
            if f"{bn}.num_batches_tracked" in sd:
                used.add(f"{bn}.num_batches_tracked")
    extra = sorted(set(sd) - used)
    if extra:
        raise CheckpointError(f"tensor {extra[0]!r} belongs to no layer of the architecture "
                              f"({len(extra)} unused tensors; is the architecture right?)")
    for key, t in values.items():
        target[key] = t
    net.load_state_dict(target)
    net.eval()
    return net


def _check_spec(spec, where):
    """An architecture's layer list: each layer a dict with a known kind, a name and its kind's
    fields, so that building the network cannot fail on a bare KeyError or TypeError."""
    if not isinstance(spec, list) or not spec:
        raise CheckpointError(f"{where}: needs a non-empty list of layers, not "
                              f"{type(spec).__name__}")
    taken = {}                      # name -> what already has it
    for i, e in enumerate(spec):
        if not isinstance(e, dict) or "kind" not in e or "name" not in e:
            raise CheckpointError(f"{where}: layer {i} needs 'kind' and 'name'")
        layer = f"{where}: layer {i} ({e['name']!r})"
        # (checked now: the quantised model refuses such a name only after quantisation)
        problem = layer_name_problem(e["name"])
        if problem:
            raise CheckpointError(f"{layer}: 'name' {problem}")
        bn = e.get("bn")
        if bn not in (None, False) and layer_name_problem(bn):
            raise CheckpointError(f"{layer}: 'bn' (the BatchNorm's name) "
                                  f"{layer_name_problem(bn)}")
        if not isinstance(e.get("bias", False), bool):
            raise CheckpointError(f"{layer}: 'bias' must be true or false, not {e['bias']!r}")
        if e["kind"] not in _SPEC_INTS:
            raise CheckpointError(f"{layer}: unknown kind {e['kind']!r} "
                                  f"(known: {', '.join(_SPEC_INTS)})")
        # A key this version does not know (a conv's dilation, a misspelt padding) would be
        # ignored, and the network imported would not be the one trained.
        known = {"kind", "name", *_SPEC_INTS[e["kind"]]} | (
            {"bn", "bias"} if e["kind"] in _COMPUTE else set())
        unknown = sorted(set(e) - known)
        if unknown:
            raise CheckpointError(f"{layer}: unknown field {unknown[0]!r} for a {e['kind']} layer "
                                  f"(known: {', '.join(sorted(known))})")
        # Compute layers and BatchNorms are attributes of the network: unique, and not one of
        # its own attributes ("forward", "eval", ...).
        names = [("'name'", e["name"])] + ([("'bn'", bn)] if bn and e["kind"] in _COMPUTE else [])
        for field, name in names:
            if name in taken:
                raise CheckpointError(f"{layer}: {field} {name!r} is taken by {taken[name]}")
            if e["kind"] in _COMPUTE and name in _RESERVED_NAMES:
                raise CheckpointError(f"{layer}: {field} {name!r} is a name the network uses "
                                      f"itself; rename the layer")
            taken[name] = f"layer {i}" + (" (its BatchNorm)" if field == "'bn'" else "")
        for key in _SPEC_REQUIRED.get(e["kind"], ()):
            if key not in e:
                raise CheckpointError(f"{layer}: needs {key!r} (a {e['kind']} layer)")
        for key, lo in _SPEC_INTS[e["kind"]].items():
            v = e.get(key, lo)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise CheckpointError(f"{layer}: {key!r} must be an integer >= {lo}, not {v!r}")
    if not any(e["kind"] in _COMPUTE for e in spec):
        raise CheckpointError(f"{where}: has no conv2d or linear layer: nothing to import")


def load_arch(arch, *, input_shape=None, classes=10):
    """``"digits"`` (our default topology and names) or a JSON file
    ``{"input_shape": [C, H, W], "layers": [...spec...]}``: returns ``(spec, input_shape)``."""
    if arch == "digits":
        return digits_spec(classes=classes), tuple(input_shape or (1, 8, 8))
    path = pathlib.Path(arch)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"architecture {arch}: no such file (give 'digits' or a JSON file)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"architecture {arch}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise CheckpointError(f"architecture {arch}: needs an object with a 'layers' list")
    _check_spec(doc["layers"], f"architecture {arch}")
    shape = doc.get("input_shape", input_shape)
    if shape is None:
        raise CheckpointError(f"architecture {arch}: needs 'input_shape'")
    if not _positive_ints(shape):
        raise CheckpointError(f"architecture {arch}: 'input_shape' must be a list of positive "
                              f"integers, not {shape!r}")
    try:        # each layer takes its input's shape: refused now, before a checkpoint is read
        spec_shapes(doc["layers"], shape)
    except ValueError as e:
        raise CheckpointError(f"architecture {arch}: {e}") from None
    return doc["layers"], tuple(shape)


def _positive_ints(shape):
    return (isinstance(shape, (list, tuple)) and len(shape) > 0
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape))


def save_float_checkpoint(net, path, *, dataset=""):
    """Our own float checkpoint (``addershift train --save-float``): the state_dict plus what
    rebuilds the network, readable with ``torch.load(weights_only=True)``."""
    obj = {"format": FLOAT_FORMAT, "version": FLOAT_VERSION, "pe": net.pe,
           "variant": net.variant, "p_min": net.p_min, "p_max": net.p_max, "spec": net.spec,
           "input_shape": list(net.input_shape), "dataset": str(dataset),
           "state_dict": net.state_dict()}
    write_atomically(path, lambda f: torch.save(obj, f))


def load_float_checkpoint(path):
    """A :class:`train.FloatNet` from :func:`save_float_checkpoint`; returns ``(net, meta)``."""
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FLOAT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an addershift float checkpoint (format "
                              f"{FLOAT_FORMAT!r}); use 'addershift import' for other checkpoints")
    if obj.get("version") != FLOAT_VERSION or isinstance(obj.get("version"), bool):
        raise CheckpointError(f"checkpoint {path}: unknown version {obj.get('version')!r} (this "
                              f"addershift reads version {FLOAT_VERSION})")
    if obj.get("pe") not in PE_KINDS:
        raise CheckpointError(f"checkpoint {path}: unknown PE kind {obj.get('pe')!r}")
    p_min, p_max = obj.get("p_min", -7), obj.get("p_max", 0)
    if (any(isinstance(p, bool) or not isinstance(p, int) for p in (p_min, p_max))
            or not -_P_LIMIT <= p_min <= p_max <= p_min + 30 or p_min > _P_LIMIT):
        raise CheckpointError(f"checkpoint {path}: the exponent range p_min {p_min!r}, p_max "
                              f"{p_max!r} must be integers with -{_P_LIMIT} <= p_min <= "
                              f"{_P_LIMIT} and p_min <= p_max <= p_min + 30")
    if not isinstance(obj.get("dataset", ""), str):
        raise CheckpointError(f"checkpoint {path} field 'dataset': must be a data set's name, "
                              f"not {obj['dataset']!r}")
    _check_spec(obj.get("spec"), f"checkpoint {path} field 'spec'")
    shape = obj.get("input_shape")
    if not _positive_ints(shape):
        raise CheckpointError(f"checkpoint {path} field 'input_shape': must be a list of positive "
                              f"integers, not {shape!r}")
    state = obj.get("state_dict")
    if (not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values())
            or not all(isinstance(name, str) for name in state)):
        raise CheckpointError(f"checkpoint {path} field 'state_dict': must be a dict of tensors "
                              f"by name")
    # The checks an import makes (load_state_dict would cast an int64 weight or a float64 value
    # past float32's range, inf there, silently); BatchNorm's batch count is an integer.
    state = {name: t if name.endswith(".num_batches_tracked") else
             _checked(name, t, f"checkpoint {path}: tensor") for name, t in state.items()}
    try:
        net = FloatNet(obj["spec"], shape, pe=obj["pe"], variant=obj.get("variant", "q"),
                       p_min=p_min, p_max=p_max)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        # torch's first line is only "Error(s) in loading state_dict": the lines after it say
        # which tensors are missing, unexpected or of another shape.
        lines = [line.strip().rstrip(".") for line in str(e).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
        raise CheckpointError(f"checkpoint {path}: its weights do not fit its architecture "
                              f"({detail or e})") from None
    net.eval()
    return net, {k: v for k, v in obj.items() if k != "state_dict"}


def _config(pe, *, mode, qat_epochs, seed, x_bits, default_mode=None):
    from .train import default_config
    overrides = {"seed": seed, "x_bits": x_bits}
    if qat_epochs is not None:
        overrides["qat_epochs"] = qat_epochs
    return default_config(pe, mode=mode or default_mode, **overrides)


def quantize_command(*, checkpoint, output, dataset=None, mode=None, qat_epochs=None, seed=0,
                     x_bits=8, log=None):
    """``addershift quantize``: our float checkpoint -> calibrated, fine-tuned model file, on
    ``dataset`` (default: the one the checkpoint records, else digits)."""
    import time
    from .data import load_dataset
    from .quantize import quantize_and_save
    from .train import set_determinism
    start, start_cpu = time.perf_counter(), time.process_time()
    set_determinism(seed)
    net, meta = load_float_checkpoint(checkpoint)
    # Calibrated and measured on what it was trained on, unless told otherwise.
    dataset = dataset or meta.get("dataset") or "digits"
    data = load_dataset(dataset)
    if tuple(data.input_shape) != tuple(net.input_shape):
        raise CheckpointError(f"checkpoint {checkpoint}: trained on {tuple(net.input_shape)} inputs, "
                              f"data set {dataset!r} has {tuple(data.input_shape)}")
    cfg = _config(net.pe, mode=mode, qat_epochs=qat_epochs, seed=seed, x_bits=x_bits)
    report = quantize_and_save(net, data, cfg, output, log=log)
    report.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - start_cpu,
                  checkpoint=str(checkpoint))
    return report


def import_command(*, checkpoint, output, fmt="auto", arch="digits", dataset="digits", mode=None,
                   qat_epochs=0, seed=0, x_bits=8, log=None):
    """``addershift import``: a reference checkpoint -> model file (post-training quantisation by
    default; ``qat_epochs`` fine-tunes on the data set's training split)."""
    import time
    from .data import load_dataset
    from .quantize import quantize_and_save
    from .train import set_determinism
    start, start_cpu = time.perf_counter(), time.process_time()
    set_determinism(seed)
    data = load_dataset(dataset)
    spec, input_shape = load_arch(arch, input_shape=data.input_shape, classes=data.classes)
    if tuple(input_shape) != tuple(data.input_shape):
        raise CheckpointError(f"architecture {arch}: input shape {tuple(input_shape)} does not match "
                              f"data set {dataset!r} ({tuple(data.input_shape)})")
    net = import_state_dict(load_state_dict(checkpoint), spec=spec, input_shape=input_shape, fmt=fmt)
    cfg = _config(net.pe, mode=mode, qat_epochs=qat_epochs, seed=seed, x_bits=x_bits,
                  default_mode=DEFAULT_IMPORT_MODE if net.pe != "mul" else None)
    report = quantize_and_save(net, data, cfg, output, log=log)
    report.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - start_cpu,
                  checkpoint=str(checkpoint), format=fmt)
    return report
