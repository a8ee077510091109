"""Read a reproduction sweep back from MLflow and log its summary on the parent run.

``snnrun reproduce`` (``app/reproduce.py``) runs the seeds; this module turns the
sweep's child runs into an :class:`Outcome` and writes the verdict where the runs
are: metrics ``reproduce/*``, tags ``snnrun.reproduce.*`` and ``reproduce.md``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from snnrun.track.query import TEST_AT_BEST_KEY, TEST_KEY, RunStore

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Outcome:
    """What a reproduction sweep measured; accuracies in percent.

    Attributes:
        final: final test accuracy of each finished run.
        at_best: test accuracy after each run's best-validation epoch.
        epochs: epochs each finished run trained.
        wall_s: wall time of the whole sweep, seconds.
        failed: names of the runs that did not finish.
        parent_run_id: the sweep's MLflow parent run (None: untracked).
        sweep_dir: the sweep's folder.
    """

    final: list[float]
    at_best: list[float]
    epochs: list[int]
    wall_s: float
    failed: list[str]
    parent_run_id: str | None
    sweep_dir: Path

    def verdict(self, band: tuple[float, float], seeds: int) -> str:
        """PASS when all ``seeds`` runs finished and the mean final accuracy is in
        ``band`` (percent, inclusive); else FAIL."""
        if self.failed or len(self.final) < seeds:
            return "FAIL"
        low, high = band
        return "PASS" if low <= statistics.fmean(self.final) <= high else "FAIL"


def collect(
    seeds: list[int], sweep_dir: Path, tracking_uri: str, wall_s: float
) -> Outcome:
    """The finished and failed runs of the sweep in ``sweep_dir``.

    Raises:
        LookupError: no ``sweep.json`` (the sweep never started) or no parent run.
    """
    import json

    info_path = sweep_dir / SWEEP_FILE
    if not info_path.is_file():
        raise LookupError(f"{info_path} does not exist")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    store = RunStore(tracking_uri)
    parent = store.sweep_parent(info["sweep_id"])
    if parent is None:
        raise LookupError(f"no MLflow parent run for sweep {info['sweep_id']}")
    rows = store.sweep_runs(parent)
    done = [r for r in rows if r.status == "FINISHED" and TEST_KEY in r.metrics]
    return Outcome(
        final=[100 * r.metrics[TEST_KEY] for r in done],
        at_best=[
            100 * r.metrics[TEST_AT_BEST_KEY]
            for r in done
            if TEST_AT_BEST_KEY in r.metrics
        ],
        epochs=[int(r.params.get("trainer.epochs", 0)) for r in done],
        wall_s=wall_s,
        failed=[f"{r.name} ({r.status})" for r in rows if r not in done],
        parent_run_id=parent.info.run_id,
        sweep_dir=sweep_dir,
    )


def record(
    outcome: Outcome, label: str, verdict: str, tracking_uri: str, md: str
) -> None:
    """Log the summary on the sweep's parent run (metrics, tags, ``reproduce.md``)."""
    if outcome.parent_run_id is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run_id = outcome.parent_run_id
    for key, values in (("final", outcome.final), ("at_best_val", outcome.at_best)):
        if values:
            client.log_metric(
                run_id, f"reproduce/test_acc_{key}_mean", statistics.fmean(values)
            )
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            client.log_metric(run_id, f"reproduce/test_acc_{key}_std", std)
    client.log_metric(run_id, "reproduce/wall_s", outcome.wall_s)
    client.set_tag(run_id, "snnrun.reproduce.row", label)
    client.set_tag(run_id, "snnrun.reproduce.verdict", verdict)
    client.log_text(run_id, md, "reproduce.md")
