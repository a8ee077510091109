"""Tracking records kept on disk while the MLflow store cannot be reached.

When the tracking server disappears mid-run, training goes on: the MLflow hook
appends what it could not send (metrics, checkpoint uploads, the final status) as JSON
lines to ``<run folder>/mlflow-pending.jsonl``. :func:`replay` sends them later, when
the run ends with the server back, when the run is resumed, or from
``snnrun sync <run folder>``. After a complete replay the file is renamed
``mlflow-pending.synced-<time>.jsonl``, so nothing is sent twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

SPOOL_NAME = "mlflow-pending.jsonl"


class SpoolError(RuntimeError):
    """The pending records cannot be read or sent; the message says what to do."""


@dataclass
class ReplayResult:
    """What a replay sent: epochs (steps) of metrics, checkpoint files, final status."""

    run_ids: list[str]
    steps: int = 0
    artifacts: int = 0
    status: str | None = None


def spool_path(run_dir: Path) -> Path:
    """Where a run folder keeps its pending tracking records."""
    return run_dir / SPOOL_NAME


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line, flushed to disk at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete record of ``path`` (a torn last line, from a kill, is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill mid-write
    return records


def replay(path: Path, tracking_uri: str | None = None) -> ReplayResult:
    """Send the pending records of ``path`` to their MLflow runs, then set the file
    aside. ``tracking_uri`` overrides the store the records name.

    Raises:
        SpoolError: the store cannot be reached; the file is left as it was.
    """
    records = read(path)
    if not records:
        return ReplayResult([])
    result = ReplayResult(sorted({str(r["run_id"]) for r in records}))
    try:
        for (uri, run_id), group in _by_run(records, tracking_uri):
            _send(MlflowClient(tracking_uri=uri), run_id, group, result)
    except Exception as exc:  # any store failure: keep the file for the next try
        raise SpoolError(
            f"cannot send the pending tracking records in {path} to MLflow "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); they stay "
            f"there: start the tracking server again and run `snnrun sync "
            f"{path.parent}`"
        ) from exc
    path.rename(path.with_name(f"mlflow-pending.synced-{int(time.time())}.jsonl"))
    return result


def _by_run(
    records: Iterable[dict[str, Any]], tracking_uri: str | None
) -> Iterator[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """Records grouped by (store, run), in their original order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (tracking_uri or str(record["tracking_uri"]), str(record["run_id"]))
        groups.setdefault(key, []).append(record)
    yield from groups.items()


def _send(
    client: MlflowClient,
    run_id: str,
    records: list[dict[str, Any]],
    result: ReplayResult,
) -> None:
    """Metrics first, then the newest upload of each checkpoint, then the status."""
    metrics = [
        Metric(key, float(value), int(r["timestamp"]), int(r["step"]))
        for r in records
        if r["kind"] == "metrics"
        for key, value in r["metrics"].items()
    ]
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
    result.steps += sum(1 for r in records if r["kind"] == "metrics")
    uploads = {
        (r["path"], r["artifact_path"]) for r in records if r["kind"] == "artifact"
    }
    for file, folder in sorted(uploads):
        if Path(file).is_file():  # the newest version of that checkpoint
            client.log_artifact(run_id, file, folder)
            result.artifacts += 1
    statuses = [r for r in records if r["kind"] == "status"]
    if statuses:
        last = statuses[-1]
        client.set_terminated(run_id, last["status"], int(last["end_time"]))
        result.status = last["status"]
