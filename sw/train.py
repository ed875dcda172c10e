"""Float training of adder, shift and mul networks, and the whole ``addershift train`` flow.

A network is described by a *spec*: a list of layer dicts (see :data:`DIGITS_SPEC`) that names every
module, so the float PyTorch model (:class:`FloatNet`), its state_dict, imported checkpoints and the
quantised :class:`model.QModel` share one set of layer names. :func:`train_command` trains the float
network, fine-tunes it with the golden model's integer arithmetic in the forward pass
(:mod:`quantize`) and writes the quantised model. This module imports torch.
"""

from __future__ import annotations

import copy
import math
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers_torch import SHIFT_VARIANTS, layer_class

__all__ = [
    "PE_KINDS", "DIGITS_SPEC", "digits_spec", "spec_shapes", "FloatNet", "TrainConfig",
    "default_config", "train_float", "evaluate_float", "set_determinism", "train_command",
]

PE_KINDS = ("adder", "shift", "mul")


def digits_spec(channels=(8, 16), classes=10):
    """The default topology: conv 3x3 pad 1, ReLU, maxpool 2, twice, then flatten and linear.
    Every conv/linear layer is followed by BatchNorm (folded into requantisation)."""
    c1, c2 = channels
    return [
        {"kind": "conv2d", "name": "conv1", "out": c1, "kernel": 3, "stride": 1, "padding": 1, "bn": "bn1"},
        {"kind": "relu", "name": "relu1"},
        {"kind": "maxpool2d", "name": "pool1", "kernel": 2, "stride": 2},
        {"kind": "conv2d", "name": "conv2", "out": c2, "kernel": 3, "stride": 1, "padding": 1, "bn": "bn2"},
        {"kind": "relu", "name": "relu2"},
        {"kind": "maxpool2d", "name": "pool2", "kernel": 2, "stride": 2},
        {"kind": "flatten", "name": "flatten"},
        {"kind": "linear", "name": "fc", "out": classes, "bn": "bn3"},
    ]


DIGITS_SPEC = digits_spec()
_COMPUTE = ("conv2d", "linear")
_KINDS = _COMPUTE + ("maxpool2d", "relu", "flatten")


def _out_shape(i, entry, shape):
    """The output shape of the spec's layer ``i`` on inputs of ``shape``; a ``ValueError`` naming
    the layer if it cannot take them (a conv2d or maxpool2d needs (C, H, W), a linear layer a flat
    (features,) input) or its output would be empty."""
    kind, where = entry["kind"], f"layer {i} ({entry['name']!r})"
    if kind in ("conv2d", "maxpool2d") and len(shape) != 3:
        raise ValueError(f"{where}: a {kind} layer needs a (C, H, W) input, not {shape}")
    if kind == "linear" and len(shape) != 1:
        raise ValueError(f"{where}: a linear layer needs a flat (features,) input, not {shape} "
                         f"(a flatten layer before it makes one)")
    if kind == "conv2d":
        k, s, p = entry["kernel"], entry.get("stride", 1), entry.get("padding", 0)
        out = (entry["out"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
    elif kind == "maxpool2d":
        k = entry.get("kernel", 2)
        s = entry.get("stride", k)
        out = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
    elif kind == "linear":
        out = (entry["out"],)
    elif kind == "flatten":
        out = (int(np.prod(shape)),)
    else:
        out = shape
    if min(out) < 1:
        raise ValueError(f"{where}: its output shape {out} is empty (a {kind} layer on a {shape} "
                         f"input)")
    return out


def spec_shapes(spec, input_shape):
    """Each layer's output shape, in order, on inputs of ``input_shape``; a ``ValueError`` naming
    the first layer that cannot take its input (see :class:`FloatNet`)."""
    shapes, shape = [], tuple(input_shape)
    for i, entry in enumerate(spec):
        if entry["kind"] not in _KINDS:
            raise ValueError(f"Unknown layer kind {entry['kind']!r} in the spec")
        shape = _out_shape(i, entry, shape)
        shapes.append(shape)
    return shapes


def set_determinism(seed):
    """One thread (more made training 13x slower on a shared 2-core host) and fixed seeds."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))


class FloatNet(nn.Module):
    """The float network of a spec: each compute layer is an attribute named as in the spec (its
    BatchNorm too), so ``state_dict`` keys are ``conv1.adder``, ``bn1.running_mean``, ...

    ``pe`` picks the layer kind of every conv/linear layer (the array is one kind);
    ``variant`` picks DeepShift-Q (``"q"``) or -PS (``"ps"``) for shift networks. A layer that
    cannot take its input's shape raises ``ValueError`` naming it (:func:`spec_shapes`).
    """

    def __init__(self, spec, input_shape, *, pe, variant="q", p_min=-7, p_max=0, bias=False):
        super().__init__()
        if pe not in PE_KINDS:
            raise ValueError(f"PE kind must be one of {', '.join(PE_KINDS)}, not {pe!r}")
        if variant not in SHIFT_VARIANTS:
            raise ValueError(f"Shift variant must be one of {', '.join(SHIFT_VARIANTS)}, not {variant!r}")
        self.spec = copy.deepcopy(list(spec))
        self.input_shape = tuple(input_shape)
        self.pe, self.variant, self.p_min, self.p_max = pe, variant, p_min, p_max
        shapes = spec_shapes(self.spec, self.input_shape)
        for entry, in_shape in zip(self.spec, [self.input_shape] + shapes[:-1]):
            kind = entry["kind"]
            if kind == "conv2d":
                cls = layer_class("conv2d", pe, variant)
                kw = {"stride": entry.get("stride", 1), "padding": entry.get("padding", 0),
                      "bias": entry.get("bias", bias)}
                if pe == "shift":
                    kw.update(p_min=p_min, p_max=p_max)
                setattr(self, entry["name"], cls(in_shape[0], entry["out"], entry["kernel"], **kw))
                if entry.get("bn"):
                    setattr(self, entry["bn"], nn.BatchNorm2d(entry["out"]))
            elif kind == "linear":
                cls = layer_class("linear", pe, variant)
                kw = {"bias": entry.get("bias", bias)}
                if pe == "shift":
                    kw.update(p_min=p_min, p_max=p_max)
                setattr(self, entry["name"], cls(in_shape[0], entry["out"], **kw))
                if entry.get("bn"):
                    setattr(self, entry["bn"], nn.BatchNorm1d(entry["out"]))
        self.out_shape = shapes[-1] if shapes else self.input_shape

    def constrain(self):
        """Keep adder networks' BatchNorm scales >= 0 (called after each optimiser step): adder
        weights cannot flip a channel's sign, so a negative scale would need a signed
        requantisation factor, which the one-power-of-two ``shift`` mode does not have."""
        if self.pe != "adder":
            return
        with torch.no_grad():
            for entry in self.compute_entries():
                bn = getattr(self, entry["bn"]) if entry.get("bn") else None
                if bn is not None and bn.weight is not None:
                    bn.weight.clamp_(min=0)

    def compute_entries(self):
        return [e for e in self.spec if e["kind"] in _COMPUTE]

    def forward(self, x, *, collect=None):
        """``collect`` (a list) receives every compute layer's output after its BatchNorm."""
        for entry in self.spec:
            kind = entry["kind"]
            if kind in _COMPUTE:
                x = getattr(self, entry["name"])(x)
                if entry.get("bn"):
                    x = getattr(self, entry["bn"])(x)
                if collect is not None:
                    collect.append(x)
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "maxpool2d":
                k = entry.get("kernel", 2)
                x = F.max_pool2d(x, k, entry.get("stride", k))
            elif kind == "flatten":
                x = x.flatten(1)
        return x


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (float stage, then quantisation-aware fine-tuning)."""
    pe: str = "adder"
    mode: str = "pow2x2"            # requantisation mode of the quantised model
    variant: str = "q"              # DeepShift variant for shift networks
    epochs: int = 30                # float training
    qat_epochs: int = 10            # quantisation-aware fine-tuning
    batch_size: int = 32
    optimizer: str = "adam"         # "adam" or "sgd"
    lr: float = 0.01                # peak of the one-cycle schedule
    weight_decay: float = 0.0
    augment: bool = False           # random one-pixel shifts (hurt every kind on digits)
    seed: int = 0
    x_bits: int = 8
    shift_bits: int = 3             # shift weights: 2**shift_bits exponents per layer
    p_min: int = -7                 # float shift layers' exponent range
    p_max: int = 0
    channels: tuple = (8, 16)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        from .numerics import RequantMode
        if self.pe not in PE_KINDS:
            raise ValueError(f"PE kind must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        if self.mode not in [m.value for m in RequantMode]:
            raise ValueError(f"Requantisation mode must be one of shift, pow2x2, mul, not {self.mode!r}")
        if self.variant not in SHIFT_VARIANTS:
            raise ValueError(f"Shift variant must be one of {', '.join(SHIFT_VARIANTS)}, not {self.variant!r}")
        for name, lo, hi in (("epochs", 0, None), ("qat_epochs", 0, None), ("batch_size", 1, None),
                             ("x_bits", 4, 16), ("shift_bits", 1, 5), ("seed", 0, None)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int) or value < lo
                    or (hi is not None and value > hi)):
                rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"{name} must be an integer {rng}, not {value!r}")


def default_config(pe, *, mode=None, **overrides):
    """The settings of the shipped digits models for one PE kind; a shift network of
    ``variant="ps"`` (DeepShift-PS, the other kinds have no variant) trains 60 epochs at lr 0.1."""
    if pe not in PE_KINDS:
        raise ValueError(f"PE kind must be one of {', '.join(PE_KINDS)}, not {pe!r}")
    base = {
        "adder": dict(mode="pow2x2", epochs=30, optimizer="sgd", lr=0.2, weight_decay=1e-3),
        "shift": dict(mode="pow2x2", epochs=30, optimizer="adam", lr=0.01),
        "mul": dict(mode="mul", epochs=30, optimizer="adam", lr=0.01),
    }[pe]
    if pe == "shift" and overrides.get("variant") == "ps":
        base.update(epochs=60, lr=0.1)
    base.update(overrides)
    if mode is not None:
        base["mode"] = mode
    return TrainConfig(pe=pe, **base)


def _augment(x, generator):
    """Shift each image by -1, 0 or +1 pixel in each direction (zero fill)."""
    n = x.shape[0]
    pad = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    h, w = x.shape[2:]
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))            # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))            # (n, w)
    idx_n = torch.arange(n).view(n, 1, 1)
    out = pad[idx_n, :, rows.view(n, h, 1), cols.view(n, 1, w)]    # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def batches(x, y, batch_size, generator, *, augment=False):
    order = torch.randperm(x.shape[0], generator=generator)
    for i in range(0, x.shape[0], batch_size):
        idx = order[i:i + batch_size]
        xb = x[idx]
        if augment:
            xb = _augment(xb, generator)
        yield xb, y[idx]


def make_optimizer(params, cfg, lr, steps):
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"Optimizer must be 'adam' or 'sgd', not {cfg.optimizer!r}")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps))
    return opt, sched


def evaluate_float(net, x, y, *, batch_size=512):
    """Top-1 accuracy of the float network (eval mode)."""
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            correct += (net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / max(1, x.shape[0])


def train_float(net, data, cfg, *, log=None):
    """Train ``net`` on ``data`` (a :class:`data.Dataset`) with cross-entropy; returns the test
    accuracy."""
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * math.ceil(x.shape[0] / cfg.batch_size)
    opt, sched = make_optimizer(net.parameters(), cfg, cfg.lr, steps)
    for epoch in range(cfg.epochs):
        net.train()
        total = 0.0
        for xb, yb in batches(x, y, cfg.batch_size, gen, augment=cfg.augment):
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            net.constrain()
            sched.step()
            total += loss.item() * xb.shape[0]
        if log:
            log(f"float epoch {epoch + 1}/{cfg.epochs}: loss {total / x.shape[0]:.4f}")
    return evaluate_float(net, torch.from_numpy(data.test_x), torch.from_numpy(data.test_y))


def train_command(*, pe, dataset="digits", output, mode=None, variant="q", epochs=None, qat_epochs=None,
                  seed=0, x_bits=8, save_float=None, log=None):
    """``addershift train``: train, quantise, write ``output`` and return the report (accuracies
    measured by the golden model on the written file)."""
    from .data import load_dataset
    from .quantize import quantize_and_save
    start, start_cpu = time.perf_counter(), time.process_time()
    overrides = {"variant": variant, "seed": seed, "x_bits": x_bits}
    if epochs is not None:
        overrides["epochs"] = epochs
    if qat_epochs is not None:
        overrides["qat_epochs"] = qat_epochs
    cfg = default_config(pe, mode=mode, **overrides)
    data = load_dataset(dataset)
    set_determinism(cfg.seed)
    net = FloatNet(digits_spec(cfg.channels, data.classes), data.input_shape, pe=cfg.pe,
                   variant=cfg.variant, p_min=cfg.p_min, p_max=cfg.p_max)
    float_acc = train_float(net, data, cfg, log=log)
    if save_float:
        from .importers import save_float_checkpoint
        # (A folder by its absolute path: `quantize` calibrates on it from any working folder.)
        save_float_checkpoint(net, save_float, dataset=dataset if dataset == "digits" else
                              pathlib.Path(dataset).resolve())
    report = quantize_and_save(net, data, cfg, output, float_accuracy=float_acc, log=log)
    report.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - start_cpu,
                  epochs=cfg.epochs, variant=cfg.variant)
    return report
