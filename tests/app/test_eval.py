"""``snnrun eval`` options on a checkpoint of a real CLI run (subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_eval_repeats_report_the_spread_as_json(
    run_cli, cli_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    args = ["--split", "test", "--limit", "40", "--repeats", "3", "--device", "cpu"]
    done = run_cli("eval", str(cli_checkpoint), *args, "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["samples"] == 40
    assert report["repeats"] == 3 and len(report["acc"]) == 3
    assert all(round(a * 40) == pytest.approx(a * 40) for a in report["acc"])
    assert report["acc_mean"] == pytest.approx(sum(report["acc"]) / 3)
    assert len(set(report["loss"])) > 1, "three encodings gave the same loss"
    assert report["stochastic"] is True
    assert "stochastic" in done.stdout and "std over 3 passes" in done.stdout
    assert f"{100 * report['acc_mean']:.2f}%" in done.stdout


@pytest.mark.slow
def test_eval_val_split_and_bad_options(run_cli, cli_checkpoint: Path) -> None:
    done = run_cli("eval", str(cli_checkpoint), "--split", "val", "--limit", "10")
    assert done.returncode == 0, done.stderr
    assert "10 val samples" in done.stdout and "val/acc" in done.stdout
    bad = run_cli("eval", str(cli_checkpoint), "--repeats", "0")
    assert bad.returncode == 2 and "--repeats=0 must be >= 1" in bad.stderr
