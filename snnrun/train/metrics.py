"""Running sums for loss and accuracy over an epoch (kept on the device: no sync per step)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]  # element-wise sum over all ranks (all-reduce)


class RunningMetrics:
    """Sums of loss·batch, correct predictions and samples; ``loss`` and ``acc`` are means."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0

    def update(self, loss: Tensor, predictions: Tensor, labels: Tensor) -> None:
        """Add a batch: ``loss`` a scalar batch mean, ``predictions``/``labels`` ``[B]``."""
        batch = int(labels.shape[0])
        self.loss_sum += loss.detach().double() * batch
        self.correct += (predictions == labels).sum()
        self.samples += batch

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / max(self.samples, 1)

    @property
    def acc(self) -> float:
        return float(self.correct) / max(self.samples, 1)

    def totals(self) -> Tensor:
        """``[loss_sum, correct, samples]`` as float64, for an all-reduce across ranks."""
        return torch.stack(
            [
                self.loss_sum,
                self.correct.double(),
                self.loss_sum.new_tensor(self.samples),
            ]
        )

    @classmethod
    def from_totals(cls, totals: Tensor) -> RunningMetrics:
        """The inverse of :meth:`totals`: ``[loss_sum, correct, samples]`` float64 [3]."""
        metrics = cls(totals.device)
        metrics.loss_sum += totals[0]
        metrics.correct += totals[1].round().long()
        metrics.samples = round(float(totals[2]))
        return metrics

    def reduced(self, reduce: Reduce | None) -> RunningMetrics:
        """These sums over all ranks (``reduce`` all-reduces :meth:`totals`).

        Epoch means then weigh every sample of every rank alike: loss = Σ loss·n / Σ n.
        ``reduce=None`` (one process) returns ``self``.
        """
        if reduce is None:
            return self
        return RunningMetrics.from_totals(reduce(self.totals()))
