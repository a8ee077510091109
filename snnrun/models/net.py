"""SpikingNet: a stack of stages, each a stateless pre-module followed by LIF neurons.

Stage n computes x[·, n] = W[n]·A_n(o[·, n-1]) + b[n] for all steps at once (the
pre-module, folded over [T·B, ...]) and then steps the LIF recursion over t. Spec
section 2 allows this layerwise order: every op sees the same values as per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from snnrun.snn import LIF, FoldTime, LIFParams, choice_name, init_stbp_
from snnrun.snn.layers import fused_linear_lif, takes_one_pass

INITS = ("stbp", "default")


class NetOutput(NamedTuple):
    """What a SpikingNet returns.

    Attributes:
        spikes: output-layer spikes, [T, B, C].
        layer_rates: mean firing rate of every LIF layer, input to output, in spikes
            per neuron per step, [L], detached.
    """

    spikes: Tensor
    layer_rates: Tensor


class Recording(NamedTuple):
    """Everything inside a SpikingNet for one input, for diagnostics and export tests.

    Attributes:
        inputs: the encoded input spikes, [T, B, *in_shape].
        spikes: spikes of every LIF layer, input side first, each [T, B, ...].
        potentials: membrane potentials u of every LIF layer, each [T, B, ...].
    """

    inputs: Tensor
    spikes: list[Tensor]
    potentials: list[Tensor]


class Stage(nn.Module):
    """One spiking layer: pre-module (Linear/Conv2d, maybe after pool/flatten) + LIF."""

    def __init__(self, pre: nn.Module, lif: LIFParams) -> None:
        super().__init__()
        self.pre = FoldTime(pre)
        self.lif = LIF(lif)

    def forward(self, x_seq: Tensor) -> Tensor:
        """x_seq: spikes of the layer below, [T, B, ...] → spikes, [T, B, ...'].
        In evaluation a Linear stage runs as one pass where it can
        (:func:`~snnrun.snn.layers.fused_linear_lif`): the same spikes."""
        fused = fused_linear_lif(self.pre, self.lif, x_seq)
        return self.lif(self.pre(x_seq)) if fused is None else fused

    def record(self, x_seq: Tensor) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward`, also returning the potentials: (o, u), [T, B, ...]."""
        return self.lif.record(self.pre(x_seq))


class SpikingNet(nn.Module):
    """A feed-forward spiking network evaluated layer by layer.

    Args:
        stages: the spiking layers, input side first; the last one's width is C.
        in_shape: shape of one sample at one step, e.g. (784,) or (2, 34, 34).
    """

    def __init__(self, stages: Iterable[Stage], in_shape: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.in_shape = tuple(int(d) for d in in_shape)
        if len(self.stages) == 0:
            raise ValueError("SpikingNet needs at least one stage")

    def forward(self, x: Tensor) -> NetOutput:
        """x: encoded input, [T, B, *in_shape] → NetOutput (spikes [T, B, C]).

        Compiled (``trainer.compile``), evaluation on the CPU runs eagerly wherever a
        stage takes the one-pass evaluation (:func:`_evaluates_eagerly`): the same
        spikes as the uncompiled network, about twice as fast as the compiled graph
        (``docs/performance.md``); training stays compiled."""
        if torch.compiler.is_compiling() and _evaluates_eagerly(self, x):
            return _eager_forward(self, x)
        return self._forward(x)

    def _forward(self, x: Tensor) -> NetOutput:
        """:meth:`forward`'s body: x [T, B, *in_shape] → NetOutput."""
        x = self._checked(x)
        rates = []
        for stage in self.stages:
            x = stage(x)
            rates.append(x.detach().mean())
        return NetOutput(spikes=x, layer_rates=torch.stack(rates))

    def record(self, x: Tensor) -> Recording:
        """Forward that keeps every layer's spikes and potentials (no faster path is
        slowed by it): x, [T, B, *in_shape] → :class:`Recording`."""
        x = self._checked(x)
        recording = Recording(x, [], [])
        for stage in self.stages:
            x, u = stage.record(x)
            recording.spikes.append(x)
            recording.potentials.append(u)
        return recording

    def _checked(self, x: Tensor) -> Tensor:
        """The input, shape-checked and floating point."""
        if x.dim() < 2 or tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(
                f"input has shape {list(x.shape)}; the network expects "
                f"[T, B, {', '.join(map(str, self.in_shape))}] (time-major)"
            )
        if not x.is_floating_point():
            x = x.to(next(self.parameters()).dtype)
        return x

    def weight_layers(self) -> list[nn.Linear | nn.Conv2d]:
        """The Linear/Conv2d layer of every stage, input side first."""
        return [m for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _evaluates_eagerly(net: SpikingNet, x: Tensor) -> bool:
    """Gradients off, and a stage of ``net`` takes the one-pass evaluation on x's
    device (:func:`~snnrun.snn.layers.takes_one_pass`): a C++ pass that inductor's
    graph cannot hold (it runs the two layers), so eager evaluation is the faster."""
    return not torch.is_grad_enabled() and any(
        takes_one_pass(stage.pre, stage.lif, x.device) for stage in net.stages
    )


@torch.compiler.disable
def _eager_forward(net: SpikingNet, x: Tensor) -> NetOutput:
    """``net``'s forward run eagerly, outside a compiled graph."""
    return net._forward(x)


def apply_init(net: SpikingNet, init: str) -> None:
    """Initialise the weights in place: ``stbp`` (U[−1,1], unit-norm rows; biases
    keep PyTorch's init, see ``snn.layers.init_stbp_``) or ``default`` (PyTorch's
    layer init, left as built)."""
    name = choice_name(init)
    if name not in INITS:
        raise ValueError(
            f"arch.init={name} is unknown; choose one of {', '.join(INITS)}"
        )
    if name == "stbp":
        for layer in net.weight_layers():
            init_stbp_(layer)
