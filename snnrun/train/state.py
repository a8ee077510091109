"""Where training stands, and the checkpoint form of everything exact resume needs.

A checkpoint (``checkpoint.py`` writes it) is a flat dict of tensors, numbers and
strings: the network, optimiser and scheduler states, the :class:`Position` (with the
partial sums of an epoch stopped mid-way), and both encoders' generator states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from snnrun.train.checkpoint import load_weights
from snnrun.train.metrics import RunningMetrics

Scheduler = torch.optim.lr_scheduler.LRScheduler


@dataclass
class Position:
    """Where training stands: the next batch to run is ``batch`` (0-based) of ``epoch``."""

    epoch: int = 1
    batch: int = 0
    best_acc: float = -1.0
    running: list[float] = field(default_factory=list)  # partial-epoch sums on resume
    rates: Tensor | None = None  # partial-epoch sum of the layer rates, for resume
    best_epoch: int = 0  # epoch of best_acc (validation accuracy); 0: none yet
    test_at_best: float = -1.0  # test accuracy after best_epoch, reported only

    def state(self) -> dict[str, Any]:
        """The position's checkpoint entries."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "best_acc": self.best_acc,
            "running": list(self.running),
            "rates": None if self.rates is None else self.rates.detach().cpu(),
            "best_epoch": self.best_epoch,
            "test_at_best": self.test_at_best,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        """The inverse of :meth:`state` (extra checkpoint entries are ignored)."""
        return cls(
            int(state["epoch"]),
            int(state["batch"]),
            float(state["best_acc"]),
            list(state["running"]),
            state.get("rates"),  # absent in checkpoints of older versions
            int(state.get("best_epoch", 0)),
            float(state.get("test_at_best", -1.0)),
        )

    def restore_running(self, running: RunningMetrics) -> None:
        """Add the loss/accuracy sums of a partly run epoch (resume) to ``running``."""
        if self.batch and self.running:
            loss_sum, correct, samples = self.running
            running.loss_sum += loss_sum
            running.correct += int(correct)
            running.samples = int(samples)

    def restored_rates(self, device: torch.device) -> tuple[Tensor, int]:
        """Layer-rate sum and batch count of a partly run epoch (resume), else none."""
        if self.batch and self.rates is not None:
            return self.rates.to(device), self.batch
        return torch.zeros(0, device=device), 0


def module_states(
    net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler | None
) -> dict[str, Any]:
    """Checkpoint entries of the network (unwrapped: loads without DDP), the
    optimiser and the scheduler (None without one)."""
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }


def load_module_states(
    state: dict[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    source: object = "the checkpoint",
) -> None:
    """Restore what :func:`module_states` saved; weights that do not fit ``net``
    raise CheckpointError naming ``source``, the layers and their shapes."""
    load_weights(net, state["model"], source)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
