"""The STBP training loop: encode → forward [T, B, ...] → rate → loss → backward → step.

Plain and on one screen (nanoGPT/minGPT style). It knows nothing of MLflow, rich or
Hydra: it emits events (``train/hooks.py``) and the hooks decide what to show or log.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from snnrun.models.synops import SynOpsMeter, synops_metrics
from snnrun.snn.memory import compact_spikes, mark_binary
from snnrun.snn.native import frozen_weights
from snnrun.train.hooks import (
    BatchEnd,
    CheckpointSaved,
    Diagnostics,
    EpochEnd,
    EvalStart,
    FitEnd,
    FitStart,
    Hook,
    run_status,
)
from snnrun.train.metrics import Reduce, RunningMetrics
from snnrun.train.state import Position, load_module_states, module_states


class Loader(Protocol):
    """What the loop needs of a batch source (``snnrun.data.loader.BatchLoader``)."""

    batch_size: int
    num_samples: int  # samples per epoch on this rank

    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def iter_from(self, start_batch: int) -> Iterable[tuple[Tensor, Tensor]]: ...


class Encoder(Protocol):
    """Turns a batch ``[B, ...]`` into spikes ``[T, B, ...]`` with its own generator."""

    generator: torch.Generator

    def __call__(self, x: Tensor) -> Tensor: ...


class Readout(Protocol):
    """How the loop reads the network's answer (``models.readout.RateReadout``)."""

    def rate(self, spikes: Tensor) -> Tensor: ...  # [T, B, C] → [B, C]
    def loss(self, rate: Tensor, labels: Tensor) -> Tensor: ...  # scalar
    def predict(self, rate: Tensor) -> Tensor: ...  # [B, C] → int64 [B]


class Checkpoints(Protocol):
    """Where the loop's checkpoints go (``train.checkpoint.CheckpointFolder``)."""

    def save(self, kind: str, state: dict[str, Any]) -> Path: ...
    def last(self) -> Path | None: ...


@dataclass
class Learner:
    """What the loop trains, as ``app/build.py`` builds it.

    ``encoders``: (train, validation[, test]); the test split draws its own noise, so
    the validation metrics never depend on whether or how the test set is run.
    ``model`` may be a ``DistributedDataParallel`` wrapper of the network.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    readout: Readout
    encoders: tuple[Encoder, ...]
    device: torch.device


def _add_confusion(
    confusion: Tensor | None, predictions: Tensor, labels: Tensor, classes: int
) -> Tensor:
    """Running confusion counts, float64 [C·C] (index true·C + predicted)."""
    counts = torch.bincount(labels * classes + predictions, minlength=classes**2)
    counts = counts.double()
    return counts if confusion is None else confusion + counts


@contextlib.contextmanager
def _no_meter() -> Iterator[None]:
    yield None


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept.

    The STBP loss is a squared error of firing rates in [0, 1], so it stays finite
    even when the weights overflow (NaN potentials simply never fire): the weights
    are checked after every optimiser step as well.
    """


@dataclass
class LoopSettings:
    """How long to train and what to keep. ``max_*`` cap batches per epoch (debug);
    ``test_every``: report the test set every N epochs (0: only the last epoch and
    those with a new best validation accuracy). ``diagnostics_every``: emit
    :class:`Diagnostics` every N epochs and after the last (0: after the last only;
    None: never), tracing ``diagnostics_traced`` test samples picked by
    ``diagnostics_seed`` among the first ``diagnostics_batch``."""

    epochs: int
    max_batches: int | None = None
    max_eval_batches: int | None = None
    eval_repeats: int = 1
    test_every: int = 1
    diagnostics_every: int | None = None
    diagnostics_seed: int = 0
    diagnostics_traced: int = 2
    diagnostics_batch: int = 128
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16 (trainer.precision)
    detect_anomaly: bool = False


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a (Distributed)DataParallel wrapper, else ``model``."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


class Trainer:
    """Fits a spiking network with STBP and evaluates it after every epoch.

    Data-parallel: ``model`` may be a ``DistributedDataParallel`` (it trains through
    the wrapper; evaluation and checkpoints use the network inside, so a checkpoint
    loads without DDP). ``reduce`` sums a tensor over all ranks (an all-reduce); the
    loop applies it to the metric totals of train and eval and to the firing rates,
    so every rank computes the same epoch metrics and takes the same decisions.
    ``None``: one process. ``checkpoints`` writes ``last``/``best`` (None: nothing
    is written; other ranks than 0); ``extra_state`` rides in every checkpoint as is
    (e.g. the config and the tracking run id).
    """

    def __init__(
        self,
        learner: Learner,
        hooks: Sequence[Hook] = (),
        settings: LoopSettings | None = None,
        checkpoints: Checkpoints | None = None,
        extra_state: dict[str, Any] | None = None,
        reduce: Reduce | None = None,
    ) -> None:
        self.model, self.optimizer = learner.model, learner.optimizer
        self.scheduler, self.readout = learner.scheduler, learner.readout
        self.net = unwrap(self.model)  # what evaluate() runs and checkpoints hold
        self.reduce = reduce
        self.train_encoder, self.eval_encoder, *rest = learner.encoders
        self.test_encoder = rest[0] if rest else self.eval_encoder
        self.device = learner.device
        self.hooks = list(hooks)
        self.settings = settings or LoopSettings(epochs=1)
        self.checkpoints = checkpoints
        self.extra_state = extra_state or {}
        self.position = Position()
        self._stop_requested = False
        self._epoch_metrics: tuple[int, dict[str, float]] | None = None
        self._pending_epoch: tuple[int, dict[str, float]] | None = None
        self._mid_batch = False  # between a batch's first draw and its position update
        # eval generators' states at the start of an epoch's evaluation
        self._eval_rng: list[Tensor] | None = None
        # counts of the last test evaluation, rows true class, columns predicted
        self.confusion: Tensor | None = None

    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch (signal handlers call this).

        Stopping between batches, never inside ``optimizer.step()``, keeps the saved
        checkpoint consistent with its position, so resume is exact.
        """
        self._stop_requested = True

    # -- public ---------------------------------------------------------------------
    def fit(
        self, train: Loader, val: Loader | None, test: Loader | None = None
    ) -> dict[str, float]:
        """Train from ``self.position`` to the last epoch; returns the last metrics.

        ``val`` (held out of the training set) drives every decision: ``val/acc_best``
        and ``best.pt``. ``test`` is only reported (``test/*``): after the epochs
        :meth:`_test_due` names, never selected on. Without ``val`` no ``best.pt`` is
        written.
        """
        s, metrics = self.settings, {}
        batches = self._cap(len(train), s.max_batches)
        samples = min(train.num_samples, batches * train.batch_size)
        self._emit(
            "on_fit_start", FitStart(s.epochs, self.position.epoch, batches, samples)
        )
        if self._pending_epoch is not None:  # resumed: re-send the last epoch's metrics
            self._emit("on_epoch_end", EpochEnd(*self._pending_epoch))
            self._pending_epoch = None
        try:
            with torch.autograd.set_detect_anomaly(s.detect_anomaly):
                while self.position.epoch <= s.epochs:
                    metrics = self._run_epoch(train, val, test)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                self._save_interrupted()
            self._emit("on_fit_end", FitEnd(run_status(error), metrics))
            raise
        self._emit("on_fit_end", FitEnd(run_status(None), metrics))
        return metrics

    @torch.no_grad()
    def evaluate(
        self, loader: Loader, prefix: str = "val", synops: bool = False
    ) -> dict[str, float]:
        """One (or ``eval_repeats``) stochastic pass(es) over ``loader``:
        ``<prefix>/loss`` and ``<prefix>/acc``; ``prefix="test"`` encodes with the
        test split's own generator and keeps the confusion matrix
        (:attr:`confusion`). ``synops``: also count synaptic operations and energy
        per sample (``models/synops.py``: ``synops/*``, ``energy/*``)."""
        self.net.eval()
        encoder = self.test_encoder if prefix == "test" else self.eval_encoder
        totals = RunningMetrics(self.device)
        confusion: Tensor | None = None
        loader.set_epoch(0)
        limit = self._cap(len(loader), self.settings.max_eval_batches)
        repeats = self.settings.eval_repeats
        # frozen_weights: each event-driven layer packs its weights once per pass
        with (
            SynOpsMeter(self.net) if synops else _no_meter() as meter,
            frozen_weights(),
        ):
            for index, (x, y) in enumerate(loader.iter_from(0)):
                if index >= limit:
                    break
                x, y = self._to_device(x, y)
                rate = sum(
                    self.readout.rate(self._forward(self.net, encoder(x)).spikes)
                    for _ in range(repeats)
                )
                rate = rate / repeats
                predicted = self.readout.predict(rate)
                totals.update(self.readout.loss(rate, y), predicted, y)
                if prefix == "test":
                    classes = rate.shape[1]
                    confusion = _add_confusion(confusion, predicted, y, classes)
                if self._stop_requested:
                    raise KeyboardInterrupt
        totals = totals.reduced(self.reduce)
        metrics = {f"{prefix}/loss": totals.loss, f"{prefix}/acc": totals.acc}
        if prefix == "test" and confusion is not None:
            classes = math.isqrt(confusion.numel())
            counts = self._summed(confusion).round().long().cpu()
            self.confusion = counts.view(classes, classes)
        if meter is not None:  # totals.samples is already summed over the ranks
            per_sample = self._summed(meter.synops) / (totals.samples * repeats)
            metrics.update(synops_metrics(per_sample.tolist(), meter.macs.tolist()))
        return metrics

    def _summed(self, values: Tensor) -> Tensor:
        """``values`` summed over all ranks (float64)."""
        values = values.double()
        return values if self.reduce is None else self.reduce(values)

    # -- one epoch ------------------------------------------------------------------
    def _run_epoch(
        self, train: Loader, val: Loader | None, test: Loader | None
    ) -> dict[str, float]:
        epoch, started = self.position.epoch, time.perf_counter()
        running, rates, batches = self._train_batches(train, epoch)
        running = running.reduced(self.reduce)  # all ranks: Σ loss·n, Σ correct, Σ n
        train_seconds = time.perf_counter() - started
        metrics = {"train/loss": running.loss, "train/acc": running.acc}
        improved = self._evaluate_epoch(epoch, val, test, metrics)
        metrics["time/epoch_s"] = time.perf_counter() - started
        metrics["perf/samples_per_s"] = running.samples / max(train_seconds, 1e-9)
        metrics["optim/lr"] = self.optimizer.param_groups[0]["lr"]
        metrics.update(self._layer_rates(rates, batches))
        if self.scheduler is not None:
            self.scheduler.step()
        self.position = replace(
            self.position, epoch=epoch + 1, batch=0, running=[], rates=None
        )
        # checkpoints first: a slow or unreachable tracker must never cost an epoch;
        # the metrics ride in the checkpoint, so a run killed before the trackers saw
        # them hands them over on resume (trackers skip epochs they already hold)
        self._epoch_metrics = (epoch, dict(metrics))
        self._save("last")
        if improved:
            self._save("best")
        self._emit("on_epoch_end", EpochEnd(epoch, metrics))
        if test is not None and self._diagnostics_due(epoch) and self.hooks:
            self._emit("on_diagnostics", self.diagnose(test, epoch))
        return metrics

    def _evaluate_epoch(
        self,
        epoch: int,
        val: Loader | None,
        test: Loader | None,
        metrics: dict[str, float],
    ) -> bool:
        """Validate (selection) and maybe test (report) into ``metrics``; True when
        ``val/acc`` reached a new best. The eval generator is remembered at the start,
        so an interruption anywhere in here repeats both evaluations on resume."""
        cap = self.settings.max_eval_batches
        loaders = [loader for loader in (val, test) if loader is not None]
        self._emit(
            "on_eval_start",
            EvalStart(epoch, sum(self._cap(len(lo), cap) for lo in loaders)),
        )
        self._eval_rng = [e.generator.get_state() for e in self._eval_encoders()]
        improved = False
        if val is not None:
            metrics.update(self.evaluate(val, "val", synops=True))
            improved = metrics["val/acc"] >= self.position.best_acc
            if improved:
                self.position.best_acc = metrics["val/acc"]
                self.position.best_epoch = epoch
            metrics["val/acc_best"] = self.position.best_acc
        if test is not None and self._test_due(epoch, improved):
            metrics.update(self.evaluate(test, "test", synops=val is None))
            if improved:
                self.position.test_at_best = metrics["test/acc"]
            if self.position.test_at_best >= 0:
                metrics["test/acc_at_best_val"] = self.position.test_at_best
        self._eval_rng = None
        return improved

    def _test_due(self, epoch: int, improved: bool) -> bool:
        """Test after every ``test_every``-th epoch, the last one, and each epoch
        whose validation accuracy is a new best (for ``test/acc_at_best_val``)."""
        every = self.settings.test_every
        return (
            improved
            or epoch == self.settings.epochs
            or (every > 0 and epoch % every == 0)
            or self._diagnostics_due(epoch)  # its confusion matrix is this epoch's
        )

    def _diagnostics_due(self, epoch: int) -> bool:
        every = self.settings.diagnostics_every
        if every is None:
            return False
        return epoch == self.settings.epochs or (every > 0 and epoch % every == 0)

    @torch.no_grad()
    def diagnose(self, test: Loader, epoch: int) -> Diagnostics:
        """Record the network on the first ``diagnostics_batch`` test samples.

        The input noise comes from a generator seeded with ``diagnostics_seed``
        (the test encoder's own stream is restored afterwards), so every epoch sees
        the same samples and the same input spikes, and resume stays exact.
        """
        s = self.settings
        self.net.eval()
        test.set_epoch(0)
        x, y = next(iter(test.iter_from(0)))
        x, y = self._to_device(x[: s.diagnostics_batch], y[: s.diagnostics_batch])
        generator = self.test_encoder.generator
        saved = None if generator is None else generator.get_state()
        try:
            if generator is not None:
                generator.manual_seed(s.diagnostics_seed)
            recording = self.net.record(self.test_encoder(x))
        finally:
            if generator is not None:
                generator.set_state(saved)
        layers = [recording.inputs, *recording.spikes]
        picker = torch.Generator().manual_seed(s.diagnostics_seed)
        picked = torch.randperm(len(y), generator=picker)[: s.diagnostics_traced]
        picked = picked.sort().values

        def traced(t: Tensor) -> Tensor:
            return t.flatten(2)[:, picked.to(t.device)].float().cpu()

        return Diagnostics(
            epoch=epoch,
            final=epoch == s.epochs,
            samples=picked,
            labels=y[picked.to(y.device)].cpu(),
            spikes=[traced(t) for t in layers],
            potentials=[traced(u) for u in recording.potentials],
            threshold=float(self.net.stages[0].lif.params.threshold),
            rates=[t.flatten(2).float().mean(dim=(0, 1)).cpu() for t in layers],
            samples_for_rates=len(y),
            confusion=self.confusion,
        )

    def _train_batches(
        self, train: Loader, epoch: int
    ) -> tuple[RunningMetrics, Tensor, int]:
        self.model.train()
        train.set_epoch(epoch)
        running = RunningMetrics(self.device)
        self.position.restore_running(running)
        limit = self._cap(len(train), self.settings.max_batches)
        rates, done = self.position.restored_rates(self.device)
        for index, (x, y) in enumerate(
            train.iter_from(self.position.batch), start=self.position.batch
        ):
            if index >= limit:
                break
            self._mid_batch = True
            out, loss, y = self._step(x, y)
            self._check_finite(loss, epoch, index + 1)
            rate = self.readout.rate(out.spikes.detach())
            running.update(loss, self.readout.predict(rate), y)
            rates = out.layer_rates if done == 0 else rates + out.layer_rates
            done += 1
            self.position.batch = index + 1
            self.position.running = running.totals().tolist()
            self.position.rates = rates
            self._mid_batch = False
            self._emit(
                "on_batch_end",
                BatchEnd(
                    epoch, index + 1, limit, running.loss, running.acc, int(y.shape[0])
                ),
            )
            if self._stop_requested:
                raise KeyboardInterrupt
        return running, rates, done

    def _step(self, x: Tensor, y: Tensor) -> tuple[Any, Tensor, Tensor]:
        x, y = self._to_device(x, y)
        with compact_spikes():  # spikes kept for backward as uint8 (snn/memory.py)
            out = self._forward(self.model, mark_binary(self.train_encoder(x)))
        loss = self.readout.loss(self.readout.rate(out.spikes), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return out, loss, y

    # -- helpers --------------------------------------------------------------------
    def _forward(self, model: nn.Module, spikes: Tensor) -> Any:
        """``model(spikes)``, under autocast to ``settings.autocast`` when set (the
        LIF layers widen their input back to float32: ``snn.layers.LIF``)."""
        dtype = self.settings.autocast
        if dtype is None:
            return model(spikes)
        with torch.autocast(self.device.type, dtype=dtype):
            return model(spikes)

    def _layer_rates(self, rates: Tensor, batches: int) -> dict[str, float]:
        """``rate/layer<i>``: mean firing rate per batch (spikes/neuron/step) over all
        ranks; ``rates`` [L] is this rank's sum over its ``batches``."""
        count = rates.new_tensor([batches], dtype=torch.float64)
        sums = torch.cat([rates.double().flatten(), count])
        if self.reduce is not None:
            sums = self.reduce(sums)
        total = max(float(sums[-1]), 1.0)
        return {f"rate/layer{i + 1}": float(r) / total for i, r in enumerate(sums[:-1])}

    def _check_finite(self, loss: Tensor, epoch: int, batch: int) -> None:
        """Raise NonFiniteLossError if the loss or any weight is NaN/inf after a step."""
        # A sum is finite only if every element is (NaN and inf propagate, and a sum
        # that overflows means blown-up weights too): one cheap reduction per tensor
        # (isfinite().all() costs ~100x more on CPU) and one sync per step.
        sums = [loss.detach().float().sum()]
        sums += [p.detach().sum().float() for p in self.net.parameters()]
        if math.isfinite(float(torch.stack(sums).sum())):
            return
        lr = self.optimizer.param_groups[0]["lr"]
        raise NonFiniteLossError(
            f"{self._what_blew_up(loss)} at epoch {epoch}, batch {batch} "
            f"(lr={lr:g}). Likely cause: a learning rate too high for this network "
            "(optim.lr, or optim.gamma > 1 with optim.milestones; try optim.lr=1e-3). "
            f"{self._kept_checkpoint()}; rerun with debug=anomaly to find the operation"
        )

    def _what_blew_up(self, loss: Tensor) -> str:
        """``the loss became nan`` / ``the weights (names) became NaN/inf`` ..."""
        value = float(loss.detach())
        if not math.isfinite(value):
            return f"the loss became {value}"
        names = [n for n, p in self.net.named_parameters() if not p.isfinite().all()]
        if names:
            return f"the weights ({', '.join(names[:3])}) became NaN/inf"
        return "the weights overflowed (their sum exceeds float32's range)"

    def _kept_checkpoint(self) -> str:
        """Which checkpoint survives a failure (none is written after it)."""
        last = None if self.checkpoints is None else self.checkpoints.last()
        if last is not None:
            return f"The last good checkpoint {last} is kept"
        return "No checkpoint had been written yet"

    def _save_interrupted(self) -> None:
        """Checkpoint a stop at its exact position, so resume repeats nothing.

        A stop mid-evaluation rewinds the eval generator (the resumed run repeats that
        evaluation whole). An abrupt stop mid-batch (a second Ctrl-C) saves nothing:
        its weights, position and generators may disagree, so the last checkpoint
        (consistent) stays.
        """
        if self._mid_batch:
            return
        if self._eval_rng is not None:
            for encoder, state in zip(
                self._eval_encoders(), self._eval_rng, strict=True
            ):
                encoder.generator.set_state(state)
            self._eval_rng = None
        self._save("last")

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return (
            x.to(self.device, non_blocking=True),
            y.to(self.device, non_blocking=True),
        )

    def _eval_encoders(self) -> list[Encoder]:
        """The validation encoder, and the test one when it is separate."""
        if self.test_encoder is self.eval_encoder:
            return [self.eval_encoder]
        return [self.eval_encoder, self.test_encoder]

    @staticmethod
    def _cap(length: int, limit: int | None) -> int:
        return length if limit is None else min(length, limit)

    def _emit(self, name: str, event: object) -> None:
        for hook in self.hooks:
            getattr(hook, name)(event)

    # -- checkpoints (train/state.py holds their form) -------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything exact resume needs (tensors, numbers, strings only)."""
        return {
            **module_states(self.net, self.optimizer, self.scheduler),
            **self.position.state(),
            "rng": {
                "train_encoder": self.train_encoder.generator.get_state(),
                "eval_encoder": self.eval_encoder.generator.get_state(),
                "test_encoder": self.test_encoder.generator.get_state(),
            },
            "epoch_metrics": {}
            if self._epoch_metrics is None
            else {
                "epoch": self._epoch_metrics[0],
                "metrics": {k: float(v) for k, v in self._epoch_metrics[1].items()},
            },
            **self.extra_state,
        }

    def load_state_dict(
        self, state: dict[str, Any], source: object = "the checkpoint"
    ) -> None:
        """Restore what :meth:`state_dict` saved (weights, optimiser, position, RNGs);
        ``source`` (the file) is named when the weights do not fit the network."""
        load_module_states(state, self.net, self.optimizer, self.scheduler, source)
        self.position = Position.from_state(state)
        done = state.get("epoch_metrics") or {}
        if done and self.position.batch == 0:  # at an epoch boundary
            self._pending_epoch = (int(done["epoch"]), dict(done["metrics"]))
        self.train_encoder.generator.set_state(state["rng"]["train_encoder"])
        self.eval_encoder.generator.set_state(state["rng"]["eval_encoder"])
        if (
            "test_encoder" in state["rng"]
            and self.test_encoder is not self.eval_encoder
        ):
            self.test_encoder.generator.set_state(state["rng"]["test_encoder"])

    def _save(self, kind: str) -> None:
        if self.checkpoints is None:
            return
        path = self.checkpoints.save(kind, self.state_dict())
        self._emit(
            "on_checkpoint", CheckpointSaved(self.position.epoch - 1, path, kind)
        )
