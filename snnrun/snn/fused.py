"""The fused multi-step LIF backend: one autograd node per layer (spec sections 2, 4).

The reference backend (``lif.py``) lets autograd record every step: about ten graph
nodes and their saved tensors per step and layer. This one runs the recurrence over
all T steps without a graph and writes the section-4 backward by hand, so a layer is
one node that keeps a single tensor, the potentials u ``[T, B, ...]``; spikes,
f(o), f'(o) and the surrogate are recomputed from u in backward.

Backward. With u[t+1] = f(o[t])·u[t] + x[t+1] and o[t] = g(u[t]), the gradient that
reaches u[t] is::

    δu[t] = ∂L/∂o[t]·h(u[t]) + δu[t+1]·(f(o[t]) + u[t]·f'(o[t])·h(u[t]))
            └ spatial ┘          └ TD-leak ┘   └ TD-reset ─────────┘

and ∂L/∂x[t] = δu[t]. ``detach_reset`` drops the TD-reset term, ``td_grad=false``
both temporal terms. Everything but the δu recursion is computed for all steps at
once; the recursion itself is one multiply-add per step.

The forward reuses ``lif.leak_reset`` and the same operation order as the reference
(a product, then a sum), so spikes are bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from snnrun.snn import surrogate
from snnrun.snn.lif import LIFParams, leak_reset, leak_reset_slope, lif_sequence

Fire = Callable[[Tensor], Tensor]
"""u → spikes o (same shape and dtype)."""
Slope = Callable[[Tensor], Tensor]
"""u → the surrogate ∂o/∂u used in backward."""


def firing(p: LIFParams) -> Fire:
    """g of ``p``: 1[u >= V_th] (``ge``) or 1[u > V_th] (``gt``), in u's dtype."""
    compare = torch.gt if p.spike_cmp == "gt" else torch.ge
    return lambda u: compare(u, p.threshold).to(u.dtype)


def surrogate_slope(p: LIFParams) -> Slope:
    """h of ``p``: ``surrogate.slope_at(u, V_th, …)``, the reference's own window."""
    return lambda u: surrogate.slope_at(u, p.threshold, p.surrogate, p.surrogate_a)


def potentials(x_seq: Tensor, p: LIFParams, fire: Fire | None = None) -> Tensor:
    """Run the recurrence without a graph: input ``[T, B, ...]`` → u ``[T, B, ...]``.

    u[0] = x[0] (the zero initial state contributes nothing), then
    u[t] = f(o[t-1])·u[t-1] + x[t], with o = g(u) of ``p`` (``fire=None``) or
    ``fire(u)`` (any spike function, e.g. a smooth one in tests).
    """
    with torch.no_grad():
        u_seq = torch.empty_like(x_seq)
        u_seq[0] = x_seq[0]
        scratch = torch.empty_like(x_seq[0])
        if fire is None:
            _binary_steps(x_seq, u_seq, p, scratch)
            return u_seq
        for t in range(1, x_seq.shape[0]):
            torch.mul(leak_reset(fire(u_seq[t - 1]), p), u_seq[t - 1], out=scratch)
            torch.add(scratch, x_seq[t], out=u_seq[t])
    return u_seq


def _binary_steps(x_seq: Tensor, u_seq: Tensor, p: LIFParams, scratch: Tensor) -> None:
    """Steps 1..T-1 for a binary spike. f takes two values, f(0) and f(1): both are
    computed once by ``lif.leak_reset`` itself, element for element on a step-sized
    tensor (same kernel, same rounding as the reference), and every step selects
    between them: four operations a step instead of seven, same bits."""
    if x_seq.shape[0] == 1:
        return
    f_fired = leak_reset(torch.ones_like(scratch), p)
    f_quiet = leak_reset(torch.zeros_like(scratch), p)
    compare = torch.gt if p.spike_cmp == "gt" else torch.ge
    fired = torch.empty_like(scratch, dtype=torch.bool)
    for t in range(1, x_seq.shape[0]):
        compare(u_seq[t - 1], p.threshold, out=fired)
        torch.where(fired, f_fired, f_quiet, out=scratch)
        scratch.mul_(u_seq[t - 1])
        torch.add(scratch, x_seq[t], out=u_seq[t])


def input_gradient(
    u_seq: Tensor, grad_spikes: Tensor, p: LIFParams, fire: Fire, slope: Slope
) -> Tensor:
    """∂L/∂x ``[T, B, ...]`` from the potentials and ∂L/∂o, by the section-4 recursion."""
    h = slope(u_seq)
    grad = grad_spikes * h  # the spatial term of every step
    if not p.td_grad or u_seq.shape[0] == 1:
        return grad
    o = fire(u_seq[:-1])
    carry = leak_reset(o, p)  # TD-leak: f(o[t])
    if not p.detach_reset:  # TD-reset: u[t]·f'(o[t])·h(u[t])
        carry.addcmul_(u_seq[:-1] * leak_reset_slope(o, p), h[:-1])
    for t in range(u_seq.shape[0] - 2, -1, -1):
        grad[t].addcmul_(grad[t + 1], carry[t])
    return grad


class _FusedLIF(torch.autograd.Function):
    """x ``[T, B, ...]`` → spikes; saves u only."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, p: LIFParams) -> Tensor:  # type: ignore[override]
        u_seq = potentials(x_seq, p)
        ctx.save_for_backward(u_seq)
        ctx.params = p
        return firing(p)(u_seq)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u_seq,) = ctx.saved_tensors
        p = ctx.params
        grad = input_gradient(
            u_seq, grad_spikes.contiguous(), p, firing(p), surrogate_slope(p)
        )
        return grad, None


def fused_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """Drop-in for :func:`snnrun.snn.lif.lif_sequence` (same values and gradients).

    Args:
        x_seq: synaptic input for every step, [T, B, ...], floating dtype.
        p: validated neuron parameters (plain strings, see ``LIFParams.validate``).
    Returns: spikes in {0., 1.}, [T, B, ...], x_seq's dtype.
    """
    if x_seq.shape[0] == 0:
        raise ValueError(f"x_seq has shape {list(x_seq.shape)}: no time steps (T = 0)")
    if not x_seq.requires_grad:  # evaluation: no node, nothing saved
        return firing(p)(potentials(x_seq, p))
    return _FusedLIF.apply(x_seq.contiguous(), p)


def disagreement(p: LIFParams, device: torch.device, dtype: torch.dtype) -> str | None:
    """Compare ``p.backend`` with the reference on a tiny seeded draw on ``device``.

    Returns None when spikes are identical and input gradients agree (relative
    1e-4 for float32), else a description of the first difference. Costs
    milliseconds; the runner calls it once at start-up.
    """
    if p.backend == "reference":
        return None
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 17, generator=generator, dtype=torch.float64)
    weight = torch.randn(6, 3, 17, generator=generator, dtype=torch.float64)
    x = (x * p.threshold * 1.5).to(device, dtype).requires_grad_()
    weight = weight.to(device, dtype)
    results = []
    from snnrun.snn.backends import BACKENDS  # backends.py imports this module

    for run in (lif_sequence, BACKENDS[p.backend]):
        spikes = run(x, p)
        (grad,) = torch.autograd.grad((spikes * weight).sum(), x)
        results.append((spikes.detach(), grad))
    (ref_o, ref_g), (o, g) = results
    if not torch.equal(ref_o, o):
        count = int((ref_o != o).sum())
        return f"{count} of {o.numel()} spikes differ from the reference backend"
    scale = float(ref_g.abs().max()) or 1.0
    error = float((ref_g - g).abs().max()) / scale
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    if error > tolerance:
        return f"input gradients differ from the reference by {error:.2e} (relative)"
    return None
