"""Find the checkpoint a ``resume=`` value points at (run folder, MLflow run id, auto).

Resuming continues the *same* run: the same folder, the same MLflow run, and the
config saved in the checkpoint (so the remaining epochs match an uninterrupted run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnrun.train.checkpoint import load_checkpoint


class ResumeError(RuntimeError):
    """Nothing to resume at the place ``resume=`` names."""


@dataclass
class ResumePoint:
    """Where and how to continue: run folder, saved config and state, tracking run id."""

    run_dir: Path
    config: DictConfig
    state: dict[str, Any]
    run_id: str | None


def find_resume_point(cfg: DictConfig) -> ResumePoint:
    """Resolve ``cfg.resume`` to a checkpoint and load it (weights only, no code)."""
    run_dir = _run_dir(cfg, str(cfg.resume))
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise ResumeError(
            f"resume={cfg.resume}: {last} does not exist; that run saved no checkpoint "
            "(it stopped before its first epoch ended, or ran with trainer.checkpoint=false)"
        )
    state = load_checkpoint(last)
    config = OmegaConf.create(state["config"])
    config.resume = None
    if int(state["epoch"]) > int(config.trainer.epochs):
        raise ResumeError(
            f"resume={cfg.resume}: that run already finished all "
            f"{config.trainer.epochs} epochs; nothing to resume"
        )
    return ResumePoint(run_dir, config, state, state.get("run_id") or None)


def _run_dir(cfg: DictConfig, target: str) -> Path:
    if target == "auto":
        return _newest_run(Path(cfg.paths.output_root))
    path = Path(target).expanduser()
    if path.is_file():  # a checkpoint file: its run folder is two levels up
        return path.resolve().parents[1]
    if path.is_dir():
        return path.resolve()
    return _run_dir_of_mlflow_run(cfg, target)


def _newest_run(output_root: Path) -> Path:
    candidates = sorted(
        output_root.glob("**/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime
    )
    if not candidates:
        raise ResumeError(f"resume=auto: no checkpoints under {output_root}")
    return candidates[-1].parents[1]


def _run_dir_of_mlflow_run(cfg: DictConfig, run_id: str) -> Path:
    if cfg.logger.name != "mlflow":
        raise ResumeError(f"resume={run_id} is neither a folder nor a checkpoint file")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri=cfg.logger.tracking_uri).get_run(run_id)
    except MlflowException as error:
        raise ResumeError(
            f"resume={run_id} is not a folder, a checkpoint or a run id in "
            f"{cfg.logger.tracking_uri}"
        ) from error
    return Path(run.data.tags["run_dir"])
