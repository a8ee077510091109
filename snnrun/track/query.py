"""Read runs back from MLflow: a sweep's jobs, an experiment, config twins.

``snnrun compare`` and the sweep callback ask the store the same few questions: which
runs belong to a sweep (its parent's children, plus the finished runs it reused
instead of rerunning), which runs an experiment holds, which finished run has the same
config hash. :func:`varied_params` and :func:`group_by_seed` then turn the runs into
comparison rows: the params that vary are the columns, runs differing only in ``seed``
collapse into one row with mean ± std.

The tag names below are the contract between the writers (``app/sweep.py``,
``app/tracking.py``) and this reader.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from snnrun.track.mlflow import PEAK_RSS_KEY, sqlite_path

SWEEP_ID_TAG = "snnrun.sweep_id"
"""On a sweep's parent and on each of its child runs."""
ROLE_TAG = "snnrun.role"
SWEEP_ROLE = "sweep"
"""``snnrun.role=sweep`` marks a parent run (it trains nothing)."""
JOB_TAG = "snnrun.sweep_job"
"""``<sweep id>/<job number>`` on a child run: finds a job's run from the job."""
CONFIG_HASH_TAG = "snnrun.config_hash"
"""Hash of the config minus paths and logging keys: finds identical runs."""
REUSED_TAG = "snnrun.reused_runs"
"""On a parent: ids of the finished runs its skipped jobs stand for."""
ERROR_TAG = "snnrun.error"
RUN_DIR_TAG = "run_dir"
"""The run's folder on disk: ``resume=<run id>`` finds its checkpoints there."""
PARENT_TAG = "mlflow.parentRunId"

# metric names as the trainer and the MLflow hook log them
BEST_KEY = "val/acc_best"
FINAL_KEY = "val/acc"
TEST_KEY = "test/acc"
TEST_AT_BEST_KEY = "test/acc_at_best_val"
RATE_PREFIX = "rate/layer"
SPEED_KEY = "perf/samples_per_s"
SYNOPS_KEY = "synops/total"
ENERGY_KEY = "energy/snn_nj"
DERIVED_PREFIX = "data."  # params logged from the data (provenance), not config keys
SEED_PARAM = "seed"


class QueryError(LookupError):
    """Nothing in the store matches what was asked; the message says what exists."""


@dataclass(frozen=True)
class RunRow:
    """One MLflow run, reduced to what a comparison needs.

    ``metrics`` hold each metric's latest value (for ``val/acc_best``: the best);
    ``wall_s`` is end minus start time in seconds (None while running).
    """

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    wall_s: float | None

    @classmethod
    def of(cls, run: Run) -> RunRow:
        info = run.info
        wall = (info.end_time - info.start_time) / 1000 if info.end_time else None
        return cls(
            run_id=info.run_id,
            name=info.run_name or info.run_id,
            status=info.status,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
            wall_s=wall,
        )

    @property
    def mean_rate(self) -> float | None:
        """Mean of the ``rate/layer<i>`` firing rates (spikes per neuron per step)."""
        rates = [v for k, v in self.metrics.items() if k.startswith(RATE_PREFIX)]
        return statistics.fmean(rates) if rates else None


@dataclass(frozen=True)
class Target:
    """What ``snnrun compare`` looks at: a sweep (with its parent) or an experiment."""

    kind: str  # "sweep" or "experiment"
    label: str
    runs: list[RunRow]
    parent_run_id: str | None = None


def quoted(value: str) -> str:
    """A string literal for an MLflow filter; the values queried here (ids, hashes,
    statuses) never hold quotes, and MLflow's filter grammar has no escape for one."""
    if "'" in value:
        raise ValueError(f"cannot search MLflow for a value with a quote: {value!r}")
    return f"'{value}'"


def tag_filter(**tags: str) -> str:
    """``tags.`key` = 'value' AND ...`` for exact tag matches."""
    return " AND ".join(f"tags.`{k}` = {quoted(v)}" for k, v in tags.items())


class RunStore:
    """Queries over one tracking store (``sqlite:///…/mlflow.db`` or a server)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)

    # --- plain searches -------------------------------------------------------------

    def experiment_ids(self, name: str | None = None) -> list[str]:
        """Ids of the active experiments (just ``name``'s when given; [] if absent)."""
        if name is not None:
            found = self.client.get_experiment_by_name(name)
            active = found is not None and found.lifecycle_stage == "active"
            return [found.experiment_id] if active else []
        return [e.experiment_id for e in self.client.search_experiments()]

    def search(
        self,
        filter_string: str = "",
        experiment: str | None = None,
        newest_first: bool = True,
    ) -> list[Run]:
        """Every active run matching ``filter_string`` (all pages)."""
        ids = self.experiment_ids(experiment)
        if not ids:
            return []
        order = ["attributes.start_time " + ("DESC" if newest_first else "ASC")]
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                ids,
                filter_string,
                ViewType.ACTIVE_ONLY,
                order_by=order,
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    # --- the questions ----------------------------------------------------------------

    def twins(
        self, experiment: str, config_hash: str, status: str | None = None
    ) -> list[RunRow]:
        """Runs of ``experiment`` with this config hash (and status), newest first."""
        where = tag_filter(**{CONFIG_HASH_TAG: config_hash})
        if status is not None:
            where += f" AND attributes.status = {quoted(status)}"
        return [RunRow.of(run) for run in self.search(where, experiment)]

    def job_run(self, experiment: str, sweep_id: str, num: int) -> RunRow | None:
        """The run a sweep job created (or resumed), if any."""
        where = tag_filter(**{JOB_TAG: f"{sweep_id}/{num}"})
        found = self.search(where, experiment)
        return RunRow.of(found[0]) if found else None

    def sweep_parent(self, sweep: str | None = None) -> Run | None:
        """A sweep's parent run by sweep id or parent run id; None: the newest."""
        where = tag_filter(**{ROLE_TAG: SWEEP_ROLE})
        parents = self.search(where)
        if sweep is None:
            return parents[0] if parents else None
        return next(
            (
                run
                for run in parents
                if sweep in (run.data.tags.get(SWEEP_ID_TAG), run.info.run_id)
            ),
            None,
        )

    def sweep_runs(self, parent: Run) -> list[RunRow]:
        """The parent's child runs plus the runs its skipped jobs reused, oldest first."""
        children = self.search(
            tag_filter(**{PARENT_TAG: parent.info.run_id}), newest_first=False
        )
        reused = parent.data.tags.get(REUSED_TAG, "")
        rows = [RunRow.of(run) for run in children]
        known = {row.run_id for row in rows}
        for run_id in filter(None, reused.split(",")):
            if run_id not in known:
                rows.append(RunRow.of(self.client.get_run(run_id)))
                known.add(run_id)
        return rows

    def run_dir_of(self, run_id: str) -> Path:
        """The folder of the snnrun run ``run_id`` (its ``run_dir`` tag).

        Raises QueryError when the store does not exist (it is not created), holds
        no such run, or the run was not made by ``snnrun train``.
        """
        not_found = (
            f"{run_id} is not a folder, a checkpoint or a run id in {self.tracking_uri}"
        )
        db = sqlite_path(self.tracking_uri)
        if db is not None and not db.is_file():  # do not create an empty store
            raise QueryError(f"{not_found} (there is no store at {db})")
        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            raise QueryError(not_found) from error
        if RUN_DIR_TAG not in run.data.tags:
            raise QueryError(
                f"{run_id}: that MLflow run was not made by `snnrun train` (it has "
                f"no {RUN_DIR_TAG} tag); pass the run folder instead"
            )
        return Path(run.data.tags[RUN_DIR_TAG])

    def resolve(self, target: str | None) -> Target:
        """``None`` → the newest sweep; else a sweep id, a parent run id or an
        experiment name. Raises QueryError naming what the store holds."""
        parent = self.sweep_parent(target)
        if parent is not None:
            label = parent.data.tags.get(SWEEP_ID_TAG, parent.info.run_id)
            runs = self.sweep_runs(parent)
            return Target("sweep", label, runs, parent.info.run_id)
        if target is not None and self.experiment_ids(target):
            runs = self.search("", target, newest_first=False)
            trained = [r for r in runs if r.data.tags.get(ROLE_TAG) != SWEEP_ROLE]
            return Target("experiment", target, [RunRow.of(r) for r in trained])
        raise QueryError(self._nothing_found(target))

    def _nothing_found(self, target: str | None) -> str:
        sweeps = [
            run.data.tags.get(SWEEP_ID_TAG, run.info.run_id)
            for run in self.search(tag_filter(**{ROLE_TAG: SWEEP_ROLE}))[:5]
        ]
        experiments = [e.name for e in self.client.search_experiments()]
        what = (
            "no sweep in" if target is None else f"no sweep or experiment {target!r} in"
        )
        return (
            f"{what} {self.tracking_uri}; sweeps (newest first): "
            f"{', '.join(sweeps) or 'none'}; experiments: {', '.join(experiments) or 'none'}"
        )


# --- turning runs into comparison rows ------------------------------------------------


def varied_params(rows: Sequence[RunRow]) -> list[str]:
    """Config params whose value differs between runs (a missing param counts as a
    value), sorted by name. Derived ``data.*`` params (file hashes, sample counts)
    follow from config keys and are left out."""
    keys = sorted(
        {
            key
            for row in rows
            for key in row.params
            if not key.startswith(DERIVED_PREFIX)
        }
    )
    return [key for key in keys if len({row.params.get(key) for row in rows}) > 1]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over ``n`` runs (std 0 for one run)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat | None:
        kept = [v for v in values if v is not None and math.isfinite(v)]
        if not kept:
            return None
        std = statistics.stdev(kept) if len(kept) > 1 else 0.0
        return cls(statistics.fmean(kept), std, len(kept))


Measure = Callable[[RunRow], "float | None"]

MEASURES: dict[str, Measure] = {
    "best val/acc": lambda row: row.metrics.get(BEST_KEY),
    "final val/acc": lambda row: row.metrics.get(FINAL_KEY),
    "final test/acc": lambda row: row.metrics.get(TEST_KEY),
    "test@best val": lambda row: row.metrics.get(TEST_AT_BEST_KEY),
    "firing rate": lambda row: row.mean_rate,
    "SynOps": lambda row: row.metrics.get(SYNOPS_KEY),
    "energy nJ": lambda row: row.metrics.get(ENERGY_KEY),
    "wall s": lambda row: row.wall_s,
    "samples/s": lambda row: row.metrics.get(SPEED_KEY),
    "peak MB": lambda row: row.metrics.get(PEAK_RSS_KEY),
}
"""Column name → how to read it from one run; a group shows mean ± std over runs."""


@dataclass(frozen=True)
class Group:
    """Runs that share every compared param value (they differ only in ``seed``)."""

    values: dict[str, str]
    runs: list[RunRow] = field(default_factory=list)

    @property
    def seeds(self) -> list[str]:
        return [row.params.get(SEED_PARAM, "?") for row in self.runs]

    def stat(self, measure: str) -> Stat | None:
        return Stat.of(MEASURES[measure](row) for row in self.runs)


def group_by_seed(rows: Sequence[RunRow], keys: Sequence[str]) -> list[Group]:
    """One group per combination of ``keys`` values (``seed`` excluded), sorted by
    those values (numbers numerically), runs in input order."""
    keys = [key for key in keys if key != SEED_PARAM]
    groups: dict[tuple[str, ...], Group] = {}
    for row in rows:
        values = tuple(row.params.get(key, "") for key in keys)
        groups.setdefault(
            values, Group(dict(zip(keys, values, strict=True)))
        ).runs.append(row)
    return [groups[values] for values in sorted(groups, key=_sort_key)]


def _sort_key(values: tuple[str, ...]) -> tuple[tuple[int, float, str], ...]:
    """Numbers before text, numbers by value: 0.1 < 0.2 < 1e-3 sorts as numbers."""
    key = []
    for value in values:
        try:
            key.append((0, float(value), ""))
        except ValueError:
            key.append((1, 0.0, value))
    return tuple(key)
