"""The quantised model (``QModel``) and its file format.

A model file is a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``) holding:

- ``header``: a JSON string: ``{"format": "addershift-qmodel", "version": 1, "input": {...},
  "layers": [...]}``. Each layer names its kind, its shapes and widths, and for conv2d/linear its
  operation and requantisation mode.
- one array per parameter, named ``<layer name>.<field>``: ``weight`` (adder, mul) or ``sign`` and
  ``exponent`` (shift), ``bias`` and the requantisation fields (``shift``; ``sign1``, ``shift1``,
  ``sign2``, ``shift2``; ``multiplier``).

:func:`load_model` checks everything (version, header fields known and no others, arrays present
and no others, dtypes, shapes, value ranges, channel counts from layer to layer) and raises
:class:`ModelFileError` naming the layer and field. ``docs/numerics.md`` describes the meaning of
every field.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .files import write_atomically

from .numerics import (BIAS_BITS, MULTIPLIER_BITS, SHIFT_MAX, Op, RequantMode, acc_range,
                       int_range, requant_multiplier, signed_width)

__all__ = [
    "FORMAT", "VERSION", "ModelFileError", "Requant", "Conv2d", "Linear", "ReLU", "MaxPool2d",
    "GlobalAvgPool", "Flatten", "QModel", "load_model", "save_model", "layer_name_problem",
]

FORMAT = "addershift-qmodel"
VERSION = 1

_REQUANT_FIELDS = {
    RequantMode.SHIFT: ("shift",),
    RequantMode.POW2X2: ("sign1", "shift1", "sign2", "shift2"),
    RequantMode.MUL: ("multiplier", "shift"),
}
_WEIGHT_FIELDS = {Op.ADDER: ("weight",), Op.SHIFT: ("sign", "exponent"), Op.MUL: ("weight",)}


class ModelFileError(ValueError):
    """A model (file) that breaks the format: the message names the layer and the field."""


def _fail(where, msg):
    raise ModelFileError(f"{where}: {msg}")


class _InputMismatch(ModelFileError):
    """A layer does not fit the shape that reaches it: ``Model.validate`` adds the shapes before
    it, since the cause may be a layer earlier on (a padding or stride that changed them)."""


def _fail_input(where, msg):
    raise _InputMismatch(f"{where}: {msg}")


def _dims(shape):
    return "x".join(str(d) for d in shape)


def _dtype_for(bits):
    return np.dtype(np.int8) if bits <= 8 else np.dtype(np.int16) if bits <= 16 else np.dtype(np.int32)


def _check_array(where, a, *, dtype, shape, lo, hi):
    if not isinstance(a, np.ndarray):
        _fail(where, f"expected an array, got {type(a).__name__}")
    if a.dtype != dtype:
        _fail(where, f"dtype must be {dtype}, not {a.dtype}")
    if a.shape != tuple(shape):
        _fail(where, f"shape must be {tuple(shape)}, not {a.shape}")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        _fail(where, f"value {int(bad)} is out of range [{lo}, {hi}]")


def _check_scale(where, value, step):
    """A scale (the real value of one ``step``): a positive finite number; returned as a float."""
    problem = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problem = repr(value)
    else:
        try:
            value = float(value)
        except OverflowError:
            problem = "an integer too large for a float"
        else:
            if not 0 < value < float("inf"):
                problem = repr(value)
    if problem:
        _fail(where, f"must be a positive finite number (the real value of one {step}), not {problem}")
    return value


def _check_int(where, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        _fail(where, f"must be an integer {rng}, not {value!r}")
    return value


@dataclass
class Requant:
    """Per-output-channel requantisation: ``saturate(round_shift((acc + bias) * M, k), out_bits)``.

    ``params`` holds the mode's fields (see :func:`numerics.requant_multiplier`), each an array with
    one entry per output channel.
    """
    mode: RequantMode
    bias: np.ndarray
    params: dict
    out_bits: int = 8

    def arrays(self):
        return {"bias": self.bias, **self.params}

    def validate(self, where, channels):
        try:
            self.mode = RequantMode(self.mode)
        except ValueError:
            _fail(f"{where} field 'requant.mode'", f"unknown requantisation mode {self.mode!r} "
                  f"(known: {', '.join(m.value for m in RequantMode)})")
        _check_int(f"{where} field 'requant.out_bits'", self.out_bits, 2, 16)
        _check_array(f"{where} field 'bias'", self.bias, dtype=np.dtype(np.int32), shape=(channels,),
                     lo=int_range(BIAS_BITS)[0], hi=int_range(BIAS_BITS)[1])
        expected = _REQUANT_FIELDS[self.mode]
        for name in set(self.params) - set(expected):
            _fail(f"{where} field {name!r}", f"is not a field of requantisation mode {self.mode.value!r}")
        for name in expected:
            if name not in self.params:
                _fail(f"{where} field {name!r}", f"is missing (requantisation mode {self.mode.value!r})")
            if name.startswith("shift"):
                lo, hi, dt = 0, SHIFT_MAX, np.int8
            elif name.startswith("sign"):
                lo, hi, dt = -1, 1, np.int8
            else:
                (lo, hi), dt = int_range(MULTIPLIER_BITS), np.int32
            _check_array(f"{where} field {name!r}", self.params[name], dtype=np.dtype(dt),
                         shape=(channels,), lo=lo, hi=hi)


@dataclass
class _Compute:
    """Shared by conv2d and linear: weights of one operation kind plus requantisation."""
    name: str
    op: Op
    weights: dict
    requant: Requant
    w_bits: int = 8            # adder and mul weights (signed)
    p_min: int = 0             # shift weights: exponent range
    p_max: int = 0
    out_scale: float = 1.0     # real value of one output step (informative, for dequantising)

    @property
    def out_channels(self):
        return next(iter(self.weights.values())).shape[0]

    def _weight_shape(self, in_shape):
        raise NotImplementedError

    def reduction_length(self, in_shape):
        """Number of terms each output sums: the accumulator width follows from it."""
        return int(np.prod(self._weight_shape(in_shape)[1:]))

    def widths(self, x_bits):
        """Keyword arguments of :func:`numerics.acc_width` for this layer."""
        if self.op is Op.SHIFT:
            return {"x_bits": x_bits, "p_min": self.p_min, "p_max": self.p_max}
        return {"x_bits": x_bits, "w_bits": self.w_bits}

    def validate(self, where, in_shape, x_bits):
        try:
            self.op = Op(self.op)
        except ValueError:
            _fail(f"{where} field 'op'", f"unknown operation {self.op!r} "
                  f"(known: {', '.join(o.value for o in Op)})")
        self.out_scale = _check_scale(f"{where} field 'out_scale'", self.out_scale, "output step")
        shape = self._weight_shape(in_shape)
        if self.op is Op.SHIFT:
            _check_int(f"{where} field 'p_min'", self.p_min, -32, 32)
            _check_int(f"{where} field 'p_max'", self.p_max, self.p_min, self.p_min + 30)
        else:
            _check_int(f"{where} field 'w_bits'", self.w_bits, 2, 16)
            if self.op is Op.ADDER and self.w_bits != x_bits:
                _fail(f"{where} field 'w_bits'", f"adder weights share the activations' format: "
                      f"must be {x_bits}, not {self.w_bits}")
        expected = _WEIGHT_FIELDS[self.op]
        for name in set(self.weights) - set(expected):
            _fail(f"{where} field {name!r}", f"is not a weight field of operation {self.op.value!r}")
        for name in expected:
            if name not in self.weights:
                _fail(f"{where} field {name!r}", f"is missing (operation {self.op.value!r})")
            a = self.weights[name]
            if isinstance(a, np.ndarray) and a.ndim == len(shape) and a.shape[1:] != shape[1:]:
                _fail_input(f"{where} field {name!r}", f"shape {a.shape} does not fit the input "
                            f"{tuple(in_shape)}: expected {(a.shape[0],) + tuple(shape[1:])}")
            if not isinstance(a, np.ndarray) or a.ndim != len(shape):
                _fail(f"{where} field {name!r}", f"must be an array of shape {('O',) + tuple(shape[1:])}")
            if name == "weight":
                dtype, (lo, hi) = _dtype_for(self.w_bits), int_range(self.w_bits)
            elif name == "sign":
                dtype, lo, hi = np.dtype(np.int8), -1, 1
            else:
                dtype, lo, hi = np.dtype(np.int8), self.p_min, self.p_max
            _check_array(f"{where} field {name!r}", a, dtype=dtype,
                         shape=(self.out_channels,) + tuple(shape[1:]), lo=lo, hi=hi)
        self.requant.validate(where, self.out_channels)
        # The requantiser's product must stay exact in int64 (and in the hardware's datapath).
        a_lo, a_hi = acc_range(self.op, self.reduction_length(in_shape), **self.widths(x_bits))
        b_lo, b_hi = int_range(BIAS_BITS)
        m, _ = requant_multiplier(self.requant.mode, self.requant.params)
        m_abs = int(np.abs(m).max()) if m.size else 0
        if signed_width(a_lo + b_lo, a_hi + b_hi) + signed_width(-m_abs, m_abs) > 63:
            _fail(f"{where} field 'requant'", "its multiplier is too large for an exact product")


@dataclass
class Conv2d(_Compute):
    kind = "conv2d"
    kernel: tuple = (3, 3)
    stride: int = 1
    padding: int = 0

    def _weight_shape(self, in_shape):
        return (None, in_shape[0], *self.kernel)

    def out_shape(self, in_shape):
        c, h, w = in_shape
        kh, kw = self.kernel
        return (self.out_channels, (h + 2 * self.padding - kh) // self.stride + 1,
                (w + 2 * self.padding - kw) // self.stride + 1)

    def validate(self, where, in_shape, x_bits):
        if len(in_shape) != 3:
            _fail_input(where, f"conv2d needs a (C, H, W) input, got shape {tuple(in_shape)}")
        if (not isinstance(self.kernel, (tuple, list)) or len(self.kernel) != 2
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.kernel)):
            _fail(f"{where} field 'kernel'", f"must be two positive integers, not {self.kernel!r}")
        self.kernel = tuple(self.kernel)
        _check_int(f"{where} field 'stride'", self.stride, 1)
        _check_int(f"{where} field 'padding'", self.padding, 0)
        _, h, w = in_shape
        if h + 2 * self.padding < self.kernel[0] or w + 2 * self.padding < self.kernel[1]:
            _fail_input(f"{where} field 'kernel'", f"{self.kernel} is larger than the padded "
                        f"input {h + 2 * self.padding}x{w + 2 * self.padding}")
        super().validate(where, in_shape, x_bits)

    def meta(self):
        return {"kernel": list(self.kernel), "stride": self.stride, "padding": self.padding}


@dataclass
class Linear(_Compute):
    kind = "linear"

    def _weight_shape(self, in_shape):
        return (None, in_shape[0])

    def out_shape(self, in_shape):
        return (self.out_channels,)

    def validate(self, where, in_shape, x_bits):
        if len(in_shape) != 1:
            _fail_input(where, f"linear needs a flat input, got shape {tuple(in_shape)} (add a "
                        f"flatten layer)")
        super().validate(where, in_shape, x_bits)

    def meta(self):
        return {}


@dataclass
class ReLU:
    name: str
    kind = "relu"

    def out_shape(self, in_shape):
        return tuple(in_shape)

    def validate(self, where, in_shape, x_bits):
        pass

    def meta(self):
        return {}


@dataclass
class MaxPool2d:
    name: str
    kernel: int = 2
    stride: int = 2
    kind = "maxpool2d"

    def out_shape(self, in_shape):
        c, h, w = in_shape
        return (c, (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1)

    def validate(self, where, in_shape, x_bits):
        if len(in_shape) != 3:
            _fail_input(where, f"maxpool2d needs a (C, H, W) input, got shape {tuple(in_shape)}")
        _check_int(f"{where} field 'kernel'", self.kernel, 1)
        if self.kernel > min(in_shape[1:]):
            _fail_input(f"{where} field 'kernel'", f"{self.kernel} is larger than the input "
                        f"{_dims(in_shape)}")
        _check_int(f"{where} field 'stride'", self.stride, 1)

    def meta(self):
        return {"kernel": self.kernel, "stride": self.stride}


@dataclass
class GlobalAvgPool:
    name: str
    shift: int = 0
    kind = "globalavgpool"

    def out_shape(self, in_shape):
        return (in_shape[0],)

    def validate(self, where, in_shape, x_bits):
        if len(in_shape) != 3:
            _fail_input(where, f"globalavgpool needs a (C, H, W) input, got shape {tuple(in_shape)}")
        _check_int(f"{where} field 'shift'", self.shift, 0, SHIFT_MAX)

    def meta(self):
        return {"shift": self.shift}


@dataclass
class Flatten:
    name: str
    kind = "flatten"

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def validate(self, where, in_shape, x_bits):
        pass

    def meta(self):
        return {}


_KINDS = {cls.kind: cls for cls in (Conv2d, Linear, ReLU, MaxPool2d, GlobalAvgPool, Flatten)}


def layer_name_problem(name):
    """Why ``name`` cannot name a layer, or None: names become array keys (``<name>.<field>``)
    and file names (``predict --trace``)."""
    if not isinstance(name, str) or not name or set(name) & set("./\\\0"):
        return (f"must be a non-empty string without '.', '/', '\\' or NUL (names become file "
                f"names), not {name!r}")
    return None


@dataclass
class QModel:
    """A quantised network: integer parameters plus the metadata that gives them meaning.

    ``input_shape`` is (C, H, W) of one image; activations everywhere are signed ``x_bits``-bit
    integers; ``input_scale`` is the real value of one input step.
    """
    input_shape: tuple
    layers: list
    x_bits: int = 8
    input_scale: float = 1.0
    labels: list = field(default_factory=list)

    def validate(self):
        """Check every layer against its input; return the per-layer output shapes."""
        if (not isinstance(self.input_shape, (tuple, list)) or len(self.input_shape) not in (1, 3)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                           for d in self.input_shape)):
            _fail("input field 'shape'", f"must be (C, H, W) or (features,) of positive integers, "
                  f"not {self.input_shape!r}")
        self.input_shape = tuple(self.input_shape)
        _check_int("input field 'bits'", self.x_bits, 2, 16)
        self.input_scale = _check_scale("input field 'scale'", self.input_scale, "input step")
        if not self.layers:
            _fail("model", "has no layers")
        shapes, shape, names = [], self.input_shape, set()
        last_compute = max((i for i, layer in enumerate(self.layers)
                            if isinstance(layer, _Compute)), default=-1)
        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({getattr(layer, 'name', '?')!r})"
            if type(layer) not in _KINDS.values():
                _fail(where, f"unknown layer type {type(layer).__name__}")
            problem = layer_name_problem(layer.name)
            if problem:
                _fail(where + " field 'name'", problem)
            if layer.name in names:
                _fail(where + " field 'name'", f"{layer.name!r} is used by another layer")
            names.add(layer.name)
            try:
                layer.validate(where, shape, self.x_bits)
            except _InputMismatch as e:
                if i == 0:
                    raise
                flow = " -> ".join([f"input {_dims(self.input_shape)}"] + [
                    f"{earlier.name} {_dims(s)}" for earlier, s in zip(self.layers, shapes)])
                raise ModelFileError(f"{e} (the shapes before it: {flow})") from None
            # The next conv2d/linear layer's accumulator range assumes x_bits-bit inputs: only
            # the last one may requantise wider (its outputs are the model's, e.g. logits).
            out_bits = layer.requant.out_bits if isinstance(layer, _Compute) else None
            if out_bits is not None and i < last_compute and out_bits > self.x_bits:
                _fail(where + " field 'requant.out_bits'", f"{out_bits} is wider than the model's "
                      f"{self.x_bits}-bit activations; only the last conv2d/linear layer may "
                      f"requantise to more bits")
            shape = layer.out_shape(shape)
            if min(shape) < 1:
                _fail(where, f"output shape {shape} is empty")
            shapes.append(tuple(shape))
        outputs = int(np.prod(shape))
        if self.labels and len(self.labels) != outputs:
            _fail("header field 'labels'", f"names {len(self.labels)} classes, but the model has "
                  f"{outputs} outputs")
        return shapes

    def compute_layers(self):
        return [layer for layer in self.layers if isinstance(layer, _Compute)]

    def shapes(self):
        return self.validate()


def _layer_header(layer):
    head = {"name": layer.name, "kind": layer.kind, **layer.meta()}
    if isinstance(layer, _Compute):
        head["op"] = layer.op.value
        if layer.op is Op.SHIFT:
            head.update(p_min=layer.p_min, p_max=layer.p_max)
        else:
            head["w_bits"] = layer.w_bits
        head["out_channels"] = layer.out_channels
        head["requant"] = {"mode": RequantMode(layer.requant.mode).value,
                           "out_bits": layer.requant.out_bits}
        head["out_scale"] = float(layer.out_scale)
    return head


def save_model(model, path):
    """Validate ``model`` and write it to ``path`` (a compressed ``.npz``)."""
    shapes = model.validate()
    header = {
        "format": FORMAT, "version": VERSION,
        "input": {"shape": list(model.input_shape), "bits": model.x_bits,
                  "scale": float(model.input_scale)},
        "labels": list(model.labels),
        "layers": [dict(_layer_header(layer), out_shape=list(s)) for layer, s in zip(model.layers, shapes)],
    }
    arrays = {"header": np.array(json.dumps(header))}
    for layer in model.compute_layers():
        for name, a in {**layer.weights, **layer.requant.arrays()}.items():
            arrays[f"{layer.name}.{name}"] = a
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays))


# The header fields the loader knows: what save_model writes (out_shape, out_channels, out_scale,
# labels and input.scale may be left out). Any other field is refused: a file that means something
# else (a pool with padding, a grouped convolution) must not compute another network.
_HEADER_FIELDS = ("format", "version", "input", "labels", "layers")
_INPUT_FIELDS = ("shape", "bits", "scale")
_REQUANT_HEADER_FIELDS = ("mode", "out_bits")
_LAYER_FIELDS = {"conv2d": ("kernel", "stride", "padding"), "linear": (), "relu": (),
                 "maxpool2d": ("kernel", "stride"), "globalavgpool": ("shift",), "flatten": ()}
_COMPUTE_FIELDS = ("op", "out_channels", "requant", "out_scale")
_OP_FIELDS = {Op.ADDER: ("w_bits",), Op.SHIFT: ("p_min", "p_max"), Op.MUL: ("w_bits",)}


def _layer_fields(kind, op=None):
    fields = ("name", "kind", "out_shape") + _LAYER_FIELDS[kind]
    if op is not None:
        fields += _COMPUTE_FIELDS + _OP_FIELDS[op]
    return fields


def _refuse_unknown(where, head, known, what, prefix=""):
    """Refuse the first field of ``head`` not in ``known`` (named ``prefix + key``)."""
    for key in head:
        if key not in known:
            _fail(f"{where} field {prefix + key!r}", f"is not a field of {what} (known: "
                  f"{', '.join(known)})")


def _get(where, head, key, types, default=None, required=True):
    if key not in head:
        if required:
            _fail(f"{where} field {key!r}", "is missing")
        return default
    value = head[key]
    if isinstance(value, bool) or not isinstance(value, types):
        _fail(f"{where} field {key!r}", f"has the wrong type {type(value).__name__}")
    return value


_NPY_MAGIC = b"\x93NUMPY"


def load_model(path):
    """Read and fully validate a model file; raise :class:`ModelFileError` on anything wrong."""
    src = f"model file {path}"
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise ModelFileError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{src}: is a folder, not a file") from None
    except OSError as e:
        raise ModelFileError(f"{src}: cannot be read ({e.strerror or e})") from None
    # np.load would return a bare array for .npy, and try pickle on anything else.
    if magic == _NPY_MAGIC:
        raise ModelFileError(f"{src}: is a single .npy array, not an .npz model file")
    if not magic.startswith(b"PK"):
        raise ModelFileError(f"{src}: not a readable .npz archive (not a zip file, so not an .npz "
                             f"model file)")
    member = None                       # the array being read, for the message
    try:
        # Our own file object: np.load leaves the file it opened open when the zip is bad.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            arrays = {}
            for member in archive.files:
                arrays[member] = archive[member]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError) as e:
        if member is not None and "allow_pickle" in str(e):
            # Not damage: the array holds pickled Python objects, which are never loaded.
            raise ModelFileError(f"{src}: array {member!r} holds Python objects (pickled), not "
                                 f"numbers; a model file's arrays are integers") from None
        if member is not None:
            raise ModelFileError(f"{src}: array {member!r} cannot be read, the file is truncated "
                                 f"or corrupted ({e})") from None
        if isinstance(e, (zipfile.BadZipFile, zlib.error, EOFError)):
            raise ModelFileError(f"{src}: truncated or corrupted data ({e})") from None
        raise ModelFileError(f"{src}: not a readable .npz archive ({e})") from None
    try:
        return _from_arrays(arrays)
    except ModelFileError as e:
        raise ModelFileError(f"{src}: {e}") from None


def _from_arrays(arrays):
    if "header" not in arrays:
        _fail("header", "is missing (not an addershift model file)")
    header_arr = arrays.pop("header")
    # np.load hands back a member that is not an .npy array as raw bytes.
    if not isinstance(header_arr, np.ndarray):
        _fail("header", f"must be a JSON string (a 0-d unicode array), not raw "
              f"{type(header_arr).__name__} (a member that is not an .npy array)")
    if header_arr.dtype.kind != "U" or header_arr.ndim != 0:
        _fail("header", f"must be a JSON string (a 0-d unicode array), not an array of dtype "
              f"{header_arr.dtype} and shape {header_arr.shape}")
    try:
        header = json.loads(str(header_arr))
    except json.JSONDecodeError as e:
        _fail("header", f"is not valid JSON ({e})")
    except RecursionError:
        _fail("header", "is nested too deeply to be a model header")
    except ValueError as e:             # e.g. an integer of more digits than Python converts
        _fail("header", f"cannot be read ({e})")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _fail("header field 'format'", f"must be {FORMAT!r}")
    version = header.get("version")
    if isinstance(version, bool) or version != VERSION:
        _fail("header field 'version'", f"unknown version {version!r} (this addershift reads version {VERSION})")
    _refuse_unknown("header", header, _HEADER_FIELDS, "the header")
    inp = _get("input", header, "input", dict)
    _refuse_unknown("input", inp, _INPUT_FIELDS, "the input")
    layers_head = _get("header", header, "layers", list)
    layers, names = [], set()
    for i, head in enumerate(layers_head):
        if not isinstance(head, dict):
            _fail(f"layer {i}", "must be a JSON object")
        name = _get(f"layer {i}", head, "name", str)
        where = f"layer {i} ({name!r})"
        # Before the arrays are looked up by name: a repeated name would take another's arrays.
        problem = layer_name_problem(name)
        if problem:
            _fail(f"{where} field 'name'", problem)
        if name in names:
            _fail(f"{where} field 'name'", f"{name!r} is used by another layer")
        names.add(name)
        kind = _get(where, head, "kind", str)
        if kind not in _KINDS:
            _fail(f"{where} field 'kind'", f"unknown layer kind {kind!r} (known: {', '.join(_KINDS)})")
        cls = _KINDS[kind]
        if cls in (Conv2d, Linear):
            op = _get(where, head, "op", str)
            try:
                op = Op(op)
            except ValueError:
                _fail(f"{where} field 'op'", f"unknown operation {op!r} (known: {', '.join(o.value for o in Op)})")
            _refuse_unknown(where, head, _layer_fields(kind, op),
                            f"a {kind} layer of operation {op.value!r}")
            rq = _get(where, head, "requant", dict)
            _refuse_unknown(where, rq, _REQUANT_HEADER_FIELDS, "requant", prefix="requant.")
            mode = _get(f"{where} requant", rq, "mode", str)
            try:
                mode = RequantMode(mode)
            except ValueError:
                _fail(f"{where} field 'requant.mode'", f"unknown requantisation mode {mode!r}")
            fields = _WEIGHT_FIELDS[op] + ("bias",) + _REQUANT_FIELDS[mode]
            for f in fields:
                if f"{name}.{f}" not in arrays:
                    _fail(f"{where} field {f!r}", "array is missing from the file")
            weights = {f: arrays.pop(f"{name}.{f}") for f in _WEIGHT_FIELDS[op]}
            # The weights give the layer's output channels: one that disagrees with the header's
            # out_channels is named here, before the bias and requantisation fields are held to it.
            out_channels = _get(where, head, "out_channels", int, required=False)
            for f, a in weights.items():
                if (out_channels is not None and isinstance(a, np.ndarray) and a.ndim
                        and a.shape[0] != out_channels):
                    _fail(f"{where} field {f!r}", f"shape {a.shape} has {a.shape[0]} output "
                          f"channels, but the layer's out_channels is {out_channels}")
            requant = Requant(mode=mode, bias=arrays.pop(f"{name}.bias"),
                              params={f: arrays.pop(f"{name}.{f}") for f in _REQUANT_FIELDS[mode]},
                              out_bits=_get(f"{where} requant", rq, "out_bits", int))
            common = dict(name=name, op=op, weights=weights, requant=requant,
                          out_scale=_get(where, head, "out_scale", (int, float), 1.0, required=False))
            if op is Op.SHIFT:
                common.update(p_min=_get(where, head, "p_min", int), p_max=_get(where, head, "p_max", int))
            else:
                common["w_bits"] = _get(where, head, "w_bits", int)
            if cls is Conv2d:
                layer = Conv2d(**common, kernel=tuple(_get(where, head, "kernel", list)),
                               stride=_get(where, head, "stride", int), padding=_get(where, head, "padding", int))
            else:
                layer = Linear(**common)
        else:
            _refuse_unknown(where, head, _layer_fields(kind), f"a {kind} layer")
            if cls is MaxPool2d:
                layer = MaxPool2d(name, kernel=_get(where, head, "kernel", int),
                                  stride=_get(where, head, "stride", int))
            elif cls is GlobalAvgPool:
                layer = GlobalAvgPool(name, shift=_get(where, head, "shift", int))
            else:
                layer = cls(name)
        layers.append(layer)
    if arrays:
        _fail(f"array {sorted(arrays)[0]!r}", "belongs to no layer (extra array in the file)")
    shape = _get("input", inp, "shape", list)
    labels = _get("header", header, "labels", list, [], required=False)
    if not all(isinstance(label, str) for label in labels):
        _fail("header field 'labels'", "must be a list of strings")
    model = QModel(input_shape=tuple(shape), layers=layers, x_bits=_get("input", inp, "bits", int),
                   input_scale=_get("input", inp, "scale", (int, float), 1.0, required=False),
                   labels=labels)
    shapes = model.validate()
    for i, (head, s) in enumerate(zip(layers_head, shapes)):
        where = f"layer {i} ({head['name']!r})"
        out_shape = _get(where, head, "out_shape", list, required=False)
        if out_shape is not None and out_shape != list(s):
            _fail(f"{where} field 'out_shape'", f"says {out_shape} but the layers give {list(s)}")
        out_channels = _get(where, head, "out_channels", int, required=False)
        if out_channels is not None and out_channels != s[0]:
            _fail(f"{where} field 'out_channels'",
                  f"says {out_channels} but the weights give {s[0]}")
    return model
