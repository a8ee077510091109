"""nn.Module shells over the pure LIF core: time folding, the LIF layer, STBP init.

Tensors are time-major, [T, B, ...]. Stateless ops (Linear, Conv2d, AvgPool2d,
Flatten) run once over [T·B, ...] via :class:`FoldTime`; only the LIF recursion steps
through t. Spec section 2: this layerwise order gives the same values as the
per-step order, and is faster (design.md §7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from snnrun.snn import conv, native
from snnrun.snn.backends import BACKENDS, resolve
from snnrun.snn.lif import Backend, LIFParams, lif_sequence_record
from snnrun.snn.memory import mark_binary


class FoldTime(nn.Module):
    """Run a stateless module once over all steps: [T, B, ...] → [T, B, ...']."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: Tensor) -> Tensor:
        """x_seq: [T, B, ...] → the module's output per step, [T, B, ...'].

        Rows of the folded input are time-major, n = t·B + b; a :class:`Linear`
        (alone or in an ``nn.Sequential``) is told T, so it can sum spikes from
        their temporal deltas (:func:`native.event_linear`)."""
        steps, batch = x_seq.shape[0], x_seq.shape[1]
        y = _call_folded(self.module, x_seq.flatten(0, 1), steps)
        return y.unflatten(0, (steps, batch))


def _call_folded(module: nn.Module, x: Tensor, steps: int) -> Tensor:
    """``module(x)`` on folded rows ``[T·B, ...]``, passing ``steps`` = T to every
    :class:`Linear` met directly or inside an ``nn.Sequential``."""
    if isinstance(module, Linear):
        return module(x, steps)
    if type(module) is nn.Sequential:
        for layer in module:
            x = _call_folded(layer, x, steps)
        return x
    return module(x)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(kernel)`` (stride = kernel, no padding, floor) that runs the
    native C++ pass on the CPU where it is built (``native.avg_pool``: the same
    values as torch's kernel, about 4x faster on ``[T·B, 32, 28, 28]`` spikes, no
    zero-filled gradient buffer), and torch's own elsewhere. Still an
    ``nn.AvgPool2d``: exports and ``isinstance`` checks see the standard module."""

    def __init__(self, kernel: int) -> None:
        super().__init__(kernel)
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, C, H, W]`` → ``[N, C, H // k, W // k]``."""
        pooled = native.avg_pool(x, self.kernel)
        return super().forward(x) if pooled is None else pooled


class Linear(nn.Linear):
    """``nn.Linear`` that, on the CPU, sums only the weight rows of nonzero inputs
    when its input is spikes (``native.event_linear``: at most 25% nonzero, float32,
    C++ kernel built; about 4x faster than the dense product at MNIST's 13% input
    density, and 1.5-2x on the 10-class output layer) and runs torch's dense
    product otherwise. Told T (``forward(x, steps)``, as :class:`FoldTime` does),
    it sums 0/1 spikes from their temporal deltas where those are shorter (each
    sample's majority pattern once, then per step only what differs from it).
    Equal to ``nn.Linear`` up to float rounding. ``event_driven=False``
    (``trainer.event_products=false``, :func:`set_event_products`) keeps the dense
    product always; so does autocast (bf16). Under torch.compile it is one registered
    operator that inductor calls (``native._event_linear_op``). Still an
    ``nn.Linear``: state dicts, exports and ``isinstance`` checks see the standard
    module."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.event_driven = True

    def forward(self, x: Tensor, steps: int = 1) -> Tensor:
        """x: ``[N, in_features]`` → ``[N, out_features]``; ``steps`` = T when the
        rows are T time-major steps of N / T samples (:class:`FoldTime` says so)."""
        if self.event_driven and not torch.is_autocast_enabled(x.device.type):
            y = native.event_linear(x, self.weight, self.bias, steps)
            if y is not None:
                return y
        return super().forward(x)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, as a network's first layer on the CPU (an input that needs
    no gradient, at most two channels, stride 1), computes its weight gradient as one
    convolution over the batch (``snn.conv``: the same sums, about 2x faster than
    oneDNN's weight-gradient kernel for so few channels), and is torch's own
    everywhere else. Still an ``nn.Conv2d``: state dicts, exports and ``isinstance``
    checks see the standard module."""

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, C, H, W]`` → ``[N, out_channels, H', W']``."""
        y = conv.conv2d(self, x)
        return super().forward(x) if y is None else y


def set_event_products(module: nn.Module, enabled: bool) -> None:
    """Turn the event-driven product of every :class:`Linear` in ``module`` on/off."""
    for layer in module.modules():
        if isinstance(layer, Linear):
            layer.event_driven = enabled


class LIF(nn.Module):
    """A layer of LIF neurons over all time steps.

    Holds parameters only, no tensor state: every call starts from u = o = 0 and
    sizes its state from the input, so a short last batch just works.
    """

    def __init__(self, params: LIFParams) -> None:
        super().__init__()
        self.params = params.validate()
        self._run = BACKENDS[self.params.backend]

    def forward(self, x_seq: Tensor) -> Tensor:
        """x_seq: synaptic input W·x + b, [T, B, ...] → spikes {0., 1.}, [T, B, ...].

        Input in bfloat16/float16 (matrix products under autocast) is widened to
        float32 first: the membrane state and the threshold test stay float32."""
        return mark_binary(self._run(_state_dtype(x_seq), self.params))

    def record(self, x_seq: Tensor) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward`, also returning the potentials u: ([T, B, ...]) × 2."""
        return lif_sequence_record(_state_dtype(x_seq), self.params)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params._asdict().items())


def fused_linear_lif(pre: FoldTime, lif: LIF, x_seq: Tensor) -> Tensor | None:
    """``lif(pre(x_seq))`` in one C++ pass (:func:`native.event_linear_lif`) where it
    can be: gradients off (evaluation), ``pre`` a :class:`Linear` (alone, or last in
    an ``nn.Sequential`` after flatten/pool layers) with event products on, no
    autocast, ``lif`` on the native backend for x's device, no forward hook watching
    them. x_seq: ``[T, B, ...]`` → spikes ``[T, B, O]``, bit-identical to the two
    layers (which run, from the flattened/pooled input, where the input is too dense
    for the event product); None where it does not apply."""
    if (
        torch.is_grad_enabled()
        or torch.is_autocast_enabled(x_seq.device.type)
        or not takes_one_pass(pre, lif, x_seq.device)
    ):
        return None
    head, linear = _split_linear(pre.module)
    observers = _observers(pre, lif, linear)
    if observers is None:
        return None
    steps, batch = x_seq.shape[0], x_seq.shape[1]
    x = x_seq.flatten(0, 1)
    for module in head:  # called as modules: their own hooks run
        x = module(x)
    spikes = native.event_linear_lif(x, linear.weight, linear.bias, steps, lif.params)
    if spikes is None:  # the two layers, without running the head again
        return lif(linear(x, steps).unflatten(0, (steps, batch)))
    for hook in observers:  # what linear(x, steps) would have shown them
        hook(linear, (x, steps))
    return mark_binary(spikes.view(steps, batch, -1))


def takes_one_pass(pre: FoldTime, lif: LIF, device: torch.device) -> bool:
    """Whether :func:`fused_linear_lif` runs this stage in one pass on ``device`` when
    gradients are off (unless a hook watches it): ``pre`` a :class:`Linear` with event
    products on (alone or after flatten/pool) and ``lif`` on the native backend."""
    _, linear = _split_linear(pre.module)
    if linear is None or not linear.event_driven:
        return False
    return resolve(lif.params.backend, device) == Backend.NATIVE.value


OBSERVER = "_snnrun_observes_input"
"""Attribute that marks a forward pre-hook as an observer (:func:`observer`)."""


def observer(
    hook: Callable[[nn.Module, tuple], None],
) -> Callable[[nn.Module, tuple], None]:
    """Mark ``hook``, a forward pre-hook for a :class:`Linear` that only reads the
    layer's input and returns None (``models.synops.SynOpsMeter``'s counter), so
    that the one-pass evaluation keeps running: it calls the hook itself with the
    input the layer would have received, ``(x [T·B, I], T)``."""
    setattr(hook, OBSERVER, True)
    return hook


def _observers(pre: FoldTime, lif: LIF, linear: Linear) -> list[Callable] | None:
    """The Linear's observer pre-hooks (:func:`observer`), to be called by the one
    pass; None where another hook would miss a layer that the one pass does not
    run (a global hook, a hook on ``pre``, on the LIF, a forward hook on the Linear,
    an unmarked pre-hook): then the layers run one by one. The head's own modules
    (flatten, pool) are called either way, with their hooks."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return None
    skipped = [pre, *lif.modules()]
    if pre.module is not linear:
        skipped.append(pre.module)  # a Sequential: never called as a module
    if linear._forward_hooks or any(
        m._forward_hooks or m._forward_pre_hooks for m in skipped
    ):
        return None
    hooks = linear._forward_pre_hooks
    if any(
        not getattr(hook, OBSERVER, False)
        or key in linear._forward_pre_hooks_with_kwargs
        for key, hook in hooks.items()
    ):
        return None
    return list(hooks.values())


def _split_linear(module: nn.Module) -> tuple[list[nn.Module], Linear | None]:
    """(the layers before it, the :class:`Linear`) when ``module`` is a Linear or an
    ``nn.Sequential`` ending in one after stateless layers (flatten, pool) that are
    neither Linear nor Sequential themselves; else ([], None)."""
    if isinstance(module, Linear):
        return [], module
    if type(module) is nn.Sequential and len(module) and isinstance(module[-1], Linear):
        head = list(module)[:-1]
        if not any(isinstance(layer, (nn.Linear, nn.Sequential)) for layer in head):
            return head, module[-1]
    return [], None


def _state_dtype(x_seq: Tensor) -> Tensor:
    """x_seq, in float32 when it came in a half-precision dtype."""
    if x_seq.dtype in (torch.bfloat16, torch.float16):
        return x_seq.float()
    return x_seq


@torch.no_grad()
def init_stbp_(
    layer: nn.Linear | nn.Conv2d, generator: torch.Generator | None = None
) -> None:
    """STBP init, in place: W ~ U[−1, 1], then each output unit's fan-in row (a conv's
    flattened in_ch·k·k kernel) divided by its L2 norm, so every row has unit norm
    (spec section 8, ``arch.init=stbp``).

    The bias keeps PyTorch's default U[−1/√fan_in, 1/√fan_in]. The spec's zero bias
    (its own choice, no source) leaves a layer behind a silent one at u = 0 exactly,
    on h1's window edge, so no gradient flows at all: measured on the paper CNN
    (15C5-P2-40C5-P2-300, T=10 and T=30), every weight gradient of the first batch
    was 0 with zero biases and non-zero with these."""
    weight = layer.weight
    weight.uniform_(-1.0, 1.0, generator=generator)
    rows = weight.view(weight.shape[0], -1)
    rows.div_(torch.linalg.vector_norm(rows, dim=1, keepdim=True))
    # layer.bias: left as nn.Linear/nn.Conv2d initialised it (see the docstring)
