"""Spike non-linearity g with the STBP surrogate derivatives h1–h4 (spec section 5).

The forward pass is the exact Heaviside comparison of section 2; only the backward
pass uses a surrogate h(δ, a), δ = u − V_th, a = ``stbp.surrogate_a`` > 0. Every h is
normalised (unit area over δ, width set by a), so a changes the shape, not the
effective learning rate:

    h1 = (1/a) · 1[|δ| < a/2]                          rectangle (default)
    h2 = (√a/2 − (a/4)·|δ|) · 1[|δ| < 2/√a]            triangle
    h3 = s·(1 − s)/a,  s = sigmoid(δ/a)                logistic
    h4 = exp(−δ²/(2a)) / √(2π·a)                       Gaussian, variance a
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import torch
from torch import Tensor


class Surrogate(str, Enum):
    """Names of the surrogate derivatives, as users type them (``stbp.surrogate``)."""

    H1 = "h1"
    H2 = "h2"
    H3 = "h3"
    H4 = "h4"


def h1_rectangle(delta: Tensor, a: float) -> Tensor:
    """(1/a)·1[|δ| < a/2]; at a = 1 the official code's window |u − V_th| < 0.5."""
    window = delta.abs() < 0.5 * a
    return window.to(delta.dtype) if a == 1.0 else window.to(delta.dtype).div_(a)


def h2_triangle(delta: Tensor, a: float) -> Tensor:
    """(√a/2 − (a/4)·|δ|)·1[|δ| < 2/√a]: the paper's sign() read as an indicator."""
    root_a = math.sqrt(a)
    magnitude = delta.abs()
    ramp = (0.5 * root_a) - (0.25 * a) * magnitude
    return torch.where(magnitude < 2.0 / root_a, ramp, 0.0)


def h3_logistic(delta: Tensor, a: float) -> Tensor:
    """(1/a)·e^(−δ/a)/(1 + e^(−δ/a))², computed as s·(1 − s)/a (no overflow)."""
    s = torch.sigmoid(delta / a)
    return s * (1.0 - s) / a


def h4_gaussian(delta: Tensor, a: float) -> Tensor:
    """exp(−δ²/(2a))/√(2π·a): a normal density with variance a."""
    return torch.exp(delta.square() / (-2.0 * a)) / math.sqrt(2.0 * math.pi * a)


SURROGATES: dict[str, Callable[[Tensor, float], Tensor]] = {
    Surrogate.H1.value: h1_rectangle,
    Surrogate.H2.value: h2_triangle,
    Surrogate.H3.value: h3_logistic,
    Surrogate.H4.value: h4_gaussian,
}


def h1_step(delta: Tensor, a: float) -> Tensor:
    """∫h1: the clipped ramp clamp(δ/a + 1/2, 0, 1)."""
    return (delta / a + 0.5).clamp(0.0, 1.0)


def h2_step(delta: Tensor, a: float) -> Tensor:
    """∫h2: 1/2 + sign(δ)·(√a/2·|δ| − a/8·δ²) inside |δ| < 2/√a, 0 or 1 outside."""
    root_a = math.sqrt(a)
    magnitude = delta.abs().clamp(max=2.0 / root_a)
    rise = 0.5 * root_a * magnitude - 0.125 * a * magnitude.square()
    return 0.5 + torch.sign(delta) * rise


def h3_step(delta: Tensor, a: float) -> Tensor:
    """∫h3: sigmoid(δ/a)."""
    return torch.sigmoid(delta / a)


def h4_step(delta: Tensor, a: float) -> Tensor:
    """∫h4: the normal CDF with variance a."""
    return 0.5 * (1.0 + torch.erf(delta / math.sqrt(2.0 * a)))


SOFT_STEPS: dict[str, Callable[[Tensor, float], Tensor]] = {
    Surrogate.H1.value: h1_step,
    Surrogate.H2.value: h2_step,
    Surrogate.H3.value: h3_step,
    Surrogate.H4.value: h4_step,
}
"""The soft step whose exact derivative is each surrogate: a differentiable spike
for diagnostics (``snnrun gradcheck``), never used in training."""

# Valid ``stbp.spike_cmp`` values: "ge" (u >= V_th, the paper) and "gt" (u > V_th,
# the official code). Spelled out here so that surrogate.py does not import lif.py.
_STRICT_BY_CMP = {"ge": False, "gt": True}


def choice_name(value: object) -> str:
    """The plain string of a config choice given as a str-Enum member or a string.

    Enum members hash by their *name*, so they must be normalised before any dict
    lookup keyed by the value ("h1", "exp", ...).
    """
    return str(value.value if isinstance(value, Enum) else value)


def slope_at(u: Tensor, threshold: float, surrogate: str, a: float) -> Tensor:
    """h(u − V_th, a): the surrogate ∂o/∂u at potentials u (any shape, u's dtype).

    The one place the window is centred on the threshold; the reference and fused
    backends both call it as this module's global (a test may replace it).
    """
    return SURROGATES[surrogate](u - threshold, a)


class _SpikeFunction(torch.autograd.Function):
    """g(u) forward, grad · h(u − V_th, a) backward. Saves u only (one tensor)."""

    @staticmethod
    def forward(
        ctx, u: Tensor, threshold: float, surrogate: str, a: float, strict: bool
    ):  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.threshold = threshold
        ctx.surrogate = surrogate
        ctx.a = a
        # compare straight into a tensor of u's dtype: one kernel, no bool temporary
        fired = torch.empty_like(u)
        if strict:
            return torch.gt(u, threshold, out=fired)
        return torch.ge(u, threshold, out=fired)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        slope = slope_at(u, ctx.threshold, ctx.surrogate, ctx.a)
        return grad_spikes * slope, None, None, None, None


def spike(u: Tensor, threshold: float, surrogate: str, a: float, cmp: str) -> Tensor:
    """Fire where the membrane potential reaches the threshold.

    Args:
        u: membrane potential, any shape, floating dtype.
        threshold: V_th, in units of u.
        surrogate: "h1" … "h4" (str or :class:`Surrogate`); used by the backward only.
        a: surrogate width (> 0).
        cmp: "ge" (u >= V_th) or "gt" (u > V_th); they differ only on exact ties.
    Returns: spikes in {0., 1.}, same shape and dtype as u.
    """
    surrogate_name = choice_name(surrogate)
    if surrogate_name not in SURROGATES:
        raise ValueError(
            f"stbp.surrogate={surrogate_name} is unknown; "
            f"choose one of {', '.join(SURROGATES)}"
        )
    cmp_name = choice_name(cmp)
    if cmp_name not in _STRICT_BY_CMP:
        raise ValueError(
            f"stbp.spike_cmp={cmp_name} is unknown; "
            f"choose one of {', '.join(_STRICT_BY_CMP)}"
        )
    return _SpikeFunction.apply(
        u, float(threshold), surrogate_name, float(a), _STRICT_BY_CMP[cmp_name]
    )
