"""Sweeps: the parent/child MLflow runs, skipping, failures, the summary, the plugin
configs, and ``snnrun compare`` / ``mlflow ui`` on a real sweep.

Fast tests cover the pieces (records, summary, values handed to sweepers, configs
composing); the slow ones run ``snnrun train -m`` for real in subprocesses, each with
its own output folder and sqlite store.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import OmegaConf

from snnrun.app.schema import config_dir, register_configs
from snnrun.app.sweep import FailedJob, SweepSummary, sweep_space
from snnrun.app.sweep_job import JobRecord
from snnrun.track.query import PARENT_TAG, REUSED_TAG, ROLE_TAG, SWEEP_ID_TAG

from .conftest import tiny
from .test_sweep_job import info

# --- the pieces -----------------------------------------------------------------------


def test_a_failed_job_is_no_objective_for_a_sweeper() -> None:
    failed = FailedJob(2, "stbp.decay=1.5 is outside [0, 1)")
    with pytest.raises(ValueError, match=r"job #2 failed: stbp.decay=1.5"):
        float(failed)
    assert pickle.loads(pickle.dumps(failed)) == failed


def test_the_sweep_space_is_the_sweeper_params_and_the_command_line_sweeps() -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "overrides": {
                    "task": ["seed=0,1", "stbp.threshold=0.4", "optim.lr=range(1,3)"]
                },
                "sweeper": {
                    "params": {"stbp.threshold": "interval(0.2, 1.0)", "optim.lr": "x"}
                },
            }
        }
    )
    assert sweep_space(config) == {"optim.lr": "range(1,3)", "seed": "0,1"}


def test_the_summary_counts_jobs_and_names_the_best_and_the_failed(
    tmp_path: Path,
) -> None:
    records = [
        JobRecord("s1", 0, "stbp.decay=0.1", "ok", 0.5, "r0"),
        JobRecord("s1", 1, "stbp.decay=1.5", "failed", error="out of range"),
        JobRecord("s1", 2, "stbp.decay=0.2", "skipped", 0.75, "r2"),
    ]
    summary = SweepSummary(info(tmp_path), records)
    assert summary.metrics() == {
        "sweep/jobs": 3,
        "sweep/jobs_ok": 1,
        "sweep/jobs_skipped": 1,
        "sweep/jobs_failed": 1,
        "val/acc_best": 0.75,
    }
    assert summary.tags() == {
        REUSED_TAG: "r2",
        "snnrun.best_run": "r2",
        "snnrun.failed_jobs": "#1 stbp.decay=1.5",
    }
    assert summary.lines() == [
        "sweep s1: 3 jobs: 1 ok, 1 skipped (identical to a finished run), 1 failed; "
        "MLflow parent run p1",
        "best val/acc_best 75.00%: job #2 stbp.decay=0.2 (run r2)",
        "failed: job #1 stbp.decay=1.5: out of range",
    ]


# --- the configs ----------------------------------------------------------------------


def compose_hydra(*overrides: str):
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_the_sweep_callback_is_registered() -> None:
    cfg = compose_hydra()
    assert cfg.hydra.callbacks.sweep._target_ == "snnrun.app.sweep.SweepCallback"
    assert cfg.sweep.force is False


def needs(plugin: str) -> pytest.MarkDecorator:
    try:
        missing = importlib.util.find_spec(f"hydra_plugins.{plugin}") is None
    except ModuleNotFoundError:  # no Hydra plugin installed at all
        missing = True
    reason = f"{plugin} is not installed: pip install -e '.[sweep]'"
    return pytest.mark.skipif(missing, reason=reason)


@pytest.mark.parametrize(
    ("override", "node", "target", "setting"),
    [
        pytest.param(
            "hydra/launcher=local_pool",
            "launcher",
            "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
            ("n_jobs", 2),
            marks=needs("hydra_joblib_launcher"),
        ),
        pytest.param(
            "hydra/launcher=slurm",
            "launcher",
            "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            ("tasks_per_node", 1),
            marks=needs("hydra_submitit_launcher"),
        ),
        pytest.param(
            "hparams_search=optuna_mnist",
            "sweeper",
            "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
            ("direction", "maximize"),
            marks=needs("hydra_optuna_sweeper"),
        ),
    ],
)
def test_launcher_and_sweeper_configs_compose(override, node, target, setting) -> None:
    plugin = compose_hydra(override).hydra[node]
    assert plugin._target_ == target
    assert plugin[setting[0]] == setting[1]


@needs("hydra_optuna_sweeper")
def test_the_optuna_search_space_covers_neuron_and_learning_rate() -> None:
    params = compose_hydra("hparams_search=optuna_mnist").hydra.sweeper.params
    assert set(params) == {"stbp.decay", "stbp.threshold", "optim.lr"}


# --- real sweeps ----------------------------------------------------------------------


@dataclass
class Sweep:
    """A sweep run in a subprocess: its output root, store and result."""

    root: Path
    done: subprocess.CompletedProcess

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def text(self) -> str:
        return self.done.stdout + self.done.stderr

    def runs(self) -> list[Run]:
        client = MlflowClient(self.uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        return list(client.search_runs(ids))

    def parents(self) -> list[Run]:
        return [r for r in self.runs() if r.data.tags.get(ROLE_TAG) == "sweep"]

    def children(self, parent: Run) -> dict[str, Run]:
        """Child runs by run name."""
        return {
            r.info.run_name: r
            for r in self.runs()
            if r.data.tags.get(PARENT_TAG) == parent.info.run_id
        }


def snnrun(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snnrun", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        timeout=timeout,
    )


def sweep_args(root: Path, data: Path, *extra: str) -> list[str]:
    """``train -m`` + tiny debug settings reading ``data``, tracked in ``root``."""
    return [
        "train",
        "-m",  # before the overrides: Hydra's argument parser wants it there
        *tiny("logger=mlflow", "trainer.progress=off"),
        f"paths.data_root={data}",
        f"paths.output_root={root}",
        f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        *extra,
    ]


def run_sweep(root: Path, data: Path, *extra: str) -> Sweep:
    return Sweep(root, snnrun(root.parent, *sweep_args(root, data, *extra)))


GRID = ("stbp.decay=0.1,0.2", "seed=0,1")
NAMES = {f"stbp.decay={d} seed={s}" for d in ("0.1", "0.2") for s in ("0", "1")}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Sweep:
    """One 2×2 sweep shared by the tests below (they only read it)."""
    sweep = run_sweep(tmp_path_factory.mktemp("grid") / "out", shared_data, *GRID)
    assert sweep.done.returncode == 0, sweep.text
    return sweep


@pytest.mark.slow
def test_a_sweep_is_one_parent_run_with_a_child_per_job(grid: Sweep) -> None:
    (parent,) = grid.parents()
    sweep_id = parent.data.tags[SWEEP_ID_TAG]
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"stbp.decay": "0.1,0.2", "seed": "0,1"}
    assert parent.data.tags["snnrun.sweep_dir"].startswith(str(grid.root / "multirun"))
    assert "stbp.decay=0.1,0.2 seed=0,1" in parent.data.tags["overrides"]
    assert parent.data.metrics["sweep/jobs_ok"] == 4
    assert parent.data.metrics["sweep/jobs_failed"] == 0
    children = grid.children(parent)
    assert set(children) == NAMES
    for child in children.values():
        assert child.info.status == "FINISHED"
        assert child.data.tags[SWEEP_ID_TAG] == sweep_id
        assert child.data.tags["snnrun.config_hash"]
        assert "debug=fast" in child.data.tags["overrides"]
    best = max(children.values(), key=lambda r: r.data.metrics["val/acc_best"])
    assert parent.data.metrics["val/acc_best"] == best.data.metrics["val/acc_best"]
    assert parent.data.tags["snnrun.best_run"] == best.info.run_id
    client = MlflowClient(grid.uri)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.yaml", "config.yaml", "sweep_jobs.json"} <= artifacts
    assert f"sweep {sweep_id}: 4 jobs: 4 ok, 0 skipped" in grid.text


@pytest.mark.slow
def test_compare_tabulates_and_exports_the_sweep(grid: Sweep, tmp_path: Path) -> None:
    (parent,) = grid.parents()
    sweep_id = parent.data.tags[SWEEP_ID_TAG]
    files = {
        "csv": tmp_path / "t.csv",
        "md": tmp_path / "t.md",
        "plot": tmp_path / "a.png",
    }
    done = snnrun(
        tmp_path,
        "compare",
        sweep_id,
        "--tracking-uri",
        grid.uri,
        *(arg for kind, path in files.items() for arg in (f"--{kind}", str(path))),
    )
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "stbp.decay" in line)
    for column in ("runs", "seeds", "best val/acc", "firing rate", "SynOps"):
        assert column in header
    assert "data." not in header  # derived params are no columns
    assert max(len(line) for line in done.stdout.splitlines()) <= 120
    rows = [line for line in done.stdout.splitlines() if "│ 0." in line]
    assert [row.split("│")[1].strip() for row in rows] == ["0.1", "0.2"]
    assert all(" ± " in row and "0,1" in row for row in rows)
    with files["csv"].open() as file:
        table = list(csv.DictReader(file))
    assert [(r["stbp.decay"], r["runs"], r["seeds"]) for r in table] == [
        ("0.1", "2", "0 1"),
        ("0.2", "2", "0 1"),
    ]
    assert all(float(r["final val/acc mean"]) >= 0 for r in table)  # all in the CSV
    assert all(float(r["SynOps mean"]) > 0 for r in table)
    assert files["md"].read_text().count("\n| 0.") == 2
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    logged = MlflowClient(grid.uri).list_artifacts(parent.info.run_id, "compare")
    assert [a.path for a in logged] == ["compare/a.png"]


@pytest.mark.slow
def test_a_sweep_prints_the_config_tree_once(tmp_path: Path, shared_data: Path) -> None:
    args = sweep_args(tmp_path / "out", shared_data, "seed=0,1")
    args = [a.replace("trainer.progress=off", "trainer.progress=plain") for a in args]
    done = snnrun(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("── stbp") == 1, done.stdout  # the tree's stbp branch
    assert "sweep job 0: seed=0" in done.stdout
    assert "sweep job 1: seed=1" in done.stdout


@pytest.fixture
def mlflow_ui(grid: Sweep) -> Iterator[str]:
    """The README's ``mlflow ui`` on a free port, in its own process group."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        grid.uri,
        "--default-artifact-root",
        (grid.root / "mlartifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # mlflow starts uvicorn workers: stop them all
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, server)
        yield url
    finally:
        stop_group(server)


def wait_for_health(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow ui exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow ui did not answer {url}/health in {timeout} s")


def stop_group(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):  # a worker that outlived the server
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_mlflow_ui_serves_the_sweep_over_rest(grid: Sweep, mlflow_ui: str) -> None:
    found = api(
        mlflow_ui, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=mnist"
    )
    experiment = found["experiment"]["experiment_id"]
    runs = api(
        mlflow_ui, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment]}
    )
    tags = {
        r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]}
        for r in runs["runs"]
    }
    (parent_id,) = [i for i, t in tags.items() if t.get(ROLE_TAG) == "sweep"]
    children = {
        t["mlflow.runName"] for t in tags.values() if t.get(PARENT_TAG) == parent_id
    }
    assert children == NAMES


@pytest.mark.slow
def test_rerunning_a_sweep_skips_its_finished_jobs(
    grid: Sweep, shared_data: Path
) -> None:
    again = run_sweep(grid.root, shared_data, *GRID)
    assert again.done.returncode == 0, again.text
    assert again.text.count("skipping: identical to finished run") == 4
    first, second = sorted(grid.parents(), key=lambda r: r.info.start_time)
    assert grid.children(second) == {}  # nothing trained twice
    assert second.data.metrics["sweep/jobs_skipped"] == 4
    reused = set(second.data.tags[REUSED_TAG].split(","))
    assert reused == {r.info.run_id for r in grid.children(first).values()}
    newest = snnrun(grid.root, "compare", "--tracking-uri", grid.uri)  # the default
    assert newest.returncode == 0, newest.stderr
    assert f"sweep {second.data.tags[SWEEP_ID_TAG]}: 4 finished runs" in newest.stdout


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, shared_data: Path
) -> None:
    sweep = run_sweep(
        tmp_path / "out", shared_data, "stbp.decay=1.5,0.1"
    )  # 1.5: out of range
    assert sweep.done.returncode == 1, sweep.text
    assert (
        "failed: job #0 stbp.decay=1.5: stbp.decay=1.5 is outside [0, 1)" in sweep.text
    )
    assert "1 ok, 0 skipped (identical to a finished run), 1 failed" in sweep.text
    assert "Traceback" not in sweep.text
    (parent,) = sweep.parents()
    assert parent.info.status == "FAILED"
    assert parent.data.tags["snnrun.failed_jobs"] == "#0 stbp.decay=1.5"
    children = sweep.children(parent)
    assert {name: r.info.status for name, r in children.items()} == {
        "stbp.decay=1.5": "FAILED",
        "stbp.decay=0.1": "FINISHED",
    }
    assert "outside [0, 1)" in children["stbp.decay=1.5"].data.tags["snnrun.error"]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_its_crashed_job(
    tmp_path: Path, shared_data: Path
) -> None:
    root = tmp_path / "out"
    longer = ("trainer.max_batches=null", "trainer.epochs=2", "dataset.train_limit=640")
    train = sweep_args(root, shared_data, *longer, "seed=0,1")
    args = [sys.executable, "-m", "snnrun", *train]
    args[args.index("trainer.progress=off")] = "trainer.progress=plain"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, stdout=PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "batch 3/" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    first = Sweep(root, subprocess.CompletedProcess(args, 130, out, ""))
    (parent,) = first.parents()
    assert parent.info.status == "KILLED"
    (crashed,) = first.children(parent).values()
    assert crashed.info.status == "KILLED"

    again = Sweep(root, snnrun(tmp_path, *train))
    assert again.done.returncode == 0, again.text
    assert f"resuming: crashed run {crashed.info.run_id}" in again.text
    newest = max(again.parents(), key=lambda r: r.info.start_time)
    children = again.children(newest)
    assert set(children) == {"seed=0", "seed=1"}
    assert children["seed=0"].info.run_id == crashed.info.run_id  # the same run, moved
    assert all(r.info.status == "FINISHED" for r in children.values())


@pytest.mark.slow
@needs("hydra_joblib_launcher")
def test_local_pool_jobs_in_worker_processes_find_their_parent(
    tmp_path: Path, shared_data: Path
) -> None:
    sweep = run_sweep(
        tmp_path / "out", shared_data, "hydra/launcher=local_pool", "seed=0,1"
    )
    assert sweep.done.returncode == 0, sweep.text
    assert "Joblib.Parallel(n_jobs=2" in sweep.text
    (parent,) = sweep.parents()
    assert parent.data.tags["snnrun.launcher"] == "JoblibLauncher"
    children = sweep.children(parent)
    assert set(children) == {"seed=0", "seed=1"}
    assert all(r.info.status == "FINISHED" for r in children.values())


@pytest.mark.slow
@needs("hydra_optuna_sweeper")
def test_an_optuna_sweep_of_two_trials(tmp_path: Path, shared_data: Path) -> None:
    sweep = run_sweep(
        tmp_path / "out",
        shared_data,
        "hparams_search=optuna_mnist",
        "hydra.sweeper.n_trials=2",
    )
    assert sweep.done.returncode == 0, sweep.text
    (parent,) = sweep.parents()
    assert set(parent.data.params) == {"stbp.decay", "stbp.threshold", "optim.lr"}
    assert parent.data.tags["snnrun.sweeper"] == "OptunaSweeper"
    children = list(sweep.children(parent).values())
    assert len(children) == 2
    for child in children:
        assert child.info.run_name.startswith("stbp.decay=")
        assert "optim.lr=" in child.info.run_name
    results = Path(parent.data.tags["snnrun.sweep_dir"]) / "optimization_results.yaml"
    best = max(r.data.metrics["val/acc_best"] for r in children)
    assert f"best_value: {best}" in results.read_text()
