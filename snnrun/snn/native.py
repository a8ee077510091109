"""``stbp.backend=native``: the fused backend's recurrence as a compiled C++ loop.

``native_lif.cpp`` runs each layer's forward and section-4 backward as one loop over
T per chunk of neurons (CPU, float32/float64), with the same arithmetic as
``fused.py``: bit-identical spikes, gradients equal to rounding. It is compiled with
the system's C++ compiler on first use (``torch.utils.cpp_extension``, cached under
``TORCH_EXTENSIONS_DIR``, about a minute once); :func:`available` says whether that
worked, and the runner falls back to ``fused`` with a warning when it did not.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from snnrun.snn.fused import firing
from snnrun.snn.lif import LIFParams, leak_reset, leak_reset_slope

log = logging.getLogger(__name__)
SOURCES = [
    Path(__file__).with_name(name)
    for name in ("native_lif.cpp", "native_linear.cpp", "native_rate.cpp")
]
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


def build_name(attempt: int = 0) -> str:
    """The extension's name in torch's cache: this CPU's flags, the sources, and the
    build attempt (0: ``-march=native``, 1: portable code)."""
    return f"snnrun_native_lif_{_cpu_signature()}_{_sources_digest()}_{attempt}"


@functools.lru_cache(maxsize=1)
def _sources_digest() -> str:
    """A digest of the C++ sources' names and contents: part of the build's name, so
    that two copies of snnrun (two checkouts, an installed and an editable one) with
    the same sources share one build, and different sources never overwrite it."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:10]


def _staged(name: str) -> list[Path]:
    """The sources, copied once into the build's own folder and compiled from there:
    torch's build file names its sources by path, and a second copy of snnrun at
    another path would rewrite it and rebuild (~1 min, holding the build lock) on
    every switch between the two. Falls back to the package's files where torch's
    folder is unknown or not writable."""
    folder = _build_dir(name)
    if folder is None:
        return SOURCES
    staged = []
    try:
        (folder / "src").mkdir(parents=True, exist_ok=True)
        for path in SOURCES:
            target = folder / "src" / path.name
            if not target.exists():  # same name, same digest: same contents
                partial = target.with_suffix(f".{os.getpid()}.tmp")
                partial.write_bytes(path.read_bytes())
                os.replace(partial, target)  # atomic: a racing process sees whole files
            staged.append(target)
    except OSError:
        return SOURCES
    return staged


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
        name = build_name(index)
        _clear_stale_lock(name)
        if not _built(name):
            log.info("compiling snnrun's C++ LIF kernel (once per machine, ~1 min)")
        try:
            return load(
                name=name,
                sources=[str(path) for path in _staged(name)],
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


_AVAILABLE: list[bool] = []
"""The answer of :func:`available`, once known: torch.compile then reads it as a
constant instead of tracing the build (which would break its graph)."""


def available() -> bool:
    """Whether the C++ kernel is (or can be) built here."""
    if not _AVAILABLE:
        _AVAILABLE.append(_module() is not None)
    return _AVAILABLE[0]


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


def _forward_loop(
    x: Tensor, p: LIFParams, keep_u: bool = True
) -> tuple[Tensor, Tensor]:
    """The C++ forward of ``x [T, N]`` (contiguous) → (u, spikes), both ``[T, N]``
    (u empty when not ``keep_u``: nothing will run backward)."""
    consts = _loop_constants(p, x.shape[1], x.dtype)
    u, spikes = _module().forward(
        x, consts[0], consts[1], p.threshold, p.spike_cmp == "gt", keep_u
    )
    return u, spikes


def _backward_loop(u: Tensor, grad_spikes: Tensor, p: LIFParams) -> Tensor:
    """The C++ section-4 backward: dL/dx ``[T, N]`` from u and dL/dspikes."""
    return _module().backward(
        u,
        grad_spikes.contiguous(),
        *_loop_constants(p, u.shape[1], u.dtype),
        p.threshold,
        p.spike_cmp == "gt",
        _KINDS[p.surrogate],
        p.surrogate_a,
        p.td_grad,
        p.detach_reset,
    )


class _NativeLIF(torch.autograd.Function):
    """Eager runs: one autograd node per layer (lighter than the operator below)."""

    @staticmethod
    def forward(ctx, x: Tensor, p: LIFParams) -> Tensor:  # type: ignore[override]
        u, spikes = _forward_loop(x, p)
        ctx.save_for_backward(u)
        ctx.params = p
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return _backward_loop(u, grad_spikes, ctx.params), None


# The same loops as registered operators, for torch.compile: inductor keeps each as
# one opaque call and compiles the graph around it. (In eager mode an operator's
# dispatch costs ~0.1 ms more per call than the autograd.Function above.)
@torch.library.custom_op("snnrun::lif_forward", mutates_args=())
def _lif_forward(
    x: Tensor,
    decay: float,
    threshold: float,
    reset_form: str,
    spike_cmp: str,
    surrogate: str,
    surrogate_a: float,
    detach_reset: bool,
    td_grad: bool,
) -> tuple[Tensor, Tensor]:
    """:func:`_forward_loop` with the LIF parameters spelled out."""
    fields = (decay, threshold, reset_form, spike_cmp, surrogate, surrogate_a)
    return _forward_loop(x, LIFParams(*fields, detach_reset, td_grad))


@_lif_forward.register_fake
def _(x: Tensor, *fields) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("snnrun::lif_backward", mutates_args=())
def _lif_backward(
    u: Tensor,
    grad_spikes: Tensor,
    decay: float,
    threshold: float,
    reset_form: str,
    spike_cmp: str,
    surrogate: str,
    surrogate_a: float,
    detach_reset: bool,
    td_grad: bool,
) -> Tensor:
    """:func:`_backward_loop` with the LIF parameters spelled out."""
    fields = (decay, threshold, reset_form, spike_cmp, surrogate, surrogate_a)
    return _backward_loop(u, grad_spikes, LIFParams(*fields, detach_reset, td_grad))


@_lif_backward.register_fake
def _(u: Tensor, grad_spikes: Tensor, *fields) -> Tensor:
    return torch.empty_like(u)


def _lif_setup(ctx, inputs: tuple, output: tuple) -> None:
    ctx.fields = inputs[1:]
    ctx.save_for_backward(output[0])


def _lif_grad(ctx, grad_u: Tensor | None, grad_spikes: Tensor) -> tuple:
    (u,) = ctx.saved_tensors
    dx = _lif_backward(u, grad_spikes, *ctx.fields)
    return (dx, *([None] * len(ctx.fields)))


_lif_forward.register_autograd(_lif_grad, setup_context=_lif_setup)


def native_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """Drop-in for ``lif_sequence`` on the CPU: ``[T, B, ...]`` → spikes."""
    if x_seq.shape[0] == 0:
        raise ValueError(f"x_seq has shape {list(x_seq.shape)}: no time steps (T = 0)")
    if x_seq.device.type != "cpu" or not available():
        from snnrun.snn.fused import fused_lif_sequence

        return fused_lif_sequence(x_seq, p)
    flat = x_seq.reshape(x_seq.shape[0], -1).contiguous()
    if torch.compiler.is_compiling():
        return _lif_forward(flat, *p[:8])[1].view(x_seq.shape)
    if not (torch.is_grad_enabled() and flat.requires_grad):  # evaluation: spikes only
        return _forward_loop(flat, p, keep_u=False)[1].view(x_seq.shape)
    return _NativeLIF.apply(flat, p).view(x_seq.shape)


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


@torch.library.custom_op("snnrun::avg_pool", mutates_args=())
def _avg_pool_op(x: Tensor, kernel: int) -> Tensor:
    """:class:`_NativeAvgPool`'s forward as a registered operator (torch.compile)."""
    return _module().avg_pool_forward(x, kernel)


@_avg_pool_op.register_fake
def _(x: Tensor, kernel: int) -> Tensor:
    n, c, h, w = x.shape
    return x.new_empty(n, c, h // kernel, w // kernel)


@torch.library.custom_op("snnrun::avg_pool_backward", mutates_args=())
def _avg_pool_backward_op(grad: Tensor, height: int, width: int, kernel: int) -> Tensor:
    """Its gradient ``[N, C, height, width]``."""
    return _module().avg_pool_backward(grad.contiguous(), height, width, kernel)


@_avg_pool_backward_op.register_fake
def _(grad: Tensor, height: int, width: int, kernel: int) -> Tensor:
    return grad.new_empty(*grad.shape[:2], height, width)


def _pool_setup(ctx, inputs: tuple, output: Tensor) -> None:
    x, ctx.kernel = inputs
    ctx.size = tuple(x.shape[-2:])


def _pool_grad(ctx, grad: Tensor) -> tuple:
    return _avg_pool_backward_op(grad, *ctx.size, ctx.kernel), None


_avg_pool_op.register_autograd(_pool_grad, setup_context=_pool_setup)


def avg_pool(x: Tensor, kernel: int) -> Tensor | None:
    """k×k average pool, stride k, of a contiguous float32/64 ``[N, C, H, W]`` CPU
    tensor by the C++ kernel; None where it does not apply (the caller runs torch's).
    While torch.compile traces, the registered operator stands in."""
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or x.dim() != 4
        or not available()
    ):
        return None
    if torch.compiler.is_compiling():
        return _avg_pool_op(x.contiguous(), kernel)
    if not x.is_contiguous():
        return None
    return _NativeAvgPool.apply(x, kernel)


BLOCK = 32
"""Outputs per packed weight block (``kChunk`` in ``native_linear.cpp``). Summing
from temporal deltas costs a second pass over x to save list entries, each worth one
weight row per block: a layer of at most one block (an output layer of 10 classes)
sums x's nonzeros instead (measured on an MLP's hidden spikes at T = 30: lists in
0.55 ms instead of 1.1, for a product of 0.06 ms)."""

MAX_DENSITY = 0.25
"""The event-driven product runs while at most this share of the input is nonzero
(rate-coded MNIST: 0.13); above it, the dense GEMM is as fast or faster."""


def pack_weight(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``weight [O, I]`` in the event kernel's blocks ``[⌈O/32⌉, I, 32]`` and the bias
    ``[⌈O/32⌉·32]``, zero-padded. Repacked on every call (0.4 ms for 800×784): a
    cache keyed on the tensor's version would go stale, as torch's fused Adam updates
    the weights in place without bumping it."""
    with torch.no_grad():
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach()
        return tuple(_module().pack_weight(weight.detach(), b))


_FROZEN: list[dict[tuple, tuple[Tensor, Tensor]]] = []
"""One cache of packed weights per open :func:`frozen_weights` scope (innermost last)."""


@contextlib.contextmanager
def frozen_weights() -> Iterator[None]:
    """``with frozen_weights(): ...`` around an evaluation pass (many batches, no
    optimiser step in between): each event-driven layer packs its weights once and
    reuses the blocks, instead of repacking them per batch (0.3 ms for 800×784; a
    tenth of an MLP T=10 evaluation step). Only calls with gradients disabled use the
    cache; it is keyed on the weight's storage and version and dropped on exit. A
    training step inside the scope must not change weights that a later call reads
    (torch's fused Adam does not bump the version): the scope is for evaluation."""
    _FROZEN.append({})
    try:
        yield
    finally:
        _FROZEN.pop()


def _packed(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`pack_weight`, from the innermost :func:`frozen_weights` cache when one
    is open and gradients are off."""
    if not _FROZEN or torch.is_grad_enabled():
        return pack_weight(weight, bias)
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    if bias is not None:
        key += (bias.data_ptr(), bias._version)
    cache = _FROZEN[-1]
    if key not in cache:
        cache[key] = pack_weight(weight, bias)
    return cache[key]


Lists = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""An event product's view of x ``[N, I]``: (ptr, idx, val, bptr, bidx). Either x's
nonzero entries row by row (CSR; val empty when every one is 1; bptr, bidx empty), or
its temporal deltas: each sample's base pattern (bptr ``[B + 1]``, bidx) and where
each row differs from it (val = ±1) — ``event_rows`` in ``native_linear.cpp``."""


def _event_lists(x: Tensor, steps: int) -> Lists | None:
    """x ``[N, I]`` (contiguous; rows t·B + b for ``steps`` = T > 1) as its temporal
    deltas where they are at least a fifth shorter than its nonzero list, else as
    that list; None when either would hold more than :data:`MAX_DENSITY` of x (the
    dense product). ``event_rows`` in ``native_linear.cpp``: one counting pass over
    x sizes both, then only the chosen lists are written."""
    lists = _module().event_rows(x, steps, int(MAX_DENSITY * x.numel()))
    return tuple(lists) if lists[0].numel() else None


def _forward_lists(lists: Lists, packed: tuple[Tensor, Tensor], outs: int) -> Tensor:
    """x·Wᵀ + b ``[N, outs]`` from x's lists and the packed weights."""
    if lists[3].numel():
        return _module().event_forward_delta(*lists, *packed, outs)
    return _module().event_forward(*lists[:3], *packed, outs)


def _wgrad_lists(lists: Lists, grad: Tensor, ins: int) -> Tensor:
    """gradᵀ·x ``[outs, ins]`` from x's lists (for deltas: the deltas' sum plus each
    base times its sample's gradient summed over the steps)."""
    if lists[3].numel():
        return _module().event_wgrad_delta(*lists, grad.contiguous(), ins)
    return _module().event_wgrad(*lists[:3], grad.contiguous(), ins)


class _EventLinear(torch.autograd.Function):
    """y = x·Wᵀ + b over x's lists only (:data:`Lists`); backward: dW over the same
    lists, db = Σ g, dx = g·W (dense) when x needs a gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, lists, packed):  # type: ignore[override]
        y = _forward_lists(lists, packed, weight.shape[0])
        ctx.save_for_backward(*lists, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        *lists, weight = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = grad.contiguous().mm(weight)
        if ctx.needs_input_grad[1]:
            dw = _wgrad_lists(tuple(lists), grad, weight.shape[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum(0)
        return dx, dw, db, None, None


@torch.library.custom_op("snnrun::event_linear", mutates_args=())
def _event_linear_op(
    x: Tensor, weight: Tensor, bias: Tensor | None, steps: int = 1
) -> Tensor:
    """:func:`event_linear` as one registered operator, for torch.compile: the lists
    are rebuilt from x in backward (x is saved, not the lists: the operator's outputs
    need sizes known before it runs); above the density cap, the dense product."""
    lists = _event_lists(x, steps)
    if lists is None:
        return torch.nn.functional.linear(x, weight, bias)
    return _forward_lists(lists, pack_weight(weight, bias), weight.shape[0])


@_event_linear_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, steps: int = 1) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("snnrun::event_wgrad", mutates_args=())
def _event_wgrad_op(x: Tensor, grad: Tensor, steps: int = 1) -> Tensor:
    """gradᵀ·x ``[O, I]`` over x's lists (dense above the cap)."""
    lists = _event_lists(x, steps)
    if lists is None:
        return grad.t().mm(x)
    return _wgrad_lists(lists, grad, x.shape[1])


@_event_wgrad_op.register_fake
def _(x: Tensor, grad: Tensor, steps: int = 1) -> Tensor:
    return x.new_empty(grad.shape[1], x.shape[1])


def _event_setup(ctx, inputs: tuple, output: Tensor) -> None:
    x, weight, bias, ctx.steps = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _event_grad(ctx, grad: Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    dx = grad.mm(weight) if ctx.needs_input_grad[0] else None
    dw = _event_wgrad_op(x, grad, ctx.steps) if ctx.needs_input_grad[1] else None
    db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None


_event_linear_op.register_autograd(_event_grad, setup_context=_event_setup)


def _event_applies(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether the C++ event product can take x ``[N, I]``: float32 CPU tensors, a
    contiguous weight, the kernel built."""
    return not (
        x.device.type != "cpu"
        or x.dim() != 2
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or not weight.is_contiguous()
        or (bias is not None and bias.dtype != torch.float32)
        or not available()
    )


def _list_steps(weight: Tensor, steps: int) -> int:
    """The T that x's lists are built with: 1 (its nonzeros) for a layer of at most
    one block of outputs (:data:`BLOCK`), else ``steps``."""
    return 1 if weight.shape[0] <= BLOCK else steps


def event_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, steps: int = 1
) -> Tensor | None:
    """``F.linear(x, weight, bias)`` for spike input: x ``[N, I]`` (float32, CPU),
    summed over its nonzero entries only (C++; equal to the dense product up to float
    rounding, and the same whatever the thread count). ``steps`` = T > 1 says x's
    rows are time-major, n = t·B + b (as :class:`~snnrun.snn.layers.FoldTime` folds
    them): 0/1 spikes are then summed from their temporal deltas where those are
    shorter — each sample's majority pattern once, then per step only where the
    step differs from it (rate-coded MNIST: ~1/5 of the nonzeros) — unless the layer
    has at most :data:`BLOCK` outputs. None where it does
    not apply — another device or dtype, more than 25% nonzeros, no compiler — and
    the caller runs the dense product. While torch.compile traces, the registered
    operator (:func:`_event_linear_op`) stands in: inductor keeps it as one call and
    compiles what lies around it."""
    if not _event_applies(x, weight, bias):
        return None
    steps = _list_steps(weight, steps)
    if torch.compiler.is_compiling():
        return _event_linear_op(x.contiguous(), weight, bias, steps)
    lists = _event_lists(x.contiguous(), steps)
    if lists is None:
        return None
    if not torch.is_grad_enabled():  # evaluation: no autograd node to build
        return _forward_lists(lists, _packed(weight, bias), weight.shape[0])
    return _EventLinear.apply(x, weight, bias, lists, _packed(weight, bias))


def event_linear_lif(
    x: Tensor, weight: Tensor, bias: Tensor | None, steps: int, p: LIFParams
) -> Tensor | None:
    """Evaluation (gradients off) of a Linear and the LIF layer after it in one C++
    pass: x ``[T·B, I]`` (rows t·B + b) → spikes ``[T·B, O]``, the same bit for bit as
    :func:`event_linear` followed by :func:`native_lif_sequence`, without ever storing
    the synaptic input W·x + b (``event_forward_lif`` in ``native_linear.cpp``). None
    where it does not apply — gradients on, under torch.compile, per-neuron leak
    constants, or where :func:`event_linear` itself would not run — and the caller
    runs the two layers."""
    if (
        torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or not _event_applies(x, weight, bias)
        or x.shape[0] % steps
    ):
        return None
    f1, f0, *_ = _loop_constants(p, weight.shape[0], torch.float32)
    if f1.numel() != 1:
        return None
    lists = _event_lists(x.contiguous(), _list_steps(weight, steps))
    if lists is None:
        return None
    packed = _packed(weight, bias)
    return _module().event_forward_lif(
        *lists,
        *packed,
        weight.shape[0],
        steps,
        float(f1),
        float(f0),
        p.threshold,
        p.spike_cmp == "gt",
    )


def rate_spikes(k: Tensor, steps: int, key: int) -> Tensor | None:
    """Bernoulli rate coding of uint8 intensities ``k`` ``[B, ...]`` on the CPU in one
    C++ pass: float32 spikes ``[steps, B, ...]``, the stream of ``key`` (a signed
    64-bit integer) as ``data.encoding`` defines it, bit for bit. None off the CPU or
    without the compiled kernel (the caller runs the torch version)."""
    if k.device.type != "cpu" or k.dtype != torch.uint8 or not available():
        return None
    flat = _module().rate_encode(k.reshape(-1).contiguous(), steps, key)
    return flat.view(steps, *k.shape)
