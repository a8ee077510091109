"""``stbp.backend=triton``: the fused recurrence as Triton kernels (CUDA).

One program per block of neurons loops over all T steps inside the kernel, forward
and section-4 backward, with the arithmetic of ``fused.py`` (f(0), f(1), f'(0), f'(1)
from ``lif.leak_reset``; product and sum rounded separately: ``enable_fp_fusion``
off), so spikes are bit-identical to the reference. On a machine without CUDA the
kernels run under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before
this module is imported (how CI checks them); otherwise the layer runs ``fused``.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from snnrun.snn.lif import LIFParams
from snnrun.snn.native import leak_constants as _constants
from snnrun.snn.native import save_and_fire

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the backend then runs `fused`
    triton = None

BLOCK = 1024
_KINDS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}


def available(device: torch.device) -> bool:
    """Triton is importable and can run on ``device`` (CUDA, or the interpreter)."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _slope(delta, a, root_a, gauss_norm, KIND: tl.constexpr):
        magnitude = tl.abs(delta)
        if KIND == 1:
            h = tl.where(magnitude < 0.5 * a, 1.0 / a, 0.0)
        elif KIND == 2:
            h = tl.where(
                magnitude < 2.0 / root_a, 0.5 * root_a - 0.25 * a * magnitude, 0.0
            )
        elif KIND == 3:
            s = 1.0 / (1.0 + tl.exp(-delta / a))
            h = s * (1.0 - s) / a
        else:
            h = tl.exp(delta * delta / (-2.0 * a)) * gauss_norm
        return h

    @triton.jit
    def _forward_kernel(
        x_ptr, u_ptr, f1_ptr, f0_ptr, steps, n, threshold,
        STRICT: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    ):  # fmt: skip
        offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n
        f_fired = tl.load(f1_ptr + offsets, mask=mask)
        f_quiet = tl.load(f0_ptr + offsets, mask=mask)
        v = tl.load(x_ptr + offsets, mask=mask)
        tl.store(u_ptr + offsets, v, mask=mask)
        for t in range(1, steps):
            if STRICT:  # noqa: SIM108 (a constexpr branch, compiled away)
                fired = v > threshold
            else:
                fired = v >= threshold
            product = tl.where(fired, f_fired, f_quiet) * v
            v = product + tl.load(x_ptr + t * n + offsets, mask=mask)
            tl.store(u_ptr + t * n + offsets, v, mask=mask)

    @triton.jit
    def _backward_kernel(
        u_ptr, go_ptr, grad_ptr, f1_ptr, f0_ptr, d1_ptr, d0_ptr, steps, n,
        threshold, a, root_a, gauss_norm,
        STRICT: tl.constexpr, KIND: tl.constexpr, TD: tl.constexpr,
        DETACH: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    ):  # fmt: skip
        offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n
        f_fired = tl.load(f1_ptr + offsets, mask=mask)
        f_quiet = tl.load(f0_ptr + offsets, mask=mask)
        d_fired = tl.load(d1_ptr + offsets, mask=mask)
        d_quiet = tl.load(d0_ptr + offsets, mask=mask)
        du_next = tl.zeros((BLOCK_SIZE,), dtype=f_fired.dtype)
        for i in range(steps):
            t = steps - 1 - i
            v = tl.load(u_ptr + t * n + offsets, mask=mask)
            h = _slope(v - threshold, a, root_a, gauss_norm, KIND)
            du = tl.load(go_ptr + t * n + offsets, mask=mask) * h
            if TD:
                if STRICT:  # noqa: SIM108 (a constexpr branch, compiled away)
                    fired = v > threshold
                else:
                    fired = v >= threshold
                carry = tl.where(fired, f_fired, f_quiet)
                if not DETACH:
                    carry += v * tl.where(fired, d_fired, d_quiet) * h
                du += du_next * carry  # du_next is 0 after the last step
            tl.store(grad_ptr + t * n + offsets, du, mask=mask)
            du_next = du


class _TritonLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq: Tensor, p: LIFParams) -> Tensor:  # type: ignore[override]
        flat = x_seq.reshape(x_seq.shape[0], -1).contiguous()
        steps, n = flat.shape
        consts = _constants(p, flat[0])
        u = torch.empty_like(flat)
        strict = p.spike_cmp == "gt"
        _forward_kernel[(triton.cdiv(n, BLOCK),)](
            flat, u, consts[0], consts[1], steps, n, p.threshold,
            STRICT=strict, BLOCK_SIZE=BLOCK, enable_fp_fusion=False,
        )  # fmt: skip
        return save_and_fire(ctx, u, consts, p, x_seq.shape)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        u, f1, f0, d1, d0 = ctx.saved_tensors
        p = ctx.params
        steps, n = u.shape
        go = grad_spikes.reshape(u.shape).contiguous()
        grad = torch.empty_like(u)
        a = float(p.surrogate_a)
        _backward_kernel[(triton.cdiv(n, BLOCK),)](
            u, go, grad, f1, f0, d1, d0, steps, n, p.threshold, a, math.sqrt(a),
            1.0 / math.sqrt(2.0 * math.pi * a),
            STRICT=p.spike_cmp == "gt", KIND=_KINDS[p.surrogate], TD=p.td_grad,
            DETACH=p.detach_reset, BLOCK_SIZE=BLOCK, enable_fp_fusion=False,
        )  # fmt: skip
        return grad.view(ctx.shape), None


def triton_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """Drop-in for ``lif_sequence``: ``[T, B, ...]`` → spikes; runs ``fused`` where
    Triton cannot run (no CUDA and no interpreter)."""
    if x_seq.shape[0] == 0:
        raise ValueError(f"x_seq has shape {list(x_seq.shape)}: no time steps (T = 0)")
    if not available(x_seq.device):
        from snnrun.snn.fused import fused_lif_sequence

        return fused_lif_sequence(x_seq, p)
    return _TritonLIF.apply(x_seq, p)
