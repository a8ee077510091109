"""How close STBP's surrogate gradient is to a true gradient, per layer.

STBP keeps the exact step in the forward and puts a surrogate h in the backward.
The network whose spike is the *soft step* H with H' = h (``SOFT_STEPS``) has an
exact gradient; comparing the two per layer (cosine similarity, norm ratio) in
float64 shows how much the binary forward, the surrogate and any dropped temporal
path (``detach_reset``, ``td_grad=false``) change the direction of learning.

:func:`probe_window` checks, through the layer's real forward and backward, that the
surrogate window is centred on the threshold the forward fires at: a surrogate of
u instead of u − V_th is a known bug class of STBP re-implementations.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from snnrun.models.net import SpikingNet
from snnrun.models.readout import firing_rate, stbp_loss
from snnrun.snn.layers import LIF
from snnrun.snn.lif import LIFParams, leak_reset
from snnrun.snn.surrogate import SOFT_STEPS


@dataclass(frozen=True)
class WindowCheck:
    """Where one LIF layer fires and where its surrogate is centred, in units of u."""

    threshold: float
    fires_at: float
    centre: float
    spacing: float

    @property
    def ok(self) -> bool:
        """Both within two grid steps of the threshold."""
        tolerance = 2 * self.spacing
        return (
            abs(self.fires_at - self.threshold) <= tolerance
            and abs(self.centre - self.threshold) <= tolerance
        )


@dataclass(frozen=True)
class LayerAgreement:
    """STBP gradient of one weight layer against the soft network's exact one."""

    name: str
    cosine: float
    norm_ratio: float  # ‖g_STBP‖ / ‖g_soft‖


def probe_window(lif: LIF, points: int = 40_001) -> WindowCheck:
    """Sweep u over a grid around V_th through ``lif`` (T = 1): the first u that
    fires and the centre of mass of ∂o/∂u, as the layer really computes them."""
    p = lif.params
    span = max(4.0 * p.surrogate_a, 3.0 / math.sqrt(p.surrogate_a), 1.0)
    grid = torch.linspace(
        p.threshold - span, p.threshold + span, points, dtype=torch.float64
    )
    u = grid.view(1, 1, -1).clone().requires_grad_()
    spikes = lif(u)
    (slope,) = torch.autograd.grad(spikes.sum(), u)
    slope, fired = slope.flatten(), spikes.detach().flatten() > 0
    fires_at = float(grid[fired][0]) if fired.any() else math.inf
    mass = float(slope.sum())
    centre = float((grid * slope).sum()) / mass if mass > 0 else math.inf
    return WindowCheck(p.threshold, fires_at, centre, float(grid[1] - grid[0]))


def soft_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """The LIF recurrence with o = H(u − V_th), every path differentiable:
    ``[T, B, ...]`` → soft spikes in [0, 1]."""
    step = SOFT_STEPS[p.surrogate]
    u = x_seq[0]
    o = step(u - p.threshold, p.surrogate_a)
    spikes = [o]
    for x in x_seq[1:]:
        u = leak_reset(o, p) * u + x
        o = step(u - p.threshold, p.surrogate_a)
        spikes.append(o)
    return torch.stack(spikes)


def soft_forward(net: SpikingNet, x: Tensor) -> Tensor:
    """``net`` with every spike replaced by its soft step: ``[T, B, ...]`` → ``[T, B, C]``."""
    for stage in net.stages:
        x = soft_lif_sequence(stage.pre(x), stage.lif.params)
    return x


def compare_gradients(
    net: SpikingNet, x: Tensor, labels: Tensor, loss_form: str
) -> list[LayerAgreement]:
    """Per weight layer, STBP's gradient vs the soft network's, both in float64.

    Args:
        net: the network (left unchanged; a float64 copy is used).
        x: encoded input spikes, ``[T, B, *in_shape]``.
        labels: int64 ``[B]``.
        loss_form: ``stbp.loss_form``.
    """
    twin = copy.deepcopy(net).double()
    x = x.double()
    runs = (lambda: twin(x).spikes, lambda: soft_forward(twin, x))
    grads = []
    for forward in runs:
        twin.zero_grad(set_to_none=True)
        stbp_loss(firing_rate(forward()), labels, loss_form).backward()
        grads.append([layer.weight.grad.clone() for layer in twin.weight_layers()])
    rows = []
    for index, (stbp, soft) in enumerate(zip(*grads, strict=True), start=1):
        norm = float(soft.norm())
        cosine = torch.nn.functional.cosine_similarity(
            stbp.flatten(), soft.flatten(), dim=0, eps=1e-300
        )
        ratio = float(stbp.norm()) / norm if norm > 0 else math.inf
        rows.append(LayerAgreement(f"layer{index}", float(cosine), ratio))
    return rows
