"""The compiler: a quantised model and a build configuration -> the program the accelerator runs.

A program is three memory images and a description:

- the **weight image** (region ``weights``): one *descriptor slot* per stage at the start, then every
  stage's weights. A weight word holds ``cols`` weights of one reduction step ``k`` for one group of
  ``cols`` output channels; a stage's words run ``for og: for kh: for kw: for c`` (the order the
  on-chip im2col walks a patch).
- the **parameter image** (region ``params``): per stage, in channel order (padded to whole
  groups of ``cols``), one word per ``lanes`` channels, the requantiser's operand for one transfer:
  each channel's requantisation parameters (``hw.requant.requant_param_layout``: ``bias`` then the
  mode's fields, least significant first), the lowest channel in the lowest bits. The parameter
  feeder reads them in this order, so a stage only needs its first word's address.
- the **input image** of each inference (region ``act0``): the image as words of ``cols`` channels
  of one pixel, word ``(cg, h, w)`` at ``cg * H * W + h * W + w``.

A *stage* is one conv2d or linear layer with what follows it fused in: ReLU (in the requantiser),
max pooling (read-modify-write on the destination buffer, kernel <= stride), global average pooling
(per-lane sums), flatten (free: the next layer reads the same words as a whole-input kernel). Stage
``s`` reads activation buffer ``s % 2`` and writes the other one. ``docs/accelerator.md`` describes
the descriptor fields and the hardware that walks them; :func:`descriptor_fields` is their one
definition, read by the compiler and by ``hw/sequencer.py``.

Everything a build cannot hold is refused with :class:`CompileError` naming the layer, what it
needs, what the build has and which build parameter to change.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import numpy as np

from .model import Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, QModel, ReLU
from .numerics import (BIAS_BITS, Op, int_range, requant_multiplier, round_shift, saturate,
                       signed_width)

__all__ = [
    "CompileError", "REGIONS", "DESCRIPTOR_MAGIC", "DIM_BITS", "descriptor_fields",
    "descriptor_slot_words", "pack_fields", "unpack_fields", "read_descriptor", "Stage", "Program", "compile_model",
    "default_config", "LEAST_DEPTHS", "board_build", "compiled_biases", "bias_width",
    "BIAS_HEADROOM",
    "PROGRAM_MAGIC", "PROGRAM_VERSION", "PERF_COUNTERS", "PERF_STAGES", "WRITE_FIELDS",
]

#: Host-visible memory regions of the accelerator: name -> region number (``protocol.address``).
REGIONS = {"weights": 1, "params": 2, "act0": 3, "act1": 4, "counters": 5}

#: Value of every descriptor's ``magic`` field: a slot that does not hold it stops a run with
#: an error (a run without a program, or past the program's end).
DESCRIPTOR_MAGIC = 0xA5
#: Width of the small dimension fields (heights, widths, kernels, strides, padding): max 255.
DIM_BITS = 8
#: Width of the global-average-pool shift field.
_GAP_SHIFT_BITS = 6

#: Per-stage performance counters (region ``counters``): word ``4 * stage + i`` holds counter ``i``
#: of :data:`PERF_COUNTERS` as it stood when stage ``stage`` finished, counted from the run's start;
#: the first :data:`PERF_STAGES` stages of a run are recorded.
PERF_COUNTERS = ("cycles", "issue", "busy_pe", "stall")
PERF_STAGES = 16

PROGRAM_MAGIC = b"ADSP"
PROGRAM_VERSION = 2  # 2: a parameter word holds one requantiser transfer (`lanes` channels)


class CompileError(ValueError):
    """The model does not fit the build (or uses a layer sequence the accelerator cannot run).

    ``need``: the build parameters that would make room (``{"act_depth": 64}``), where the
    message names them, so that :func:`default_config` can size a build by the same limits."""

    def __init__(self, message, *, need=None):
        super().__init__(message)
        self.need = dict(need or {})


def _bits(n):
    return max(1, (n - 1).bit_length())


def descriptor_fields(config):
    """The layer descriptor: ``(name, bits, signed)`` per field, packed least significant first.

    Field widths follow the build (addresses are as wide as the memories they address); the hardware
    builds its ``StructLayout`` from this list.
    """
    a = config.act_addr_bits
    pe_bits = (config.rows * config.cols).bit_length()
    return [
        ("magic", 8, False),
        ("last", 1, False),       # the program's last stage
        ("relu", 1, False),       # clamp requantised values at 0
        ("pool", 1, False),       # max pooling: read-modify-write the destination
        ("gap", 1, False),        # global average pooling: per-lane sums, one write per group
        # Read side: the reduction over one patch, for kh: for kw: for c.
        ("cin_m1", _bits(config.max_k) + 1, False),
        ("kh_m1", DIM_BITS, False),
        ("kw_m1", DIM_BITS, False),
        ("in_h", DIM_BITS, False),
        ("in_w", DIM_BITS, False),
        ("in_hw", a + 1, False),          # H * W: the stride between channel groups
        ("stride", DIM_BITS, False),
        ("pad", DIM_BITS, False),
        ("row_step", a + 2, False),       # stride * W: base step from one output row to the next
        ("base0", a + 3, True),           # -pad * W - pad: base of output pixel (0, 0)
        ("out_w_m1", DIM_BITS, False),    # OW - 1 (conv output, before pooling)
        ("pixels", config.count_bits, False),    # OH * OW
        ("tiles_m1", config.count_bits, False),  # ceil(pixels / rows) - 1
        ("og_m1", DIM_BITS, False),       # ceil(out channels / cols) - 1
        ("w_base", config.weight_addr_bits, False),
        ("rq_base", config.param_addr_bits, False),
        # Busy PE-cycles per k-step: full tile, last tile (fewer rows), last group (fewer
        # columns), both.
        ("busy_full", pe_bits, False),
        ("busy_rows", pe_bits, False),
        ("busy_cols", pe_bits, False),
        ("busy_both", pe_bits, False),
        # Write side: conv output pixel (oh, ow) -> pooled (ph, pw) = (oh // s, ow // s) when
        # oh % s < k and ow % s < k (no pooling: k = s = 1).
        ("pool_k", DIM_BITS, False),
        ("pool_s", DIM_BITS, False),
        ("pool_w", DIM_BITS, False),      # PW: windows per row (later pixels are dropped)
        ("pool_h", DIM_BITS, False),      # PH
        ("out_hw", a + 1, False),         # PH * PW (1 with gap): stride between output groups
        ("gap_shift", _GAP_SHIFT_BITS, False),
    ]


#: The fields the write side (requantisation parameter feeder and write-back) reads while it runs.
#: The sequencer keeps a copy of them for the stage being written while it loads the next stage's
#: descriptor. (``rq_base`` is read only at the write side's start, when the sequencer's descriptor
#: still holds that stage: no copy.)
WRITE_FIELDS = ("relu", "pool", "gap", "out_w_m1", "pixels", "og_m1",
                "pool_k", "pool_s", "pool_w", "pool_h", "out_hw", "gap_shift")


def _fields_bits(config):
    return sum(bits for _, bits, _ in descriptor_fields(config))


def descriptor_slot_words(config):
    """Weight words per descriptor slot: a power of two, so that slot ``s`` starts at word
    ``s << log2(slot)``."""
    words = math.ceil(_fields_bits(config) / config.weight_word_bits)
    return 1 << (words - 1).bit_length()


def pack_fields(fields, values):
    """Pack ``values`` (a dict) by ``fields`` (least significant first) into one integer."""
    word, pos = 0, 0
    for name, bits, is_signed in fields:
        v = int(values[name])
        lo, hi = int_range(bits) if is_signed else (0, (1 << bits) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"Descriptor field {name} = {v} does not fit {bits} bits")
        word |= (v & ((1 << bits) - 1)) << pos
        pos += bits
    return word


def unpack_fields(fields, word):
    """The inverse of :func:`pack_fields`."""
    values, pos = {}, 0
    for name, bits, is_signed in fields:
        v = (word >> pos) & ((1 << bits) - 1)
        if is_signed and v >> (bits - 1):
            v -= 1 << bits
        values[name] = v
        pos += bits
    return values


def read_descriptor(config, weight_words, stage):
    """The field values in descriptor slot ``stage`` of a weight memory image (a list of words)."""
    slot = descriptor_slot_words(config)
    word = 0
    for i in range(slot):
        word |= weight_words[stage * slot + i] << (i * config.weight_word_bits)
    return unpack_fields(descriptor_fields(config), word)


def _kib(nbytes):
    return f"{nbytes} B" if nbytes < 1024 else f"{nbytes / 1024:.3g} KiB"


@dataclasses.dataclass
class Stage:
    """One stage of a program: a conv2d/linear layer and the layers fused after it.

    ``layers`` are the fused layers' names; ``trace_index`` is the model layer whose golden output
    this stage's output equals (``golden.trace(model, x)[trace_index]``); ``in_shape`` and
    ``out_shape`` are the stored tensors ``(C, H, W)`` (a flat tensor is ``(F, 1, 1)``).
    """
    index: int
    name: str
    layers: tuple
    trace_index: int
    trace_shape: tuple
    in_shape: tuple
    out_shape: tuple
    kernel: tuple
    stride: int
    padding: int
    conv_shape: tuple     # (OH, OW) before pooling
    relu: bool
    pool: tuple | None    # (kernel, stride) of a fused max pooling
    gap_shift: int | None
    reduction: int        # K = KH * KW * C_in
    tiles: int
    groups: int           # output channel groups of ``cols``
    w_base: int
    w_words: int
    rq_base: int
    rq_words: int
    in_buffer: int
    out_buffer: int
    busy_pe_cycles: int   # useful PE-cycles: pixels * out channels * K
    issue_cycles: int     # k-steps issued: groups * tiles * K
    fields: dict

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d


def _ceil_div(a, b):
    return -(-a // b)


class _Planner:
    """Walks the model's layers and groups them into stages, checking what the build can run."""

    def __init__(self, model, config):
        self.model, self.config = model, config

    def fail(self, msg):
        raise CompileError(msg)

    def plan(self):
        model, config = self.model, self.config
        if not isinstance(model, QModel):
            raise TypeError(f"model must be a QModel, not {type(model).__name__}")
        shapes = model.validate()
        if model.x_bits != config.x_bits:
            self.fail(f"the model's activations are {model.x_bits} bits; this build's are "
                      f"{config.x_bits}: rebuild with x_bits={model.x_bits}")
        shape = tuple(model.input_shape)
        storage = shape if len(shape) == 3 else (shape[0], 1, 1)
        groups = []            # [layer indices] per stage
        current = None
        for i, layer in enumerate(model.layers):
            where = f"layer {layer.name} ({layer.kind})"
            if isinstance(layer, (Conv2d, Linear)):
                current = {"compute": i, "layers": [i], "relu": False, "pool": None, "gap": None,
                           "in_storage": storage}
                groups.append(current)
            elif isinstance(layer, Flatten):
                if current is not None:
                    current["layers"].append(i)
            elif current is None:
                self.fail(f"{where} must follow a conv2d or linear layer on this accelerator "
                          f"(it runs fused into the layer before it)")
            elif isinstance(layer, ReLU):
                if current["gap"] is not None:
                    self.fail(f"{where} after a global average pool is not supported: move it "
                              f"before the pool")
                current["relu"] = True
                current["layers"].append(i)
            elif isinstance(layer, MaxPool2d):
                if current["pool"] is not None or current["gap"] is not None:
                    self.fail(f"{where}: one pooling layer per conv2d layer is supported")
                if not isinstance(model.layers[current["compute"]], Conv2d):
                    self.fail(f"{where} must follow a conv2d layer")
                if layer.kernel > layer.stride:
                    self.fail(f"{where}: overlapping windows (kernel {layer.kernel} > stride "
                              f"{layer.stride}) are not supported; use kernel <= stride")
                current["pool"] = (layer.kernel, layer.stride)
                current["layers"].append(i)
            elif isinstance(layer, GlobalAvgPool):
                if not config.global_pool:
                    self.fail(f"{where}: this build has no global average pooling: rebuild with "
                              f"global_pool=True")
                if current["pool"] is not None or current["gap"] is not None:
                    self.fail(f"{where}: one pooling layer per conv2d layer is supported")
                current["gap"] = layer.shift
                current["layers"].append(i)
            else:
                self.fail(f"{where}: unknown layer kind")
            out = shapes[i]
            if isinstance(layer, (Conv2d, Linear, MaxPool2d, GlobalAvgPool)):
                storage = out if len(out) == 3 else (out[0], 1, 1)
        if not groups:
            self.fail("the model has no conv2d or linear layer: nothing runs on the array")
        return groups, shapes


def _encode_weights(layer, config):
    """The layer's weights as integers in the build's weight format, shape (O, ...)."""
    if layer.op is Op.SHIFT:
        # Stored exponent p - p_min (of the layer): the PE shifts by it.
        sign = layer.weights["sign"].astype(np.int64)
        e = layer.weights["exponent"].astype(np.int64) - layer.p_min
        e = np.where(sign == 0, 0, e)
        return (sign & 3) | (e << 2)
    w = layer.weights["weight"].astype(np.int64)
    return w & ((1 << config.weight_bits) - 1)


def _check_layer_fits(layer, config, k):
    where = f"layer {layer.name}"
    if layer.op is not config.pe:
        config_pe = config.pe.value
        raise CompileError(f"{where} uses {layer.op.value} operations; this build's PEs are "
                           f"{config_pe}: rebuild with pe={layer.op.value} or use a {config_pe} model")
    if layer.requant.mode is not config.requant_mode:
        raise CompileError(f"{where} uses requantisation mode {layer.requant.mode.value!r}; this "
                           f"build has {config.requant_mode.value!r}: rebuild with "
                           f"requant_mode={layer.requant.mode.value} or use a model quantised for "
                           f"{config.requant_mode.value!r}")
    if k > config.max_k:
        raise CompileError(f"{where} sums {k} terms per output; this build's accumulators hold at "
                           f"most {config.max_k}: rebuild with max_k >= {k}")
    if layer.requant.out_bits != config.x_bits:
        # (Its outputs go into the activation buffers, the last layer's too.)
        raise CompileError(f"{where} requantises to {layer.requant.out_bits} bits; this build's "
                           f"activations are {config.x_bits} bits, and every layer's outputs are "
                           f"stored as activations: requantise it to {config.x_bits} bits "
                           f"(requant.out_bits)")
    if layer.op is Op.SHIFT:
        span, have = layer.p_max - layer.p_min, config.p_max - config.p_min
        if span > have:
            raise CompileError(f"{where} has shift exponents over a span of {span} "
                               f"(p_min {layer.p_min}, p_max {layer.p_max}); this build's span is "
                               f"{have}: rebuild with p_max - p_min >= {span}")
    elif layer.w_bits > config.w_bits:
        raise CompileError(f"{where} has {layer.w_bits}-bit weights; this build's are "
                           f"{config.w_bits}: rebuild with w_bits={layer.w_bits}")
    bias = compiled_biases(layer.requant, config.acc_bits)
    lo, hi = int_range(config.bias_bits)
    if bias.size and (bias.min() < lo or bias.max() > hi):
        need = bias_width(bias)
        raise CompileError(f"{where} has biases in [{bias.min()}, {bias.max()}]; this build's "
                           f"bias is {config.bias_bits} bits: rebuild with bias_bits >= {need}")


def bias_width(biases):
    """Bits of the signed integers that hold every one of ``biases`` (at least 2)."""
    biases = np.asarray(biases, dtype=np.int64)
    return max(2, signed_width(int(biases.min()), int(biases.max()))) if biases.size else 2


def compiled_biases(requant, acc_bits):
    """The biases a program stores for ``requant`` (a ``model.Requant``): each channel's own,
    except that a channel whose output is the same for every ``acc_bits``-bit accumulator gets
    the bias of least magnitude that keeps it so.

    Such a channel (a factor that rounds every sum to one value, and a bias the quantiser clamped
    at ``2**30`` trying to move it) would otherwise set the build's bias width, and with it the
    requantiser's. Outputs are monotonic in ``acc + bias`` (a fixed factor, then rounding and
    saturation), so a channel is constant over the accumulators iff its two ends agree, and the
    biases that keep it so form an interval around its own: a binary search finds its end nearest
    0. Every output stays bit for bit what the golden model computes with the model's own bias.
    """
    acc_lo, acc_hi = int_range(acc_bits)
    arrays = requant.arrays()
    out = np.array(requant.bias, dtype=np.int64)
    for ch, b in enumerate(out.tolist()):
        multiplier, shift = requant_multiplier(
            requant.mode, {name: np.asarray(arrays[name][ch]) for name in requant.params})

        def y(z):
            return int(saturate(round_shift(np.int64(z) * multiplier, shift), requant.out_bits))

        def constant(t, value):
            return y(acc_lo + t) == value and y(acc_hi + t) == value

        # The search only meets sums between these. The model loader keeps a layer's own sums
        # times its factor inside int64; the build's accumulators may be wider (another layer's
        # longer reduction): where that product could leave int64, the bias stays as it is.
        z_max = max(abs(acc_lo + min(b, 0)), acc_hi + max(b, 0))
        if b == 0 or z_max * abs(int(multiplier)) >= 1 << 62:
            continue
        value = y(acc_lo + b)
        if not constant(b, value):
            continue
        if constant(0, value):
            out[ch] = 0
            continue
        # 0 lies outside the interval, on the other side of it from b: the predicate flips once
        # between 0 (false) and b (true).
        far, near = b, 0
        while abs(far - near) > 1:
            mid = (far + near) // 2
            far, near = (mid, near) if constant(mid, value) else (far, mid)
        out[ch] = far
    return out


def _lane_params(layer, config, channel, biases):
    """One channel's requantisation parameters packed like ``requant_param_layout`` (its bias
    from ``biases``, :func:`compiled_biases` of the layer)."""
    from ..hw.config import requant_lane_fields
    arrays = {**layer.requant.arrays(), "bias": biases}
    word, pos = 0, 0
    for name, bits in requant_lane_fields(config.requant_mode, config.bias_bits):
        word |= (int(arrays[name][channel]) & ((1 << bits) - 1)) << pos
        pos += bits
    return word


@dataclasses.dataclass
class Program:
    """A compiled model: memory images for one build plus the description the host needs.

    ``weight_words`` and ``param_words`` are the memory contents (Python integers, one per word);
    :meth:`images` gives them as bytes per region. :meth:`input_image` and :meth:`decode_output`
    convert between tensors and activation-buffer bytes.
    """
    config: object
    model_name: str
    input_shape: tuple
    stages: list
    weight_words: list
    param_words: list

    # --- memory images -----------------------------------------------------------------------

    @staticmethod
    def _to_bytes(words, word_bytes):
        return b"".join(int(w).to_bytes(word_bytes, "little") for w in words)

    def images(self):
        """``{region name: bytes}`` to write before the first run (the input comes separately)."""
        c = self.config
        return {"weights": self._to_bytes(self.weight_words, c.weight_word_bytes),
                "params": self._to_bytes(self.param_words, c.param_word_bytes)}

    def input_image(self, x):
        """Bytes of one input image ``(C, H, W)`` (or ``(F,)``) for region ``act0`` at offset 0."""
        c = self.config
        x = np.asarray(x, dtype=np.int64)
        if tuple(x.shape) != tuple(self.input_shape):
            raise ValueError(f"Input must have shape {tuple(self.input_shape)}, not {x.shape}")
        storage = self.stages[0].in_shape
        return self._to_bytes(self._tensor_words(x.reshape(storage)), c.act_word_bytes)

    def _tensor_words(self, t):
        """Words of a stored tensor ``(C, H, W)``: word ``(cg, h, w)``, lane ``c % cols``."""
        cols, bits = self.config.cols, self.config.x_bits
        ch, h, w = t.shape
        groups = _ceil_div(ch, cols)
        padded = np.zeros((groups * cols, h, w), dtype=np.int64)
        padded[:ch] = t
        lanes = padded.reshape(groups, cols, h * w).transpose(0, 2, 1) & ((1 << bits) - 1)
        words = []
        for g in range(groups):
            for pix in range(h * w):
                word = 0
                for j in range(cols):
                    word |= int(lanes[g, pix, j]) << (j * bits)
                words.append(word)
        return words

    def output_extent(self, stage=-1):
        """``(region name, byte length)`` holding stage ``stage``'s output after it ran."""
        s = self.stages[stage]
        ch, h, w = s.out_shape
        words = _ceil_div(ch, self.config.cols) * h * w
        return f"act{s.out_buffer}", words * self.config.act_word_bytes

    def decode_output(self, data, stage=-1):
        """Stage ``stage``'s output from the bytes of its buffer, shaped like its golden trace
        entry (without the batch axis)."""
        c = self.config
        s = self.stages[stage]
        ch, h, w = s.out_shape
        groups = _ceil_div(ch, c.cols)
        nbytes = groups * h * w * c.act_word_bytes
        if len(data) < nbytes:
            raise ValueError(f"Stage {s.name} output needs {nbytes} bytes, got {len(data)}")
        out = np.zeros((groups * c.cols, h * w), dtype=np.int64)
        mask, sign = (1 << c.x_bits) - 1, 1 << (c.x_bits - 1)
        for g in range(groups):
            for pix in range(h * w):
                start = (g * h * w + pix) * c.act_word_bytes
                word = int.from_bytes(data[start:start + c.act_word_bytes], "little")
                for j in range(c.cols):
                    v = (word >> (j * c.x_bits)) & mask
                    out[g * c.cols + j, pix] = v - (v & sign) * 2
        return out[:ch].reshape(s.trace_shape)

    # --- description -------------------------------------------------------------------------

    @property
    def descriptor_fields(self):
        return descriptor_fields(self.config)

    def descriptor(self, stage):
        """The field values of stage ``stage``'s descriptor, decoded from the weight image."""
        return read_descriptor(self.config, self.weight_words, stage)

    @property
    def busy_pe_cycles(self):
        return sum(s.busy_pe_cycles for s in self.stages)

    def describe(self):
        """A table of the stages: layers, shapes, reduction, tiles and memory use."""
        c = self.config
        lines = [f"program for {c.describe()}",
                 f"{'stage':<8}{'layers':<28}{'in':>12}{'out':>12}{'K':>6}{'tiles':>6}{'groups':>7}"
                 f"{'w words':>8}{'ideal':>7}"]
        for s in self.stages:
            ideal = _ceil_div(s.busy_pe_cycles, c.pe_count)
            lines.append(f"{s.name:<8}{'+'.join(s.layers):<28}{'x'.join(map(str, s.in_shape)):>12}"
                         f"{'x'.join(map(str, s.out_shape)):>12}{s.reduction:>6}{s.tiles:>6}"
                         f"{s.groups:>7}{s.w_words:>8}{ideal:>7}")
        lines.append(f"weight memory {len(self.weight_words)} of {c.weight_depth} words, "
                     f"parameters {len(self.param_words)} of {c.param_depth} words")
        return "\n".join(lines)

    # --- file form ---------------------------------------------------------------------------

    def to_bytes(self):
        """The program file: ``ADSP`` | version u16 | JSON length u32 | JSON | weight image length
        u32 | weight image | parameter image length u32 | parameter image. The JSON holds the build
        parameters, their hash, the input shape and every stage's description."""
        images = self.images()
        head = json.dumps({"config": self.config.to_dict(), "build_hash": self.config.build_hash,
                           "model": self.model_name, "input_shape": list(self.input_shape),
                           "stages": [s.to_dict() for s in self.stages]},
                          sort_keys=True).encode()
        return (PROGRAM_MAGIC + struct.pack("<HI", PROGRAM_VERSION, len(head)) + head
                + struct.pack("<I", len(images["weights"])) + images["weights"]
                + struct.pack("<I", len(images["params"])) + images["params"])

    @classmethod
    def from_bytes(cls, data):
        from ..hw.config import ArrayConfig
        if data[:4] != PROGRAM_MAGIC:
            raise ValueError(f"not a program file (starts with {bytes(data[:4])!r})")
        version, n = struct.unpack_from("<HI", data, 4)
        if version != PROGRAM_VERSION:
            raise ValueError(f"program version {version}, this compiler reads {PROGRAM_VERSION}")
        head = json.loads(data[10:10 + n])
        pos = 10 + n
        config = ArrayConfig.from_dict(head["config"])
        if config.build_hash != head["build_hash"]:
            raise ValueError("program file: the build hash does not match its parameters")
        images = []
        for word_bytes in (config.weight_word_bytes, config.param_word_bytes):
            (length,) = struct.unpack_from("<I", data, pos)
            raw = data[pos + 4:pos + 4 + length]
            pos += 4 + length
            images.append([int.from_bytes(raw[i:i + word_bytes], "little")
                           for i in range(0, length, word_bytes)])
        stages = []
        for d in head["stages"]:
            d = dict(d)
            for key in ("layers", "in_shape", "out_shape", "kernel", "conv_shape", "trace_shape"):
                d[key] = tuple(d[key])
            if d["pool"] is not None:
                d["pool"] = tuple(d["pool"])
            stages.append(Stage(**d))
        return cls(config=config, model_name=head["model"], input_shape=tuple(head["input_shape"]),
                   stages=stages, weight_words=images[0], param_words=images[1])


#: Bits :func:`default_config` gives the biases beyond what the model needs: a model trained
#: again (biases up to four times larger) still runs on the same bitstream. Each bit costs a few
#: logic cells per requantiser lane.
BIAS_HEADROOM = 2

#: The memory depths :func:`default_config` takes as a least (``least=``), as a board's own build
#: gives them (``Board.accelerator_builds``), not as a size.
LEAST_DEPTHS = ("weight_depth", "act_depth", "param_depth")


def board_build(board, kind):
    """A board's own build for PE ``kind`` (``Board.accelerator_builds``: what ``addershift build
    --board BOARD`` and ``make demo`` build), as its ``ArrayConfig`` options and, apart, the memory
    depths it gives as a least (:data:`LEAST_DEPTHS`, for :func:`default_config`'s ``least``)."""
    from ..boards.board import get_board
    options = get_board(board).accelerator_build(kind)
    return options, {name: options.pop(name) for name in LEAST_DEPTHS if name in options}


def default_config(model, *, rows=4, cols=4, least=None, **overrides):
    """The build a model runs on with the array shape ``rows x cols``: PE kind, requantisation mode
    and widths from the model, ``max_k`` its longest reduction, the global average pooling unit
    only if the model has such a layer, memories large enough for it (powers of two) and at least
    ``least`` (a dict of ``weight_depth``, ``act_depth``, ``param_depth``; each one not in it is at
    least the ``ArrayConfig`` default: a small board asks for less), and biases
    :data:`BIAS_HEADROOM` bits wider than the widest the program stores
    (:func:`compiled_biases`). ``overrides`` replace any of these (``ArrayConfig`` keyword
    arguments); :class:`CompileError` if the model then does not fit."""
    from ..hw.config import ArrayConfig
    layers = model.compute_layers()
    if not layers:
        raise CompileError("the model has no conv2d or linear layer: nothing runs on the array")
    ops = sorted({layer.op.value for layer in layers})
    modes = sorted({layer.requant.mode.value for layer in layers})
    if len(ops) > 1:
        raise CompileError(f"the model mixes {' and '.join(ops)} layers; a build has one PE kind")
    if len(modes) > 1:
        raise CompileError(f"the model mixes requantisation modes {', '.join(modes)}; a build has "
                           f"one")
    shapes = [tuple(model.input_shape)] + model.validate()
    ks = [layer.reduction_length(shapes[model.layers.index(layer)]) for layer in layers]
    params = {"pe": ops[0], "rows": rows, "cols": cols, "x_bits": model.x_bits,
              "requant_mode": modes[0], "max_k": max(ks),
              "global_pool": any(isinstance(layer, GlobalAvgPool) for layer in model.layers)}
    if ops[0] == "shift":
        params.update(p_min=0, p_max=max(layer.p_max - layer.p_min for layer in layers))
    elif ops[0] == "mul":
        params["w_bits"] = max(layer.w_bits for layer in layers)
    else:
        params["w_bits"] = model.x_bits
    params.update(overrides)
    # Measure the memories on a generous build, then round up.
    big = ArrayConfig(**{**params, "weight_depth": 1 << 20, "act_depth": 1 << 20,
                         "param_depth": 1 << 20})
    program = compile_model(model, big)
    act = max(_ceil_div(shp[0], cols) * shp[1] * shp[2]
              for st in program.stages for shp in (st.in_shape, st.out_shape))
    pow2 = lambda n, low: max(low, 1 << (n - 1).bit_length())
    floor = {f.name: f.default for f in dataclasses.fields(ArrayConfig)}
    floor.update(least or {})
    sizes = {"weight_depth": pow2(len(program.weight_words), floor["weight_depth"]),
             "act_depth": pow2(act, floor["act_depth"]),
             "param_depth": pow2(len(program.param_words), floor["param_depth"])}
    need = max(bias_width(compiled_biases(layer.requant, big.acc_bits)) for layer in layers)
    sizes["bias_bits"] = min(BIAS_BITS, need + BIAS_HEADROOM)
    # The generous build's descriptors carry wider addresses: a weight memory measured just over
    # a power of two there may hold the program at the power below it.
    while "weight_depth" not in overrides and sizes["weight_depth"] // 2 >= floor["weight_depth"]:
        smaller = {**sizes, "weight_depth": sizes["weight_depth"] // 2}
        try:
            compile_model(model, ArrayConfig(**{**params, **smaller}))
        except CompileError:
            break
        sizes = smaller
    # The buffers' sizes hold the tensors; the generator's counters and address steps may ask
    # for a deeper buffer still (a large padding, a long strided row).
    for _ in range(4):
        config = ArrayConfig(**{**params, **sizes, **overrides})
        try:
            compile_model(model, config)      # an override too small for the model says so here
            return config
        except CompileError as e:
            deeper = {k: pow2(v, 0) for k, v in e.need.items() if k in sizes
                      and k not in overrides and v > sizes[k]}
            if not deeper:
                raise
            sizes.update(deeper)
    config = ArrayConfig(**{**params, **sizes, **overrides})
    compile_model(model, config)              # (each limit deepens once; not reached)
    return config


def compile_model(model, config, *, name="model"):
    """Compile ``model`` (a :class:`model.QModel`) for the build ``config`` (``hw.config.ArrayConfig``).

    Raises :class:`CompileError` when the model does not fit the build: the message names the
    layer, what it needs, what the build has and the build parameter that would make it fit (for
    a memory, the depth at which the whole program fits, and any other memory's the rest of the
    program needs deeper too, also in the error's ``need``).
    """
    from ..hw.config import ArrayConfig
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, not {type(config).__name__}")
    return _compile(model, config, name=name, whole_program_hint=True)


#: The memories whose depth a build sets and a refusal may name in ``CompileError.need``.
MEMORY_DEPTHS = ("weight_depth", "act_depth", "param_depth")


def _least_depths(model, config, memory, at_least):
    """The least depth of ``memory`` (one of :data:`MEMORY_DEPTHS`), from ``at_least`` up, at
    which the whole program fits it, as ``{memory: depth}`` plus every other memory the rest of
    the program needs deeper than ``config`` has it; ``None`` if a limit other than a memory's
    depth stops the program. Each refusal names what the program up to the layer refused needs,
    and no depth below that fits, so the search steps from need to need (a deeper memory may
    need more: the descriptors, which the weight memory holds, carry addresses as wide as it)."""
    depths = {memory: at_least}
    while max(depths.values()) <= 1 << 20:                    # ArrayConfig's largest depth
        try:
            _compile(model, dataclasses.replace(config, **depths), name="model",
                     whole_program_hint=False)
            return depths
        except CompileError as e:
            deeper = {k: v for k, v in e.need.items()
                      if k in MEMORY_DEPTHS and v > depths.get(k, getattr(config, k))}
            if not deeper:
                return None
            depths.update(deeper)
    return None


def _least_depth_for_bits(bits):
    """The least memory depth whose addresses have ``bits`` bits (``hw.config``'s ``_bits``)."""
    return max(16, (1 << (bits - 1)) + 1)


def _compile(model, config, *, name, whole_program_hint):
    """:func:`compile_model`; with ``whole_program_hint`` a memory too small names the depth at
    which the whole program fits it, else what the program up to the refused layer needs."""
    def least(memory, need):
        """The whole program's need of ``memory`` and of the others with it (``need`` if
        another limit stops the program), the others as the message's words, and whether the
        need is the whole program's."""
        found = _least_depths(model, config, memory, need) if whole_program_hint else None
        depths = found or {memory: need}
        others = " and ".join(f"{k} >= {v}" for k, v in depths.items() if k != memory)
        return depths[memory], others and f" and {others}", depths, found is not None
    groups, shapes = _Planner(model, config).plan()
    R, C = config.rows, config.cols
    fields = descriptor_fields(config)
    slot = descriptor_slot_words(config)
    n_stages = len(groups)
    if n_stages > 255:
        raise CompileError(f"the model has {n_stages} stages; the sequencer runs at most 255")
    w_next = n_stages * slot
    weight_words = [0] * w_next
    param_words = []
    stages = []
    act_words_of = lambda shp: _ceil_div(shp[0], C) * shp[1] * shp[2]
    first_in = groups[0]["in_storage"]
    if act_words_of(first_in) > config.act_depth:
        need = act_words_of(first_in)
        hint, others, depths, _ = least("act_depth", need)
        raise CompileError(f"the input ({'x'.join(map(str, first_in))}) needs {need} words per "
                           f"activation bank; this build has {config.act_depth}: rebuild with "
                           f"act_depth >= {hint}{others}", need=depths)
    for s, g in enumerate(groups):
        layer = model.layers[g["compute"]]
        cin, h, w = g["in_storage"]
        if isinstance(layer, Conv2d):
            (kh, kw), stride, pad = layer.kernel, layer.stride, layer.padding
            weights = _encode_weights(layer, config)                  # (O, C, KH, KW)
        else:
            kh, kw, stride, pad = h, w, 1, 0
            weights = _encode_weights(layer, config).reshape(-1, cin, h, w)
        cout = layer.out_channels
        k = kh * kw * cin
        _check_layer_fits(layer, config, k)
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        pixels = oh * ow
        tiles = _ceil_div(pixels, R)
        og = _ceil_div(cout, C)
        if g["pool"] is not None:
            pk, ps = g["pool"]
            ph, pw = (oh - pk) // ps + 1, (ow - pk) // ps + 1
            out_storage = (cout, ph, pw)
        elif g["gap"] is not None:
            pk = ps = 1
            ph, pw = oh, ow
            out_storage = (cout, 1, 1)
        else:
            pk = ps = 1
            ph, pw = oh, ow
            out_storage = (cout, oh, ow)
        where = f"layer {layer.name}"
        dims = {"input height": h, "input width": w, "kernel height": kh, "kernel width": kw,
                "stride": stride, "padding": pad, "output width": ow, "pooled width": pw,
                "pooled height": ph, "pool kernel": pk, "pool stride": ps}
        for what, v in dims.items():
            if v > (1 << DIM_BITS) - 1:
                raise CompileError(f"{where}: {what} {v} exceeds the sequencer's limit of "
                                   f"{(1 << DIM_BITS) - 1}")
        if og > (1 << DIM_BITS):
            raise CompileError(f"{where} has {cout} output channels; the sequencer handles at most "
                               f"{(1 << DIM_BITS) * C} on {C} columns")
        if pixels > (1 << config.count_bits) - 1:
            hint, others, depths, _ = least("act_depth",
                                            _least_depth_for_bits(pixels.bit_length() - 3))
            raise CompileError(f"{where} has {pixels} output pixels; this build counts up to "
                               f"{(1 << config.count_bits) - 1} (8 per activation word): rebuild "
                               f"with act_depth >= {hint}{others}", need=depths)
        out_words = act_words_of(out_storage)
        if out_words > config.act_depth:
            hint, others, depths, _ = least("act_depth", out_words)
            raise CompileError(
                f"{where}'s output ({'x'.join(map(str, out_storage))}) needs {out_words} words per "
                f"activation bank ({_kib(out_words * config.act_word_bytes)}); this build has "
                f"{config.act_depth} ({_kib(config.act_bytes)}): rebuild with act_depth >= "
                f"{hint}{others} or use a smaller model", need=depths)
        # The address arithmetic's range (always true for kernels that fit their input); an
        # address of a + 1 bits spans depths up to 2**a.
        a = config.act_addr_bits
        span = (_ceil_div(cin, C) - 1) * h * w + (kh - 1) * w + kw - 1
        reach = max(span, pad * (w + 1))
        if reach >= 1 << (a + 1):
            hint, others, depths, _ = least("act_depth",
                                            _least_depth_for_bits(reach.bit_length() - 1))
            raise CompileError(f"{where}: kernel {kh}x{kw} with padding {pad} reaches beyond the "
                               f"activation address range of this build (act_depth "
                               f"{config.act_depth}): rebuild with act_depth >= {hint}{others}",
                               need=depths)
        # The generator's step from one output row to the next: stride * W in a + 2 bits.
        if stride * w >= 1 << (a + 2):
            hint, others, depths, _ = least("act_depth",
                                            _least_depth_for_bits((stride * w).bit_length() - 2))
            raise CompileError(f"{where}: its stride {stride} times its input width {w} is more "
                               f"than the generator's row step holds at act_depth "
                               f"{config.act_depth}: rebuild with act_depth >= {hint}{others}",
                               need=depths)
        # Weights: for og: for kh: for kw: for c, one word of C lanes.
        w_words = og * k
        if w_next + w_words > config.weight_depth:
            need = w_next + w_words
            hint, others, depths, whole = least("weight_depth", need)
            raise CompileError(
                f"{where} needs {_kib(w_words * config.weight_word_bytes)} of weight memory "
                f"(the program up to it {_kib(need * config.weight_word_bytes)}); this build has "
                f"{_kib(config.weight_bytes)}: rebuild with a larger weight memory "
                f"(weight_depth >= {hint} words{', the whole program' * whole}){others} or use "
                f"a smaller model",
                need=depths)
        padded = np.zeros((og * C, cin, kh, kw), dtype=np.int64)
        padded[:cout] = weights
        lanes = padded.reshape(og, C, cin, kh, kw).transpose(0, 3, 4, 2, 1).reshape(-1, C)
        wb = config.weight_bits
        for row in lanes:
            word = 0
            for j, v in enumerate(row):
                word |= int(v) << (j * wb)
            weight_words.append(word)
        # Requantisation parameters: one word per requantiser transfer (``lanes`` channels,
        # lowest channel in the lowest bits), whole groups of C channels.
        rq_base = len(param_words)
        L, cb = config.lanes, config.param_channel_bits
        biases = compiled_biases(layer.requant, config.acc_bits)
        for first in range(0, og * C, L):
            param_words.append(sum(_lane_params(layer, config, ch, biases) << (j * cb)
                                   for j, ch in enumerate(range(first, first + L)) if ch < cout))
        if len(param_words) > config.param_depth:
            need = len(param_words)
            hint, others, depths, _ = least("param_depth", need)
            raise CompileError(f"{where} needs requantisation parameters up to word {need}; "
                               f"this build has {config.param_depth} words: rebuild with "
                               f"param_depth >= {hint}{others}", need=depths)
        rows_last = pixels - (tiles - 1) * R
        cols_last = cout - (og - 1) * C
        values = {
            "magic": DESCRIPTOR_MAGIC, "last": int(s == n_stages - 1), "relu": int(g["relu"]),
            "pool": int(g["pool"] is not None), "gap": int(g["gap"] is not None),
            "cin_m1": cin - 1, "kh_m1": kh - 1, "kw_m1": kw - 1, "in_h": h, "in_w": w,
            "in_hw": h * w, "stride": stride, "pad": pad, "row_step": stride * w,
            "base0": -pad * w - pad, "out_w_m1": ow - 1, "pixels": pixels, "tiles_m1": tiles - 1,
            "og_m1": og - 1, "w_base": w_next, "rq_base": rq_base,
            "busy_full": R * C, "busy_rows": rows_last * C, "busy_cols": R * cols_last,
            "busy_both": rows_last * cols_last,
            "pool_k": pk, "pool_s": ps, "pool_w": pw, "pool_h": ph,
            "out_hw": 1 if g["gap"] is not None else ph * pw,
            "gap_shift": g["gap"] or 0,
        }
        packed = pack_fields(fields, values)
        for i in range(slot):
            weight_words[s * slot + i] = (packed >> (i * config.weight_word_bits)) \
                & ((1 << config.weight_word_bits) - 1)
        last = g["layers"][-1]
        stages.append(Stage(
            index=s, name=layer.name, layers=tuple(model.layers[i].name for i in g["layers"]),
            trace_index=last, trace_shape=tuple(shapes[last]), in_shape=(cin, h, w),
            out_shape=out_storage, kernel=(kh, kw), stride=stride, padding=pad,
            conv_shape=(oh, ow), relu=g["relu"], pool=g["pool"], gap_shift=g["gap"],
            reduction=k, tiles=tiles, groups=og, w_base=w_next, w_words=w_words, rq_base=rq_base,
            rq_words=og * C, in_buffer=s % 2, out_buffer=(s + 1) % 2,
            busy_pe_cycles=pixels * cout * k, issue_cycles=og * tiles * k, fields=values))
        w_next += w_words
    return Program(config=config, model_name=name, input_shape=tuple(model.input_shape),
                   stages=stages, weight_words=weight_words, param_words=param_words)
