"""The real `snnrun` command in subprocesses: help, a run, bad input, eval."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from snnrun import cli

from .conftest import tiny


def outputs(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}"]


def test_help_lists_commands_and_config_groups(run_cli) -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout
    groups = run_cli("train", "--help")
    assert groups.returncode == 0
    for line in (
        "dataset: detection, mnist, nmnist",
        "arch: cnn, mlp",
        "experiment: code_mnist_cnn",
    ):
        assert line in groups.stdout


def test_cfg_job_prints_the_composed_config(run_cli) -> None:
    done = run_cli("train", "--cfg", "job", "stbp.decay=0.3")
    assert done.returncode == 0
    assert re.search(r"decay: 0\.3", done.stdout)


USER_EXPERIMENT = """\
# @package _global_
stbp:
  decay: 0.37
trainer:
  epochs: 3
"""


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_user_config_folder_adds_presets(run_cli, tmp_path: Path, how) -> None:
    user = tmp_path / "myconf"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my.yaml").write_text(USER_EXPERIMENT)
    where = (
        ["--config-dir", str(user)]
        if how == "--config-dir"
        else [f"hydra.searchpath=[file://{user}]"]
    )
    done = run_cli("train", *where, "experiment=my", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert re.search(r"decay: 0\.37", done.stdout)
    assert re.search(r"epochs: 3", done.stdout)
    # the packaged presets stay selectable beside the user's
    done = run_cli("train", *where, "experiment=paper_mnist_mlp", "--cfg", "job")
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_train_then_eval_in_subprocesses(run_cli, tmp_path: Path) -> None:
    """A run that learns (chance is 10%), and eval of its best checkpoint reproduces
    the test accuracy the run recorded for it, on the same 256 test samples."""
    store = tmp_path / "out" / "mlflow.db"
    learns = [
        "dataset.train_limit=1024",
        "dataset.val_size=256",
        "dataset.test_limit=256",
        "trainer.max_batches=null",
        "trainer.max_eval_batches=null",
    ]
    done = run_cli("train", *tiny("logger=mlflow"), *learns, *outputs(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 1/1" in done.stdout
    client = MlflowClient(f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "mnist"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    recorded = run.data.metrics["test/acc_at_best_val"]
    assert recorded >= 0.4, run.data.metrics
    (ckpt,) = (tmp_path / "out" / "train").glob("*/checkpoints/best.pt")
    evaluated = run_cli("eval", str(ckpt))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "256 test samples" in evaluated.stdout
    match = re.search(r"test/acc\s+(\d+\.\d\d)%", evaluated.stdout)
    assert match, evaluated.stdout
    assert float(match.group(1)) == pytest.approx(100 * recorded, abs=0.006)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stbp.decy=0.3"], "decy"),
        (["stbp.time_steps=ten"], "time_steps"),
        (["stbp.time_steps=0"], "stbp.time_steps=0"),
        (["paths.data_root=/nonexistent", "dataset.download=false"], "SNNRUN_DATA"),
    ],
)
def test_bad_input_exits_nonzero_with_a_clear_message(run_cli, tmp_path, args, needle):
    done = run_cli("train", "debug=fast", *outputs(tmp_path), *args)
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert needle in text
    assert "Traceback" not in text


def test_eval_of_a_foreign_file_is_a_clear_error(run_cli, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    done = run_cli("eval", str(bogus))
    assert done.returncode == 2
    assert "not a snnrun checkpoint" in done.stderr or "corrupt" in done.stderr


def test_ctrl_c_during_an_app_import_waits_for_the_import(
    tmp_path, monkeypatch
) -> None:
    """A real SIGINT sent while an app module is being imported is held until the
    import is complete (one in a C extension's initialisation came out as an
    ImportError), then raised as KeyboardInterrupt; the handler is restored. Where
    SIGINT is ignored (a background job, a CI runner), it stays ignored."""
    (tmp_path / "slow_app.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.05)\n"
        "DONE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's
    try:
        with pytest.raises(KeyboardInterrupt):
            cli._load("slow_app")
        assert sys.modules.pop("slow_app").DONE  # the import ran to its end first
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert cli._load("slow_app").DONE  # ignored: nothing raised
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)
        sys.modules.pop("slow_app", None)
