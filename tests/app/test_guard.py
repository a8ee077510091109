"""RunGuard: a user error ends a single run with exit 2, but inside a sweep it goes
back to Hydra (which records the job as failed and goes on)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from snnrun.app.build import ConfigError
from snnrun.app.guard import EXIT_USER_ERROR, RunGuard


def fail_inside(guard: RunGuard, statuses: list[str]) -> None:
    with guard:
        guard.closers.append(statuses.append)
        raise ConfigError("stbp.decay=1.5 is outside [0, 1)")


def test_a_user_error_exits_2_outside_a_sweep(tmp_path: Path) -> None:
    statuses: list[str] = []
    with pytest.raises(SystemExit) as stopped:
        fail_inside(RunGuard(tmp_path, "snnrun train resume=x"), statuses)
    assert stopped.value.code == EXIT_USER_ERROR
    assert statuses == ["FAILED"]


def test_in_a_sweep_a_user_error_is_logged_and_reraised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    statuses: list[str] = []
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigError, match=r"1\.5"):
        fail_inside(RunGuard(tmp_path, "hint", in_sweep=True), statuses)
    assert statuses == ["FAILED"]
    assert "snnrun: error: stbp.decay=1.5 is outside [0, 1)" in caplog.text
