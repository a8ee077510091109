"""Reliability, round two (issue 11): verified checkpoints, clear messages instead of
tracebacks, and messages that say what can really be done.

Every case runs the real ``snnrun`` in a subprocess and checks the exit status, the
message, that no traceback is printed and that nothing that existed is changed.
docs/errors.md lists the messages pinned here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from snnrun.app.schema import config_dir, register_configs
from snnrun.app.train import train
from snnrun.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from ..train.test_checkpoint import flip_tensor_bytes
from .conftest import tiny

USER_ERROR, INTERRUPTED = 2, 130


# --- helpers ----------------------------------------------------------------------


def cli(
    *args: str, data: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m snnrun ARGS`` with output captured (stdout and stderr merged)."""
    env = {**os.environ, "SNNRUN_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "snnrun", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def default_sigint() -> None:
    """In a child before exec: SIGINT back to its default, so Python handles it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def make_store(db: Path) -> None:
    """A complete MLflow store with one finished run in it."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.create_experiment("mnist"))
    client.log_metric(run.info.run_id, "val/acc", 0.5, step=1)
    client.set_terminated(run.info.run_id)


def assert_clean_error(
    result: subprocess.CompletedProcess, status: int, *needles: str
) -> None:
    """Exit ``status``, every needle in the output, no traceback."""
    out = result.stdout
    assert result.returncode == status, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (what must stay unchanged)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def train_in_process(out: Path, name: str, data: Path, *extra: str) -> Path:
    """A tiny untracked run ``out/train/<name>`` (in this process: fast)."""
    register_configs()
    overrides = [
        *tiny(*extra),
        f"paths.data_root={data}",
        f"paths.output_root={out}",
        "trainer.progress=off",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run_dir = out / "train" / name
    train(cfg, run_dir, overrides)
    return run_dir


def resave(path: Path, **config_changes: object) -> None:
    """Rewrite a checkpoint (valid checksum) with some config keys changed."""
    state = load_checkpoint(path)
    config = OmegaConf.create(state["config"])
    for key, value in config_changes.items():
        OmegaConf.update(config, key, value)
    state["config"] = OmegaConf.to_yaml(config)
    save_checkpoint(path, {k: v for k, v in state.items() if k != "sha256"})


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: not even root may write ``path`` (or create files in it)."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# --- a finished run to damage -------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def good_run(root: Path, shared_data: Path) -> Path:
    """A finished 1-epoch run with best.pt and last.pt."""
    return train_in_process(root / "outputs", "good", shared_data)


@pytest.fixture
def run_copy(good_run: Path, tmp_path: Path) -> Path:
    """A copy of the good run to damage (``<tmp>/outputs/train/run``)."""
    target = tmp_path / "outputs" / "train" / "run"
    shutil.copytree(good_run, target)
    return target


# --- 3. checkpoints are verified on every load -------------------------------------


def test_flipped_weights_are_refused_by_every_loader(
    run_copy: Path, shared_data: Path, tmp_path: Path
) -> None:
    for name in ("best.pt", "last.pt"):
        flip_tensor_bytes(run_copy / "checkpoints" / name)
    before = digest(run_copy)
    for name in ("best.pt", "last.pt"):
        with pytest.raises(CheckpointError, match="failed its integrity check"):
            load_checkpoint(run_copy / "checkpoints" / name)
    evaluated = cli(
        "eval",
        str(run_copy / "checkpoints" / "best.pt"),
        data=shared_data,
        cwd=tmp_path,
    )
    assert_clean_error(evaluated, USER_ERROR, "failed its integrity check", "best.pt")
    resumed = cli(
        "train", f"resume={run_copy}", f"paths.output_root={tmp_path / 'cmd'}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(resumed, USER_ERROR, "failed its integrity check", "last.pt")
    assert digest(run_copy) == before  # nothing rewritten


# --- 4. tracebacks where a message belongs ------------------------------------------


def test_weights_that_do_not_fit_name_the_layer(
    run_copy: Path, shared_data: Path, tmp_path: Path
) -> None:
    best = run_copy / "checkpoints" / "best.pt"
    resave(best, **{"arch.hidden": [7]})
    result = cli("eval", str(best), data=shared_data, cwd=tmp_path)
    assert_clean_error(
        result,
        USER_ERROR,
        "do not fit the architecture",
        "stages.0.pre.module.1.weight: checkpoint (800, 784), network (7, 784)",
    )


def test_mps_without_mps(shared_data: Path, tmp_path: Path) -> None:
    assert not torch.backends.mps.is_available()
    result = cli(
        "train", *tiny("device=mps"), f"paths.output_root={tmp_path / 'out'}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(
        result, USER_ERROR, "device=mps but MPS", "use device=cpu or device=auto"
    )


def test_ctrl_c_during_start_up(shared_data: Path, tmp_path: Path) -> None:
    """SIGINT while Python imports torch, Hydra and the app: one line, exit 130.

    SIGINT is reset to its default in the child: a shell's background job (or a CI
    runner) may start the tests with SIGINT ignored, which children inherit.
    """
    env = {**os.environ, "SNNRUN_DATA": str(shared_data)}
    for delay in (1.0, 2.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "snnrun", "train", *tiny(),
             f"paths.output_root={tmp_path / 'out'}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=tmp_path, preexec_fn=default_sigint,
        )  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == INTERRUPTED, out
        assert "Traceback" not in out, out
        assert "interrupted" in out and "Resume with" not in out, out


def test_read_only_store(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    db = out / "mlflow.db"
    make_store(db)
    before = digest(out)
    with immutable(db):
        result = cli(
            "train", *tiny("logger=mlflow"), f"paths.output_root={out}",
            data=shared_data, cwd=tmp_path,
        )  # fmt: skip
    assert_clean_error(result, USER_ERROR, f"the MLflow store {db} is read-only")
    after = digest(out)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.fixture
def foreign_server(http_server) -> str:
    """An HTTP server that is not MLflow: /health is a web page."""
    (http_server.root / "health").write_text("<html>hello</html>")
    return http_server.url.rstrip("/")


@pytest.mark.parametrize(
    ("uri", "needles"),
    [
        ("FOREIGN", ("answers HTTP but is not an MLflow tracking server", "HTTP 200")),
        ("FOREIGN/sub", ("is not an MLflow tracking server", "HTTP 404")),
        ("htp://127.0.0.1:5000", ("unknown scheme 'htp://'", "did you mean http://")),
    ],
)
def test_tracking_uri_that_is_not_mlflow(
    uri: str, needles: tuple[str, ...], foreign_server: str, shared_data: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    uri = uri.replace("FOREIGN", foreign_server)
    result = cli(
        "train", *tiny("logger=mlflow"), f"logger.tracking_uri={uri}",
        f"paths.output_root={tmp_path / 'out'}", data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(result, USER_ERROR, *needles)
    assert not list((tmp_path / "out").glob("train/*/checkpoints"))


def test_half_created_store(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    db = out / "mlflow.db"
    make_store(db)
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("DROP TABLE alembic_version")  # creation stopped early
    before = digest(out)
    result = cli(
        "train", *tiny("logger=mlflow"), f"paths.output_root={out}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(
        result, USER_ERROR, f"the MLflow store at {db} is half-created", "delete"
    )
    after = digest(out)
    assert {k: v for k, v in after.items() if k in before} == before


# --- 5. misleading messages -------------------------------------------------------


def test_eval_accepts_a_run_folder(
    good_run: Path, shared_data: Path, tmp_path: Path
) -> None:
    result = cli("eval", str(good_run), data=shared_data, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert f"checkpoint {good_run / 'checkpoints' / 'best.pt'}" in result.stdout
    assert "test/acc" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("eval", str(empty), data=shared_data, cwd=tmp_path)
    assert_clean_error(result, USER_ERROR, "without checkpoints/best.pt")


def test_ctrl_c_without_a_checkpoint_does_not_offer_resume(
    shared_data: Path, tmp_path: Path
) -> None:
    """Ctrl-C when no checkpoint exists (here: trainer.checkpoint=false) must not
    say "Resume with": there is nothing to resume."""
    env = {**os.environ, "SNNRUN_DATA": str(shared_data), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snnrun", "train", "debug=fast",
         f"paths.output_root={tmp_path / 'out'}", "trainer.max_batches=null",
         "dataset.train_limit=4000", "trainer.progress=plain",
         "trainer.checkpoint=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "batch 2/" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == INTERRUPTED, out
    assert "Traceback" not in out, out
    assert not list((tmp_path / "out").glob("train/*/checkpoints/*.pt"))
    assert "interrupted before the first checkpoint was written" in out, out
    assert "nothing to resume" in out and "Resume with" not in out


def test_resume_auto_takes_the_newest_unfinished_run(
    good_run: Path, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    older = out / "train" / "older-killed"
    newer = out / "train" / "newer-finished"
    shutil.copytree(good_run, older)
    shutil.copytree(good_run, newer)
    resave(older / "checkpoints" / "last.pt", **{"trainer.epochs": 2})
    os.utime(older / "checkpoints" / "last.pt", (1_000_000, 1_000_000))
    finished_before = digest(newer)
    result = cli(
        "train", "resume=auto", f"paths.output_root={out}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stdout
    assert f"resuming {older}, the newest unfinished run" in result.stdout
    assert f"{newer} (finished)" in result.stdout
    assert load_checkpoint(older / "checkpoints" / "last.pt")["epoch"] == 3
    assert digest(newer) == finished_before

    result = cli(  # now every run has finished: say which were considered
        "train", "resume=auto", f"paths.output_root={out}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(
        result, USER_ERROR, "resume=auto: no unfinished run", f"{older} (finished)"
    )


def test_read_only_checkpoints_message_names_the_run_folder(
    run_copy: Path, shared_data: Path, tmp_path: Path
) -> None:
    last = run_copy / "checkpoints" / "last.pt"
    resave(last, **{"trainer.epochs": 2, "logger.name": "none"})
    before = digest(run_copy / "checkpoints")
    with immutable(run_copy / "checkpoints"):
        result = cli(
            "train", f"resume={run_copy}", f"paths.output_root={tmp_path / 'cmd'}",
            data=shared_data, cwd=tmp_path,
        )  # fmt: skip
    assert_clean_error(
        result,
        USER_ERROR,
        f"could not write checkpoint {run_copy}/checkpoints/",
        f"make {run_copy / 'checkpoints'} writable, then resume",
    )
    assert "set paths.output_root to a writable folder" not in result.stdout
    assert digest(run_copy / "checkpoints") == before


def test_num_threads_zero(shared_data: Path, tmp_path: Path) -> None:
    result = cli(
        "train", *tiny("trainer.num_threads=0"), f"paths.output_root={tmp_path / 'o'}",
        data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert_clean_error(
        result, USER_ERROR, "trainer.num_threads=0 must be a positive number"
    )


def test_train_limit_larger_than_the_dataset_warns(
    shared_data: Path, tmp_path: Path
) -> None:
    result = cli(
        "train", "debug=fast", "dataset.train_limit=1000000",
        f"paths.output_root={tmp_path / 'o'}", data=shared_data, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert (
        "dataset.train_limit=1000000 is larger than the 55000 samples available "
        "after the validation split: using all 55000"
    ) in result.stdout
