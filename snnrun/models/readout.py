"""Rate readout, STBP loss and prediction (spec section 3).

The output neurons are LIF neurons like all others: no readout layer, no softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from snnrun.snn import choice_name

LOSS_FORMS = ("paper", "mean")


def firing_rate(spikes: Tensor) -> Tensor:
    """r = (1/T)·Σ_t o[t]: output spikes [T, B, C] → rates [B, C], spikes per step."""
    return spikes.mean(dim=0)


def loss_form_name(form: object) -> str:
    """``stbp.loss_form`` as a plain string; ValueError naming the choices if unknown."""
    name = choice_name(form)
    if name not in LOSS_FORMS:
        raise ValueError(
            f"stbp.loss_form={name} is unknown; choose one of {', '.join(LOSS_FORMS)}"
        )
    return name


def stbp_loss(rate: Tensor, labels: Tensor, form: str) -> Tensor:
    """Squared error between rates and one-hot labels.

    Args:
        rate: output firing rates, [B, C] (B = S samples).
        labels: class indices, int64 [B].
        form: "paper": Σ‖y − r‖²/(2S); "mean": Σ‖y − r‖²/(S·C) (torch MSELoss).
            They differ by the constant 2/C (``stbp.loss_form``).
    Returns: the scalar loss, rate's dtype.
    """
    name = loss_form_name(form)
    samples, classes = rate.shape
    if labels.shape != (samples,):
        raise ValueError(
            f"labels have shape {list(labels.shape)}; expected [{samples}] for rates "
            f"{list(rate.shape)}"
        )
    one_hot = torch.zeros_like(rate).scatter_(1, labels.view(-1, 1), 1.0)
    squared_error = (one_hot - rate).square().sum()
    divisor = 2 * samples if name == "paper" else samples * classes
    return squared_error / divisor


def predict(rate: Tensor) -> Tensor:
    """argmax_c r[:, c], [B, C] → int64 [B]; a tie goes to the lowest index."""
    return rate.argmax(dim=1)


def count_ties(rate: Tensor) -> int:
    """Number of samples whose highest rate is shared by two or more classes."""
    top = rate.amax(dim=1, keepdim=True)
    return int(((rate == top).sum(dim=1) > 1).sum().item())


@dataclass(frozen=True)
class RateReadout:
    """How the trainer reads the network's answer (spec section 3), as one object.

    ``rate``: output spikes [T, B, C] → rates [B, C] (spikes per step); ``loss``:
    the STBP squared error of ``loss_form`` ("paper" or "mean"), a scalar;
    ``predict``: rates → classes, int64 [B]. Another readout (e.g. a first-spike
    code) is another object with these three methods (``train.loop.Readout``).
    """

    loss_form: str = "paper"

    def __post_init__(self) -> None:
        loss_form_name(self.loss_form)  # refuse an unknown form when built

    def rate(self, spikes: Tensor) -> Tensor:
        """Output spikes [T, B, C] → firing rates [B, C]."""
        return firing_rate(spikes)

    def loss(self, rate: Tensor, labels: Tensor) -> Tensor:
        """The STBP loss of rates [B, C] against class indices int64 [B]."""
        return stbp_loss(rate, labels, self.loss_form)

    def predict(self, rate: Tensor) -> Tensor:
        """Rates [B, C] → predicted classes int64 [B]."""
        return predict(rate)
