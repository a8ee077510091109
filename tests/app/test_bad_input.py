"""Every bad input: one clear message, a non-zero exit, nothing lost.

Each case runs the real ``snnrun train`` in a subprocess against one shared
``outputs/`` that already holds a good run (checkpoints and an MLflow run); after the
cases that good run must be byte-for-byte unchanged. The cheap cases (no MLflow
import) run two at a time in one module fixture, so the whole set costs a few
seconds per core; the MLflow cases and the NaN run are ``slow``. The disk-full case
injects its fault in-process. docs/errors.md lists the messages these tests pin.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from snnrun.app.schema import config_dir, register_configs
from snnrun.app.train import train
from snnrun.train import checkpoint
from snnrun.train.checkpoint import load_checkpoint

from .conftest import tiny

USER_ERROR, HYDRA_ERROR = 2, 1


@dataclass(frozen=True)
class Case:
    """A bad command line: its arguments, expected exit status and message parts."""

    args: tuple[str, ...]
    status: int
    needles: tuple[str, ...]


# "{data}", "{mnist_*}", "{nmnist_*}", "{det_*}", "{file}" are filled in per module.
CASES = {
    # --- config: keys, types, names (Hydra composition, exit 1) ---------------------
    "unknown key": Case(("stbp.decy=0.3",), HYDRA_ERROR, ("Key 'decy' not in",)),
    "wrong type": Case(
        ("stbp.time_steps=ten",),
        HYDRA_ERROR,
        ("Value 'ten' of type 'str' could not be converted to Integer", "time_steps"),
    ),
    "unknown dataset": Case(
        ("dataset=cifar",), HYDRA_ERROR, ("Could not find 'dataset/cifar'", "mnist")
    ),
    "unknown arch": Case(
        ("arch=resnet",), HYDRA_ERROR, ("Could not find 'arch/resnet'",)
    ),
    "unknown surrogate": Case(
        ("stbp.surrogate=h9",),
        HYDRA_ERROR,
        ("Invalid value 'h9', expected one of [h1, h2, h3, h4]", "stbp.surrogate"),
    ),
    # --- config: ranges (snnrun, exit 2) ----------------------------------------------
    "T = 0": Case(
        ("stbp.time_steps=0",),
        USER_ERROR,
        ("stbp.time_steps=0: the number of time steps must be > 0",),
    ),
    "negative threshold": Case(
        ("stbp.threshold=-0.5",),
        USER_ERROR,
        ("stbp.threshold=-0.5 must be a finite number > 0",),
    ),
    "decay = 1": Case(
        ("stbp.decay=1.0",), USER_ERROR, ("stbp.decay=1.0 is outside [0, 1)",)
    ),
    "empty hidden layers": Case(
        ("arch.hidden=[]",), USER_ERROR, ("arch.hidden is empty",)
    ),
    "lr = nan": Case(
        ("optim.lr=nan",), USER_ERROR, ("optim.lr=nan must be a finite number",)
    ),
    "beta >= 1": Case(
        ("optim.betas=[1.5,0.9]",),
        USER_ERROR,
        ("Invalid beta parameter at index 0: 1.5", "optim.betas"),
    ),
    "gamma <= 0": Case(
        ("optim.gamma=0",), USER_ERROR, ("optim.gamma=0.0 must be > 0",)
    ),
    # --- data -----------------------------------------------------------------------
    "missing MNIST folder": Case(
        ("paths.data_root={file}.missing", "dataset.download=false"),
        USER_ERROR,
        ("has no train-images-idx3-ubyte.gz", "SNNRUN_DATA"),
    ),
    "missing N-MNIST folder": Case(
        ("dataset=nmnist", "paths.data_root={file}.missing", "dataset.download=false"),
        USER_ERROR,
        ("N-MNIST not found: looked in", "downloading is off"),
    ),
    "truncated IDX .gz (checksum)": Case(
        ("paths.data_root={mnist_truncated}",),
        USER_ERROR,
        ("train-labels-idx1-ubyte.gz is corrupt or altered: SHA256 expected",),
    ),
    "truncated IDX .gz (unverified)": Case(
        ("paths.data_root={mnist_truncated}", "dataset.verify=false"),
        USER_ERROR,
        ("train-labels-idx1-ubyte.gz is corrupt: it is not a complete gzip file",),
    ),
    "wrong magic number": Case(
        ("paths.data_root={mnist_magic}", "dataset.verify=false"),
        USER_ERROR,
        ("is corrupt: wrong magic number 0x00000809",),
    ),
    "IDX data shorter than its header": Case(
        ("paths.data_root={mnist_short}", "dataset.verify=false"),
        USER_ERROR,
        ("is corrupt: the header promises 60000 bytes of data",),
    ),
    "checksum mismatch": Case(
        ("paths.data_root={mnist_altered}",),
        USER_ERROR,
        ("is corrupt or altered: SHA256 expected 1787548bbe0bff1e",),
    ),
    "truncated N-MNIST .bin (no SHA256SUMS)": Case(
        ("dataset=nmnist", "paths.data_root={nmnist_cut}"),
        USER_ERROR,
        ("corrupt N-MNIST recording", "00008.bin", "is not a multiple of 5"),
    ),
    "truncated N-MNIST .bin (whole events)": Case(
        ("dataset=nmnist", "paths.data_root={nmnist_cut_events}"),
        USER_ERROR,
        ("corrupt N-MNIST recording", "00008.bin", "SHA256SUMS (truncated or altered)"),
    ),
    "detection image of the wrong size": Case(
        ("dataset=detection", "dataset.source=folder", "dataset.root={det_size}"),
        USER_ERROR,
        ("1.pgm is 20x20 (width x height), expected 28x28 (dataset.image_size)",),
    ),
    "detection class missing": Case(
        ("dataset=detection", "dataset.source=folder", "dataset.root={det_class}"),
        USER_ERROR,
        ("must hold exactly two class folders", "found 1: ['a']"),
    ),
    # --- outputs and resume -----------------------------------------------------------
    "outputs under a regular file": Case(
        ("paths.output_root={file}/outputs",),
        USER_ERROR,
        ("cannot write the output folder paths.output_root=", "Not a directory"),
    ),
    "resume a folder without checkpoint": Case(
        ("resume={file}.missing",),
        USER_ERROR,
        ("resume=", "is neither a folder nor a checkpoint file"),
    ),
}


# --- shared fixtures: a good run, damaged data -------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def outputs(root: Path, shared_data: Path) -> Path:
    """``outputs/`` with one good, finished, tracked run in it."""
    out = root / "outputs"
    register_configs()
    overrides = [
        *tiny("logger=mlflow"),
        f"paths.data_root={shared_data}",
        f"paths.output_root={out}",
        "trainer.progress=off",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg, out / "train" / "good", overrides)
    return out


def snapshot(outputs: Path) -> dict:
    """The checkpoint bytes and every MLflow run (status, metrics, params) under it."""
    files = {
        str(p.relative_to(outputs)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(outputs.glob("train/*/checkpoints/*.pt"))
    }
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {
        r.info.run_id: (r.info.status, r.data.metrics, r.data.params)
        for r in client.search_runs(experiments)
    }
    return {"files": files, "runs": runs}


@pytest.fixture(scope="module")
def before(outputs: Path) -> dict:
    state = snapshot(outputs)
    assert len(state["files"]) == 2 and len(state["runs"]) == 1
    assert [s for s, _, _ in state["runs"].values()] == ["FINISHED"]
    return state


def mnist_copy(root: Path, shared: Path, name: str, damage: Callable) -> Path:
    """``<root>/<name>/mnist/``: the real files (linked), one damaged copy."""
    folder = root / name / "mnist"
    folder.mkdir(parents=True)
    for source in (shared / "mnist").glob("*.gz"):
        (folder / source.name).symlink_to(source)
    labels = folder / "train-labels-idx1-ubyte.gz"
    raw = (shared / "mnist" / labels.name).read_bytes()
    labels.unlink()
    labels.write_bytes(damage(raw))
    return folder.parent


def nmnist_copy(
    root: Path, shared: Path, name: str, size: Callable[[int], int], sums: bool
) -> Path:
    """``<root>/<name>/nmnist-sample/``: the sample (linked), one file truncated;
    without ``SHA256SUMS`` unless ``sums`` (the official archives have none)."""
    folder = root / name / "nmnist-sample"
    shutil.copytree(shared / "nmnist-sample", folder, copy_function=os.symlink)
    if not sums:
        (folder / "SHA256SUMS").unlink()
    victim = folder / "Train" / "3" / "00008.bin"
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[: size(len(data))])
    return folder.parent


def write_pgm(path: Path, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P5 %d %d 255\n" % (side, side) + bytes(side * side))


@pytest.fixture(scope="module")
def places(root: Path, shared_data: Path) -> dict[str, str]:
    """Damaged copies of the data, made once for every case."""

    def relabel(raw: bytes) -> bytes:  # a valid file with one label changed
        labels = bytearray(gzip.decompress(raw))
        labels[8] = (labels[8] + 1) % 10
        return gzip.compress(bytes(labels))

    det_size, det_class = root / "det-size", root / "det-class"
    for split in ("train", "test"):
        for label in ("a", "b"):
            write_pgm(det_size / split / label / f"0{label}.pgm", 28)
    write_pgm(det_size / "train" / "b" / "1.pgm", 20)
    write_pgm(det_class / "train" / "a" / "0.pgm", 28)
    write_pgm(det_class / "train" / "b" / "1.pgm", 28)
    write_pgm(det_class / "test" / "a" / "2.pgm", 28)
    (root / "a-file").write_text("not a folder")
    gz = (gzip.decompress, gzip.compress)
    return {
        "file": str(root / "a-file"),
        "mnist_truncated": mnist_copy(root, shared_data, "trunc", lambda r: r[:-100]),
        "mnist_magic": mnist_copy(
            root, shared_data, "magic", lambda r: gz[1](b"\0\0\x08\x09" + gz[0](r)[4:])
        ),
        "mnist_short": mnist_copy(
            root, shared_data, "short", lambda r: gz[1](gz[0](r)[:-5])
        ),
        "mnist_altered": mnist_copy(root, shared_data, "altered", relabel),
        "nmnist_cut": nmnist_copy(root, shared_data, "cut", lambda n: n - 3, False),
        "nmnist_cut_events": nmnist_copy(
            root, shared_data, "events", lambda n: n - n % 5 - 50, True
        ),
        "det_size": str(det_size),
        "det_class": str(det_class),
    }


def run_cli(cwd: Path, data: Path, *args: str, timeout: float = 120):
    env = {**os.environ, "SNNRUN_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "snnrun", "train", "debug=fast", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


@pytest.fixture(scope="module")
def results(outputs, before, places, root, shared_data) -> dict:
    """Run every case (two at a time: start-up dominates), keyed by case name."""

    def run(name: str) -> subprocess.CompletedProcess:
        args = [a.format(**places) for a in CASES[name].args]
        slug = "".join(c if c.isalnum() else "_" for c in name)
        args.append(f"paths.cache_root={root / 'cache' / slug}")
        if not any(a.startswith("paths.output_root=") for a in args):
            args.append(f"paths.output_root={outputs}")
            # one folder per case: cases run concurrently, within the same second
            args.append(f"hydra.run.dir={outputs / 'train' / slug}")
        return run_cli(root, shared_data, *args)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def assert_clear_failure(done: subprocess.CompletedProcess, case: Case) -> str:
    text = done.stdout + done.stderr
    assert done.returncode == case.status, text[-3000:]
    for needle in case.needles:
        assert needle in text, f"{needle!r} not in:\n{text[-3000:]}"
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(results, name: str) -> None:
    assert_clear_failure(results[name], CASES[name])


def test_the_good_run_is_intact_after_every_case(results, outputs, before) -> None:
    assert snapshot(outputs) == before


def test_nmnist_provenance_records_the_checked_sums(
    compose_cfg, shared_data: Path
) -> None:
    from snnrun.app.build import build_data

    meta = build_data(compose_cfg("dataset=nmnist", "stbp.time_steps=4")).meta
    assert meta.provenance["sha256_checked"] == "1100/1100"
    assert len(meta.provenance["sha256sums"]) == 16


# --- in-process fault: the disk fills up while checkpointing -----------------------


def test_disk_full_while_checkpointing(compose_cfg, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(*tiny("logger=mlflow", "trainer.epochs=2"))
    real_save, calls = checkpoint._torch_save, []

    def torch_save(payload: dict, handle) -> None:  # epoch 2's last.pt: disk full
        calls.append(payload["epoch"])
        if len(calls) == 3:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(payload, handle)

    monkeypatch.setattr(checkpoint, "_torch_save", torch_save)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        train(cfg, run, [])
    monkeypatch.undo()

    assert info.value.code == USER_ERROR
    assert (
        f"could not write checkpoint {run / 'checkpoints' / 'last.pt'}" in caplog.text
    )
    assert "No space left on device" in caplog.text and "Traceback" not in caplog.text
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2  # epoch 1's
    assert not [p for p in (run / "checkpoints").iterdir() if p.suffix == ".tmp"]
    client = MlflowClient(cfg.logger.tracking_uri)
    (found,) = client.search_runs(
        [client.get_experiment_by_name("mnist").experiment_id]
    )
    assert found.info.status == "FAILED"
    # The checkpoint is written before the tracker sees the epoch: epoch 2's failed,
    # so its metrics were never logged (a resume from epoch 1's checkpoint redoes it).
    steps = [m.step for m in client.get_metric_history(found.info.run_id, "val/acc")]
    assert steps == [1]


# --- slow: the MLflow store, and a run whose weights blow up -----------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_unreachable_mlflow_server(outputs, before, root, shared_data) -> None:
    done = run_cli(
        root,
        shared_data,
        "logger=mlflow",
        f"logger.tracking_uri=http://127.0.0.1:{closed_port()}",
        f"paths.output_root={outputs}",
    )
    needles = ("cannot reach the MLflow server at http://127.0.0.1:", "logger=none")
    assert_clear_failure(done, Case((), USER_ERROR, needles))
    assert snapshot(outputs) == before


@pytest.mark.slow
def test_sqlite_file_that_is_not_a_database(outputs, before, root, shared_data):
    bogus = root / "not-a-db.db"
    bogus.write_text("these are not the tables you are looking for\n" * 100)
    done = run_cli(
        root,
        shared_data,
        "logger=mlflow",
        f"logger.tracking_uri=sqlite:///{bogus}",
        f"paths.output_root={outputs}",
    )
    needles = (f"cannot write the MLflow store at {bogus}", "file is not a database")
    assert_clear_failure(done, Case((), USER_ERROR, needles))
    assert snapshot(outputs) == before


@pytest.mark.slow
def test_locked_mlflow_store(outputs, before, root, shared_data) -> None:
    with closing(sqlite3.connect(outputs / "mlflow.db")) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # a stuck writer
        done = run_cli(
            root, shared_data, "logger=mlflow", f"paths.output_root={outputs}"
        )
        holder.rollback()
    needles = (f"cannot write the MLflow store at {outputs / 'mlflow.db'}", "locked")
    assert_clear_failure(done, Case((), USER_ERROR, needles))
    assert snapshot(outputs) == before


@pytest.mark.slow
def test_weights_that_blow_up_stop_with_the_last_good_checkpoint(
    tmp_path, shared_data
) -> None:
    # A real config: after epoch 1 the step schedule multiplies lr by 1e40 (1e-3 →
    # 1e37): Adam's next step overflows the weights. The loss itself (a squared error
    # of firing rates in [0, 1]) never becomes NaN; the weight check catches it.
    out = tmp_path / "out"
    done = run_cli(
        tmp_path,
        shared_data,
        *tiny("logger=mlflow", "trainer.epochs=2"),
        "optim.milestones=[1]",
        "optim.gamma=1e40",
        f"paths.output_root={out}",
    )
    needles = ("at epoch 2, batch 1 (lr=1e+37)", "learning rate too high", "is kept")
    assert_clear_failure(done, Case((), USER_ERROR, needles))
    (last,) = out.glob("train/*/checkpoints/last.pt")
    state = load_checkpoint(last)
    assert state["epoch"] == 2  # written after epoch 1, before the blow-up
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [
        1
    ]


def test_config_errors_come_before_the_first_runs_kernel_build(
    tmp_path, shared_data, monkeypatch
) -> None:
    """A first run on a machine builds the C++ kernels (~1 min) when it checks the
    backend; a bad architecture, dataset or optimiser setting is reported before
    that. Here any build would fail (no compiler, an empty extension cache): the run
    must give the config error without trying one."""
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    for args, needle in (
        (("arch.hidden=[]",), "arch.hidden is empty"),
        (("optim.lr=nan",), "optim.lr=nan must be a finite number"),
    ):
        done = run_cli(tmp_path, shared_data, *args, f"paths.output_root={tmp_path}")
        said = done.stdout + done.stderr
        assert done.returncode == USER_ERROR and needle in said, said
        assert "could not be built" not in said and "Traceback" not in said
    built = tmp_path / "extensions"
    assert not built.exists() or not any(built.iterdir())
