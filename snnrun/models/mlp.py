"""Spiking MLP from a list of hidden widths, e.g. 784-800-10 (spec section 7).

Every Linear layer, the output layer included, is followed by LIF neurons and has a
bias. Each step's input is flattened channel-major: index p·H·W + y·W + x.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from torch import nn

from snnrun.models.net import SpikingNet, Stage, apply_init
from snnrun.snn import LIFParams
from snnrun.snn.layers import Linear


@dataclass
class MLPConfig:
    """``arch=mlp``: hidden widths between the flattened input and the C outputs.

    Attributes:
        name: registry key.
        hidden: widths of the hidden LIF layers, e.g. [800].
        init: weight initialisation: stbp (the paper's) or default (torch's).
    """

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [800])
    init: str = "stbp"


def build(
    cfg: MLPConfig, in_shape: tuple[int, ...], num_classes: int, lif: LIFParams
) -> SpikingNet:
    """Build in_features-hidden…-num_classes with an LIF layer after every Linear."""
    hidden = list(cfg.hidden)
    if not hidden:
        raise ValueError(
            "arch.hidden is empty: STBP's MLP needs at least one hidden layer; "
            "try arch.hidden=[800]"
        )
    for width in hidden:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                f"arch.hidden={hidden} holds {width!r}; every width must be an "
                "integer >= 1"
            )
    if num_classes < 1 or not in_shape or min(in_shape) < 1:
        raise ValueError(
            f"in_shape={in_shape}, num_classes={num_classes}: sizes must be >= 1"
        )
    widths = [math.prod(in_shape), *hidden, num_classes]
    stages = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        linear = Linear(fan_in, fan_out)
        pre = nn.Sequential(nn.Flatten(), linear) if i == 0 else linear
        stages.append(Stage(pre, lif))
    net = SpikingNet(stages, in_shape)
    apply_init(net, cfg.init)
    return net
