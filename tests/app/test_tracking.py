"""The config hash that finds identical runs: what it ignores and what it sees."""

from __future__ import annotations

import re

from snnrun.app.tracking import config_hash, config_params

from .conftest import tiny


def test_the_hash_ignores_paths_tracking_display_and_sweep_control(
    compose_cfg,
) -> None:
    base = config_hash(compose_cfg(*tiny()))
    same = config_hash(
        compose_cfg(
            *tiny(
                "paths.output_root=/elsewhere",
                "logger=mlflow",
                "logger.experiment=other",
                "trainer.progress=off",
                "trainer.log_every=7",
                "sweep.force=true",
                "+tags.note=x",
            )
        )
    )
    assert same == base
    assert re.fullmatch(r"[0-9a-f]{16}", base), base


def test_the_hash_changes_with_anything_that_changes_training(compose_cfg) -> None:
    base = config_hash(compose_cfg(*tiny()))
    for override in (
        "stbp.decay=0.3",
        "seed=1",
        "trainer.epochs=2",
        "arch.hidden=[64]",
    ):
        assert config_hash(compose_cfg(*tiny(override))) != base, override


def test_params_leave_out_paths_tags_and_sweep_control() -> None:
    config = {"stbp": {"decay": 0.2}, "paths": {"root": "/r"}, "sweep": {"force": 1}}
    assert config_params({**config, "tags": {"a": "b"}}) == {"stbp.decay": 0.2}
