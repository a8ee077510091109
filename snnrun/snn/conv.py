"""A first-layer convolution's weight gradient as one convolution over the batch.

A network's first convolution sees the encoder's spikes, which need no gradient, so
its backward is the weight gradient alone:

    dW[o, c, a, b] = Σ_{n, i, j} g[n, o, i, j] · x_pad[n, c, i + a, j + b]

— itself a convolution, with the batch as the channels: input xᵀ ``[C, N, H, W]``
(padded as the layer pads), kernel gᵀ ``[O, N, H', W']``, output ``[C, O, k, k]``.
On the CPU, oneDNN's weight-gradient kernel is slow for the few input channels of a
first layer (one for MNIST, two for N-MNIST's polarities); the same sums as this one
convolution take about half the time ([1,000, 1, 28, 28] → 32 maps, 5×5: 67 ms →
31 ms on 2 cores, ``docs/performance.md``). From four input channels on, oneDNN's
own kernel is as fast or faster, and :func:`batch_wgrad_applies` leaves it the work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_IN_CHANNELS = 2
"""Largest ``in_channels`` that takes the batch-as-channels weight gradient
(measured: 2.1-2.3x faster for 1 and 2, even at 4, slower at 8)."""


def batch_wgrad_applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether ``conv(x)`` should run :class:`_BatchWgradConv`: a training call
    (gradients on, a weight that wants one) on the CPU, x ``[N, C, H, W]`` in the
    weight's float dtype that needs no gradient itself, at most
    :data:`MAX_IN_CHANNELS` channels, stride and dilation 1, zero padding given as
    numbers, one group, no autocast. Under torch.compile the function is traced
    like any other: inductor calls the same two convolutions."""
    return (
        torch.is_grad_enabled()
        and conv.weight.requires_grad
        and not x.requires_grad
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in (torch.float32, torch.float64)
        and x.dtype == conv.weight.dtype
        and conv.in_channels <= MAX_IN_CHANNELS
        and conv.groups == 1
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and not isinstance(conv.padding, str)
        and conv.padding_mode == "zeros"
        and not torch.is_autocast_enabled("cpu")
    )


class _BatchWgradConv(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` for x without a gradient;
    backward: dW as one convolution over the batch, db = Σ g, no dx."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        dw = db = None
        if ctx.needs_input_grad[1]:
            dw = batch_wgrad(x, grad, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum((0, 2, 3))
        return None, dw, db, None


def batch_wgrad(x: Tensor, grad: Tensor, padding: tuple[int, int]) -> Tensor:
    """dL/dW ``[O, C, k, k]`` of a stride-1 convolution from its input x
    ``[N, C, H, W]`` and the gradient of its output ``[N, O, H', W']``."""
    flipped = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=padding)
    return flipped.transpose(0, 1).contiguous()


def conv2d(conv: nn.Conv2d, x: Tensor) -> Tensor | None:
    """``conv(x)`` through :class:`_BatchWgradConv` where :func:`batch_wgrad_applies`,
    else None (the caller runs torch's own)."""
    if not batch_wgrad_applies(conv, x):
        return None
    return _BatchWgradConv.apply(x, conv.weight, conv.bias, tuple(conv.padding))
