"""Hydra multirun → one MLflow parent run per sweep, one child run per job.

``conf/train.yaml`` registers :class:`SweepCallback` under ``hydra.callbacks``:

- ``on_multirun_start`` (the launching process): a sweep id, the parent run (params:
  the swept keys with their expressions; tags: sweep id, sweep dir, sweeper, launcher;
  artifacts: ``sweep.yaml``, ``config.yaml``) and ``<sweep dir>/sweep.json``.
- each job (``app/train.py``, in whatever process or machine the launcher picks, as
  long as it sees the sweep dir) reads ``sweep.json``; it skips itself when a
  FINISHED run of its experiment has the same config hash, resumes a crashed one,
  or trains as a child run named by its swept overrides (``app/sweep_job.py``).
- ``on_job_end`` (the job's process) writes ``<sweep dir>/.snnrun_jobs/<num>.json``;
  a job that failed before its run existed still gets a FAILED child run, and the
  failure reaches the sweeper as a :class:`FailedJob` value so the sweep goes on.
- ``on_multirun_end``: the summary (jobs ok/skipped/failed, best ``val/acc_best``)
  in the log and on the parent run, whose status becomes FINISHED or FAILED; the
  process exits 1 if a job failed. A sweep that dies first (Ctrl-C, a sweeper
  error) has its parent closed at exit, KILLED or FAILED.
"""

from __future__ import annotations

import atexit
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from snnrun.app.guard import EXIT_USER_ERROR, is_user_error
from snnrun.app.sweep_job import JobRecord, Reused, SweepInfo, SweepJob, job_of
from snnrun.app.tracking import config_params, experiment_name, git_commit, resolved

log = logging.getLogger(__name__)

EXIT_JOBS_FAILED = 1


# --- a failed job, as the sweeper sees it ---------------------------------------------


@dataclass(frozen=True)
class FailedJob:
    """What the sweeper gets back from a failed job instead of its exception.

    Hydra's sweepers re-raise a failed job's exception once its batch is done, which
    ends the sweep before ``on_multirun_end`` (the parent would stay RUNNING, later
    Optuna trials never run). With this value the basic sweeper goes on, and
    Optuna's ``float()`` of it fails, so the trial is told FAIL and the study goes on.
    """

    num: int
    error: str

    def __float__(self) -> float:
        raise ValueError(str(self))

    def __str__(self) -> str:
        return f"job #{self.num} failed: {self.error}"


def _job_error(job_return: JobReturn) -> BaseException | None:
    if job_return.status != JobStatus.FAILED:
        return None
    try:
        job_return.return_value  # noqa: B018 - raises the job's exception
    except Exception as error:  # run_job caught it; here it is data
        return error
    return None


# --- the callback ---------------------------------------------------------------------


class SweepCallback(Callback):
    """Parent/child MLflow runs, skipping, failure handling and the summary of a
    Hydra multirun (see the module docstring). Does nothing in RUN mode."""

    def __init__(self) -> None:
        self._info: SweepInfo | None = None
        self._closed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        swept = sweep_space(config)
        info = SweepInfo(
            sweep_id=uuid.uuid4().hex[:8],
            sweep_dir=str(Path(config.hydra.sweep.dir).absolute()),
            swept=swept,
        )
        if config.logger.name == "mlflow":
            try:
                parent = _start_parent(config, info)
            except Exception as error:  # an unusable store: say so, run nothing
                if not is_user_error(error):
                    raise
                log.error("snnrun: error: %s", error)
                raise SystemExit(EXIT_USER_ERROR) from None
            info = SweepInfo(**{**asdict(info), **parent})
        info.save()
        self._info, self._closed = info, False
        atexit.register(self._close_abandoned)
        log.info("sweep %s over %s in %s", info.sweep_id, swept, info.sweep_dir)

    def on_job_end(
        self, config: DictConfig, job_return: JobReturn, **kwargs: Any
    ) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job = job_of(config.hydra)
        if job is None or job.info is None:
            return
        error = _job_error(job_return)
        record = _record(job, job_return, error)
        try:
            record.save(job.info.sweep_dir)
        except OSError:
            log.exception("could not record job #%d; Hydra will re-raise", job.num)
            return
        if error is not None:
            trace = None if is_user_error(error) else error
            log.error(
                "job #%d (%s) failed: %s", job.num, job.name, error, exc_info=trace
            )
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = FailedJob(job.num, str(error))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._info is None:
            return
        summary = self._close("FINISHED")
        if summary.failed:
            raise SystemExit(EXIT_JOBS_FAILED)

    def _close_abandoned(self) -> None:
        """At exit: a sweep that never reached ``on_multirun_end``."""
        if self._info is not None and not self._closed:
            log.warning("sweep %s ended before all its jobs", self._info.sweep_id)
            self._close("KILLED")

    def _close(self, status_if_ok: str) -> SweepSummary:
        assert self._info is not None
        self._closed = True
        atexit.unregister(self._close_abandoned)
        summary = SweepSummary(self._info, JobRecord.load_all(self._info))
        for line in summary.lines():
            (log.error if line.startswith("failed") else log.info)(line)
        if self._info.parent_run_id is not None:
            status = "FAILED" if summary.failed else status_if_ok
            try:
                _close_parent(self._info, summary, status)
            except Exception:  # the summary is in the log already; say what failed
                log.exception("could not close the sweep's MLflow parent run")
        return summary


def sweep_space(config: DictConfig) -> dict[str, str]:
    """Keys that vary between jobs → their expression: the sweeper's ``params``
    (Optuna's search space) and command-line sweeps (``seed=0,1``), which win over
    them, as a fixed command-line value (``stbp.decay=0.3``) does."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    swept = {str(key): str(value) for key, value in params.items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(config.hydra.overrides.task)):
        if override.is_sweep_override():
            swept[override.key_or_group] = override.input_line.split("=", 1)[1]
        else:
            swept.pop(override.key_or_group, None)
    return swept


def _job_config_params(cfg: DictConfig) -> dict[str, Any]:
    try:
        return config_params(resolved(cfg))
    except Exception:  # a config that does not resolve: the error tag says why
        return {}


def _record(
    job: SweepJob, job_return: JobReturn, error: BaseException | None
) -> JobRecord:
    """The job's record; its MLflow run found (or, failed early, created FAILED)."""
    assert job.info is not None
    value = None if error else job_return.return_value
    if isinstance(value, Reused):
        return job.record("skipped", objective=float(value), run_id=value.run_id)
    cfg = job_return.cfg
    run_id = None
    try:
        if job.info.parent_run_id is not None and cfg.logger.name == "mlflow":
            run_id = _job_run(job, cfg, error)
    except Exception:  # tracking trouble must not lose the record
        log.exception("could not find or create the MLflow run of job #%d", job.num)
    if error is not None:
        return job.record("failed", run_id=run_id, error=str(error)[:2000])
    objective = float(value) if isinstance(value, (int, float)) else None
    return job.record("ok", objective=objective, run_id=run_id)


def _job_run(job: SweepJob, cfg: DictConfig, error: BaseException | None) -> str | None:
    """The id of the job's run; a failure is tagged on it, or recorded as a new
    FAILED child run when the job failed before its run existed."""
    from snnrun.track.mlflow import MLflowHook
    from snnrun.track.query import ERROR_TAG, RunStore

    assert job.info is not None and job.info.tracking_uri is not None
    store = RunStore(job.info.tracking_uri)
    own = store.job_run(experiment_name(cfg), job.info.sweep_id, job.num)
    if own is not None and error is not None:
        store.client.set_tag(own.run_id, ERROR_TAG, str(error)[:5000])
    if own is not None or error is None:
        return own.run_id if own else None
    hook = MLflowHook(
        tracking_uri=job.info.tracking_uri,
        experiment=experiment_name(cfg),
        run_name=job.name,
        params=_job_config_params(cfg),
        tags={**job.tags, "overrides": " ".join(job.overrides), ERROR_TAG: str(error)},
        artifacts={"config.yaml": OmegaConf.to_yaml(cfg)},
        parent_run_id=job.info.parent_run_id,
        log_checkpoints=False,
    )
    run_id = hook.start()
    hook.finish("FAILED")
    return run_id


# --- the parent run -------------------------------------------------------------------


def _start_parent(config: DictConfig, info: SweepInfo) -> dict[str, str]:
    """Create the sweep's parent run; returns the SweepInfo fields it fills."""
    from snnrun.track.mlflow import MLflowHook, check_store
    from snnrun.track.query import ROLE_TAG, SWEEP_ID_TAG, SWEEP_ROLE

    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    uri = str(config.logger.tracking_uri)
    check_store(uri)
    sweep_config = {
        "sweep_id": info.sweep_id,
        "sweep_dir": info.sweep_dir,
        "overrides": list(config.hydra.overrides.task),
        "swept": info.swept,
        "sweeper": _plain(config, "hydra.sweeper"),
        "launcher": _plain(config, "hydra.launcher"),
    }
    tags = {
        ROLE_TAG: SWEEP_ROLE,
        SWEEP_ID_TAG: info.sweep_id,
        "snnrun.sweep_dir": info.sweep_dir,
        "snnrun.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
        "snnrun.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1],
        "overrides": " ".join(config.hydra.overrides.task),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    hook = MLflowHook(
        tracking_uri=uri,
        experiment=experiment_name(task),
        run_name="sweep " + " ".join(f"{k}={v}" for k, v in info.swept.items()),
        params=info.swept,
        tags=tags,
        artifacts={
            "sweep.yaml": OmegaConf.to_yaml(sweep_config),
            "config.yaml": OmegaConf.to_yaml(resolved(task)),
        },
        log_checkpoints=False,
    )
    return {"tracking_uri": uri, "parent_run_id": hook.start()}


def _plain(config: DictConfig, key: str) -> Any:
    node = OmegaConf.select(config, key)
    return OmegaConf.to_container(node, resolve=False) if node is not None else None


def _close_parent(info: SweepInfo, summary: SweepSummary, status: str) -> None:
    """Log the summary on the parent run and set its final status."""
    from snnrun.track.mlflow import close_run

    assert info.parent_run_id is not None
    jobs = [asdict(record) for record in summary.records]
    close_run(
        info.tracking_uri,
        info.parent_run_id,
        status,
        summary.metrics(),
        summary.tags(),
        {"sweep_jobs.json": json.dumps(jobs, indent=2)},
    )


@dataclass(frozen=True)
class SweepSummary:
    """The records of a sweep's jobs, summed up for the log and the parent run."""

    info: SweepInfo
    records: list[JobRecord] = field(default_factory=list)

    def _with(self, status: str) -> list[JobRecord]:
        return [r for r in self.records if r.status == status]

    @property
    def failed(self) -> list[JobRecord]:
        return self._with("failed")

    @property
    def best(self) -> JobRecord | None:
        scored = [r for r in self.records if r.objective is not None]
        return max(scored, key=lambda r: r.objective or 0.0) if scored else None

    def metrics(self) -> dict[str, float]:
        counts = {
            "sweep/jobs": len(self.records),
            "sweep/jobs_ok": len(self._with("ok")),
            "sweep/jobs_skipped": len(self._with("skipped")),
            "sweep/jobs_failed": len(self.failed),
        }
        best = self.best
        if best is not None and best.objective is not None:
            return {**counts, "val/acc_best": best.objective}
        return dict(counts)

    def tags(self) -> dict[str, str]:
        from snnrun.track.query import REUSED_TAG

        tags: dict[str, str] = {}
        reused = [r.run_id for r in self._with("skipped") if r.run_id]
        if reused:
            tags[REUSED_TAG] = ",".join(reused)
        if self.best is not None and self.best.run_id:
            tags["snnrun.best_run"] = self.best.run_id
        if self.failed:
            tags["snnrun.failed_jobs"] = "; ".join(
                f"#{r.num} {r.name}" for r in self.failed
            )
        return tags

    def lines(self) -> list[str]:
        """The summary as log lines; one ``failed: ...`` line per failed job."""
        head = (
            f"sweep {self.info.sweep_id}: {len(self.records)} jobs: "
            f"{len(self._with('ok'))} ok, {len(self._with('skipped'))} skipped "
            f"(identical to a finished run), {len(self.failed)} failed"
        )
        if self.info.parent_run_id:
            head += f"; MLflow parent run {self.info.parent_run_id}"
        lines = [head]
        best = self.best
        if best is not None:
            lines.append(
                f"best val/acc_best {best.objective:.2%}: job #{best.num} "
                f"{best.name} (run {best.run_id or '-'})"
            )
        lines += [f"failed: job #{r.num} {r.name}: {r.error}" for r in self.failed]
        return lines
