"""Ctrl-C / SIGTERM mid-epoch: checkpoint saved, MLflow run KILLED, clear exit; resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from snnrun.train.checkpoint import load_checkpoint


def start_run(tmp_path: Path, shared_data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SNNRUN_DATA": str(shared_data), "PYTHONUNBUFFERED": "1"}
    args = [
        sys.executable,
        "-m",
        "snnrun",
        "train",
        "debug=fast",
        "logger=mlflow",
        f"paths.output_root={tmp_path / 'out'}",
        "trainer.max_batches=null",
        "trainer.epochs=3",
        "dataset.train_limit=4000",
        *extra,
    ]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def wait_for(proc: subprocess.Popen, needle: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    proc.kill()
    pytest.fail(f"never saw {needle!r}:\n" + "".join(lines))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_and_marks_killed(tmp_path, shared_data, signum) -> None:
    proc = start_run(tmp_path, shared_data)
    wait_for(proc, "batch 3/")
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "Resume with: snnrun train resume=" in rest

    (ckpt,) = (tmp_path / "out" / "train").glob("*/checkpoints/last.pt")
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and state["batch"] >= 3  # the mid-epoch position
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert run.info.status == "KILLED"
    assert run.info.run_id == state["run_id"]
