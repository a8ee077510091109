"""RunStore and the comparison helpers against a real sqlite MLflow store (no mocks).

One store per module: an older sweep A (decay 0.1/0.2 × seed 0/1, all finished), a
newer sweep B (one FAILED child, two of A's runs reused) and a plain run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from snnrun.track.query import (
    CONFIG_HASH_TAG,
    JOB_TAG,
    PARENT_TAG,
    REUSED_TAG,
    ROLE_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE,
    QueryError,
    RunRow,
    RunStore,
    Stat,
    group_by_seed,
    varied_params,
)

T0 = 1_700_000_000_000  # ms
ACC = {("0.1", "0"): 0.5, ("0.1", "1"): 0.7, ("0.2", "0"): 0.8, ("0.2", "1"): 0.9}


@dataclass
class Store:
    uri: str
    client: MlflowClient
    sweep_a: str
    parent_a: str
    parent_b: str
    runs_a: dict[tuple[str, str], str]
    failed_b: str
    plain: str


def make_run(
    client: MlflowClient,
    experiment_id: str,
    start: int,
    name: str,
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
) -> str:
    run_id = client.create_run(
        experiment_id, start_time=start, run_name=name, tags=tags or {}
    ).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, start, 1) for k, v in (metrics or {}).items()],
        params=[Param(k, v) for k, v in (params or {}).items()],
    )
    client.set_terminated(run_id, status, end_time=start + 4000)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    uri = f"sqlite:///{tmp_path_factory.mktemp('outputs')}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("mnist")
    parent_a = make_run(
        client, exp, T0, "sweep A", tags={ROLE_TAG: SWEEP_ROLE, SWEEP_ID_TAG: "aaaa"}
    )
    runs_a = {}
    for i, ((decay, seed), acc) in enumerate(ACC.items()):
        runs_a[decay, seed] = make_run(
            client,
            exp,
            T0 + 1000 * (i + 1),
            f"stbp.decay={decay} seed={seed}",
            params={"stbp.decay": decay, "seed": seed, "optim.lr": "0.001"},
            metrics={
                "val/acc_best": acc,
                "val/acc": acc - 0.1,
                "rate/layer1": 0.1,
                "rate/layer2": 0.3,
                "perf/samples_per_s": 100.0,
            },
            tags={
                PARENT_TAG: parent_a,
                SWEEP_ID_TAG: "aaaa",
                JOB_TAG: f"aaaa/{i}",
                CONFIG_HASH_TAG: f"hash-{decay}-{seed}",
            },
        )
    reused = ",".join([runs_a["0.1", "0"], runs_a["0.1", "1"]])
    parent_b = make_run(
        client,
        exp,
        T0 + 10_000,
        "sweep B",
        tags={ROLE_TAG: SWEEP_ROLE, SWEEP_ID_TAG: "bbbb", REUSED_TAG: reused},
    )
    failed_b = make_run(
        client,
        exp,
        T0 + 11_000,
        "stbp.decay=1.5",
        params={"stbp.decay": "1.5", "seed": "0"},
        tags={PARENT_TAG: parent_b, SWEEP_ID_TAG: "bbbb", JOB_TAG: "bbbb/2"},
        status="FAILED",
    )
    plain = make_run(client, exp, T0 + 20_000, "plain", params={"seed": "0"})
    return Store(uri, client, "aaaa", parent_a, parent_b, runs_a, failed_b, plain)


def test_default_target_is_the_newest_sweep_with_its_reused_runs(store: Store) -> None:
    target = RunStore(store.uri).resolve(None)
    assert (target.kind, target.label, target.parent_run_id) == (
        "sweep",
        "bbbb",
        store.parent_b,
    )
    ids = [row.run_id for row in target.runs]
    assert ids == [store.failed_b, store.runs_a["0.1", "0"], store.runs_a["0.1", "1"]]


@pytest.mark.parametrize("by", ["sweep id", "parent run id"])
def test_a_sweep_is_found_by_its_id_or_its_parent_run(store: Store, by: str) -> None:
    key = store.sweep_a if by == "sweep id" else store.parent_a
    target = RunStore(store.uri).resolve(key)
    assert target.label == "aaaa" and target.parent_run_id == store.parent_a
    assert [row.run_id for row in target.runs] == list(store.runs_a.values())


def test_an_experiment_target_holds_every_run_but_the_sweep_parents(
    store: Store,
) -> None:
    target = RunStore(store.uri).resolve("mnist")
    assert target.kind == "experiment" and target.parent_run_id is None
    expected = {*store.runs_a.values(), store.failed_b, store.plain}
    assert {row.run_id for row in target.runs} == expected


def test_an_unknown_target_names_what_the_store_holds(store: Store) -> None:
    with pytest.raises(QueryError, match=r"'nope'.*bbbb, aaaa.*experiments: .*mnist"):
        RunStore(store.uri).resolve("nope")


def test_twins_match_the_config_hash_and_status(store: Store) -> None:
    runs = RunStore(store.uri)
    (twin,) = runs.twins("mnist", "hash-0.2-1", "FINISHED")
    assert twin.run_id == store.runs_a["0.2", "1"]
    assert runs.twins("mnist", "hash-0.2-1", "FAILED") == []
    assert runs.twins("absent", "hash-0.2-1") == []


def test_job_run_finds_a_jobs_run_by_its_sweep_and_number(store: Store) -> None:
    runs = RunStore(store.uri)
    assert runs.job_run("mnist", "bbbb", 2).run_id == store.failed_b  # type: ignore[union-attr]
    assert runs.job_run("mnist", "bbbb", 3) is None


def test_rows_group_by_everything_but_the_seed(store: Store) -> None:
    rows = RunStore(store.uri).resolve("aaaa").runs
    keys = varied_params(rows)
    assert keys == ["seed", "stbp.decay"]  # optim.lr is the same everywhere
    groups = group_by_seed(rows, keys)
    assert [g.values for g in groups] == [{"stbp.decay": "0.1"}, {"stbp.decay": "0.2"}]
    assert [g.seeds for g in groups] == [["0", "1"], ["0", "1"]]
    best = groups[0].stat("best val/acc")
    assert best is not None
    assert (best.mean, best.n) == (pytest.approx(0.6), 2)
    assert best.std == pytest.approx(math.sqrt(0.02))  # sample std of 0.5, 0.7
    final = groups[1].stat("final val/acc")
    assert final is not None and final.mean == pytest.approx(0.75)
    rate = groups[0].stat("firing rate")
    assert rate is not None and rate.mean == pytest.approx(0.2)  # mean of layers
    wall = groups[0].stat("wall s")
    assert wall is not None and wall.mean == pytest.approx(4.0)
    assert groups[0].stat("peak MB") is None  # not logged by these runs


def test_a_missing_param_counts_as_a_varied_value() -> None:
    rows = [row("a", {"x": "1"}), row("b", {})]
    assert varied_params(rows) == ["x"]


def test_groups_sort_numbers_numerically_then_text() -> None:
    rows = [
        row(str(i), {"lr": v}) for i, v in enumerate(["0.1", "abc", "1e-3", "0.05"])
    ]
    groups = group_by_seed(rows, ["lr"])
    assert [g.values["lr"] for g in groups] == ["1e-3", "0.05", "0.1", "abc"]


def test_stat_ignores_missing_and_non_finite_values() -> None:
    assert Stat.of([None, math.nan]) is None
    assert Stat.of([0.5, None, math.inf]) == Stat(0.5, 0.0, 1)


def row(run_id: str, params: dict[str, str]) -> RunRow:
    return RunRow(run_id, run_id, "FINISHED", params, {}, {}, None)
