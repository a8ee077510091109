"""MLflowHook and check_store against a real sqlite MLflow store (no mocks).

One store per module keeps the file fast (creating a store runs MLflow's migrations,
about a second); each test uses its own experiment, named after the test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from snnrun.track.mlflow import (
    MLflowHook,
    TrackingError,
    artifact_location,
    check_store,
    experiment_url,
)
from snnrun.train.hooks import CheckpointSaved, EpochEnd, FitEnd, FitStart

PARAMS = {
    "stbp.decay": 0.3,
    "stbp.detach_reset": True,
    "trainer.epochs": 2,
    "optim.name": "adam",
}
ARTIFACTS = {
    "config.yaml": "stbp:\n  decay: 0.3\n",
    "overrides.yaml": "- stbp.decay=0.3\n",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("outputs")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"exp-{request.node.name}"


@pytest.fixture
def client(store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store)


def make_hook(store: str, experiment: str, **overrides: object) -> MLflowHook:
    kwargs: dict[str, object] = {
        "tracking_uri": store,
        "experiment": experiment,
        "run_name": "trial",
        "params": PARAMS,
        "tags": {"sweep": "s1"},
        "artifacts": ARTIFACTS,
    }
    kwargs.update(overrides)
    return MLflowHook(**kwargs)  # type: ignore[arg-type]


def run_epochs(hook: MLflowHook, epochs: range, total: int = 2) -> None:
    hook.on_fit_start(FitStart(total, epochs.start, 3, 30))
    for epoch in epochs:
        metrics = {"train/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10}
        hook.on_epoch_end(EpochEnd(epoch, metrics))


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_start_logs_params_tags_and_artifacts(
    store: str, experiment: str, client: MlflowClient, tmp_path: Path
) -> None:
    hook = make_hook(store, experiment)
    run_id = hook.start()
    assert hook.start() == run_id == hook.run_id  # idempotent

    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.params == {
        "stbp.decay": "0.3",
        "stbp.detach_reset": "true",
        "trainer.epochs": "2",
        "optim.name": "adam",
    }
    assert run.data.tags["sweep"] == "s1"
    assert run.data.tags["mlflow.runName"] == "trial"
    assert "mlflow.parentRunId" not in run.data.tags
    names = {info.path for info in client.list_artifacts(run_id)}
    assert names == {"config.yaml", "overrides.yaml"}
    local = client.download_artifacts(run_id, "config.yaml", str(tmp_path))
    assert Path(local).read_text() == ARTIFACTS["config.yaml"]

    db_folder = Path(store.removeprefix("sqlite:///")).parent
    expected = (db_folder / "mlartifacts" / experiment).as_uri()
    assert client.get_experiment_by_name(experiment).artifact_location == expected
    hook.finish("FINISHED")


def test_fit_sequence_logs_metrics_checkpoints_and_status(
    store: str, experiment: str, client: MlflowClient, tmp_path: Path
) -> None:
    hook = make_hook(store, experiment)
    hook.start()
    checkpoint = tmp_path / "last.pt"
    hook.on_fit_start(
        FitStart(epochs=2, start_epoch=1, batches_per_epoch=3, samples_per_epoch=30)
    )
    hook.on_epoch_end(EpochEnd(1, {"train/loss": 0.5, "val/acc": 0.8, "val/loss": 0.7}))
    checkpoint.write_bytes(b"epoch 1")
    hook.on_checkpoint(CheckpointSaved(1, checkpoint, "last"))
    hook.on_epoch_end(
        EpochEnd(
            2,
            {
                "train/loss": 0.25,
                "val/acc": 0.9,
                "val/loss": math.nan,
                "val/acc_best": 0.9,
            },
        )
    )
    checkpoint.write_bytes(b"epoch 2")
    hook.on_checkpoint(CheckpointSaved(2, checkpoint, "last"))
    hook.on_fit_end(FitEnd("FINISHED", {"val/acc_best": 0.9}))  # not logged again

    run_id = hook.run_id
    assert run_id is not None
    assert history(client, run_id, "train/loss") == [(1, 0.5), (2, 0.25)]
    assert history(client, run_id, "val/acc") == [(1, 0.8), (2, 0.9)]
    assert history(client, run_id, "val/loss") == [(1, 0.7)]  # NaN skipped ...
    run = client.get_run(run_id)
    assert run.data.tags["nonfinite_metrics"] == "step 2: val/loss"  # ... and tagged
    assert history(client, run_id, "val/acc_best") == [(2, 0.9)]
    listed = [info.path for info in client.list_artifacts(run_id, "checkpoints")]
    assert listed == ["checkpoints/last.pt"]
    local = client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path))
    assert Path(local).read_bytes() == b"epoch 2"  # the later upload overwrote
    assert run.info.status == "FINISHED"
    assert run.info.end_time is not None


def test_checkpoints_not_logged_when_disabled(
    store: str, experiment: str, client: MlflowClient, tmp_path: Path
) -> None:
    hook = make_hook(store, experiment, log_checkpoints=False)
    hook.start()
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"x")
    hook.on_checkpoint(CheckpointSaved(1, checkpoint, "best"))
    assert client.list_artifacts(hook.start(), "checkpoints") == []
    hook.finish("FINISHED")


def test_finish_without_fit_end_sets_killed_and_is_idempotent(
    store: str, experiment: str, client: MlflowClient
) -> None:
    hook = make_hook(store, experiment)
    run_id = hook.start()
    hook.finish("KILLED")
    hook.finish("KILLED")
    hook.finish("FINISHED")  # the first final status stands
    assert client.get_run(run_id).info.status == "KILLED"
    with pytest.raises(TrackingError, match="already ended"):
        hook.on_epoch_end(EpochEnd(1, {"train/loss": 1.0}))


def test_finish_before_start_creates_nothing(
    store: str, experiment: str, client: MlflowClient
) -> None:
    hook = make_hook(store, experiment)
    hook.finish("FAILED")
    assert hook.run_id is None
    assert client.get_experiment_by_name(experiment) is None


def test_unknown_status_is_recorded_as_failed(
    store: str, experiment: str, client: MlflowClient
) -> None:
    hook = make_hook(store, experiment)
    run_id = hook.start()
    hook.finish("DONE")
    assert client.get_run(run_id).info.status == "FAILED"


def test_failure_inside_start_marks_the_run_failed(
    store: str, experiment: str, client: MlflowClient
) -> None:
    # "a" as a file, then "a/b" below it: writing the artifacts fails after the
    # run exists, which must then not stay RUNNING.
    hook = make_hook(store, experiment, artifacts={"a": "x", "a/b": "y"})
    with pytest.raises(OSError):
        hook.start()
    assert hook.run_id is not None
    assert client.get_run(hook.run_id).info.status == "FAILED"


def test_artifact_names_must_stay_inside_the_run(store: str, experiment: str) -> None:
    with pytest.raises(ValueError, match=r"artifact name '../x.yaml' must be"):
        make_hook(store, experiment, artifacts={"../x.yaml": ""})


def test_resume_continues_the_same_run(
    store: str, experiment: str, client: MlflowClient
) -> None:
    first = make_hook(store, experiment)
    run_epochs(first, range(1, 2))
    first.finish("KILLED")
    run_id = first.run_id
    assert run_id is not None

    second = make_hook(
        store, experiment, run_id=run_id, params={**PARAMS, "trainer.epochs": 3}
    )
    assert second.run_id is None  # not reopened until start()
    assert second.start() == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    run_epochs(second, range(2, 4), total=3)
    second.on_fit_end(FitEnd("FINISHED"))

    assert [step for step, _ in history(client, run_id, "train/loss")] == [1, 2, 3]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.epochs"] == "2"  # MLflow params are immutable
    assert run.data.tags["snnrun.changed_params"] == "trainer.epochs: 2 -> 3"
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    assert len(client.search_runs([experiment_id])) == 1


def test_resume_does_not_log_an_epoch_twice(
    store: str, experiment: str, client: MlflowClient
) -> None:
    # Killed after logging epoch 2 but before writing its checkpoint: the resumed
    # run starts from epoch 1's checkpoint and replays epoch 2.
    first = make_hook(store, experiment)
    run_epochs(first, range(1, 3))
    run_id = first.run_id
    assert run_id is not None

    second = make_hook(store, experiment, run_id=run_id)
    run_epochs(second, range(2, 4), total=3)
    second.on_fit_end(FitEnd("FINISHED"))

    assert [step for step, _ in history(client, run_id, "train/loss")] == [1, 2, 3]
    assert [step for step, _ in history(client, run_id, "val/acc")] == [1, 2, 3]


def test_resume_of_an_unknown_run_names_the_store(store: str, experiment: str) -> None:
    hook = make_hook(store, experiment, run_id="0123456789abcdef0123456789abcdef")
    with pytest.raises(TrackingError, match=r"cannot resume MLflow run 0123.*store"):
        hook.start()
    hook.finish("FAILED")  # harmless: nothing was reopened


def test_parent_run_id_nests_the_run(
    store: str, experiment: str, client: MlflowClient
) -> None:
    parent = make_hook(store, experiment, run_name="sweep")
    parent_id = parent.start()
    child = make_hook(store, experiment, parent_run_id=parent_id)
    child_id = child.start()
    assert client.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    child.finish("FINISHED")
    parent.finish("FINISHED")


def test_more_than_a_batch_of_params_and_long_values(
    store: str, experiment: str, client: MlflowClient
) -> None:
    params: dict[str, str | int | float | bool] = {
        f"group.key{i:03d}": i for i in range(250)
    }
    params["dataset.files"] = "x" * 7000
    hook = make_hook(store, experiment, params=params)
    logged = client.get_run(hook.start()).data.params
    assert len(logged) == 251
    assert logged["group.key249"] == "249"
    assert logged["dataset.files"] == "x" * 6000  # MLflow 3's value limit
    hook.finish("FINISHED")


def test_check_store_accepts_a_writable_store(store: str) -> None:
    check_store(store)
    assert (Path(store.removeprefix("sqlite:///")).parent / "mlartifacts").is_dir()


def test_check_store_rejects_an_unwritable_folder(tmp_path: Path) -> None:
    # A folder below a regular file can never be created, even by root.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    db = blocker / "outputs" / "mlflow.db"
    with pytest.raises(TrackingError) as caught:
        check_store(f"sqlite:///{db}")
    message = str(caught.value)
    assert message.startswith(f"cannot write the MLflow store at {db}: ")
    assert message.endswith(
        "; set logger.tracking_uri=sqlite:///<writable folder>/mlflow.db or logger=none"
    )


def test_check_store_rejects_an_unreachable_server() -> None:
    with pytest.raises(TrackingError, match="cannot reach the MLflow server at http"):
        check_store("http://127.0.0.1:9")  # discard port: refused at once


def test_artifact_location_sits_next_to_the_sqlite_db() -> None:
    uri = "sqlite:////abs/outputs/mlflow.db"
    assert artifact_location(uri, "mnist") == "file:///abs/outputs/mlartifacts/mnist"
    relative = artifact_location("sqlite:///outputs/mlflow.db", "mnist")
    assert relative == (Path.cwd() / "outputs/mlartifacts/mnist").as_uri()
    assert artifact_location("sqlite://", "mnist") is None
    assert artifact_location("http://localhost:5000", "mnist") is None


# --- a store that goes away mid-run (issue 11) ---------------------------------------


def dead_http_store() -> str:
    """The URI of a port on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_store_gone_mid_run_keeps_records_then_replays_them(
    store: str,
    experiment: str,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from snnrun.track import spool

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    pending = tmp_path / "run" / spool.SPOOL_NAME
    hook = make_hook(store, experiment, spool=pending, log_checkpoints=True)
    run_epochs(hook, range(1, 2), total=3)
    # The hook's store stops answering: a real client of a port nobody listens on.
    hook._client = MlflowClient(tracking_uri=dead_http_store())
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    with caplog.at_level("WARNING", logger="snnrun.track.mlflow"):
        for epoch in (2, 3):
            hook.on_epoch_end(EpochEnd(epoch, {"val/acc": epoch / 10}))
            hook.on_checkpoint(CheckpointSaved(epoch, checkpoint, "last"))
    warnings = [r for r in caplog.records if "stopped answering" in r.message]
    assert len(warnings) == 1 and str(pending) in warnings[0].message
    kept = spool.read(pending)
    assert [r["step"] for r in kept if r["kind"] == "metrics"] == [2, 3]
    assert client.get_run(hook.run_id).info.status == "RUNNING"

    # At the end the records (naming the sqlite store, which answers) are sent.
    hook.on_fit_end(FitEnd("FINISHED"))
    run = client.get_run(hook.run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, hook.run_id, "val/acc")] == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(hook.run_id, "checkpoints")] == [
        "checkpoints/last.pt"
    ]
    assert not pending.exists()


def test_without_a_spool_store_errors_still_propagate(
    store: str, experiment: str
) -> None:
    hook = make_hook(store, experiment)
    hook.start()
    hook._client = MlflowClient(tracking_uri=dead_http_store())
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        hook.on_epoch_end(EpochEnd(1, {"val/acc": 0.1}))


KIND = "mlflow.experimentKind"


def test_experiments_open_in_the_training_view(store, client, experiment) -> None:
    """New experiments get MLflow 3's kind tag; an older one without it gets it too;
    a kind a user chose is never overwritten."""
    make_hook(store, experiment).start()
    tags = client.get_experiment_by_name(experiment).tags
    assert tags[KIND] == "custom_model_development"

    old = experiment + "-old"
    bare = client.create_experiment(old, artifact_location(store, old))
    make_hook(store, experiment + "-old").start()
    assert client.get_experiment(bare).tags[KIND] == "custom_model_development"

    name = experiment + "-chosen"
    location = artifact_location(store, name)
    chosen = client.create_experiment(name, location, tags={KIND: "genai_development"})
    make_hook(store, experiment + "-chosen").start()
    assert client.get_experiment(chosen).tags[KIND] == "genai_development"


def test_experiments_carry_snnruns_table_view(store, client, experiment) -> None:
    """The runs table's saved view (MLflow's share-view tag): accuracy, firing rate
    and SynOps columns, best val/acc first; the URL snnrun documents selects it."""
    make_hook(store, experiment).start()
    found = client.get_experiment_by_name(experiment)
    view = json.loads(found.tags["mlflow.sharedViewState.snnrun"])
    assert view["selectedColumns"][:3] == [
        "metrics.`val/acc_best`",
        "metrics.`test/acc_at_best_val`",
        "metrics.`test/acc`",
    ]
    assert {"metrics.`rate/layer1`", "metrics.`synops/total`"} <= set(
        view["selectedColumns"]
    )
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`val/acc_best`", False)
    assert experiment_url(found.experiment_id).endswith(
        f"/#/experiments/{found.experiment_id}/runs"
        "?workflowType=machine_learning&viewStateShareKey=snnrun"
    )


def test_the_end_of_a_run_prints_its_id_and_where_to_see_it(
    store, client, experiment, capsys
) -> None:
    hook = make_hook(store, experiment)
    run_epochs(hook, range(1, 3))
    hook.on_fit_end(FitEnd("FINISHED", {"val/acc_best": 0.975, "train/loss": 0.1}))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    assert line.startswith(f"MLflow run {hook.run_id} FINISHED (val/acc_best 0.975)")
    assert f"mlflow ui --backend-store-uri {store} --port 5000" in line
    assert line.endswith(
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{hook.run_id}"
        "?workflowType=machine_learning"  # MLflow 3.17's UI: the training view
    )
