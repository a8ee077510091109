"""Helpers shared by the neuron-backend tests (imported, not collected)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from snnrun.snn import LIFParams


def params(
    reset_form="exp", td_grad=True, detach_reset=False, surrogate="h1", cmp="ge",
    backend="reference",
) -> LIFParams:  # fmt: skip
    """V_th 0.5, decay 0.5, window width 0.8 and the given switches, validated."""
    return LIFParams(
        decay=0.5,
        threshold=0.5,
        reset_form=reset_form,
        td_grad=td_grad,
        detach_reset=detach_reset,
        surrogate=surrogate,
        surrogate_a=0.8,
        spike_cmp=cmp,
        backend=backend,
    ).validate()


def run(
    fn: Callable[[Tensor, LIFParams], Tensor], x: Tensor, weight: Tensor, p: LIFParams
) -> tuple[Tensor, Tensor]:
    """Spikes of ``fn(x, p)`` and the gradient of Σ spikes·weight w.r.t. ``x``."""
    x = x.detach().clone().requires_grad_()
    spikes = fn(x, p)
    (grad,) = torch.autograd.grad((spikes * weight).sum(), x)
    return spikes.detach(), grad
