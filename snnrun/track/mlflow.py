"""MLflow tracking: one run per training job, fed by the trainer's events.

Params are the resolved config as flat dotted keys (``stbp.decay``), so UI columns map
1:1 to the overrides users type; metrics are ``split/metric`` at ``step=epoch``;
artifacts are the config files and the checkpoints (``checkpoints/last.pt``, ...).

The hook talks to the store through its own :class:`mlflow.MlflowClient`: no
``mlflow.set_tracking_uri`` and no fluent active run, because the jobs of a Hydra
multirun share one process and must not see each other's runs. Where the store lives
and whether it can be written is ``store.py``'s concern (re-exported here).

Training never waits on the tracker: when the store stops answering mid-run (a
tracking server killed, a network gone), the hook says so once and from then on
appends metrics, checkpoint uploads and the final status to the run folder's
``mlflow-pending.jsonl`` (``spool.py``); they are sent when the run ends if the store
is back, when the run is resumed, or by ``snnrun sync <run folder>``. How long one
call may take is bounded by ``logger.http_*`` (``app/tracking.py`` sets MLflow's
``MLFLOW_HTTP_REQUEST_*`` variables from them).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from snnrun.track import spool
from snnrun.track.store import (
    TrackingError,
    artifact_location,
    check_store,
    retry_locked,
    sqlite_path,
)
from snnrun.train.hooks import (
    CheckpointSaved,
    Diagnostics,
    EpochEnd,
    FitEnd,
    FitStart,
    Hook,
    run_status,
)

# The store names are re-exported: the app imports them from here.
__all__ = [
    "PEAK_RSS_KEY",
    "TERMINAL_STATUSES",
    "MLflowHook",
    "TrackingError",
    "artifact_location",
    "check_store",
    "close_run",
    "experiment_tags",
    "experiment_url",
    "param_value",
    "peak_rss_mb",
    "sqlite_path",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Opens new experiments in the UI's training view (MLflow 3: "Machine learning")
# rather than asking for, or inferring, the GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_WORKFLOW = "machine_learning"  # the UI's own name of its model-training view
# A saved view of the runs table (MLflow 3's "share view"): an experiment tag
# ``mlflow.sharedViewState.<key>`` whose JSON the UI applies when the URL carries
# ``viewStateShareKey=<key>``. snnrun's view shows the columns a researcher reads first.
VIEW_KEY = "snnrun"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_COLUMNS = (
    "val/acc_best",
    "test/acc_at_best_val",
    "test/acc",
    "rate/layer1",
    "synops/total",
    "energy/snn_nj",
    "perf/samples_per_s",
)
SUMMARY_KEYS = ("val/acc_best", "test/acc_at_best_val", "test/acc", "energy/snn_nj")
PEAK_RSS_KEY = "perf/peak_rss_mb"


def experiment_tags() -> dict[str, str]:
    """Tags of an experiment snnrun creates: the training view, snnrun's table view."""
    columns = [f"metrics.`{key}`" for key in VIEW_COLUMNS]
    view = {
        "selectedColumns": columns,
        "orderByKey": columns[0],
        "orderByAsc": False,
    }
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: json.dumps(view)}


def experiment_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """An experiment's runs table in a local ``mlflow ui``: the training view with
    snnrun's columns (best val/acc first)."""
    return (
        f"{host}/#/experiments/{experiment_id}/runs"
        f"?workflowType={UI_WORKFLOW}&viewStateShareKey={VIEW_KEY}"
    )


def close_run(
    tracking_uri: str,
    run_id: str,
    status: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    texts: Mapping[str, str],
) -> None:
    """Log a final summary on an open run (metrics at step 0, tags, text artifacts
    by file name) and set its terminal ``status``: how a sweep's parent run ends."""
    client = MlflowClient(tracking_uri=tracking_uri)
    now = _now_ms()
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
        tags=[RunTag(key, value[:MAX_TAG_VAL_LENGTH]) for key, value in tags.items()],
    )
    for name, text in texts.items():
        client.log_text(run_id, text, _artifact_name(name))
    client.set_terminated(run_id, status=status)


# --- small pure helpers -------------------------------------------------------------


def param_value(value: str | int | float | bool) -> str:
    """A param as MLflow stores it: bools as YAML spells them (``true``, like the
    override), everything truncated to MLflow's value limit."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return text[:MAX_PARAM_VAL_LENGTH]


def _artifact_name(name: str) -> str:
    """Check that an artifact file name stays inside the run's artifact folder."""
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            f"artifact name {name!r} must be a relative path without '..', "
            "e.g. 'config.yaml' or 'hydra/overrides.yaml'"
        )
    return name


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MiB (None off Unix). A high-water
    mark: jobs sharing a process (a basic multirun) see the largest job's peak."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def ui_command(tracking_uri: str) -> str:
    """The ``mlflow ui`` command that serves this store on 127.0.0.1:5000."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"


# --- the hook -----------------------------------------------------------------------


class MLflowHook(Hook):
    """Record one training job as an MLflow run (or continue one on resume).

    Call :meth:`start` before training so later failures are recorded on the run;
    the trainer's events then add metrics and checkpoints, and :class:`FitEnd` (or
    :meth:`finish`, from the app's guard) sets the final status.

    Args:
        tracking_uri: store, e.g. ``sqlite:////abs/outputs/mlflow.db``.
        experiment: experiment name, created if missing (artifacts next to a sqlite db).
        run_name: display name of a new run (None: MLflow picks one).
        params: flat dotted config keys → values, logged once.
        tags: run tags (sweep, git SHA, data provenance ...).
        artifacts: artifact file name → text content (``config.yaml`` ...).
        run_id: continue this existing run instead of creating one (resume).
        parent_run_id: nest the new run under a sweep's parent run.
        log_checkpoints: upload every checkpoint under ``checkpoints/``.
        spool: the run folder's pending-records file; with it, a store that stops
            answering mid-run is written around instead of failing the run.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None,
        params: Mapping[str, str | int | float | bool],
        tags: Mapping[str, str],
        artifacts: Mapping[str, str],
        run_id: str | None = None,
        parent_run_id: str | None = None,
        log_checkpoints: bool = True,
        spool: Path | None = None,
    ) -> None:
        self._spool = spool
        self._offline = False
        self._tracking_uri = tracking_uri
        self._experiment = experiment
        self._run_name = run_name
        self._params = {key: param_value(value) for key, value in params.items()}
        self._tags = dict(tags)
        self._artifacts = {
            _artifact_name(name): text for name, text in artifacts.items()
        }
        self._resume_run_id = run_id
        self._parent_run_id = parent_run_id
        self._log_checkpoints = log_checkpoints
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._run_id: str | None = None
        self._ended = False
        self._logged_through = 0  # the last epoch whose metrics the run holds

    @property
    def run_id(self) -> str | None:
        """The run's id once :meth:`start` ran (or the resumed id); None before."""
        return self._run_id

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> str:
        """Create (or reopen) the run and log params, tags and artifacts; idempotent.

        If logging fails after the run exists, the run is marked FAILED before the
        error propagates, so it is never left RUNNING.
        """
        if self._run_id is not None:
            return self._run_id
        if self._resume_run_id is not None:
            self._replay_pending()  # before counting the epochs the run holds
        if self._resume_run_id is None:
            self._run_id = self._create_run()
            logged_params: dict[str, str] = {}
        else:
            logged_params = self._reopen_run(self._resume_run_id)
            self._run_id = self._resume_run_id
        try:
            self._log_params(logged_params)
            self._log_tags(self._run_tags())
            self._log_texts(self._artifacts)
        except BaseException as exc:
            self.finish(run_status(exc))
            raise
        log.info("MLflow run %s in %s", self._run_id, self._tracking_uri)
        return self._run_id

    def finish(self, status: str) -> None:
        """Set the run's final status (FINISHED, FAILED or KILLED); idempotent.

        Never raises: the guard calls this while another exception is in flight, and a
        tracking error must not mask it. Failures are logged instead.
        """
        if self._run_id is None or self._ended:
            return
        if status not in TERMINAL_STATUSES:
            log.error("unknown run status %r; marking the MLflow run FAILED", status)
            status = "FAILED"
        if self._offline:
            self._finish_offline(status)
            return
        try:
            retry_locked(self._client.set_terminated, self._run_id, status=status)
        except Exception as exc:  # never mask the original error
            if self._spool is not None:  # the store went away: keep the status
                self._go_offline(exc)
                self._finish_offline(status)
                return
            log.exception("could not mark MLflow run %s as %s", self._run_id, status)
            return
        self._ended = True

    # --- events ---------------------------------------------------------------------

    def on_fit_start(self, event: FitStart) -> None:
        """Start the run if the app has not done so already."""
        self.start()

    def on_epoch_end(self, event: EpochEnd) -> None:
        """Log every finite metric of the epoch at ``step=epoch``, plus the peak
        memory of the process (``perf/peak_rss_mb``).

        An epoch the run already holds is skipped: metrics are logged before the
        epoch's checkpoint is written, so a run killed in between resumes from the
        checkpoint before and repeats that epoch.
        """
        self._active_run_id()  # reopens a resumed run, which sets _logged_through
        if event.epoch <= self._logged_through:
            log.info("epoch %d is already logged on the MLflow run", event.epoch)
            return
        peak = peak_rss_mb()
        metrics = {**event.metrics, **({} if peak is None else {PEAK_RSS_KEY: peak})}
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        record = {"kind": "metrics", "step": event.epoch, "metrics": finite}
        self._guarded(lambda: self._log_metrics(metrics, step=event.epoch), record)
        self._logged_through = event.epoch

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        """Upload the checkpoint under ``checkpoints/`` (same name overwrites)."""
        if self._log_checkpoints:
            run_id = self._active_run_id()
            record = {
                "kind": "artifact",
                "path": str(Path(event.path).absolute()),
                "artifact_path": "checkpoints",
            }
            self._guarded(
                lambda: retry_locked(
                    self._client.log_artifact, run_id, str(event.path), "checkpoints"
                ),
                record,
            )

    # --- a store that stops answering -------------------------------------------------

    def _guarded(self, send: Callable[[], object], record: dict[str, Any]) -> None:
        """``send()``; if the store fails (or failed before), keep ``record`` in the
        spool instead. Without a spool the error propagates."""
        if not self._offline:
            try:
                send()
                return
            except TrackingError:
                raise
            except Exception as exc:  # any store failure: training must go on
                if self._spool is None:
                    raise
                self._go_offline(exc)
        self._keep(record)

    def _keep(self, record: dict[str, Any]) -> None:
        """Append ``record`` (tagged with the store and the run) to the spool."""
        assert self._spool is not None
        spool.append(
            self._spool,
            {
                **record,
                "tracking_uri": self._tracking_uri,
                "run_id": self._run_id,
                "timestamp": _now_ms(),
            },
        )

    def _go_offline(self, exc: Exception) -> None:
        """Say once, clearly, that tracking goes on in the run folder."""
        self._offline = True
        reason = str(exc).strip().splitlines()[0][:300] if str(exc) else ""
        log.warning(
            "the MLflow store %s stopped answering (%s: %s). Training goes on without "
            "it: this run's metrics, checkpoint uploads and status are kept in %s and "
            "sent when the run ends if the store is back, when the run is resumed, "
            "or with: snnrun sync %s",
            self._tracking_uri,
            type(exc).__name__,
            reason,
            self._spool,
            self._spool.parent if self._spool else "<run folder>",
        )

    def _finish_offline(self, status: str) -> None:
        """Keep the final status; then try once to send everything kept."""
        self._keep({"kind": "status", "status": status, "end_time": _now_ms()})
        self._ended = True
        assert self._spool is not None
        try:
            result = spool.replay(self._spool)
        except spool.SpoolError as exc:
            log.warning("%s", exc)
            return
        log.info(
            "the MLflow store answers again: sent %d epochs of metrics, %d "
            "checkpoints and the status %s of run %s",
            result.steps,
            result.artifacts,
            result.status,
            self._run_id,
        )

    def _replay_pending(self) -> None:
        """Send what an earlier attempt of this run kept on disk (resume)."""
        if self._spool is None or not spool.read(self._spool):
            return
        try:
            result = spool.replay(self._spool)
        except spool.SpoolError as exc:
            log.warning("%s", exc)
            return
        log.info(
            "sent %d epochs of metrics kept in %s while the store was away",
            result.steps,
            self._spool,
        )

    def on_diagnostics(self, event: Diagnostics) -> None:
        """Draw the event's plots (``track/diagnostics.py``) and upload them under
        ``diagnostics/`` (the last epoch) or ``diagnostics/epoch_<NNN>/``.

        A plotting error is logged, never raised: pictures must not cost a run."""
        from snnrun.track.diagnostics import write_all  # matplotlib only when needed

        folder = (
            "diagnostics" if event.final else f"diagnostics/epoch_{event.epoch:03d}"
        )
        run_id = self._active_run_id()
        with tempfile.TemporaryDirectory(prefix="snnrun-diagnostics-") as tmp:
            try:
                write_all(event, Path(tmp))
            except Exception as exc:  # pictures must not cost the run: one line
                log.warning(
                    "could not draw the diagnostics of epoch %d (%s: %s)",
                    event.epoch,
                    type(exc).__name__,
                    exc,
                )
                return
            if self._offline:  # the store is away: pictures are not worth waiting for
                return
            try:
                retry_locked(self._client.log_artifacts, run_id, tmp, folder)
            except Exception as exc:  # a store failure must not cost the run
                log.warning(
                    "could not upload the diagnostics of epoch %d: %s",
                    event.epoch,
                    str(exc).splitlines()[0][:200] if str(exc) else exc,
                )

    def on_fit_end(self, event: FitEnd) -> None:
        """Set the final status (the metrics were logged at each epoch's end) and
        print where to see the run."""
        self.finish(event.status)
        if self._run_id is None:
            return
        if self._offline:  # the store is away: the records wait in the run folder
            return
        try:  # a failing store must not mask the error that ended the fit
            line = self.summary_line(event)
        except Exception as exc:  # one line, no traceback: the run itself is fine
            reason = str(exc).strip().splitlines()[0][:200] if str(exc) else ""
            log.warning(
                "could not summarise MLflow run %s (%s: %s)",
                self._run_id,
                type(exc).__name__,
                reason,
            )
            return
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def summary_line(self, event: FitEnd) -> str:
        """``MLflow run <id> FINISHED (val/acc_best 0.97 …): mlflow ui ... → URL``."""
        shown = [
            f"{key} {event.metrics[key]:.4g}"
            for key in SUMMARY_KEYS
            if key in event.metrics
        ]
        facts = f" ({', '.join(shown)})" if shown else ""
        return (
            f"MLflow run {self._run_id} {event.status}{facts}. Browse: "
            f"{ui_command(self._tracking_uri)}  then open {self.run_url()}"
        )

    def run_url(self, host: str = "http://127.0.0.1:5000") -> str:
        """The run's page in a local ``mlflow ui``, in the model-training view.

        MLflow 3.17's UI picks its view from the URL's ``workflowType``, else from the
        browser's last choice (GenAI at first); the experiment-kind tag alone does not
        switch it, so the URL says it.
        """
        experiment = self._client.get_run(self._run_id).info.experiment_id
        return (
            f"{host}/#/experiments/{experiment}/runs/{self._run_id}"
            f"?workflowType={UI_WORKFLOW}"
        )

    # --- run creation -----------------------------------------------------------------

    def _create_run(self) -> str:
        experiment_id = self._experiment_id()
        run = self._client.create_run(experiment_id, run_name=self._run_name)
        return run.info.run_id

    def _experiment_id(self) -> str:
        """Id of the experiment, created (or restored from deletion) when needed."""
        experiment = self._client.get_experiment_by_name(self._experiment)
        if experiment is None:
            location = artifact_location(self._tracking_uri, self._experiment)
            try:
                return self._client.create_experiment(
                    self._experiment,
                    artifact_location=location,
                    tags=experiment_tags(),
                )
            except MlflowException:
                # A parallel job of the same sweep may have created it just now.
                experiment = self._client.get_experiment_by_name(self._experiment)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            log.warning("restoring the deleted MLflow experiment %r", self._experiment)
            self._client.restore_experiment(experiment.experiment_id)
        for key, value in experiment_tags().items():  # older ones; never override
            if key not in experiment.tags:
                self._client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def _reopen_run(self, run_id: str) -> dict[str, str]:
        """Mark an existing run RUNNING again; return the params it already has."""
        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot resume MLflow run {run_id}: it is not in the store "
                f"{self._tracking_uri} ({exc.message}); resume with the same "
                "logger.tracking_uri, or start a new run"
            ) from exc
        self._client.update_run(run_id, status="RUNNING")
        self._logged_through = self._last_logged_step(run_id, run.data.metrics)
        return dict(run.data.params)

    def _last_logged_step(self, run_id: str, keys: Iterable[str]) -> int:
        """The highest step of any metric on the run (0: none), i.e. the last epoch
        logged; every key counts, since one can be missing (non-finite) at a step.
        MLflow's own ``system/`` metrics count samples, not epochs."""
        steps = (
            metric.step
            for key in keys
            if not key.startswith("system/")
            for metric in retry_locked(self._client.get_metric_history, run_id, key)
        )
        return max(steps, default=0)

    def _run_tags(self) -> dict[str, str]:
        tags = dict(self._tags)
        if self._parent_run_id is not None:
            tags["mlflow.parentRunId"] = self._parent_run_id
        if self._run_name is not None:
            tags["mlflow.runName"] = self._run_name
        return tags

    # --- logging ----------------------------------------------------------------------

    def _log_params(self, logged: Mapping[str, str]) -> None:
        """Log the params not yet on the run; params are immutable in MLflow, so a
        value changed on resume is reported in a warning and a tag instead."""
        new = [Param(k, v) for k, v in self._params.items() if k not in logged]
        for chunk in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            retry_locked(self._client.log_batch, self._active_run_id(), params=chunk)
        changed = [
            f"{key}: {logged[key]} -> {value}"
            for key, value in self._params.items()
            if key in logged and logged[key] != value
        ]
        if changed:
            log.warning("params changed on resume: %s", "; ".join(changed))
            self._log_tags({"snnrun.changed_params": "; ".join(changed)})

    def _log_tags(self, tags: Mapping[str, str]) -> None:
        entities = [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        for chunk in _chunks(entities, MAX_PARAMS_TAGS_PER_BATCH):
            retry_locked(self._client.log_batch, self._active_run_id(), tags=chunk)

    def _log_texts(self, texts: Mapping[str, str]) -> None:
        """Upload each text as an artifact file named by its key."""
        if not texts:
            return
        with tempfile.TemporaryDirectory(prefix="snnrun-artifacts-") as folder:
            for name, content in texts.items():
                path = Path(folder, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
            retry_locked(self._client.log_artifacts, self._active_run_id(), folder)

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log the finite metrics; NaN/inf ones are skipped, warned and tagged."""
        timestamp = _now_ms()
        values = {key: float(value) for key, value in metrics.items()}
        entities = [
            Metric(key, value, timestamp, step)
            for key, value in values.items()
            if math.isfinite(value)
        ]
        for chunk in _chunks(entities, MAX_METRICS_PER_BATCH):
            retry_locked(self._client.log_batch, self._active_run_id(), metrics=chunk)
        nonfinite = ", ".join(k for k, v in values.items() if not math.isfinite(v))
        if nonfinite:
            log.warning("non-finite metrics at step %d: %s", step, nonfinite)
            self._log_tags({"nonfinite_metrics": f"step {step}: {nonfinite}"})

    def _active_run_id(self) -> str:
        """The id of the open run; starts it if needed, refuses after it ended."""
        if self._ended:
            raise TrackingError(f"MLflow run {self._run_id} has already ended")
        return self.start() if self._run_id is None else self._run_id
