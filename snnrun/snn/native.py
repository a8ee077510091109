"""``stbp.backend=native``: the fused backend's recurrence as a compiled C++ loop.

``native_lif.cpp`` runs each layer's forward and section-4 backward as one loop over
T per chunk of neurons (CPU, float32/float64), with the same arithmetic as
``fused.py``: bit-identical spikes, gradients equal to rounding. It is compiled with
the system's C++ compiler on first use (``torch.utils.cpp_extension``, cached under
``TORCH_EXTENSIONS_DIR``, about a minute once); :func:`available` says whether that
worked, and the runner falls back to ``fused`` with a warning when it did not.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from snnrun.snn.fused import firing
from snnrun.snn.lif import LIFParams, leak_reset, leak_reset_slope

log = logging.getLogger(__name__)
SOURCES = [Path(__file__).with_name(n) for n in ("native_lif.cpp", "native_linear.cpp")]
_KINDS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}


def _cpu_signature() -> str:
    """What the compiled code may assume of this CPU: its instruction-set flags.

    The kernel is built with ``-march=native``; the cache directory may be shared
    between machines (a home directory on a cluster), so the build's name carries a
    digest of the flags and another CPU gets (and builds) its own."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line.split(":", 1)[1]
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _build_dir(name: str) -> Path | None:
    """torch's cache folder for the extension ``name``; None if torch hides it."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:  # a private helper: its absence only costs message and check
        return None


def _built(name: str) -> bool:
    """Whether the extension ``name`` is already compiled in torch's cache."""
    folder = _build_dir(name)
    return folder is None or any(folder.glob(name + ".*so"))


STALE_LOCK_S = 300.0
"""A build lock older than this is left by a killed process (a build takes ~1 min)."""


def _clear_stale_lock(name: str) -> None:
    """Wait for another process's build of ``name``; remove its lock if that process
    died mid-build. torch's own wait on the lock file has no limit: one interrupted
    first run would otherwise hang every later one."""
    folder = _build_dir(name)
    if folder is None:  # without it, torch's own wait applies
        return
    lock = folder / "lock"
    while lock.exists():
        try:
            age = time.time() - lock.stat().st_mtime
        except OSError:  # removed meanwhile: the build finished
            return
        if age > STALE_LOCK_S:
            log.warning(
                "removing a stale build lock left by an interrupted run: %s", lock
            )
            lock.unlink(missing_ok=True)
            return
        time.sleep(1.0)


@functools.cache
def _module() -> ModuleType | None:
    from torch.utils.cpp_extension import load

    base = [
        "-O3",
        "-ffp-contract=off",
        "-fopenmp",
    ]  # -fopenmp: at::parallel_for threads
    attempts = (("-march=native", *base), tuple(base))  # then portable code
    for index, flags in enumerate(attempts):
        name = f"snnrun_native_lif_{_cpu_signature()}_{index}"
        _clear_stale_lock(name)
        if not _built(name):
            log.info("compiling snnrun's C++ LIF kernel (once per machine, ~1 min)")
        try:
            return load(
                name=name,
                sources=[str(path) for path in SOURCES],
                extra_cflags=list(flags),
                verbose=False,
            )
        except Exception as error:  # no compiler, no ninja, a build error
            log.warning(
                "the native LIF kernel could not be built with %s (%s)",
                " ".join(flags),
                error,
            )
    return None


def available() -> bool:
    """Whether the C++ kernel is (or can be) built here."""
    return _module() is not None


def leak_constants(p: LIFParams, like: Tensor) -> tuple[Tensor, ...]:
    """f(1), f(0), f'(1), f'(0) per neuron, computed by the core's own functions."""
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    return (
        leak_reset(ones, p),
        leak_reset(zeros, p),
        leak_reset_slope(ones, p),
        leak_reset_slope(zeros, p),
    )


def save_and_fire(
    ctx, u: Tensor, consts: tuple[Tensor, ...], p: LIFParams, shape: torch.Size
) -> Tensor:  # fmt: skip
    """Forward's end for the loop kernels (native, Triton): keep u ``[T, N]`` and the
    leak constants for backward, return the spikes g(u) of ``p`` in the input's
    ``shape`` ``[T, B, ...]``."""
    ctx.save_for_backward(u, *consts)
    ctx.params, ctx.shape = p, shape
    return firing(p)(u).view(shape)  # g of p, the one definition


@functools.lru_cache(maxsize=64)
def _loop_constants(p: LIFParams, n: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """:func:`leak_constants` for the C++ loop: one value each when all ``n`` agree
    (the loop then broadcasts it), else one per neuron. Cached per (p, n, dtype)."""
    full = leak_constants(p, torch.empty(n, dtype=dtype))
    if n and all(bool((c == c[0]).all()) for c in full):
        return tuple(c[:1].clone() for c in full)
    return full


class _NativeLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq: Tensor, p: LIFParams) -> Tensor:  # type: ignore[override]
        flat = x_seq.reshape(x_seq.shape[0], -1).contiguous()
        consts = _loop_constants(p, flat.shape[1], flat.dtype)
        strict = p.spike_cmp == "gt"
        u, spikes = _module().forward(flat, consts[0], consts[1], p.threshold, strict)
        ctx.save_for_backward(u)
        ctx.params, ctx.shape, ctx.consts = p, x_seq.shape, consts
        return spikes.view(x_seq.shape)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        p = ctx.params
        go = grad_spikes.reshape(u.shape).contiguous()
        grad = _module().backward(
            u,
            go,
            *ctx.consts,
            p.threshold,
            p.spike_cmp == "gt",
            _KINDS[p.surrogate],
            p.surrogate_a,
            p.td_grad,
            p.detach_reset,
        )
        return grad.view(ctx.shape), None


def native_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """Drop-in for ``lif_sequence`` on the CPU: ``[T, B, ...]`` → spikes."""
    if x_seq.shape[0] == 0:
        raise ValueError(f"x_seq has shape {list(x_seq.shape)}: no time steps (T = 0)")
    if x_seq.device.type != "cpu" or _module() is None:
        from snnrun.snn.fused import fused_lif_sequence

        return fused_lif_sequence(x_seq, p)
    return _NativeLIF.apply(x_seq, p)


class _NativeAvgPool(torch.autograd.Function):
    """``nn.AvgPool2d(k)`` on ``[N, C, H, W]`` as one C++ pass each way (same sums
    in the same order and the same division as torch's kernel: identical values)."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: int) -> Tensor:  # type: ignore[override]
        ctx.kernel, ctx.size = kernel, x.shape[-2:]
        return _module().avg_pool_forward(x, kernel)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        height, width = ctx.size
        dx = _module().avg_pool_backward(grad.contiguous(), height, width, ctx.kernel)
        return dx, None


def avg_pool(x: Tensor, kernel: int) -> Tensor | None:
    """k×k average pool, stride k, of a contiguous float32/64 ``[N, C, H, W]`` CPU
    tensor by the C++ kernel; None where it does not apply (the caller runs torch's)."""
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or x.dim() != 4
        or not x.is_contiguous()
        or _module() is None
    ):
        return None
    return _NativeAvgPool.apply(x, kernel)


MAX_DENSITY = 0.25
"""The event-driven product runs while at most this share of the input is nonzero
(rate-coded MNIST: 0.13); above it, the dense GEMM is as fast or faster."""
MIN_OUTPUTS = 32
"""Narrower layers (a 10-class output) keep the dense product: the blocks are 32 wide."""


def pack_weight(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``weight [O, I]`` in the event kernel's blocks ``[⌈O/32⌉, I, 32]`` and the bias
    ``[⌈O/32⌉·32]``, zero-padded. Repacked on every call (0.4 ms for 800×784): a
    cache keyed on the tensor's version would go stale, as torch's fused Adam updates
    the weights in place without bumping it."""
    with torch.no_grad():
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach()
        return tuple(_module().pack_weight(weight.detach(), b))


class _EventLinear(torch.autograd.Function):
    """y = x·Wᵀ + b over the nonzero entries of x only; backward: dW over the same
    entries, db = Σ g, dx = g·W (dense) when x needs a gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, rows, packed):  # type: ignore[override]
        ptr, idx, val = rows
        y = _module().event_forward(ptr, idx, val, *packed, weight.shape[0])
        ctx.save_for_backward(ptr, idx, val, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ptr, idx, val, weight = ctx.saved_tensors
        g = grad.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = g.mm(weight)
        if ctx.needs_input_grad[1]:
            dw = _module().event_wgrad(ptr, idx, val, g, weight.shape[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db, None, None


def event_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """``F.linear(x, weight, bias)`` for spike input: x ``[N, I]`` (float32, CPU),
    summed over its nonzero entries only (C++; equal to the dense product up to float
    rounding, and the same whatever the thread count). None where it does not apply
    — another device or dtype, fewer than 32 outputs, more than 25% nonzeros, no
    compiler — and the caller runs the dense product."""
    if (
        x.device.type != "cpu"
        or x.dim() != 2
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or not weight.is_contiguous()
        or (bias is not None and bias.dtype != torch.float32)
        or weight.shape[0] < MIN_OUTPUTS
        or _module() is None
    ):
        return None
    rows = _module().spike_rows(x.contiguous(), int(MAX_DENSITY * x.numel()))
    if rows[0].numel() == 0:
        return None
    return _EventLinear.apply(x, weight, bias, tuple(rows), pack_weight(weight, bias))
