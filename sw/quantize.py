"""Quantisation: from a float network to a :class:`model.QModel` whose integer accuracy is exactly
what the hardware gives.

The fine-tuning network (:class:`QuantNet`) runs the golden model's integer arithmetic in its forward
pass: integer activations and weights held in float64 (every sum below 2**53 is exact), the
accumulator of :mod:`golden`, ``z = acc + bias`` in the accumulator domain, ``floor(z * M * 2**-k +
1/2)`` (ties toward +inf) and saturation to signed ``x_bits``. Rounding steps pass gradients straight
through. The exported model therefore reproduces the network's integer outputs bit for bit, and
:func:`golden_accuracy` (the golden model on the saved file) is the accuracy the accelerator gives.

Per layer:

- *adder*: weights share the activations' scale. A layer's inputs lie in ``[lo, qmax]``: ``lo =
  0`` for the first compute layer (the input grid) and behind a ReLU, ``-qmax - 1`` otherwise. So
  ``|x - w| = |x - clip(w, lo, qmax)| + dist(w, [lo, qmax])``: the weights are clipped onto that
  range and the (constant) distances fold into the channel's bias. Nothing is lost by the
  clipping.
- *shift*: weights are ``sign * 2**p`` with ``2**shift_bits`` exponents per layer, ``p_min`` the
  layer's scale.
- *mul*: signed ``x_bits``-bit weights with a per-channel scale (negative BatchNorm scales flip the
  channel's weights, as they do for shift weights).

BatchNorm (and any layer bias) folds into the per-channel requantisation
``y = m * (acc - mu) + beta`` (``mu`` the accumulator's calibration mean): ``m`` is stored as the
mode's ``(M, k)`` (one power of two, two signed powers of two, or a 16-bit multiplier) and the
integer bias is ``round(beta / m - mu)``.

Torch is imported only when a network is built or fine-tuned: :func:`quantize_images` and
:func:`golden_accuracy` need NumPy alone, so the host driver and the demo can use them.
"""

from __future__ import annotations

import math

import numpy as np

from .model import Conv2d, Flatten, Linear, MaxPool2d, QModel, ReLU, Requant
from .numerics import (BIAS_BITS, MULTIPLIER_BITS, SHIFT_MAX, Op, RequantMode, int_range,
                       requant_scale)

__all__ = [
    "QuantizeError", "quantize_images", "golden_accuracy", "requant_fields", "QuantNet",
    "calibrate", "quantize_net", "finetune", "quantize_and_save",
]


class QuantizeError(ValueError):
    """A network that cannot be quantised as asked: the message names the layer and the reason."""


def quantize_images(model_or_bits, images):
    """Map float images in ``[0, 1]`` (``data.Dataset`` layout) onto the model's input grid:
    ``clip(floor(x / input_scale + 1/2), 0, qmax)`` as int64.

    ``model_or_bits`` is a :class:`model.QModel` (its ``input_scale`` and ``x_bits``) or the
    activation width (the scale is then ``1 / qmax``). Used by training, the host driver and the demo.
    """
    if isinstance(model_or_bits, QModel):
        bits, scale = model_or_bits.x_bits, model_or_bits.input_scale
    elif isinstance(model_or_bits, int) and not isinstance(model_or_bits, bool):
        bits, scale = model_or_bits, 1.0 / int_range(model_or_bits)[1]
    else:
        raise TypeError(f"quantize_images needs a QModel or an activation width, not {model_or_bits!r}")
    qmax = int_range(bits)[1]
    if not scale > 0:
        raise ValueError(f"Input scale must be positive, not {scale!r}")
    x = np.asarray(images, dtype=np.float64)
    return np.clip(np.floor(x / scale + 0.5), 0, qmax).astype(np.int64)


def golden_accuracy(model, images, labels, *, batch_size=1024):
    """Top-1 accuracy of the golden model (the hardware's arithmetic) on float images in [0, 1]."""
    from .golden import predict
    x = quantize_images(model, images)
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((predict(model, x[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / max(1, x.shape[0])


# --- requantisation fields ------------------------------------------------------------------------

def _pow2x2_fields(m):
    """Nearest ``s1 * 2**-k1 + s2 * 2**-k2`` to each ``m`` (searching both neighbours of each exponent),
    the two powers at most ``MULTIPLIER_BITS - 2`` apart: then ``M = s1 * 2**(k2 - k1) + s2`` fits
    the mul mode's multiplier, whose product with any accumulator the model file holds exactly
    (a factor within 2**-29 of a power of two made ``M`` about 2**35, which it refuses); the
    second term dropped is below 2**-14 of the first."""
    a = np.abs(m)
    sgn = np.where(m < 0, -1, 1)
    safe = np.where(a > 0, a, 1.0)
    base = np.floor(-np.log2(safe)).astype(np.int64)
    best = {"err": np.full(m.shape, np.inf)}
    for dk1 in (0, 1):
        k1 = np.clip(base + dk1, 0, SHIFT_MAX)
        r = a - np.exp2(-k1.astype(np.float64))
        rb = np.floor(-np.log2(np.where(r != 0, np.abs(r), 1.0))).astype(np.int64)
        for dk2 in (None, 0, 1):
            if dk2 is None:
                s2, k2 = np.zeros_like(k1), k1
            else:
                s2, k2 = np.where(r < 0, -1, 1), np.clip(rb + dk2, 0, SHIFT_MAX)
                near = k2 - k1 <= MULTIPLIER_BITS - 2
                s2, k2 = np.where(near, s2, 0), np.where(near, k2, k1)
            err = np.abs(a - np.exp2(-k1.astype(np.float64)) - s2 * np.exp2(-k2.astype(np.float64)))
            take = err < best["err"]
            for name, v in (("err", err), ("k1", k1), ("s2", s2), ("k2", k2)):
                best[name] = np.where(take, v, best.get(name, v))
    zero = a == 0
    return {"sign1": np.where(zero, 0, sgn).astype(np.int8), "shift1": best["k1"].astype(np.int8),
            "sign2": np.where(zero, 0, sgn * best["s2"]).astype(np.int8),
            "shift2": best["k2"].astype(np.int8)}


def requant_fields(mode, m, *, where="layer"):
    """The requantisation fields of ``mode`` that best represent the real per-channel factors ``m``.

    ``shift`` needs positive factors (``M = 1``): a negative one raises :class:`QuantizeError`.
    """
    mode = RequantMode(mode)
    m = np.asarray(m, dtype=np.float64)
    a = np.abs(m)
    safe = np.where(a > 0, a, 1.0)
    if mode is RequantMode.SHIFT:
        if np.any(m < 0):
            c = int(np.flatnonzero(m < 0)[0])
            raise QuantizeError(f"{where}: channel {c} needs a negative scale ({m[c]:.3g}), which the "
                                f"'shift' requantisation cannot hold (use pow2x2 or mul)")
        return {"shift": np.clip(np.round(-np.log2(safe)), 0, SHIFT_MAX).astype(np.int8)}
    if mode is RequantMode.POW2X2:
        return _pow2x2_fields(m)
    lo, hi = int_range(MULTIPLIER_BITS)
    k = np.clip(MULTIPLIER_BITS - 3 - np.floor(np.log2(safe)), 0, SHIFT_MAX)
    mult = np.clip(np.round(m * np.exp2(k)), lo, hi)
    return {"multiplier": mult.astype(np.int32), "shift": k.astype(np.int8)}


# --- the fine-tuning network ------------------------------------------------------------------

def _torch():
    import torch
    return torch


class _Layer:
    """What one compute layer's integer arithmetic needs besides its parameters (in QuantNet)."""

    def __init__(self, entry, *, s_in, s_out):
        self.entry, self.s_in, self.s_out = entry, s_in, s_out
        self.name, self.kind = entry["name"], entry["kind"]


def _fold(net, entry, torch):
    """The float layer's effective weights and BatchNorm/bias fold ``y = A * conv(x, W) + B``."""
    layer = getattr(net, entry["name"])
    if hasattr(layer, "quantized_weight"):
        w = layer.quantized_weight().detach()
    elif hasattr(layer, "adder"):
        w = layer.adder.detach()
    else:
        w = layer.weight.detach()
    if entry["kind"] == "linear":
        w = w.reshape(w.shape[0], -1)
    out = w.shape[0]
    bias = getattr(layer, "b", None) if hasattr(layer, "adder") else getattr(layer, "bias", None)
    bias = bias.detach() if bias is not None else torch.zeros(out)
    if entry.get("bn"):
        bn = getattr(net, entry["bn"])
        a = (bn.weight.detach() if bn.weight is not None else torch.ones(out)) / torch.sqrt(bn.running_var + bn.eps)
        b = (bn.bias.detach() if bn.bias is not None else torch.zeros(out)) - bn.running_mean * a
    else:
        a, b = torch.ones(out), torch.zeros(out)
    return w.double(), a.double(), (b + a * bias).double()


def calibrate(net, images, *, percentile=99.99):
    """Activation scales: for each compute layer the real value of one output step.

    Layers followed by ReLU map the ``percentile`` of their positive outputs onto ``qmax``; the last
    layer maps the largest ``|logit|``. Returns a list of floats in compute-layer order.
    """
    torch = _torch()
    net.eval()
    outs = []
    with torch.no_grad():
        net(torch.as_tensor(images, dtype=torch.float32), collect=outs)
    scales = []
    for i, y in enumerate(outs):
        y = y.double().flatten().numpy()
        last = i == len(outs) - 1
        v = np.abs(y).max() if last else np.percentile(np.maximum(y, 0), percentile)
        scales.append(float(v) if v > 0 else 1.0)
    return scales


def _build_module(torch):
    from torch import nn
    import torch.nn.functional as F
    from .layers_torch import adder_distance, floor_ste, round_ste

    class QuantNet(nn.Module):
        """The integer network in PyTorch: forward is the golden model's arithmetic, exactly."""

        def __init__(self, net, *, mode, x_bits=8, shift_bits=3, scales, input_scale, calib):
            super().__init__()
            self.spec = net.spec
            self.input_shape = net.input_shape
            self.out_shape = net.out_shape
            self.mode = RequantMode(mode)
            self.op = Op(net.pe)
            self.x_bits = x_bits
            self.qmax = int_range(x_bits)[1]
            self.input_scale = input_scale
            self.shift_bits = shift_bits
            self.layers = []
            entries = [e for e in self.spec if e["kind"] in ("conv2d", "linear")]
            if len(scales) != len(entries):
                raise ValueError(f"Need one activation scale per compute layer ({len(entries)}), "
                                 f"not {len(scales)}")
            # Layers are added in order, each measuring its accumulators' mean on the calibration
            # images as the previous (already quantised) layers deliver them.
            x = torch.as_tensor(calib).double()
            s_in, i = input_scale, 0
            with torch.no_grad():
                for entry in self.spec:
                    if entry["kind"] in ("conv2d", "linear"):
                        layer = self._add_layer(net, entry, s_in, scales[i] / self.qmax, x)
                        x = self.run_layer(layer, x)
                        s_in, i = scales[i] / self.qmax, i + 1
                    else:
                        x = self._run_other(entry, x)

        def _add_layer(self, net, entry, s_in, s_out, x_cal):
            name = entry["name"]
            w, a, b = _fold(net, entry, torch)
            out = w.shape[0]
            flat = w.reshape(out, -1)
            layer = _Layer(entry, s_in=s_in, s_out=s_out)
            where = f"layer {name!r}"
            if self.op is not Op.ADDER:
                # A negative BatchNorm scale flips the channel's weights, so every factor is >= 0.
                flip = torch.where(a < 0, -1.0, 1.0).double()
                w = w * flip.reshape(-1, *[1] * (w.dim() - 1))
                a = a.abs()
            if self.op is Op.ADDER:
                s_w = torch.full((out,), s_in, dtype=torch.float64)
                acc_scale = torch.full((out,), s_in, dtype=torch.float64)
            elif self.op is Op.SHIFT:
                mags = flat.abs()
                nz = mags[mags > 0]
                p_top = int(torch.round(torch.log2(nz.max())).item()) if nz.numel() else 0
                layer.p_max = p_top
                layer.p_min = p_top - ((1 << self.shift_bits) - 1)
                s_w = torch.full((out,), 2.0 ** layer.p_min, dtype=torch.float64)
                acc_scale = s_in * s_w
            else:
                peak = flat.abs().max(1).values
                s_w = torch.where(peak > 0, peak / self.qmax, torch.ones_like(peak))
                if self.mode is RequantMode.SHIFT:
                    # Widen the weight scale so the initial factor is a power of two exactly.
                    m0 = a * s_in * s_w / s_out
                    target = torch.exp2(torch.ceil(torch.log2(m0.clamp(min=1e-30))))
                    s_w = torch.where(m0 > 0, s_w * target / m0, s_w)
                acc_scale = s_in * s_w
            m = a * acc_scale / s_out
            if self.mode is RequantMode.SHIFT and bool((m < 0).any()):
                c = int(torch.nonzero(m < 0)[0, 0])
                raise QuantizeError(f"{where}: channel {c} has a negative BatchNorm scale; adder "
                                    f"weights cannot flip sign, so 'shift' requantisation cannot "
                                    f"represent it (use pow2x2 or mul)")
            layer.s_w = s_w
            shape = (-1,) + (1,) * (w.dim() - 1)
            self.register_parameter(f"{name}__w", nn.Parameter(w / s_w.reshape(shape)))
            sign = torch.where(m < 0, -1.0, 1.0).double()
            self.register_buffer(f"{name}__sign", sign)
            self.register_parameter(f"{name}__t", nn.Parameter(torch.log2(m.abs().clamp(min=2.0 ** -SHIFT_MAX))))
            # y = m * (acc - mu) + beta with mu the calibration mean of the accumulator: adder
            # accumulators carry a large offset, and centring keeps the error of the rounded
            # factor m (a few per cent for powers of two) from shifting every output.
            acc = self.accumulate(layer, x_cal, self.int_weights(layer, u=w / s_w.reshape(shape)))
            mu = acc.transpose(0, 1).reshape(out, -1).mean(1)
            self.register_buffer(f"{name}__mu", mu)
            self.register_parameter(f"{name}__beta", nn.Parameter(b / s_out + m * mu))
            self.layers.append(layer)
            return layer

        # -- the integer arithmetic --

        def int_weights(self, layer, u=None):
            """Integer-valued weights (float64) with straight-through gradients; adder weights are
            NOT clipped here (the clip's distance is a bias constant, see export)."""
            u = getattr(self, f"{layer.name}__w") if u is None else u
            if self.op is Op.ADDER:
                # 2**7 activation ranges either way: trained adder weights lie far outside the
                # activations' range, and a bound at the activations' own scale (2**15 steps
                # was one real unit at 16 bits) dropped their distance: 10 % accuracy.
                bound = 1 << (self.x_bits + 7)
                return round_ste(u).clamp(-bound, bound)
            if self.op is Op.MUL:
                return round_ste(u).clamp(-self.qmax, self.qmax)
            top = (1 << self.shift_bits) - 1
            with torch.no_grad():
                mag = u.abs()
                e = torch.round(torch.log2(mag.clamp(min=1e-30))).clamp_(0, top)
                q = torch.where(mag < 0.5, torch.zeros_like(u), torch.sign(u) * torch.exp2(e))
            return u + (q - u).detach()

        def factors(self, layer):
            """The real factor ``m`` and its exact representable value ``mq`` (straight-through)."""
            t = getattr(self, f"{layer.name}__t")
            m = getattr(self, f"{layer.name}__sign") * torch.exp2(t)
            fields = requant_fields(self.mode, m.detach().numpy(), where=f"layer {layer.name!r}")
            mq = torch.from_numpy(requant_scale(self.mode, fields))
            return m + (mq - m).detach(), fields

        def bias(self, layer, mq):
            beta = getattr(self, f"{layer.name}__beta")
            mu = getattr(self, f"{layer.name}__mu")
            lim = float(1 << (BIAS_BITS - 2))
            # A factor that rounds to 0 zeroes the channel whatever the bias: keep the bias at 0.
            live = mq != 0
            b = round_ste(beta / torch.where(live, mq, torch.ones_like(mq)) - mu).clamp(-lim, lim)
            return torch.where(live, b, torch.zeros_like(b))

        def accumulate(self, layer, x, w):
            e = layer.entry
            if self.op is Op.ADDER:
                if layer.kind == "conv2d":
                    n, _, h, wd = x.shape
                    k, s, p = e["kernel"], e.get("stride", 1), e.get("padding", 0)
                    oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
                    cols = F.unfold(x, k, padding=p, stride=s).transpose(1, 2).reshape(n * oh * ow, -1)
                    acc = adder_distance(cols, w.reshape(w.shape[0], -1))
                    return acc.reshape(n, oh, ow, -1).permute(0, 3, 1, 2)
                return adder_distance(x, w.reshape(w.shape[0], -1))
            if layer.kind == "conv2d":
                return F.conv2d(x, w, None, e.get("stride", 1), e.get("padding", 0))
            return F.linear(x, w.reshape(w.shape[0], -1))

        def run_layer(self, layer, x):
            w = self.int_weights(layer)
            acc = self.accumulate(layer, x, w)
            mq, _ = self.factors(layer)
            b = self.bias(layer, mq)
            shape = (1, -1) + (1,) * (acc.dim() - 2)
            z = (acc + b.reshape(shape)) * mq.reshape(shape)
            y = floor_ste(z + 0.5)
            return y.clamp(-self.qmax - 1, self.qmax)

        def forward(self, x, *, collect=None):
            """``x``: integer images (any integer or float dtype) -> integer logits (float64)."""
            x = torch.as_tensor(x).double()
            layers = iter(self.layers)
            for entry in self.spec:
                if entry["kind"] in ("conv2d", "linear"):
                    x = self.run_layer(next(layers), x)
                else:
                    x = self._run_other(entry, x)
                if collect is not None:
                    collect.append(x)
            return x

        @staticmethod
        def _run_other(entry, x):
            kind = entry["kind"]
            if kind == "relu":
                return torch.relu(x)
            if kind == "maxpool2d":
                k = entry.get("kernel", 2)
                return F.max_pool2d(x, k, entry.get("stride", k))
            if kind == "flatten":
                return x.flatten(1)
            raise ValueError(f"Unknown layer kind {kind!r} in the spec")

        def param_groups(self, lr_weight, lr_scale, lr_bias):
            groups = {"w": [], "t": [], "beta": []}
            for name, p in self.named_parameters():
                groups[name.rsplit("__", 1)[1]].append(p)
            return [{"params": groups["w"], "lr": lr_weight}, {"params": groups["t"], "lr": lr_scale},
                    {"params": groups["beta"], "lr": lr_bias}]

        # -- export --

        def export(self):
            """The :class:`model.QModel` with exactly this network's integer arithmetic."""
            layers, it = [], iter(self.layers)
            unsigned = True     # the layer's inputs are >= 0: the input grid, or behind a ReLU
            with torch.no_grad():
                for entry in self.spec:
                    kind, name = entry["kind"], entry["name"]
                    if kind in ("conv2d", "linear"):
                        layers.append(self._export_layer(next(it), unsigned=unsigned))
                        unsigned = False
                    elif kind == "relu":
                        layers.append(ReLU(name))
                        unsigned = True
                    elif kind == "maxpool2d":
                        k = entry.get("kernel", 2)
                        layers.append(MaxPool2d(name, kernel=k, stride=entry.get("stride", k)))
                    elif kind == "flatten":
                        layers.append(Flatten(name))
            classes = int(np.prod(self.out_shape))      # (a ReLU may follow the last layer)
            model = QModel(input_shape=tuple(self.input_shape), layers=layers, x_bits=self.x_bits,
                           input_scale=float(self.input_scale), labels=[str(i) for i in range(classes)])
            model.validate()
            return model

        def _export_layer(self, layer, *, unsigned):
            w = self.int_weights(layer).numpy().astype(np.int64)
            mq, fields = self.factors(layer)
            bias = self.bias(layer, mq).numpy().astype(np.int64)
            flat = w.reshape(w.shape[0], -1)
            common = dict(name=layer.name, op=self.op, w_bits=self.x_bits)
            if self.op is Op.ADDER:
                clipped = np.clip(w, 0 if unsigned else -self.qmax - 1, self.qmax)
                # |x - w| = |x - clip(w)| + dist(w, [lo, qmax]) for x in [lo, qmax], the range of
                # the layer's inputs: the distance sum is a constant of the channel, moved into
                # the bias.
                bias = bias - np.abs(flat - clipped.reshape(flat.shape)).sum(1)
                weights = {"weight": clipped.astype(np.int8 if self.x_bits <= 8 else np.int16)}
            elif self.op is Op.MUL:
                weights = {"weight": w.astype(np.int8 if self.x_bits <= 8 else np.int16)}
            else:
                mag = np.abs(w)
                exp = np.where(mag > 0, np.log2(np.where(mag > 0, mag, 1)), 0).round().astype(np.int64)
                weights = {"sign": np.sign(w).astype(np.int8),
                           "exponent": np.where(mag > 0, exp + layer.p_min, layer.p_min).astype(np.int8)}
                common.update(p_min=layer.p_min, p_max=layer.p_max)
            lo, hi = int_range(BIAS_BITS)
            if bias.min() < lo or bias.max() > hi:
                raise QuantizeError(f"layer {layer.name!r}: a bias is outside {BIAS_BITS} bits")
            requant = Requant(mode=self.mode, bias=bias.astype(np.int32), params=fields,
                              out_bits=self.x_bits)
            if layer.kind == "linear":
                weights = {k: v.reshape(v.shape[0], -1) for k, v in weights.items()}
                return Linear(**common, weights=weights, requant=requant, out_scale=float(layer.s_out))
            e = layer.entry
            return Conv2d(**common, weights=weights, requant=requant, out_scale=float(layer.s_out),
                          kernel=(e["kernel"], e["kernel"]), stride=e.get("stride", 1),
                          padding=e.get("padding", 0))

    return QuantNet


_QUANT_NET = None


def QuantNet(net, **kwargs):
    """Build the fine-tuning network of a trained :class:`train.FloatNet` (see the module doc).

    Keyword arguments: ``mode``, ``x_bits``, ``shift_bits``, ``scales`` (from :func:`calibrate`),
    ``input_scale``.
    """
    global _QUANT_NET
    if _QUANT_NET is None:
        _QUANT_NET = _build_module(_torch())
    return _QUANT_NET(net, **kwargs)


def finetune(qnet, x_int, labels, *, epochs, batch_size=32, lr_weight=0.002, lr_scale=0.001,
             lr_bias=0.005, seed=0, log=None):
    """Quantisation-aware fine-tuning: Adam on the integer network, cross-entropy on its logits
    scaled back to real values, a cosine schedule.

    The state kept is the best one seen, counting the start, by integer accuracy on the training
    images and then by loss: fine-tuning never leaves the network worse on the data it sees.
    """
    torch = _torch()
    import copy
    import torch.nn.functional as F
    x = torch.as_tensor(x_int).double()
    y = torch.as_tensor(labels)
    out_scale = qnet.layers[-1].s_out

    def score():
        with torch.no_grad():
            logits = torch.cat([qnet(x[i:i + 512]) for i in range(0, x.shape[0], 512)])
            return ((logits.argmax(1) == y).double().mean().item(),
                    -F.cross_entropy(logits * out_scale, y).item())

    if epochs <= 0:
        return qnet
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    opt = torch.optim.Adam(qnet.param_groups(lr_weight, lr_scale, lr_bias))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_state = score(), copy.deepcopy(qnet.state_dict())
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(qnet(x[idx]) * out_scale, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        now = score()
        if now > best:
            best, best_state = now, copy.deepcopy(qnet.state_dict())
        if log:
            log(f"fine-tune epoch {epoch + 1}/{epochs}: training accuracy {now[0]:.4f}, loss {-now[1]:.4f}")
    qnet.load_state_dict(best_state)
    return qnet


def quantize_net(net, data, cfg, *, log=None, calib_images=2000):
    """Calibrate, fine-tune and export a trained float network: ``(QModel, QuantNet)``.

    ``cfg`` is a :class:`train.TrainConfig` (``mode``, ``x_bits``, ``shift_bits``, ``qat_epochs``,
    ``batch_size``, ``seed`` and the fine-tuning learning rates in ``cfg.extra``).
    """
    torch = _torch()
    torch.set_num_threads(1)
    bits = cfg.x_bits
    qmax = int_range(bits)[1]
    x_int = quantize_images(bits, data.train_x)
    # Calibrate on what the integer network will see: the input grid, back in real units.
    calib = x_int[:calib_images].astype(np.float32) / qmax
    scales = calibrate(net, calib)
    qnet = QuantNet(net, mode=cfg.mode, x_bits=bits, shift_bits=cfg.shift_bits, scales=scales,
                    input_scale=1.0 / qmax, calib=x_int[:calib_images])
    extra = dict(cfg.extra)
    finetune(qnet, x_int, data.train_y, epochs=cfg.qat_epochs, batch_size=cfg.batch_size, seed=cfg.seed,
             lr_weight=extra.get("qat_lr_weight", 0.002), lr_scale=extra.get("qat_lr_scale", 0.001),
             lr_bias=extra.get("qat_lr_bias", 0.005), log=log)
    return qnet.export(), qnet


def quantize_and_save(net, data, cfg, output, *, float_accuracy=None, log=None):
    """Quantise ``net``, write the model file and measure it as the hardware will run it: the
    golden model on the file read back. Returns the report of ``addershift train/quantize/import``."""
    import os
    import time
    from .model import load_model, save_model
    torch = _torch()
    start, start_cpu = time.perf_counter(), time.process_time()
    if tuple(net.out_shape) != (data.classes,):
        raise QuantizeError(f"the network's output shape {tuple(net.out_shape)} is not one score "
                            f"per class of data set {data.name!r} ({data.classes},)")
    if float_accuracy is None:
        net.eval()
        with torch.no_grad():
            pred = net(torch.from_numpy(data.test_x)).argmax(1).numpy()
        float_accuracy = float((pred == data.test_y).mean())
    qmodel, _ = quantize_net(net, data, cfg, log=log)
    output = str(output)
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    save_model(qmodel, output)
    int_accuracy = golden_accuracy(load_model(output), data.test_x, data.test_y)
    return {"pe": net.pe, "mode": RequantMode(cfg.mode).value, "dataset": data.name,
            "float_accuracy": float_accuracy, "int_accuracy": int_accuracy,
            "test_images": int(data.test_x.shape[0]), "output": output,
            "bytes": os.path.getsize(output), "x_bits": cfg.x_bits, "qat_epochs": cfg.qat_epochs,
            "seed": cfg.seed, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - start_cpu}
