"""Find the checkpoint a ``resume=`` value points at (run folder, MLflow run id, auto).

Resuming continues the *same* run: the same folder, the same MLflow run, and the
config saved in the checkpoint (so the remaining epochs match an uninterrupted run).
``resume=<run folder>`` (or an MLflow run id, or ``auto``) continues from the run's
``checkpoints/last.pt``; ``resume=<checkpoint file>`` from that very file (e.g.
``best.pt``), which must sit in ``<run folder>/checkpoints/``. ``resume=auto`` takes
the newest run under ``paths.output_root`` that has not finished all its epochs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnrun.app.schema import todays_schema
from snnrun.train.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """Nothing to resume at the place ``resume=`` names."""


@dataclass
class ResumePoint:
    """Where and how to continue: run folder, saved config and state, tracking run id."""

    run_dir: Path
    config: DictConfig
    state: dict[str, Any]
    run_id: str | None
    overrides: list[str]  # the original command's overrides (run name, tags)
    checkpoint: Path | None = None  # the file the state was loaded from


def find_resume_point(cfg: DictConfig) -> ResumePoint:
    """Resolve ``cfg.resume`` to a checkpoint and load it (weights only, no code)."""
    if str(cfg.resume) == "auto":
        point = _newest_unfinished(Path(cfg.paths.output_root))
    else:
        run_dir, last = _checkpoint_of(cfg, str(cfg.resume))
        point = _point(str(cfg.resume), run_dir, last)
    added = fill_new_keys(point.config, todays_schema(point.config))
    if added:
        log.warning(
            "resume: the checkpoint's config predates %d setting(s); using today's "
            "defaults for them: %s",
            len(added),
            ", ".join(added),
        )
    return point


def fill_new_keys(saved: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Add to ``saved`` (in place) the keys of ``schema`` it lacks; return their names.

    A checkpoint written before a setting existed (e.g. ``stbp.backend``) resumes with
    today's default for it; every key the checkpoint has keeps its saved value.
    Mandatory keys without a default (``???``) are left out.
    """
    added: list[str] = []
    plain = OmegaConf.to_container(schema, resolve=False)
    for key in schema:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(schema, key):
            continue
        if key not in saved:
            saved[key] = plain[key]
            added.append(path)
        elif OmegaConf.is_dict(saved[key]) and OmegaConf.is_dict(schema[key]):
            added += fill_new_keys(saved[key], schema[key], f"{path}.")
    return added


def _point(target: str, run_dir: Path, last: Path) -> ResumePoint:
    """Load ``last`` of ``run_dir``; ResumeError if it is missing or finished."""
    if not last.is_file():
        raise ResumeError(
            f"resume={target}: {last} does not exist; that run saved no checkpoint "
            "(it stopped before its first epoch ended, or ran with trainer.checkpoint=false)"
        )
    state = load_checkpoint(last)
    config = OmegaConf.create(state["config"])
    config.resume = None
    if int(state["epoch"]) > int(config.trainer.epochs):
        raise ResumeError(
            f"resume={target}: that run already finished all "
            f"{config.trainer.epochs} epochs; nothing to resume"
        )
    return ResumePoint(
        run_dir,
        config,
        state,
        state.get("run_id") or None,
        _original_overrides(state, run_dir),
        last,
    )


def _checkpoint_of(cfg: DictConfig, target: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) that ``resume=<target>`` names."""
    path = Path(target).expanduser()
    if target != "auto" and path.is_file():
        path = path.resolve()
        if path.parent.name != "checkpoints":
            raise ResumeError(
                f"resume={target}: a checkpoint to resume must sit in "
                "<run folder>/checkpoints/ (resume continues that folder); pass the "
                "run folder, or use `snnrun eval` to evaluate a loose checkpoint"
            )
        return path.parents[1], path
    run_dir = _run_dir(cfg, target)
    return run_dir, run_dir / "checkpoints" / "last.pt"


def _run_dir(cfg: DictConfig, target: str) -> Path:
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve()
    return _run_dir_of_mlflow_run(cfg, target)


def _original_overrides(state: dict[str, Any], run_dir: Path) -> list[str]:
    """The overrides of the command that started the run: saved in the checkpoint,
    else (older checkpoints) Hydra's ``.hydra/overrides.yaml`` in the run folder."""
    saved = state.get("overrides")
    if saved is not None:
        return [str(item) for item in saved]
    hydra_file = run_dir / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        return [str(item) for item in OmegaConf.load(hydra_file)]
    return []


def _newest_unfinished(output_root: Path) -> ResumePoint:
    """The newest run under ``output_root`` (by its ``last.pt``) with epochs left.

    Finished runs and unreadable checkpoints are passed over and named, so the user
    sees which runs were considered.
    """
    candidates = sorted(
        output_root.glob("**/checkpoints/last.pt"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not candidates:
        raise ResumeError(f"resume=auto: no checkpoints under {output_root}")
    passed: list[str] = []
    for last in candidates:
        run_dir = last.parents[1]
        try:
            point = _point("auto", run_dir, last)
        except (ResumeError, CheckpointError) as error:
            passed.append(f"{run_dir} ({_why_not(error)})")
            continue
        if passed:
            log.warning(
                "resume=auto: resuming %s, the newest unfinished run; passed over: %s",
                run_dir,
                "; ".join(passed),
            )
        return point
    raise ResumeError(
        f"resume=auto: no unfinished run under {output_root}; considered: "
        f"{'; '.join(passed)}. Start a new run, or name one with resume=<run folder>"
    )


def _why_not(error: Exception) -> str:
    """A short reason why resume=auto passed over a run."""
    text = str(error)
    if "already finished" in text:
        return "finished"
    return f"unreadable checkpoint: {text.split(';')[0]}"


def _run_dir_of_mlflow_run(cfg: DictConfig, run_id: str) -> Path:
    if cfg.logger.name != "mlflow":
        raise ResumeError(f"resume={run_id} is neither a folder nor a checkpoint file")
    from snnrun.track.query import QueryError, RunStore

    try:
        return RunStore(cfg.logger.tracking_uri).run_dir_of(run_id)
    except QueryError as error:
        raise ResumeError(f"resume={error}") from error
