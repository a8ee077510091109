"""Spiking CNN from a spec string such as "15C5-P2-40C5-P2-300" (spec section 7).

Tokens, joined by "-":

    <out>C<k>     conv k×k, stride 1, padding k//2, then LIF neurons
    P<k> / AP<k>  k×k average pool of the spikes below (not a neuron: the next layer
                  sees averages such as 0, ¼, ½, ¾, 1)
    <n>           fully connected, n units, then LIF (the map is flattened
                  channel-major before the first one)

The output layer, fully connected to num_classes units + LIF, is appended. A pool
belongs to the stage above it: stage = [pool…] [flatten] conv|linear, then LIF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from snnrun.models.net import SpikingNet, Stage, apply_init
from snnrun.snn import LIFParams
from snnrun.snn.layers import AvgPool2d, Conv2d, Linear

_CONV = re.compile(r"(\d+)C(\d+)")
_POOL = re.compile(r"A?P(\d+)")
_FC = re.compile(r"\d+")
_GRAMMAR = (
    "use <out>C<k> (conv), P<k> (average pool) or <n> (fully connected), joined by '-'"
)


@dataclass
class CNNConfig:
    """``arch=cnn``: layer spec; the C-unit output layer is appended automatically.

    Attributes:
        name: registry key.
        spec: layers joined by '-', e.g. 15C5-P2-40C5-P2-300: <out>C<k> a
            convolution, P<k> an average pool, <n> a dense layer.
        init: weight initialisation: stbp (the paper's) or default (torch's).
    """

    name: str = "cnn"
    spec: str = "15C5-P2-40C5-P2-300"
    init: str = "stbp"


def build(
    cfg: CNNConfig, in_shape: tuple[int, ...], num_classes: int, lif: LIFParams
) -> SpikingNet:
    """Build the network of ``cfg.spec`` for inputs [C, H, W] and C outputs."""
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(
            f"arch=cnn needs image input [channels, height, width], got in_shape="
            f"{tuple(in_shape)}; use arch=mlp for flat input"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    spec = str(cfg.spec)
    tokens = [t.strip() for t in spec.split("-")]
    if not any(tokens):
        raise ValueError(
            f"arch.spec={spec!r} is empty; try arch.spec=15C5-P2-40C5-P2-300"
        )
    builder = _Builder(spec, lif, *in_shape)
    for token in tokens:
        if m := _CONV.fullmatch(token):
            builder.conv(token, out_channels=int(m[1]), kernel=int(m[2]))
        elif m := _POOL.fullmatch(token):
            builder.pool(token, kernel=int(m[1]))
        elif _FC.fullmatch(token):
            builder.linear(token, units=int(token))
        else:
            builder.fail(f"bad token {token!r}; {_GRAMMAR}")
    builder.linear("output layer", units=num_classes)
    net = SpikingNet(builder.stages, in_shape)
    apply_init(net, cfg.init)
    return net


@dataclass
class _Builder:
    """Tracks the map shape while stages are appended; ``features`` is set once flat."""

    spec: str
    lif: LIFParams
    channels: int
    height: int
    width: int
    features: int | None = None
    pending: list[nn.Module] = field(default_factory=list)  # pools before next layer
    stages: list[Stage] = field(default_factory=list)

    def conv(self, token: str, out_channels: int, kernel: int) -> None:
        if self.features is not None:
            self.fail(f"{token}: a conv after a fully connected layer; {_GRAMMAR}")
        if out_channels < 1 or kernel < 1:
            self.fail(f"{token}: channels and kernel size must be >= 1")
        pad = kernel // 2
        self._add(Conv2d(self.channels, out_channels, kernel, stride=1, padding=pad))
        self.channels = out_channels
        self.height += 2 * pad - kernel + 1
        self.width += 2 * pad - kernel + 1

    def pool(self, token: str, kernel: int) -> None:
        if self.features is not None:
            self.fail(f"{token}: a pool after a fully connected layer; {_GRAMMAR}")
        if kernel < 1:
            self.fail(f"{token}: pool size must be >= 1")
        if self.height // kernel < 1 or self.width // kernel < 1:
            self.fail(
                f"{token} shrinks a {self.height}×{self.width} map to 0; "
                "remove a pool or use a smaller one"
            )
        self.pending.append(AvgPool2d(kernel))
        self.height //= kernel
        self.width //= kernel

    def linear(self, token: str, units: int) -> None:
        if units < 1:
            self.fail(f"{token}: a layer needs >= 1 units")
        if self.features is None:  # first FC: flatten c·H·W + y·W + x
            self.pending.append(nn.Flatten())
            self.features = self.channels * self.height * self.width
        self._add(Linear(self.features, units))
        self.features = units

    def fail(self, problem: str) -> None:
        raise ValueError(f"arch.spec={self.spec!r}: {problem}")

    def _add(self, layer: nn.Module) -> None:
        modules = [*self.pending, layer]
        pre = modules[0] if len(modules) == 1 else nn.Sequential(*modules)
        self.stages.append(Stage(pre, self.lif))
        self.pending = []
