"""The tracker can go away or be left behind; training never waits on it and nothing
is lost (issue 11, items 1, 2 and 6).

Real processes throughout: ``python -m snnrun`` runs, a real ``mlflow server`` on
127.0.0.1 killed with SIGKILL mid-run, real sqlite stores in temporary folders.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient

from snnrun.track import spool
from snnrun.train.checkpoint import load_checkpoint

from .conftest import tiny

# A run whose server dies must end within this many seconds of the kill: two more
# epochs of a few seconds each, plus at most a few bounded tracking calls
# (logger.http_timeout_s=10, http_retries=2: connection refused fails at once).
STOP_BOUND_S = 120


def env_for(shared_data: Path) -> dict[str, str]:
    return {**os.environ, "SNNRUN_DATA": str(shared_data), "PYTHONUNBUFFERED": "1"}


def snnrun(*args: str, shared_data: Path, cwd: Path, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "snnrun", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(shared_data),
        cwd=cwd,
        timeout=timeout,
    )


# --- 1. two first runs on an empty store ------------------------------------------


@pytest.mark.slow
def test_two_first_runs_at_once_never_break_the_store(
    tmp_path: Path, shared_data: Path
) -> None:
    """10 pairs of runs, each pair started together on its own empty outputs/."""
    for pair in range(10):
        out = tmp_path / f"pair{pair}"
        args = ("train", *tiny("logger=mlflow"), f"paths.output_root={out}")
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(snnrun, *args, shared_data=shared_data, cwd=tmp_path)]
            runs.append(
                pool.submit(snnrun, *args, shared_data=shared_data, cwd=tmp_path)
            )
            results = [run.result() for run in runs]
        for result in results:
            assert result.returncode == 0, result.stdout
            assert "already exists" not in result.stdout
        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("mnist")
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
        assert all("val/acc" in r.data.metrics for r in runs)


# --- 2. a tracking server killed mid-run ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server at {url} never became healthy")


class Server:
    """A real ``mlflow server`` in its own process group (it spawns workers)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_healthy(self.url)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    instance = Server(tmp_path / "server", free_port())
    try:
        yield instance
    finally:
        instance.kill()


@pytest.mark.slow
def test_server_killed_mid_run(server: Server, tmp_path: Path, shared_data: Path):
    server.start()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snnrun", "train", "debug=fast", "logger=mlflow",
         f"logger.tracking_uri={server.url}", f"paths.output_root={out}",
         "trainer.epochs=3", "trainer.max_batches=15", "trainer.progress=plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env_for(shared_data), cwd=tmp_path,
    )  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/3  train/loss" in line and "val/acc" in line:
            break
    server.kill()
    killed_at = time.monotonic()
    rest, _ = proc.communicate(timeout=STOP_BOUND_S + 60)
    took = time.monotonic() - killed_at
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert took < STOP_BOUND_S, f"{took:.0f} s after the kill:\n{output}"
    assert output.count("stopped answering") == 1, output
    assert "Traceback" not in output

    (run_dir,) = (out / "train").iterdir()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 4  # all three epochs ran and were checkpointed
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    pending = spool.read(run_dir / spool.SPOOL_NAME)
    assert [r["step"] for r in pending if r["kind"] == "metrics"][-1] == 3
    assert pending[-1]["kind"] == "status" and pending[-1]["status"] == "FINISHED"

    server.start()  # the server returns: sync sends what the run kept
    synced = snnrun("sync", str(run_dir), shared_data=shared_data, cwd=tmp_path)
    assert synced.returncode == 0, synced.stdout
    assert "status FINISHED" in synced.stdout
    client = MlflowClient(server.url)
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert sorted(set(steps)) == [1, 2, 3]
    assert not (run_dir / spool.SPOOL_NAME).exists()  # set aside: never sent twice
    again = snnrun("sync", str(run_dir), shared_data=shared_data, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to sync" in again.stdout


def test_sync_while_the_store_is_away_keeps_the_records(
    tmp_path: Path, shared_data: Path
) -> None:
    run_dir = tmp_path / "run"
    path = run_dir / spool.SPOOL_NAME
    record = {"kind": "metrics", "step": 1, "metrics": {"val/acc": 0.5},
              "tracking_uri": f"http://127.0.0.1:{free_port()}", "run_id": "abc",
              "timestamp": 1}  # fmt: skip
    spool.append(path, record)
    before = path.read_bytes()
    result = snnrun("sync", str(run_dir), shared_data=shared_data, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stdout
    assert "they stay there" in result.stdout and "snnrun sync" in result.stdout
    assert path.read_bytes() == before


# --- 6. runs left RUNNING by a killed process ---------------------------------------


def test_sigkilled_run_is_reported_and_cleaned(
    tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snnrun", "train", "debug=fast", "logger=mlflow",
         f"paths.output_root={out}", "trainer.max_batches=null",
         "dataset.train_limit=4000", "trainer.progress=plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env_for(shared_data), cwd=tmp_path,
    )  # fmt: skip
    for line in proc.stdout:
        if "batch 2/" in line:
            break
    proc.kill()
    proc.communicate(timeout=60)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "RUNNING"
    assert run.data.tags["snnrun.pid"] == str(proc.pid)
    assert run.data.tags["snnrun.host"] == socket.gethostname()

    listed = snnrun(
        "runs", "--tracking-uri", uri, shared_data=shared_data, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stdout
    assert f"stale: {run.info.run_id}" in listed.stdout
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # only listed

    started = snnrun(
        "train", *tiny("logger=mlflow"), f"paths.output_root={out}",
        shared_data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout
    assert "marked RUNNING but their process on this host is gone" in started.stdout
    assert run.info.run_id in started.stdout

    cleaned = snnrun(
        "runs", "--clean", "--tracking-uri", uri, shared_data=shared_data, cwd=tmp_path
    )
    assert cleaned.returncode == 0, cleaned.stdout
    assert "marked 1 run(s) KILLED" in cleaned.stdout
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    statuses = sorted(
        r.info.status for r in client.search_runs([experiment.experiment_id])
    )
    assert statuses == ["FINISHED", "KILLED"]  # the live, finished run is untouched


def test_runs_without_a_store_creates_none(tmp_path: Path, shared_data: Path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    result = snnrun(
        "runs",
        "--tracking-uri",
        f"sqlite:///{db}",
        shared_data=shared_data,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout
    assert f"there is no MLflow store at {db}" in result.stdout
    assert "Traceback" not in result.stdout and not db.exists()
