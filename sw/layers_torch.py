"""PyTorch layers of the three network kinds, with the reference implementations' behaviour and
parameter names, so checkpoints move both ways.

- AdderNet (huawei-noah/AdderNet ``adder.py``): :class:`Adder2d` / :class:`AdderLinear`, parameter
  ``adder`` (and ``b`` when ``bias=True``). Forward ``-sum|x - w|``; backward with the
  full-precision weight gradient ``(x - w) * g``, the HardTanh input gradient
  ``HardTanh(w - x) * g`` and the adaptive learning-rate scaling ``eta * sqrt(k) / ||grad||``
  (``eta = 0.2``, ``k`` the layer's weight count).
- DeepShift-Q (mostafaelhoushi/DeepShift ``modules_q.py``): :class:`Conv2dShiftQ` /
  :class:`LinearShiftQ`, parameter ``weight``: rounded to a signed power of two in the log domain,
  gradient straight through.
- DeepShift-PS (``modules.py``): :class:`Conv2dShift` / :class:`LinearShift`, parameters ``shift``
  (exponent) and ``sign``, both trained; ``round(sign)`` may be 0, so zero weights exist.
- The baseline is ``torch.nn.Conv2d`` / ``torch.nn.Linear``; BatchNorm is PyTorch's.

Shift exponents are clamped to ``[p_min, p_max]`` (the hardware's range). This module imports torch:
only training and import use it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADDER_ETA", "adder_distance", "round_ste", "sign_ste", "floor_ste", "round_power_of_2",
    "Adder2d", "AdderLinear", "Conv2dShiftQ", "LinearShiftQ", "Conv2dShift", "LinearShift",
    "layer_class", "SHIFT_VARIANTS",
]

#: AdderNet's adaptive learning-rate factor (the reference divides by 5).
ADDER_ETA = 0.2
SHIFT_VARIANTS = ("q", "ps")


class _AdderFunction(torch.autograd.Function):
    """``y[n, o] = -sum_k |x[n, k] - w[o, k]|`` with AdderNet's backward pass."""

    @staticmethod
    def forward(ctx, x, w, eta):
        ctx.save_for_backward(x, w)
        ctx.eta = eta
        # cdist with p=1 sums |x - w| directly (no matmul trick), exact for integer-valued floats.
        return -torch.cdist(x.unsqueeze(0), w.unsqueeze(0), p=1).squeeze(0)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            # sum_n (x[n, k] - w[o, k]) * g[n, o], as two matmul-shaped sums.
            grad_w = grad.t() @ x - w * grad.sum(0).unsqueeze(1)
            if ctx.eta is not None:
                grad_w = grad_w / grad_w.norm(p=2).clamp(min=1e-12) * (math.sqrt(w.numel()) * ctx.eta)
        if ctx.needs_input_grad[0]:
            # HardTanh(w - x) * g summed over the outputs, in chunks to bound the (n, o, k) temporary.
            grad_x = torch.empty_like(x)
            step = max(1, (1 << 21) // max(1, w.numel()))
            for i in range(0, x.shape[0], step):
                diff = (w.unsqueeze(0) - x[i:i + step].unsqueeze(1)).clamp_(-1, 1)
                grad_x[i:i + step] = torch.einsum("nok,no->nk", diff, grad[i:i + step])
        return grad_x, grad_w, None


def adder_distance(x, w, *, eta=ADDER_ETA):
    """``-sum_k |x[n, k] - w[o, k]|`` for ``x`` (N, K) and ``w`` (O, K), AdderNet's gradients.

    ``eta=None`` turns off the adaptive learning-rate scaling (the raw full-precision gradient).
    """
    return _AdderFunction.apply(x, w, eta)


def _straight_through(fn, name):
    """An autograd Function computing ``fn(x)`` whose gradient is passed through unchanged."""
    def forward(ctx, x):
        return fn(x)

    def backward(ctx, grad):
        return grad

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})


_RoundSTE = _straight_through(torch.round, "_RoundSTE")
_SignSTE = _straight_through(torch.sign, "_SignSTE")
_FloorSTE = _straight_through(torch.floor, "_FloorSTE")


class _UnsymmetricMul(torch.autograd.Function):
    """``a * b`` whose gradient to ``b`` is the plain output gradient (DeepShift-PS's sign path)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        (b,) = ctx.saved_tensors
        return grad * b, grad


def round_ste(x):
    """``round(x)`` (ties to even) with the gradient passed straight through."""
    return _RoundSTE.apply(x)


def sign_ste(x):
    return _SignSTE.apply(x)


def floor_ste(x):
    """``floor(x)`` with the gradient passed straight through."""
    return _FloorSTE.apply(x)


def round_power_of_2(w, *, p_min, p_max):
    """DeepShift-Q's weight rounding: ``sign(w) * 2**round(log2|w|)``, exponent clamped to
    ``[p_min, p_max]``; weights below ``2**(p_min - 1)`` (nearer to 0 than to ``2**p_min``) become 0.
    Straight-through gradient."""
    with torch.no_grad():
        mag = w.abs()
        p = torch.round(torch.log2(mag.clamp(min=1e-30))).clamp_(p_min, p_max)
        q = torch.sign(w) * torch.exp2(p)
        q = torch.where(mag < 2.0 ** (p_min - 1), torch.zeros_like(q), q)
    return w + (q - w).detach()


def _check_channels(**values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _check_range(p_min, p_max):
    if not (isinstance(p_min, int) and isinstance(p_max, int) and p_min <= p_max):
        raise ValueError(f"Shift exponents need integers p_min <= p_max, not {p_min!r}, {p_max!r}")


class Adder2d(nn.Module):
    """AdderNet convolution (reference ``adder2d``): parameter ``adder`` (O, C, K, K), bias ``b``."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=False,
                 eta=ADDER_ETA):
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        stride=stride)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.eta = kernel_size, stride, padding, eta
        self.adder = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.b = nn.Parameter(torch.rand(out_channels)) if bias else None

    def forward(self, x):
        n, _, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        cols = F.unfold(x, k, padding=p, stride=s)                  # (N, C*K*K, L)
        cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
        out = adder_distance(cols, self.adder.reshape(self.out_channels, -1), eta=self.eta)
        out = out.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)
        if self.b is not None:
            out = out + self.b.reshape(1, -1, 1, 1)
        return out


class AdderLinear(nn.Module):
    """A fully connected AdderNet layer: parameter ``adder`` (O, I), bias ``b``."""

    def __init__(self, in_features, out_features, *, bias=False, eta=ADDER_ETA):
        super().__init__()
        _check_channels(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features, self.eta = in_features, out_features, eta
        self.adder = nn.Parameter(torch.randn(out_features, in_features))
        self.b = nn.Parameter(torch.rand(out_features)) if bias else None

    def forward(self, x):
        out = adder_distance(x, self.adder, eta=self.eta)
        return out + self.b if self.b is not None else out


class _ShiftQMixin:
    def _init_q(self, p_min, p_max):
        _check_range(p_min, p_max)
        self.p_min, self.p_max = p_min, p_max

    def quantized_weight(self):
        return round_power_of_2(self.weight, p_min=self.p_min, p_max=self.p_max)


class Conv2dShiftQ(nn.Conv2d, _ShiftQMixin):
    """DeepShift-Q convolution: a float ``weight`` used as its signed power-of-two rounding."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=False,
                 p_min=-7, p_max=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self._init_q(p_min, p_max)

    def forward(self, x):
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding)


class LinearShiftQ(nn.Linear, _ShiftQMixin):
    """DeepShift-Q fully connected layer."""

    def __init__(self, in_features, out_features, *, bias=False, p_min=-7, p_max=0):
        super().__init__(in_features, out_features, bias=bias)
        self._init_q(p_min, p_max)

    def forward(self, x):
        return F.linear(x, self.quantized_weight(), self.bias)


class _ShiftPSMixin:
    """DeepShift-PS: ``weight = round(sign) * 2**round(shift)`` with trainable ``shift`` and ``sign``."""

    def _init_ps(self, shape, p_min, p_max):
        _check_range(p_min, p_max)
        self.p_min, self.p_max = p_min, p_max
        self.shift = nn.Parameter(torch.empty(shape).uniform_(p_min, p_max))
        self.sign = nn.Parameter(torch.empty(shape).uniform_(-1, 1))

    def quantized_weight(self):
        with torch.no_grad():     # as the reference: the parameters themselves stay in range
            self.shift.clamp_(self.p_min, self.p_max)
            self.sign.clamp_(-1, 1)
        sign = sign_ste(round_ste(self.sign))       # round(sign) in {-1, 0, +1}: zero allowed
        return _UnsymmetricMul.apply(torch.exp2(round_ste(self.shift)), sign)


class Conv2dShift(nn.Module, _ShiftPSMixin):
    """DeepShift-PS convolution: parameters ``shift`` and ``sign`` (O, C, K, K), optional ``bias``."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=False,
                 p_min=-7, p_max=0):
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        stride=stride)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._init_ps((out_channels, in_channels, kernel_size, kernel_size), p_min, p_max)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding)


class LinearShift(nn.Module, _ShiftPSMixin):
    """DeepShift-PS fully connected layer: parameters ``shift`` and ``sign`` (O, I)."""

    def __init__(self, in_features, out_features, *, bias=False, p_min=-7, p_max=0):
        super().__init__()
        _check_channels(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self._init_ps((out_features, in_features), p_min, p_max)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        return F.linear(x, self.quantized_weight(), self.bias)


def layer_class(kind, pe, variant="q"):
    """The class for a ``"conv2d"`` or ``"linear"`` layer of ``pe`` (adder, shift, mul)."""
    table = {
        ("conv2d", "adder"): Adder2d, ("linear", "adder"): AdderLinear,
        ("conv2d", "mul"): nn.Conv2d, ("linear", "mul"): nn.Linear,
        ("conv2d", "shift", "q"): Conv2dShiftQ, ("linear", "shift", "q"): LinearShiftQ,
        ("conv2d", "shift", "ps"): Conv2dShift, ("linear", "shift", "ps"): LinearShift,
    }
    key = (kind, pe, variant) if pe == "shift" else (kind, pe)
    if key not in table:
        raise ValueError(f"No {kind} layer for PE {pe!r} (variant {variant!r})")
    return table[key]
