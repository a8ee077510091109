"""Runs left RUNNING by a process that is gone (SIGKILL, power loss, OOM killer).

``snnrun train`` tags every MLflow run with its host and pid (``snnrun.host``,
``snnrun.pid``). A RUNNING run whose host is this machine and whose pid no longer
lives was killed without a chance to close it: it is reported at start-up and by
``snnrun compare``, and ``snnrun runs --clean`` marks it KILLED. Runs of other hosts
are never judged (their processes cannot be seen from here).
"""

from __future__ import annotations

import logging
import os
import socket

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG = "snnrun.host", "snnrun.pid"


def process_tags() -> dict[str, str]:
    """The tags that let a later process judge this one's runs: host and pid."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def is_stale(run: Run, host: str | None = None) -> bool:
    """RUNNING, made on this host, and its process is gone."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(HOST_TAG) != (
        host or socket.gethostname()
    ):
        return False
    try:
        return not pid_alive(int(tags.get(PID_TAG, "")))
    except ValueError:
        return False


def stale_runs(tracking_uri: str) -> list[Run]:
    """Every stale run of every experiment in the store."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [
        e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)
    ]
    if not experiments:
        return []
    running = client.search_runs(
        experiments, filter_string="attributes.status = 'RUNNING'", max_results=10_000
    )
    host = socket.gethostname()
    return [run for run in running if is_stale(run, host)]


def describe(run: Run) -> str:
    """``<run id> (<run name>, pid <pid>)``."""
    tags = run.data.tags
    return f"{run.info.run_id} ({run.info.run_name}, pid {tags.get(PID_TAG, '?')})"


def report_stale(tracking_uri: str) -> list[Run]:
    """Warn about the stale runs of the store (never raises: a report only)."""
    try:
        runs = stale_runs(tracking_uri)
    except Exception as exc:  # a report must not stop a run
        log.debug("could not look for stale runs: %s", exc)
        return []
    if runs:
        log.warning(
            "%d MLflow run(s) in %s are marked RUNNING but their process on this host "
            "is gone (killed without closing): %s. Mark them KILLED with: snnrun runs "
            "--clean --tracking-uri %s",
            len(runs),
            tracking_uri,
            ", ".join(describe(r) for r in runs),
            tracking_uri,
        )
    return runs


def mark_killed(tracking_uri: str, runs: list[Run]) -> None:
    """Set each run's status to KILLED."""
    client = MlflowClient(tracking_uri=tracking_uri)
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
