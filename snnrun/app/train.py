"""``snnrun train``: compose → build → fit → return the objective (val/acc_best).

Reads top to bottom. Hydra composes ``conf/train.yaml`` with the command-line
overrides; everything else happens in :func:`train`, which the tests also call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from snnrun.app.build import build_parts
from snnrun.app.guard import RunGuard
from snnrun.app.resume import find_resume_point
from snnrun.app.schema import config_dir, register_configs
from snnrun.app.tracking import make_progress, make_tracker, resolved
from snnrun.train.loop import LoopSettings, Trainer

log = logging.getLogger(__name__)
register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective ``val/acc_best``."""
    hydra_cfg = HydraConfig.get()
    return train(
        cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    )


def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float:
    """Train one job described by ``cfg``, writing into ``run_dir``."""
    point = find_resume_point(cfg) if cfg.get("resume") else None
    if point is not None:
        cfg, run_dir = point.config, point.run_dir
    hint = f"snnrun train resume={run_dir}"
    with RunGuard(run_dir, resume_hint=hint) as guard:
        if cfg.trainer.num_threads:
            torch.set_num_threads(cfg.trainer.num_threads)
        _show_config(cfg)
        parts = build_parts(cfg)
        hooks = [h for h in (make_progress(cfg),) if h is not None]
        guard.closers += [lambda _status, h=h: h.close() for h in hooks]
        tracker = make_tracker(
            cfg,
            parts.data.meta,
            run_dir,
            overrides,
            resume_run_id=point.run_id if point else None,
        )
        if tracker is not None:
            guard.closers.append(tracker.finish)
            run_id = tracker.start()  # from here on, failures are recorded on the run
            hooks.append(tracker)
        else:
            run_id = None
        trainer = Trainer(
            parts.model,
            parts.optimizer,
            parts.scheduler,
            parts.loss_fn,
            parts.encoders,
            parts.device,
            hooks,
            LoopSettings(
                epochs=cfg.trainer.epochs,
                max_batches=cfg.trainer.max_batches,
                max_eval_batches=cfg.trainer.max_eval_batches,
                eval_repeats=cfg.trainer.eval_repeats,
                checkpoint_dir=run_dir / "checkpoints"
                if cfg.trainer.checkpoint
                else None,
                detect_anomaly=cfg.trainer.detect_anomaly,
            ),
            extra_state={
                "config": OmegaConf.to_yaml(resolved(cfg)),
                "run_id": run_id or "",
            },
        )
        if point is not None:
            trainer.load_state_dict(point.state)
            log.info(
                "resumed %s at epoch %d, batch %d",
                run_dir,
                trainer.position.epoch,
                trainer.position.batch,
            )
        guard.stop = trainer.request_stop
        log.info(
            "data: %s (%d train / %d test samples) on %s",
            parts.data.meta.name,
            len(parts.data.train),
            len(parts.data.test),
            parts.device,
        )
        trainer.fit(*parts.loaders)
    return trainer.position.best_acc


def _show_config(cfg: DictConfig) -> None:
    from snnrun.track.progress import print_config_tree

    mode = str(getattr(cfg.trainer.progress, "value", cfg.trainer.progress))
    if mode != "off":
        print_config_tree(resolved(cfg))
