"""Config → the observers of a run: MLflow tracking and the progress display.

MLflow params are the resolved config flattened to the dotted keys users type
(``stbp.decay``), so UI columns map 1:1 to overrides; data provenance goes in as
``data.*`` params; tags carry the git commit, overrides and the substitute label.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnrun.app.schema import checkout_conf
from snnrun.data import DataMeta
from snnrun.train.hooks import Hook

NOT_PARAMS = ("paths", "tags", "sweep")  # machine folders, free tags, sweep control
# Keys that change where a run writes, how it is tracked or shown, never what it computes:
# left out of the config hash that finds identical finished runs (``app/sweep.py``).
NOT_HASHED = (*NOT_PARAMS, "logger", "resume", "trainer.progress", "trainer.log_every")


@dataclass(frozen=True)
class SweepLink:
    """How a multirun job's MLflow run hangs under its sweep's parent run.

    ``run_name`` is the job's swept overrides (``stbp.decay=0.1 seed=0``); ``tags``
    carry the sweep id and the job number (``app/sweep.py`` builds this)."""

    parent_run_id: str
    run_name: str
    tags: Mapping[str, str] = field(default_factory=dict)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stbp": {"decay": 0.2}}`` → ``{"stbp.decay": 0.2}``; lists become strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value) if isinstance(value, (list, tuple)) else value
    return flat


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers, interpolations resolved, enums as names."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def config_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config as MLflow params: dotted keys, minus ``NOT_PARAMS``."""
    return {
        k: v for k, v in flatten(config).items() if k.split(".")[0] not in NOT_PARAMS
    }


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits identifying what a run computes: the resolved config minus the
    ``NOT_HASHED`` keys. Equal hashes mean the same training (data files aside)."""
    kept = {
        key: value
        for key, value in flatten(resolved(cfg)).items()
        if not any(key == n or key.startswith(n + ".") for n in NOT_HASHED)
    }
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_name(cfg: DictConfig) -> str:
    """``logger.experiment``, else the dataset's name (one experiment per dataset)."""
    return str(cfg.logger.experiment or cfg.dataset.name)


def run_name(cfg: DictConfig, overrides: list[str], meta: DataMeta) -> str:
    """``logger.run_name``, else the overrides, else ``<dataset>-<arch>``."""
    name = (
        cfg.logger.run_name
        or " ".join(overrides)
        or (f"{cfg.dataset.name}-{cfg.arch.name}")
    )
    if meta.tags.get("substitute") == "true":
        name += " [synthetic substitute]"
    return name


def git_commit() -> str | None:
    """The checkout's HEAD commit, when snnrun runs from a git checkout (an editable
    install); None for an installed wheel, whatever folder the user works in."""
    conf = checkout_conf()
    if conf is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=conf.parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def bound_http_calls(logger: DictConfig) -> None:
    """Set MLflow's HTTP timeout, retries and back-off for this process from
    ``logger.http_*`` (MLflow reads them on every request)."""
    for key, value in {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": max(1, int(logger.http_timeout_s)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": max(0, int(logger.http_retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": max(0, int(logger.http_backoff)),
    }.items():
        os.environ[key] = str(value)


def make_tracker(
    cfg: DictConfig,
    meta: DataMeta,
    run_dir: Path,
    overrides: list[str],
    resume_run_id: str | None = None,
    sweep: SweepLink | None = None,
) -> Hook | None:
    """An MLflow hook for ``logger=mlflow`` (MLflow is imported only then); a sweep
    job's run is named by its swept overrides and nested under the sweep's run."""
    if cfg.logger.name != "mlflow":
        return None
    from snnrun.track.mlflow import MLflowHook, check_store
    from snnrun.track.query import CONFIG_HASH_TAG
    from snnrun.track.spool import spool_path
    from snnrun.track.stale import process_tags, report_stale

    bound_http_calls(cfg.logger)
    check_store(cfg.logger.tracking_uri)
    report_stale(cfg.logger.tracking_uri)
    config = resolved(cfg)
    params = config_params(config)
    params.update({f"data.{k}": v for k, v in meta.provenance.items()})
    tags = {
        "dataset": meta.name,
        "run_dir": str(run_dir),
        "overrides": " ".join(overrides),
        **meta.tags,
        **dict(cfg.tags),
        CONFIG_HASH_TAG: config_hash(cfg),
        **(sweep.tags if sweep else {}),
        **process_tags(),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return MLflowHook(
        tracking_uri=cfg.logger.tracking_uri,
        experiment=experiment_name(cfg),
        run_name=run_name(cfg, [sweep.run_name] if sweep else overrides, meta),
        params=params,
        tags=tags,
        artifacts={
            "config.yaml": OmegaConf.to_yaml(config),
            "overrides.yaml": OmegaConf.to_yaml(list(overrides)),
        },
        run_id=resume_run_id,
        parent_run_id=sweep.parent_run_id if sweep else None,
        log_checkpoints=cfg.logger.log_checkpoints,
        spool=spool_path(run_dir),
    )


def make_progress(cfg: DictConfig) -> Hook | None:
    """Bars on a terminal, plain log lines otherwise (``trainer.progress``)."""
    mode = str(getattr(cfg.trainer.progress, "value", cfg.trainer.progress))
    if mode == "off":
        return None
    from snnrun.track.progress import RichProgressHook

    enabled = {"auto": None, "rich": True, "plain": False}[mode]
    return RichProgressHook(enabled=enabled, log_every=cfg.trainer.log_every)
