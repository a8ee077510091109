"""Events the trainer emits and the hook protocol that observes them.

The trainer never logs: it calls ``hook.on_<event>(event)`` for every hook in order.
Trackers (MLflow, rich, log files) live in ``snnrun/track`` and subclass :class:`Hook`.
Metric keys are ``split/metric`` (``train/loss``, ``val/acc``, ``val/acc_best``,
``time/epoch_s``, ``perf/samples_per_s``, ``rate/layer1`` ...), at ``step=epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing the events costs no torch
    from torch import Tensor


@dataclass(frozen=True)
class FitStart:
    """Training is about to start (or resume).

    Attributes:
        epochs: total number of epochs of the run.
        start_epoch: first epoch to run, 1-based (> 1 after a resume).
        batches_per_epoch: training batches per epoch on this rank.
        samples_per_epoch: training samples per epoch on this rank.
    """

    epochs: int
    start_epoch: int
    batches_per_epoch: int
    samples_per_epoch: int


@dataclass(frozen=True)
class BatchEnd:
    """One optimiser step is done.

    Attributes:
        epoch: 1-based epoch.
        batch: 1-based batch index within the epoch.
        batches: batches in this epoch.
        loss: running mean training loss over this epoch so far.
        acc: running training accuracy over this epoch so far, in [0, 1].
        samples: samples in this batch.
    """

    epoch: int
    batch: int
    batches: int
    loss: float
    acc: float
    samples: int


@dataclass(frozen=True)
class EvalStart:
    """Evaluation of one epoch begins (progress displays may show a phase)."""

    epoch: int
    batches: int


@dataclass(frozen=True)
class EpochEnd:
    """An epoch and its evaluation are done; ``metrics`` maps ``split/metric`` → value."""

    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint file was written atomically; ``kind`` is ``"last"`` or ``"best"``."""

    epoch: int
    path: Path
    kind: str


@dataclass(frozen=True, eq=False)
class Diagnostics:
    """A look inside the network on fixed test samples, for plots (``track/``).

    Emitted after every ``plot_every``-th epoch and after the last one. Tensors are
    detached, on the CPU. Layers are listed input first: layer 0 is the encoded input,
    layer l ≥ 1 the l-th LIF layer.

    Attributes:
        epoch: the epoch just finished, 1-based.
        final: True after the last epoch.
        samples: indices of the traced samples in the test split, int64 [S].
        labels: their classes, int64 [S].
        spikes: per layer, spikes of the traced samples, {0., 1.} [T, S, N_l]
            (neurons flattened channel-major).
        potentials: per LIF layer (no input), membrane potential u, [T, S, N_l],
            same units as ``threshold``.
        threshold: V_th of the LIF layers.
        rates: per layer, each neuron's firing rate averaged over the first
            ``samples_for_rates`` test samples and T, spikes per step, [N_l].
        samples_for_rates: how many test samples ``rates`` averages over.
        confusion: counts, rows = true class, columns = predicted, int64 [C, C], over
            the test split as evaluated this epoch (None when it was not).
    """

    epoch: int
    final: bool
    samples: Tensor
    labels: Tensor
    spikes: list[Tensor]
    potentials: list[Tensor]
    threshold: float
    rates: list[Tensor]
    samples_for_rates: int
    confusion: Tensor | None


def run_status(exc: BaseException | None) -> str:
    """How a run ended, as MLflow spells it: ``FINISHED`` (no exception), ``KILLED``
    (Ctrl-C / SIGINT / SIGTERM, raised as KeyboardInterrupt) or ``FAILED``."""
    if exc is None:
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


@dataclass(frozen=True)
class FitEnd:
    """Training ended; ``status`` is :func:`run_status` of how it ended."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)


class Hook:
    """Base observer: override the events you need; every default is a no-op."""

    def on_fit_start(self, event: FitStart) -> None:
        """Called once before the first epoch."""

    def on_batch_end(self, event: BatchEnd) -> None:
        """Called after every optimiser step."""

    def on_eval_start(self, event: EvalStart) -> None:
        """Called before each evaluation pass."""

    def on_epoch_end(self, event: EpochEnd) -> None:
        """Called after each epoch's evaluation, with its metrics."""

    def on_diagnostics(self, event: Diagnostics) -> None:
        """Called with a look inside the network (spikes, potentials, confusion)."""

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        """Called after a checkpoint was written."""

    def on_fit_end(self, event: FitEnd) -> None:
        """Called once, also when training failed or was interrupted."""
