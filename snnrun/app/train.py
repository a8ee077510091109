"""``snnrun train``: compose → build → fit → return the objective (val/acc_best).

Reads top to bottom. Hydra composes ``conf/train.yaml`` with the command-line
overrides; everything else happens in :func:`train`, which the tests also call.

Under ``torchrun --nproc_per_node=N -m snnrun train ...`` :func:`main` first joins
the process group and pins one run folder for all ranks (``train/distributed.py``);
:func:`train` then wraps the model in DDP and lets rank 0 alone print, track and save.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from snnrun import seeding
from snnrun.app.build import (
    Parts,
    autocast_dtype,
    build_parts,
    check_memory,
    check_threads,
    net_facts,
)
from snnrun.app.guard import RunGuard, fail, is_user_error
from snnrun.app.resume import ResumePoint, find_resume_point
from snnrun.app.schema import config_dir, register_configs
from snnrun.app.sweep_job import SweepJob, crashed_run_dir, job_of, reuse_finished
from snnrun.app.tracking import make_progress, make_tracker, resolved
from snnrun.data import DataMeta
from snnrun.seeding import derive_seed
from snnrun.train import distributed
from snnrun.train.checkpoint import CheckpointFolder
from snnrun.train.hooks import Hook
from snnrun.train.loop import LoopSettings, Trainer

log = logging.getLogger(__name__)
register_configs()


def main() -> None:
    """``snnrun train``: one process, or one rank of a torchrun launch.

    Under torchrun (``WORLD_SIZE`` > 1) rank 0 runs Hydra first and sends its run
    folder; the other ranks wait for it, then run Hydra pinned to that folder.
    """
    args = sys.argv[1:]
    try:
        info = distributed.from_env()
        if info.is_distributed and not distributed.exits_before_job(args):
            distributed.check_launch(args)
    except distributed.LaunchError as error:
        sys.stderr.write(f"snnrun: error: {error}\n")
        raise SystemExit(2) from None
    if not info.is_distributed or distributed.exits_before_job(args):
        hydra_main()
        return
    distributed.init(info)
    try:
        if info.is_main:
            try:
                hydra_main()
            finally:  # a config error before the job: release the waiting ranks
                distributed.publish_run_dir(None)
            return
        run_dir = distributed.receive_run_dir()
        if run_dir is None:
            raise SystemExit(f"rank {info.rank}: rank 0 failed before training")
        pinned = distributed.follower_overrides(run_dir, info.rank)
        sys.argv = [sys.argv[0], *args, *pinned]
        hydra_main()
    finally:
        distributed.teardown()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective ``val/acc_best``."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    distributed.publish_run_dir(run_dir)  # rank 0 of torchrun; else a no-op
    if not distributed.is_main_process():
        distributed.quiet_console()
    job = job_of(hydra_cfg)  # a multirun job: skipped or resumed if it ran before
    if job is not None:
        reused = reuse_finished(cfg, job)
        if reused is not None:
            return reused
        cfg.resume = cfg.resume or crashed_run_dir(cfg, job)
    return train(cfg, run_dir, list(hydra_cfg.overrides.task), job)


def train(
    cfg: DictConfig, run_dir: Path, overrides: list[str], job: SweepJob | None = None
) -> float:
    """Train one job described by ``cfg``, writing into ``run_dir``.

    A sweep ``job`` is tracked as a child of its sweep's MLflow run, and its errors
    go back to Hydra (the sweep goes on) instead of ending the process.

    In a process group every rank calls this with the same ``run_dir``: each trains
    on its shard through DDP, metrics are summed over ranks, and rank 0 alone shows
    progress, tracks in MLflow and writes checkpoints.
    """
    rank = distributed.current()
    plan = _plan(cfg, run_dir, overrides, job)
    with RunGuard(
        plan.run_dir, resume_hint=_resume_hint(plan), in_sweep=job is not None
    ) as guard:
        _configure_process(plan.cfg, rank, job)
        parts = build_parts(plan.cfg, rank.rank, rank.world_size)
        if plan.cfg.trainer.get("memory_check", True):
            _log_memory(check_memory(parts, plan.cfg))
        hooks, run_id = _start_hooks(plan, parts.data.meta, rank, guard)
        trainer = _make_trainer(plan, parts, hooks, run_id, rank)
        if plan.point is not None:
            _restore(trainer, plan.point)
        distributed.split_streams((e.generator for e in parts.encoders), rank.rank)
        guard.stop = trainer.request_stop
        _log_data(parts)
        trainer.fit(*parts.loaders)
    if parts.data.val is None:  # nothing to select on: no objective for a sweeper
        log.warning(
            "dataset.val_size=0: no validation split, so no best.pt and no "
            "val/acc_best; the sweep objective is NaN"
        )
        return float("nan")
    return trainer.position.best_acc


@dataclass(frozen=True)
class RunPlan:
    """The run this command trains: a new one, or the one ``resume=`` continues.

    On resume ``cfg``, ``run_dir`` and ``overrides`` are the run's own (saved), not
    this command's.
    """

    cfg: DictConfig
    run_dir: Path
    overrides: list[str]
    point: ResumePoint | None
    job: SweepJob | None


def _plan(
    cfg: DictConfig, run_dir: Path, overrides: list[str], job: SweepJob | None
) -> RunPlan:
    """A new run in ``run_dir``, or (with ``resume=``) the run to continue."""
    point = _resume_point(cfg, run_dir, job) if cfg.get("resume") else None
    if point is None:
        return RunPlan(cfg, run_dir, overrides, None, job)
    _warn_ignored(overrides)
    _log_into(point.run_dir)
    return RunPlan(point.config, point.run_dir, point.overrides, point, job)


def _resume_hint(plan: RunPlan) -> str:
    """The command that continues this run after an interruption."""
    hint = f"snnrun train resume={plan.run_dir}"
    if plan.job is not None:  # rerunning the sweep skips finished jobs, resumes this
        hint = f"the same snnrun train -m command, or {hint}"
    return hint


def _configure_process(
    cfg: DictConfig, rank: distributed.RankInfo, job: SweepJob | None = None
) -> None:
    """Threads, the world-size tag, and (rank 0) the config tree on the terminal:
    once per sweep (its first job), a one-line job header for the other jobs."""
    check_threads(cfg)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    if rank.is_distributed:  # a tag in MLflow: trainer.batch_size is per rank
        with open_dict(cfg.tags):
            cfg.tags["world_size"] = str(rank.world_size)
    if rank.is_main:
        _show_config(cfg, job)


def _start_hooks(
    plan: RunPlan, meta: DataMeta, rank: distributed.RankInfo, guard: RunGuard
) -> tuple[list[Hook], str | None]:
    """Rank 0's progress display and MLflow tracker, closed by ``guard``; returns
    them with the tracking run id (None: untracked, or another rank).

    The tracker's run starts here: from then on failures are recorded on it.
    """
    if not rank.is_main:
        return [], None
    hooks = [h for h in (make_progress(plan.cfg),) if h is not None]
    guard.closers += [lambda _status, h=h: h.close() for h in hooks]
    tracker = make_tracker(
        plan.cfg,
        meta,
        plan.run_dir,
        plan.overrides,
        resume_run_id=plan.point.run_id if plan.point else None,
        sweep=plan.job.link if plan.job else None,
    )
    if tracker is None:
        return hooks, None
    guard.closers.append(tracker.finish)
    run_id = tracker.start()
    return [*hooks, tracker], run_id


def _make_trainer(
    plan: RunPlan,
    parts: Parts,
    hooks: list[Hook],
    run_id: str | None,
    rank: distributed.RankInfo,
) -> Trainer:
    """The loop over ``parts``; only rank 0 writes checkpoints."""
    cfg = plan.cfg
    settings = LoopSettings(
        epochs=cfg.trainer.epochs,
        max_batches=cfg.trainer.max_batches,
        max_eval_batches=cfg.trainer.max_eval_batches,
        eval_repeats=cfg.trainer.eval_repeats,
        test_every=cfg.trainer.get("test_every", 1),
        diagnostics_every=_plot_every(cfg),
        diagnostics_seed=derive_seed(cfg.seed, seeding.DIAGNOSTICS),
        detect_anomaly=cfg.trainer.detect_anomaly,
        autocast=autocast_dtype(cfg),
    )
    writes = cfg.trainer.checkpoint and rank.is_main
    extra_state = {
        "config": OmegaConf.to_yaml(resolved(cfg)),
        "run_id": run_id or "",
        "overrides": list(plan.overrides),  # a resumed run keeps its name and tags
        "net": net_facts(parts.data.meta),  # snnrun.load rebuilds without the data
    }
    return Trainer(
        parts.learner(distributed.wrap_model(parts.model, rank)),
        hooks,
        settings,
        checkpoints=CheckpointFolder(plan.run_dir / "checkpoints") if writes else None,
        extra_state=extra_state,
        reduce=distributed.all_reduce_sum if rank.is_distributed else None,
    )


def _plot_every(cfg: DictConfig) -> int | None:
    """``logger.plot_every`` when runs are tracked (None: no diagnostics)."""
    if cfg.logger.name != "mlflow":
        return None
    return cfg.logger.get("plot_every", 0)  # range-checked by build.check_trainer


def _restore(trainer: Trainer, point: ResumePoint) -> None:
    """Weights, optimiser, position and generators as the checkpoint saved them."""
    trainer.load_state_dict(point.state, point.checkpoint or point.run_dir)
    log.info(
        "resumed %s at epoch %d, batch %d",
        point.run_dir,
        trainer.position.epoch,
        trainer.position.batch,
    )


def _log_memory(estimate) -> None:
    log.info(
        "memory: about %.2f GiB a training step (%.0f MiB kept for backward at "
        "batch %d), %s free",
        estimate.peak() / 2**30,
        estimate.activation_bytes / 2**20,
        estimate.batch,
        "unknown"
        if estimate.available_bytes is None
        else f"{estimate.available_bytes / 2**30:.1f} GiB",
    )


def _log_data(parts: Parts) -> None:
    data = parts.data
    log.info(
        "data: %s (%d train / %d validation / %d test samples) on %s",
        data.meta.name,
        len(data.train),
        0 if data.val is None else len(data.val),
        len(data.test),
        parts.device,
    )


def _resume_point(cfg: DictConfig, run_dir: Path, job: SweepJob | None) -> ResumePoint:
    """``find_resume_point``; a bad ``resume=`` is one clear error and exit 2."""
    try:
        return find_resume_point(cfg)
    except Exception as error:
        if job is not None or not is_user_error(error):
            raise
        fail(f"{error}\n(this command's folder: {run_dir})")


def _warn_ignored(overrides: list[str]) -> None:
    """Resuming uses the run's saved config: say so when other overrides were given."""
    ignored = [o for o in overrides if not o.lstrip("+~").startswith("resume=")]
    if ignored:
        log.warning(
            "resume continues with the run's saved config; ignored: %s",
            " ".join(ignored),
        )


def _log_into(run_dir: Path) -> None:
    """Also append this process's log to the resumed run's own ``train.log``.

    Hydra logs into the new folder it made for this command; the run's history
    belongs in the run folder too. Does nothing outside Hydra (no file handler).
    """
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    path = run_dir / "train.log"
    if not files or any(Path(h.baseFilename) == path for h in files):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(files[0].formatter)
    handler.setLevel(files[0].level)
    root.addHandler(handler)


def _show_config(cfg: DictConfig, job: SweepJob | None = None) -> None:
    from snnrun.track.progress import print_config_tree

    mode = str(getattr(cfg.trainer.progress, "value", cfg.trainer.progress))
    if mode == "off":
        return
    if job is None or job.num == 0:
        print_config_tree(resolved(cfg))
    if job is not None:  # later jobs differ from the tree only by their overrides
        sys.stdout.write(f"sweep job {job.num}: {job.name}\n")
        sys.stdout.flush()
