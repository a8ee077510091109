"""Fixtures for the app layer: real Hydra composition, real MLflow on sqlite in tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from snnrun.app.schema import config_dir, register_configs

Compose = Callable[..., DictConfig]


@pytest.fixture
def isolated(tmp_path: Path, shared_data: Path) -> list[str]:
    """Overrides that keep a run's data reads, outputs and MLflow store in tmp_path."""
    return [
        f"paths.data_root={shared_data}",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}",
        f"paths.cache_root={tmp_path / 'cache'}",
    ]


@pytest.fixture
def compose_cfg(isolated: list[str]) -> Compose:
    """``compose_cfg("dataset=nmnist", ...)`` → the composed root config."""
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose("train", overrides=[*isolated, *overrides])

    return _compose


@pytest.fixture
def run_cli(
    tmp_path: Path, shared_data: Path
) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real ``snnrun`` console entry in a subprocess (non-TTY)."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "SNNRUN_DATA": str(shared_data), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "snnrun", *args]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=tmp_path,
        )

    return _run


def tiny(*extra: str) -> list[str]:
    """Overrides for a run of a few seconds: 2×2 batches, T=4, small data."""
    return ["debug=fast", "dataset.train_limit=128", "dataset.test_limit=128", *extra]
