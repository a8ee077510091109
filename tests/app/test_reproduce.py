"""``snnrun reproduce``: rows as data, the verdict, and real quick runs (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from snnrun.app.reproduce import (
    load_row,
    markdown_row,
    row_names,
    summary_lines,
    sweep_command,
)
from snnrun.track.reproduce import Outcome


def test_every_row_names_an_existing_preset_and_a_sane_band() -> None:
    from snnrun.app.schema import config_dir

    assert set(row_names()) >= {
        "mnist-mlp",
        "mnist-cnn",
        "mnist-cnn-code",
        "nmnist-mlp",
        "detection-mlp",
    }
    for name in row_names():
        for quick in (False, True):
            row = load_row(name, quick)
            assert (config_dir() / "experiment" / f"{row.experiment}.yaml").is_file()
            low, high = row.band
            assert 0 <= low < high <= 100 and row.seeds
            if not quick:
                assert low <= row.paper_acc <= high or "substitute" in row.title


def outcome(final: list[float], failed: tuple[str, ...] = ()) -> Outcome:
    return Outcome(
        final, final, [1] * len(final), 12.0, list(failed), "abc", Path("/s")
    )


def test_verdict_is_the_mean_against_the_band() -> None:
    row = load_row("mnist-mlp", quick=False)
    assert outcome([98.9, 98.8, 99.0]).verdict(row.band, 3) == "PASS"
    assert outcome([98.0, 98.1, 98.2]).verdict(row.band, 3) == "FAIL"
    assert outcome([98.9, 98.8]).verdict(row.band, 3) == "FAIL"  # a seed is missing
    assert outcome([98.9] * 3, ("seed=2 (FAILED)",)).verdict(row.band, 3) == "FAIL"
    text = "\n".join(summary_lines(row, outcome([98.0, 98.1, 98.2])))
    assert "98.10 ± 0.10% (n=3)" in text and text.endswith("[98.39, 99.39]%")
    assert "**FAIL**" in markdown_row(row, outcome([98.0, 98.1, 98.2]))


def test_quick_rows_label_their_subset_and_run_the_seeds_as_one_sweep() -> None:
    row = load_row("mnist-mlp", quick=True)
    assert "SUBSET" in row.data
    command = sweep_command(row, Path("/tmp/s"), ["paths.output_root=/tmp/o"])
    assert command[3:5] == ["train", "-m"] and "seed=0" in command
    assert "experiment=paper_mnist_mlp" in command
    assert "hydra.sweep.dir=/tmp/s" in command
    assert load_row("detection-mlp", quick=False).data.startswith("SYNTHETIC")


def test_an_unknown_row_is_one_clear_error(run_cli) -> None:
    done = run_cli("reproduce", "mnist-mpl", "--quick")
    assert done.returncode == 2
    assert "no reproduction row 'mnist-mpl'; choose one of" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_quick_mnist_mlp_passes_and_logs_on_the_parent(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("reproduce", "mnist-mlp", "--quick", f"paths.output_root={out}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: mean final test accuracy vs band [85.0, 100.0]%" in done.stdout
    assert "MNIST SUBSET" in done.stdout
    (md,) = out.glob("reproduce/mnist-mlp_*/reproduce.md")
    assert "**PASS**" in md.read_text()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`snnrun.reproduce.verdict` = 'PASS'",
    )
    assert parent.data.metrics["reproduce/test_acc_final_mean"] >= 85.0


@pytest.mark.slow
def test_quick_mnist_mlp_fails_when_the_surrogate_window_is_broken(
    run_cli, tmp_path: Path
) -> None:
    """A surrogate window too narrow to pass gradient: the network cannot learn."""
    out = tmp_path / "out"
    done = run_cli(
        "reproduce",
        "mnist-mlp",
        "--quick",
        f"paths.output_root={out}",
        "stbp.surrogate_a=0.0001",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL: mean final test accuracy vs band [85.0, 100.0]%" in done.stdout
