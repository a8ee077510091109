"""A sweep job's side of ``app/sweep.py``: what it reads, what it leaves, and
whether it needs to run at all.

``<sweep dir>/sweep.json`` (:class:`SweepInfo`) is written once by the launching
process; each job reads it (:func:`job_of`) wherever the launcher runs it, so its
MLflow run can hang under the sweep's parent run (:attr:`SweepJob.link`). A job
whose config already FINISHED in the same experiment is skipped
(:func:`reuse_finished`); one whose twin FAILED or was KILLED after a checkpoint
resumes it (:func:`crashed_run_dir`). ``on_job_end`` leaves a :class:`JobRecord`
in ``<sweep dir>/.snnrun_jobs/`` for the summary.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from omegaconf import DictConfig

from snnrun.app.tracking import SweepLink, config_hash, experiment_name

if TYPE_CHECKING:  # MLflow loads only when a sweep tracks (never for logger=none)
    from snnrun.track.query import RunRow

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
RECORDS_DIR = ".snnrun_jobs"


def _write_json(path: Path, data: object) -> None:
    """Write atomically: parallel jobs and the launcher read these files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2), encoding="utf-8")
    partial.replace(path)


def _override_key(override: str) -> str:
    """``+stbp.decay=0.1`` → ``stbp.decay``."""
    return override.split("=", 1)[0].lstrip("+~")


# --- what the launcher tells the jobs -----------------------------------------------


@dataclass(frozen=True)
class SweepInfo:
    """``<sweep dir>/sweep.json``: what every job of a sweep needs to know.

    ``swept`` maps each key that varies to its expression (``"0.1,0.2"``,
    ``"interval(0.05, 0.5)"``); ``parent_run_id`` is None without MLflow tracking.
    """

    sweep_id: str
    sweep_dir: str
    swept: dict[str, str]
    tracking_uri: str | None = None
    parent_run_id: str | None = None

    def save(self) -> None:
        _write_json(Path(self.sweep_dir) / SWEEP_FILE, asdict(self))

    @classmethod
    def load(cls, sweep_dir: str | Path) -> SweepInfo | None:
        path = Path(sweep_dir) / SWEEP_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class JobRecord:
    """How one job ended: ``ok``, ``skipped`` (a finished twin stands for it) or
    ``failed``; ``objective`` is its ``val/acc_best``."""

    sweep_id: str
    num: int
    name: str
    status: str
    objective: float | None = None
    run_id: str | None = None
    error: str = ""

    def save(self, sweep_dir: str) -> None:
        _write_json(Path(sweep_dir) / RECORDS_DIR / f"{self.num}.json", asdict(self))

    @classmethod
    def load_all(cls, info: SweepInfo) -> list[JobRecord]:
        """This sweep's records by job number (stale ones of a reused dir dropped)."""
        folder = Path(info.sweep_dir) / RECORDS_DIR
        records = [
            cls(**json.loads(path.read_text(encoding="utf-8")))
            for path in folder.glob("*.json")
        ]
        return sorted(
            (r for r in records if r.sweep_id == info.sweep_id), key=lambda r: r.num
        )


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep, as the job sees it (``app/train.py`` gets it from
    :func:`job_of`); ``info`` is None when the sweep callback is not registered."""

    num: int
    overrides: tuple[str, ...]
    info: SweepInfo | None = None

    @property
    def name(self) -> str:
        """The swept overrides, e.g. ``stbp.decay=0.1 seed=0`` (else all of them)."""
        swept = self.info.swept if self.info else {}
        own = [o for o in self.overrides if _override_key(o) in swept]
        return " ".join(own or self.overrides)

    @property
    def tags(self) -> dict[str, str]:
        from snnrun.track.query import JOB_TAG, SWEEP_ID_TAG

        if self.info is None:
            return {}
        return {
            SWEEP_ID_TAG: self.info.sweep_id,
            JOB_TAG: f"{self.info.sweep_id}/{self.num}",
        }

    @property
    def link(self) -> SweepLink | None:
        """Where the job's MLflow run goes; None without a parent run."""
        if self.info is None or self.info.parent_run_id is None:
            return None
        return SweepLink(self.info.parent_run_id, self.name, self.tags)

    def record(self, status: str, **fields: Any) -> JobRecord:
        sweep_id = self.info.sweep_id if self.info else ""
        return JobRecord(sweep_id, self.num, self.name, status, **fields)


def job_of(hydra_cfg: DictConfig) -> SweepJob | None:
    """The current job's place in its sweep; None outside a multirun."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(
        num=int(hydra_cfg.job.num),
        overrides=tuple(hydra_cfg.overrides.task),
        info=SweepInfo.load(hydra_cfg.sweep.dir),
    )


# --- skipping finished jobs -----------------------------------------------------------


class Reused(float):
    """``val/acc_best`` of the finished run a skipped job stands for; a plain float
    to the sweeper (Optuna's objective), with that run's id for the summary."""

    run_id: str

    def __new__(cls, value: float, run_id: str) -> Reused:
        reused = super().__new__(cls, value)
        reused.run_id = run_id
        return reused

    def __reduce__(self) -> tuple[Any, ...]:  # launchers pickle job results
        return (Reused, (float(self), self.run_id))


def _twins(cfg: DictConfig, job: SweepJob) -> list[RunRow]:
    """Earlier runs of this job's config: same experiment, same config hash (the
    config minus output paths and tracking/logging keys, ``app/tracking.py``),
    newest first; none with ``sweep.force=true`` or without MLflow tracking."""
    if job.info is None or cfg.sweep.force or cfg.logger.name != "mlflow":
        return []
    from snnrun.track.mlflow import check_store
    from snnrun.track.query import RunStore

    check_store(cfg.logger.tracking_uri)
    store = RunStore(cfg.logger.tracking_uri)
    return store.twins(experiment_name(cfg), config_hash(cfg))


def reuse_finished(cfg: DictConfig, job: SweepJob) -> Reused | None:
    """The result of a FINISHED twin of this job, which then need not run."""
    from snnrun.track.query import BEST_KEY

    for twin in _twins(cfg, job):
        if twin.status == "FINISHED" and BEST_KEY in twin.metrics:
            log.info("skipping: identical to finished run %s", twin.run_id)
            return Reused(twin.metrics[BEST_KEY], twin.run_id)
    return None


def crashed_run_dir(cfg: DictConfig, job: SweepJob) -> str | None:
    """The folder of a FAILED or KILLED twin that left a checkpoint: the job resumes
    it (``resume=<folder>``: same run, moved under this sweep). A twin still marked
    RUNNING is never taken: it may be training right now in another process."""
    for twin in _twins(cfg, job):
        run_dir = twin.tags.get("run_dir")
        if twin.status not in ("FAILED", "KILLED") or not run_dir:
            continue
        if (Path(run_dir) / "checkpoints" / "last.pt").is_file():
            log.info("resuming: crashed run %s of the same config", twin.run_id)
            return run_dir
    return None
