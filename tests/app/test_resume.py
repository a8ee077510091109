"""Exact resume: a stopped or killed run, resumed, ends bitwise equal to an
uninterrupted one (weights, optimiser, metrics), in the same MLflow run.

Fast tests drive the Trainer in-process and stop it at chosen points (mid-epoch, at
an epoch's last batch, mid-evaluation); the slow ones run the real CLI, SIGKILL it
after the first epoch's checkpoint (or SIGINT it mid-epoch) and resume it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from snnrun.app.build import build_parts
from snnrun.app.resume import ResumeError, fill_new_keys, find_resume_point
from snnrun.app.schema import todays_schema
from snnrun.app.tracking import resolved
from snnrun.train.checkpoint import CheckpointFolder, load_checkpoint, save_checkpoint
from snnrun.train.hooks import BatchEnd, EpochEnd, EvalStart, Hook
from snnrun.train.loop import LoopSettings, Trainer

# Metrics that depend on the clock, not on the computation.
TIMING = ("time/epoch_s", "perf/samples_per_s")
EXACT_METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "optim/lr",
    "rate/layer1",
    "rate/layer2",
)


# --- in-process: the Trainer stopped at chosen points -----------------------------


class StopAt(Hook):
    """Records each epoch's metrics; asks the trainer to stop at one point."""

    def __init__(self, where: tuple | None = None) -> None:
        self.where = where
        self.trainer: Trainer | None = None
        self.metrics: dict[int, dict[str, float]] = {}

    def on_batch_end(self, event: BatchEnd) -> None:
        if self.where == ("batch", event.epoch, event.batch):
            self.trainer.request_stop()

    def on_eval_start(self, event: EvalStart) -> None:
        if self.where == ("eval", event.epoch):
            self.trainer.request_stop()  # evaluate() stops after its first batch

    def on_epoch_end(self, event: EpochEnd) -> None:
        self.metrics[event.epoch] = {
            k: v for k, v in event.metrics.items() if k not in TIMING
        }


def make_trainer(cfg: DictConfig, checkpoints: Path, hook: StopAt) -> Trainer:
    """A Trainer wired like ``app/train.py`` (without tracking)."""
    parts = build_parts(cfg)
    trainer = Trainer(
        parts.learner(),
        [hook],
        LoopSettings(
            epochs=cfg.trainer.epochs,
            max_batches=cfg.trainer.max_batches,
            max_eval_batches=cfg.trainer.max_eval_batches,
        ),
        checkpoints=CheckpointFolder(checkpoints),
        extra_state={"config": OmegaConf.to_yaml(resolved(cfg)), "run_id": ""},
    )
    hook.trainer = trainer
    trainer.loaders = parts.loaders  # type: ignore[attr-defined]
    return trainer


def assert_states_equal(a: dict, b: dict) -> None:
    """Model and optimiser tensors bitwise equal, same position."""
    assert a["epoch"] == b["epoch"] and a["batch"] == b["batch"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for index, slot in a["optimizer"]["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), name


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: a shared 2-core machine runs it several times faster
    (no OpenMP spinning against other processes); exactness holds for any count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg(compose_cfg) -> DictConfig:
    # 8 batches of 32 per epoch, 2 eval batches, T=4, a step schedule: ~0.1 s/epoch.
    return compose_cfg(
        "debug=fast",
        "dataset.train_limit=256",
        "dataset.test_limit=128",
        "trainer.max_batches=null",
        "trainer.epochs=3",
        "optim.milestones=[2]",
    )


def test_resume_after_any_stop_point_is_bitwise_exact(cfg, tmp_path: Path) -> None:
    reference = StopAt()
    trainer = make_trainer(cfg, tmp_path / "ref", reference)
    trainer.fit(*trainer.loaders)
    expected = load_checkpoint(tmp_path / "ref" / "last.pt")

    stops = [("batch", 2, 3), ("eval", 2), ("batch", 1, 1)]
    for where in stops:
        folder = tmp_path / "-".join(map(str, where))
        first = StopAt(where)
        stopped = make_trainer(cfg, folder, first)
        with pytest.raises(KeyboardInterrupt):
            stopped.fit(*stopped.loaders)
        second = StopAt()
        resumed = make_trainer(cfg, folder, second)
        resumed.load_state_dict(load_checkpoint(folder / "last.pt"))
        resumed.fit(*resumed.loaders)

        assert {**first.metrics, **second.metrics} == reference.metrics, where
        assert_states_equal(load_checkpoint(folder / "last.pt"), expected)


def test_second_interrupt_mid_batch_keeps_the_last_consistent_checkpoint(
    cfg, tmp_path: Path
) -> None:
    class AbortInStep(StopAt):
        def on_batch_end(self, event: BatchEnd) -> None:
            if (event.epoch, event.batch) == (2, 3):
                step = self.trainer._step

                def interrupted(*args):  # a KeyboardInterrupt inside the next step
                    step(*args)
                    raise KeyboardInterrupt

                self.trainer._step = interrupted

    trainer = make_trainer(cfg, tmp_path, AbortInStep())
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*trainer.loaders)
    state = load_checkpoint(tmp_path / "last.pt")
    assert (state["epoch"], state["batch"]) == (2, 0)  # epoch 1's, not batch 4's


def test_resume_point_from_a_folder_a_checkpoint_file_and_auto(
    cfg, compose_cfg, tmp_path: Path
) -> None:
    run = tmp_path / "outputs" / "train" / "run"
    trainer = make_trainer(cfg, run / "checkpoints", StopAt(("batch", 2, 3)))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*trainer.loaders)
    (run / "checkpoints" / "last.pt").replace(run / "checkpoints" / "best.pt")
    trainer = make_trainer(cfg, run / "checkpoints", StopAt(("batch", 1, 2)))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*trainer.loaders)

    by_folder = find_resume_point(compose_cfg(f"resume={run}"))
    by_file = find_resume_point(compose_cfg(f"resume={run}/checkpoints/best.pt"))
    newest = find_resume_point(compose_cfg("resume=auto"))
    assert by_folder.run_dir == by_file.run_dir == newest.run_dir == run.resolve()
    assert (by_folder.state["epoch"], by_folder.state["batch"]) == (1, 2)
    assert (by_file.state["epoch"], by_file.state["batch"]) == (2, 3)
    assert by_folder.config.trainer.epochs == 3
    assert by_folder.config.resume is None


def test_resume_of_a_checkpoint_older_than_todays_settings(
    cfg, compose_cfg, tmp_path: Path
) -> None:
    """A checkpoint saved before a setting existed resumes with today's default for
    it and keeps every value it saved (a 100-epoch run outlives code changes)."""
    run = tmp_path / "run"
    trainer = make_trainer(cfg, run / "checkpoints", StopAt(("batch", 1, 2)))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*trainer.loaders)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    old = OmegaConf.create(state["config"])
    del old.stbp["backend"], old.logger["http_timeout_s"]
    old.stbp.decay = 0.123
    state["config"] = OmegaConf.to_yaml(old)
    save_checkpoint(run / "checkpoints" / "last.pt", state)

    point = find_resume_point(compose_cfg(f"resume={run}"))
    today = compose_cfg()
    assert point.config.stbp.backend == today.stbp.backend
    assert point.config.logger.http_timeout_s == today.logger.http_timeout_s
    assert point.config.stbp.decay == 0.123  # saved values win


def test_new_keys_come_from_the_saved_options_schema() -> None:
    saved = OmegaConf.create(
        {"arch": {"name": "cnn", "spec": "8C3-10"}, "dataset": {"name": "x"}, "seed": 3}
    )
    added = fill_new_keys(saved, todays_schema(saved))
    assert "seed" not in added and saved.seed == 3
    assert "arch.init" in added and "arch.hidden" not in added  # the CNN's schema
    assert saved.arch.spec == "8C3-10"
    assert {"stbp", "trainer"} <= set(added)  # whole nodes the saved config lacks
    assert not [key for key in added if key.startswith("dataset")]  # unknown option


def test_resume_of_a_finished_run_is_refused(cfg, compose_cfg, tmp_path) -> None:
    trainer = make_trainer(cfg, tmp_path / "run" / "checkpoints", StopAt())
    trainer.fit(*trainer.loaders)
    with pytest.raises(ResumeError, match="already finished all 3 epochs"):
        find_resume_point(compose_cfg(f"resume={tmp_path / 'run'}"))


# --- the real CLI: SIGKILL / SIGINT, then resume=... ------------------------------

COMMON = (
    "debug=fast",
    "trainer.max_batches=null",
    "dataset.train_limit=2000",  # 63 batches: ~0.3 s per epoch
    "dataset.test_limit=128",
    "trainer.epochs=3",
    "logger=mlflow",
    "trainer.progress=plain",
    "trainer.num_threads=1",  # see one_thread()
)


@dataclass(frozen=True)
class Finished:
    """A CLI run's final checkpoint and MLflow run."""

    state: dict
    run_id: str
    status: str
    run_name: str
    history: dict[str, list[tuple[int, float]]]


def cli(out: Path, data: Path, *extra: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "SNNRUN_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "snnrun", "train", *COMMON]
    args += [f"paths.output_root={out}", *extra]
    return subprocess.Popen(args, env=env, cwd=out.parent, text=True, **popen)


def run_to_end(out: Path, data: Path, *extra: str) -> str:
    proc = cli(out, data, *extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    return text


def finished(out: Path) -> Finished:
    """The single run under ``out``: its last.pt and its MLflow record."""
    (last,) = (out / "train").glob("*/checkpoints/last.pt")
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    history = {
        key: [
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)
        ]
        for key in EXACT_METRICS
    }
    return Finished(
        load_checkpoint(last),
        run.info.run_id,
        run.info.status,
        run.data.tags["mlflow.runName"],
        history,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_data: Path) -> Iterator[Finished]:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    out.mkdir()
    run_to_end(out, shared_data)
    yield finished(out)


def assert_same_run(resumed: Finished, reference: Finished) -> None:
    assert_states_equal(resumed.state, reference.state)
    assert resumed.status == "FINISHED"
    assert resumed.state["run_id"] == resumed.run_id  # one MLflow run, continued
    assert resumed.history == reference.history  # steps 1..3, bitwise equal values
    assert all([s for s, _ in h] == [1, 2, 3] for h in resumed.history.values())
    assert "resume=" not in resumed.run_name  # the run keeps its name


@pytest.mark.slow
def test_sigkill_after_epoch_one_then_resume_matches(
    uninterrupted: Finished, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "out"
    proc = cli(out, shared_data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list((out / "train").glob("*/checkpoints/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (run_dir,) = (out / "train").iterdir()
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert killed_at < 4, "the run finished before it was killed"

    log = run_to_end(out, shared_data, f"resume={run_dir}")
    assert f"resumed {run_dir} at epoch {killed_at}, batch 0" in log
    assert_same_run(finished(out), uninterrupted)
    assert "resumed" in (run_dir / "train.log").read_text()  # the run's own log


@pytest.mark.slow
def test_sigint_mid_epoch_then_resume_by_mlflow_run_id_matches(
    uninterrupted: Finished, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "out"
    proc = cli(out, shared_data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout:
        if "epoch 2/3  batch 40/" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-3000:]
    (last,) = (out / "train").glob("*/checkpoints/last.pt")
    state = load_checkpoint(last)
    assert state["epoch"] == 2 and 40 <= state["batch"] < 63  # a batch position

    run_to_end(out, shared_data, f"resume={state['run_id']}")
    assert_same_run(finished(out), uninterrupted)
