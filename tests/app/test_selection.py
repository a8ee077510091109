"""Honest model selection: best.pt and the sweep objective read validation only.

The test split is evaluated and logged (``test/*``), but changing it — another size,
other samples — must leave every decision bit for bit where it was.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mlflow import MlflowClient

from snnrun.app.train import train
from snnrun.train.checkpoint import load_checkpoint

from .conftest import tiny


def run(compose_cfg, folder: Path, *extra: str) -> tuple[float, dict, dict]:
    cfg = compose_cfg(
        *tiny(
            "logger=mlflow",
            "trainer.epochs=4",
            "trainer.max_batches=3",
            "trainer.max_eval_batches=null",
            "dataset.val_size=200",
            "optim.lr=0.01",
            f"logger.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
            *extra,
        )
    )
    objective = train(cfg, folder / "run", [])
    client = MlflowClient(cfg.logger.tracking_uri)
    (found,) = client.search_runs(
        [client.get_experiment_by_name("mnist").experiment_id]
    )
    history = {
        key: [m.value for m in client.get_metric_history(found.info.run_id, key)]
        for key in ("val/acc", "val/acc_best", "test/acc", "test/acc_at_best_val")
    }
    best = load_checkpoint(folder / "run" / "checkpoints" / "best.pt")
    return objective, history, best


def test_best_checkpoint_and_objective_follow_validation_only(
    compose_cfg, tmp_path: Path
) -> None:
    objective, history, best = run(compose_cfg, tmp_path / "a")
    val = history["val/acc"]
    assert len(val) == 4 and len(history["test/acc"]) == 4
    assert objective == max(val) == history["val/acc_best"][-1]
    best_epoch = max(i for i, v in enumerate(val, 1) if v == max(val))
    assert int(best["epoch"]) - 1 == best_epoch == int(best["best_epoch"])
    assert history["test/acc_at_best_val"][-1] == history["test/acc"][best_epoch - 1]

    # another test split: same decisions, bit for bit; only test/* moved
    other_objective, other, other_best = run(
        compose_cfg, tmp_path / "b", "dataset.test_limit=64"
    )
    assert other_objective == objective
    assert other["val/acc"] == val
    assert other["test/acc"] != history["test/acc"]
    for name, tensor in best["model"].items():
        assert torch.equal(tensor, other_best["model"][name]), name


def test_no_validation_split_writes_no_best_checkpoint(
    compose_cfg, tmp_path: Path
) -> None:
    cfg = compose_cfg(*tiny("dataset.val_size=0"))
    train(cfg, tmp_path / "run", [])
    folder = tmp_path / "run" / "checkpoints"
    assert (folder / "last.pt").is_file()
    assert not (folder / "best.pt").exists()
