"""End-to-end training in-process: real data, real Hydra config, real MLflow (sqlite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from snnrun.app.build import build_parts
from snnrun.app.train import train
from snnrun.train.checkpoint import load_checkpoint

from .conftest import tiny

METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "time/epoch_s",
    "perf/samples_per_s",
)


def run(compose_cfg, tmp_path: Path, *overrides: str) -> tuple[float, Path]:
    cfg = compose_cfg(*tiny(*overrides))
    run_dir = tmp_path / "run"
    best = train(cfg, run_dir, list(overrides))
    return best, run_dir


def test_smoke_run_is_tracked_in_mlflow(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*tiny("logger=mlflow", "trainer.epochs=2"))
    initial = build_parts(cfg).model.state_dict()
    best = train(cfg, tmp_path / "run", ["trainer.epochs=2"])

    client = MlflowClient(cfg.logger.tracking_uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "mnist"]
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.params["stbp.decay"] == str(cfg.stbp.decay)
    assert found.data.params["data.n_train"] == "128"
    for key in METRICS:
        history = client.get_metric_history(found.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
        assert all(torch.isfinite(torch.tensor(m.value)) for m in history)
    assert found.data.metrics["val/acc_best"] == pytest.approx(best)
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "checkpoints"} <= names
    ckpts = {a.path for a in client.list_artifacts(found.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= ckpts

    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    changed = [not torch.equal(state["model"][k], v) for k, v in initial.items()]
    assert any(changed), "training did not change any weight"
    assert state["run_id"] == found.info.run_id


def test_same_seed_same_metrics_other_seed_differs(compose_cfg, tmp_path: Path) -> None:
    def metrics(seed: int, where: str) -> dict:
        cfg = compose_cfg(*tiny(f"seed={seed}"))
        train(cfg, tmp_path / where, [])
        return load_checkpoint(tmp_path / where / "checkpoints" / "last.pt")["model"]

    a, b, c = metrics(0, "a"), metrics(0, "b"), metrics(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("dataset", ["mnist", "nmnist", "detection"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_every_dataset_arch_pair_trains_a_step(compose_cfg, tmp_path, dataset, arch):
    cfg = compose_cfg(
        *tiny(f"dataset={dataset}", f"arch={arch}", "trainer.max_batches=1")
    )
    parts = build_parts(cfg)  # same seed → the weights the run starts from
    best = train(cfg, tmp_path / "run", [])
    assert 0.0 <= best <= 1.0
    assert parts.data.meta.num_classes == (2 if dataset == "detection" else 10)
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    initial = parts.model.state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_short_last_batch_ends_the_epoch(compose_cfg, tmp_path: Path) -> None:
    # 100 samples in batches of 32: the last batch has 4 samples.
    cfg = compose_cfg(*tiny("dataset.train_limit=100", "trainer.max_batches=null"))
    train(cfg, tmp_path / "run", [])
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["batch"] == 0


def test_logger_none_never_imports_mlflow(tmp_path: Path, isolated: list[str]) -> None:
    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from pathlib import Path\n"
        "from snnrun.app.schema import config_dir, register_configs\n"
        "from snnrun.app.train import train\n"
        "register_configs()\n"
        "with initialize_config_dir(str(config_dir()), version_base='1.3'):\n"
        f"    cfg = compose('train', overrides={[*isolated, *tiny()]!r})\n"
        f"train(cfg, Path({str(tmp_path / 'run')!r}), [])\n"
        "assert 'mlflow' not in sys.modules, 'logger=none imported mlflow'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_detection_trains_from_a_user_folder(compose_cfg, tmp_path: Path) -> None:
    import numpy as np

    from snnrun.data.synthetic import generate_split, write_image_folder

    rng = np.random.default_rng(7)
    root = tmp_path / "my_images"
    for split, count in (("train", 40), ("test", 20)):
        write_image_folder(
            root / split,
            *generate_split(rng, count, 28),
            class_names=("0_background", "1_person"),
        )
    cfg = compose_cfg(
        *tiny(
            "dataset=detection",
            "dataset.source=folder",
            f"dataset.root={root}",
            "logger=mlflow",
        )
    )
    train(cfg, tmp_path / "run", [])
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("detection").experiment_id]
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["substitute"] == "false"
    assert "synthetic" not in run.info.run_name
    # 10% of the 40 training images are held out for validation
    assert run.data.params["data.n_train"] == "36"
    assert run.data.params["data.n_val"] == "4"


def test_synthetic_detection_is_labelled_a_substitute(compose_cfg, tmp_path) -> None:
    cfg = compose_cfg(*tiny("dataset=detection", "logger=mlflow"))
    train(cfg, tmp_path / "run", ["dataset=detection"])
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("detection").experiment_id]
    )
    assert run.data.tags["substitute"] == "true"
    assert run.info.run_name.endswith("[synthetic substitute]")
    assert "synthetic substitute" in run.data.tags["dataset"]
