"""Training progress: rich bars on a terminal, plain epoch lines everywhere else.

On a terminal :class:`RichProgressHook` draws an epoch bar and a batch bar (ETA,
samples/s, running loss and accuracy), shows the evaluation phase, and prints one line
per epoch above the bars. Elsewhere (CI, ``nohup``, Slurm) it draws nothing and logs
the same line through ``logging.getLogger("snnrun")``, which lands in ``train.log``.
:func:`print_config_tree` shows the resolved config once at start-up.

This module must not import mlflow: runs with ``logger=none`` never load it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from rich.tree import Tree

from snnrun.track.logfile import FILE_ONLY, mute_file_only_on_terminals
from snnrun.train.hooks import (
    BatchEnd,
    CheckpointSaved,
    EpochEnd,
    EvalStart,
    FitEnd,
    FitStart,
    Hook,
)

log = logging.getLogger("snnrun")

EPOCH_TIME_KEY = "time/epoch_s"
SPEED_KEY = "perf/samples_per_s"
BEST_SUFFIX = "_best"


# --- line formatting (pure) -------------------------------------------------------


def format_metric(key: str, value: float) -> str:
    """Accuracies (``*/acc``, ``*/acc_*``, in [0, 1]) as percentages with two
    decimals, everything else with 4 significant digits."""
    name = key.rsplit("/", 1)[-1]
    if name == "acc" or name.startswith("acc_"):
        return f"{value:.2%}"
    return f"{value:.4g}"


# Per-layer counts and the ANN side of the energy estimate stay in MLflow only: the
# line shows synops/total and energy/snn_nj.
NOT_ON_THE_LINE = ("synops/layer", "synops/ann_macs", "energy/ann")


def format_epoch_line(epoch: int, epochs: int, metrics: Mapping[str, float]) -> str:
    """One history line per epoch, metrics in the order given.

    ``<key>_best`` joins ``<key>`` in parentheses; ``time/epoch_s`` and
    ``perf/samples_per_s`` close the line, e.g.
    ``epoch 3/10  train/loss 0.0123  val/acc 97.80% (best 97.85%)  26.1 s  2,301
    samples/s``.
    """
    parts = [f"epoch {epoch}/{epochs}"]
    for key, value in metrics.items():
        if key in (EPOCH_TIME_KEY, SPEED_KEY) or _joins_its_base(key, metrics):
            continue
        if key.startswith(NOT_ON_THE_LINE):
            continue
        text = f"{key} {format_metric(key, value)}"
        best = metrics.get(key + BEST_SUFFIX)
        if best is not None:
            text += f" (best {format_metric(key, best)})"
        parts.append(text)
    if EPOCH_TIME_KEY in metrics:
        parts.append(f"{metrics[EPOCH_TIME_KEY]:.1f} s")
    if SPEED_KEY in metrics:
        parts.append(f"{metrics[SPEED_KEY]:,.0f} samples/s")
    return "  ".join(parts)


def format_batch_line(event: BatchEnd, epochs: int, samples_per_s: float) -> str:
    """A plain progress line for non-terminal output every N batches."""
    return (
        f"epoch {event.epoch}/{epochs}  batch {event.batch}/{event.batches}  "
        f"train/loss {format_metric('train/loss', event.loss)}  "
        f"train/acc {format_metric('train/acc', event.acc)}  "
        f"{samples_per_s:,.0f} samples/s"
    )


def _joins_its_base(key: str, metrics: Mapping[str, float]) -> bool:
    return key.endswith(BEST_SUFFIX) and key[: -len(BEST_SUFFIX)] in metrics


# --- config tree ------------------------------------------------------------------


def config_tree(config: Mapping[str, object], label: str = "config") -> Tree:
    """A rich Tree of a nested config: mappings are branches, the rest leaves."""
    tree = Tree(Text(label, style="bold"))
    _add_items(tree, config)
    return tree


def print_config_tree(
    config: Mapping[str, object], console: Console | None = None
) -> None:
    """Print the resolved config (a plain nested dict) once, as a tree."""
    (console or Console()).print(config_tree(config))


def _add_items(node: Tree, mapping: Mapping[str, object]) -> None:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            _add_items(node.add(Text(str(key), style="bold cyan")), value)
        else:
            node.add(Text.assemble((f"{key}: ", "dim"), _yaml_text(value)))


def _yaml_text(value: object) -> str:
    """Scalars as YAML spells them, so the tree reads like the override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_text(item) for item in value) + "]"
    return str(value)


# --- the hook ---------------------------------------------------------------------


class _Throughput:
    """Samples per second since the last restart (epoch start)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._since = time.perf_counter()
        self._samples = 0

    def add(self, samples: int) -> float:
        """Count ``samples`` more; return the rate so far (samples/s)."""
        self._samples += samples
        return self._samples / max(time.perf_counter() - self._since, 1e-9)


class RichProgressHook(Hook):
    """Progress bars on a terminal; plain ``snnrun`` log lines elsewhere.

    Args:
        console: where bars and lines go (default: a stderr Console).
        enabled: draw bars; None → only if ``console.is_terminal``.
        log_every: without bars, also log a line every N batches (0: per epoch only).

    The app must call :meth:`close` in a ``finally``: a fit that raises may never
    emit :class:`FitEnd`, and live bars would keep the terminal redirected.
    """

    def __init__(
        self,
        *,
        console: Console | None = None,
        enabled: bool | None = None,
        log_every: int = 0,
    ) -> None:
        self._console = console or Console(stderr=True)
        self._enabled = self._console.is_terminal if enabled is None else enabled
        self._log_every = log_every
        self._epochs = 0
        self._throughput = _Throughput()
        self._bars: _Bars | None = None
        self._unmute: Callable[[], None] | None = None

    def on_fit_start(self, event: FitStart) -> None:
        """Open the bars (terminal) and start the samples/s clock."""
        self._epochs = event.epochs
        self._throughput.restart()
        if self._enabled and self._bars is None:
            self._bars = _Bars(self._console, event)
            self._unmute = mute_file_only_on_terminals(log)

    def on_batch_end(self, event: BatchEnd) -> None:
        """Advance the batch bar, or log every ``log_every`` batches."""
        samples_per_s = self._throughput.add(event.samples)
        if self._bars is not None:
            self._bars.batch(event, samples_per_s)
        elif self._log_every and event.batch % self._log_every == 0:
            log.info(format_batch_line(event, self._epochs, samples_per_s))

    def on_eval_start(self, event: EvalStart) -> None:
        """Show the evaluation phase."""
        if self._bars is not None:
            self._bars.evaluating(event)

    def on_epoch_end(self, event: EpochEnd) -> None:
        """Print/log the epoch line and advance the epoch bar."""
        line = format_epoch_line(event.epoch, self._epochs, event.metrics)
        if self._bars is not None:
            self._console.print(Text.assemble((time.strftime("[%X] "), "dim"), line))
            log.info(line, extra=FILE_ONLY)  # train.log keeps the history
            self._bars.epoch_done(event.epoch)
        else:
            log.info(line)
        self._throughput.restart()

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        """Keep checkpoint writing out of the next epoch's samples/s."""
        self._throughput.restart()

    def on_fit_end(self, event: FitEnd) -> None:
        """Close the bars."""
        self.close()

    def close(self) -> None:
        """Stop the bars and restore log handlers; idempotent, safe in ``finally``."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        if self._unmute is not None:
            self._unmute()
            self._unmute = None


class _Bars:
    """The live rich display: epochs, batches of the current epoch, evaluation."""

    def __init__(self, console: Console, event: FitStart) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}", justify="right"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            # ETA from the whole epoch (the batch bar restarts each epoch) and from
            # all epochs: rich's 30 s default would blank the ETA of long epochs.
            speed_estimate_period=24 * 3600,
        )
        add = self._progress.add_task
        self._epochs: TaskID = add(
            "epochs", total=event.epochs, completed=event.start_epoch - 1, info=""
        )
        self._batches: TaskID = add(
            f"epoch {event.start_epoch}", total=event.batches_per_epoch, info=""
        )
        self._eval: TaskID = add("eval", total=None, visible=False, info="")
        self._epoch = event.start_epoch
        self._progress.start()

    def batch(self, event: BatchEnd, samples_per_s: float) -> None:
        if event.epoch != self._epoch:  # a new epoch: start the batch bar over
            self._epoch = event.epoch
            self._progress.reset(
                self._batches, total=event.batches, description=f"epoch {event.epoch}"
            )
        info = (
            f"loss {format_metric('train/loss', event.loss)}  "
            f"acc {format_metric('train/acc', event.acc)}  "
            f"{samples_per_s:,.0f} samples/s"
        )
        self._progress.update(self._batches, completed=event.batch, info=info)

    def evaluating(self, event: EvalStart) -> None:
        self._progress.update(
            self._eval, description=f"eval {event.epoch}", visible=True
        )

    def epoch_done(self, epoch: int) -> None:
        self._progress.update(self._eval, visible=False)
        self._progress.update(self._epochs, completed=epoch)

    def stop(self) -> None:
        self._progress.stop()
