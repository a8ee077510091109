"""Progress hook, epoch lines, config tree and the terminal log filter."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.file_proxy import FileProxy

from snnrun.track.logfile import FILE_ONLY, FILE_ONLY_ATTR, mute_file_only_on_terminals
from snnrun.track.progress import (
    RichProgressHook,
    format_epoch_line,
    print_config_tree,
)
from snnrun.train.hooks import (
    BatchEnd,
    CheckpointSaved,
    EpochEnd,
    EvalStart,
    FitEnd,
    FitStart,
    Hook,
)

REPO = Path(__file__).resolve().parents[2]
METRICS = {
    "train/loss": 0.01234,
    "train/acc": 0.97123,
    "val/loss": 0.02,
    "val/acc": 0.978,
    "val/acc_best": 0.9785,
    "rate/layer1": 0.123456,
    "time/epoch_s": 26.14,
    "perf/samples_per_s": 2301.4,
}


def fit(hook: Hook, epochs: int = 2, batches: int = 4, *, end: bool = True) -> None:
    """Emit the events of a short fit, as the trainer does."""
    hook.on_fit_start(FitStart(epochs, 1, batches, batches * 8))
    for epoch in range(1, epochs + 1):
        for batch in range(1, batches + 1):
            hook.on_batch_end(BatchEnd(epoch, batch, batches, 0.5 / batch, 0.25, 8))
        hook.on_eval_start(EvalStart(epoch, 2))
        hook.on_epoch_end(EpochEnd(epoch, {"train/loss": 0.5, "val/acc": 0.9}))
        hook.on_checkpoint(CheckpointSaved(epoch, Path("last.pt"), "last"))
    if end:
        hook.on_fit_end(FitEnd("FINISHED"))


def test_format_epoch_line() -> None:
    assert format_epoch_line(3, 10, METRICS) == (
        "epoch 3/10  train/loss 0.01234  train/acc 97.12%  val/loss 0.02  "
        "val/acc 97.80% (best 97.85%)  rate/layer1 0.1235  26.1 s  2,301 samples/s"
    )


def test_format_epoch_line_without_base_or_timing() -> None:
    line = format_epoch_line(1, 2, {"val/acc_best": 0.5, "val/loss": float("nan")})
    assert line == "epoch 1/2  val/acc_best 50.00%  val/loss nan"


def test_non_terminal_logs_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    hook = RichProgressHook(console=console, log_every=2)
    caplog.set_level(logging.INFO, logger="snnrun")
    fit(hook)
    lines = [r.getMessage() for r in caplog.records if r.name == "snnrun"]
    assert len(lines) == 6  # batches 2 and 4 of each epoch, then the epoch line
    assert lines[1].startswith(
        "epoch 1/2  batch 4/4  train/loss 0.125  train/acc 25.00%"
    )
    assert lines[1].endswith(" samples/s")
    assert lines[2] == "epoch 1/2  train/loss 0.5  val/acc 90.00%"
    assert lines[5] == "epoch 2/2  train/loss 0.5  val/acc 90.00%"
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_terminal_draws_bars_and_prints_epoch_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    hook = RichProgressHook(console=console)
    caplog.set_level(logging.INFO, logger="snnrun")
    fit(hook)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "epoch 2/2  train/loss 0.5  val/acc 90.00%" in output
    assert "epochs" in output and "samples/s" in output
    # train.log still gets the line, marked so terminal handlers skip it
    records = [r for r in caplog.records if r.name == "snnrun"]
    assert [getattr(r, FILE_ONLY_ATTR, False) for r in records] == [True, True]
    assert not isinstance(sys.stdout, FileProxy)  # FitEnd closed the bars
    hook.close()  # a second close is harmless


def test_close_stops_the_bars_when_fit_raises() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    hook = RichProgressHook(console=console)
    fit(hook, end=False)  # no FitEnd, as when training raises
    assert isinstance(sys.stdout, FileProxy)  # live bars redirect stdout
    hook.close()
    assert not isinstance(sys.stdout, FileProxy)
    assert console.file.getvalue().endswith("\x1b[?25h")  # type: ignore[attr-defined]


def test_terminal_handlers_skip_file_only_records_while_muted(tmp_path: Path) -> None:
    class TerminalStream(io.StringIO):
        def isatty(self) -> bool:
            return True

    logger = logging.getLogger("snnrun.test_mute")
    logger.propagate = False
    terminal = logging.StreamHandler(TerminalStream())
    piped = logging.StreamHandler(io.StringIO())
    to_file = logging.FileHandler(tmp_path / "train.log")
    for handler in (terminal, piped, to_file):
        logger.addHandler(handler)
    try:
        unmute = mute_file_only_on_terminals(logger)
        logger.warning("for the file", extra=FILE_ONLY)
        unmute()
        logger.warning("everywhere", extra=FILE_ONLY)
    finally:
        for handler in (terminal, piped, to_file):
            logger.removeHandler(handler)
            handler.close()
    assert terminal.stream.getvalue() == "everywhere\n"
    assert piped.stream.getvalue() == "for the file\neverywhere\n"
    assert (tmp_path / "train.log").read_text() == "for the file\neverywhere\n"


def test_print_config_tree_shows_groups_and_leaves() -> None:
    config = {
        "seed": 0,
        "dataset": {"name": "mnist", "root": "[red]data"},
        "stbp": {"decay": 0.3, "detach_reset": True, "surrogate": {"name": "h1"}},
        "arch": {"widths": [800, 10]},
        "logger": {"tracking_uri": None},
    }
    console = Console(file=io.StringIO(), width=100, color_system=None)
    print_config_tree(config, console)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0] == "config"
    text = "\n".join(lines)
    for expected in ("seed: 0", "dataset", "root: [red]data", "stbp", "decay: 0.3"):
        assert expected in text
    for expected in ("detach_reset: true", "widths: [800, 10]", "tracking_uri: null"):
        assert expected in text
    assert "├── surrogate" in text or "└── surrogate" in text
    assert any(line.endswith("name: h1") and "│" in line for line in lines)


def test_importing_progress_does_not_import_mlflow() -> None:
    code = "import sys, snnrun.track.progress; assert 'mlflow' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_epoch_line_keeps_synops_detail_in_mlflow_only() -> None:
    from snnrun.models.synops import synops_metrics
    from snnrun.track.progress import format_epoch_line

    metrics = {"val/acc": 0.5, **synops_metrics([1000.0, 200.0], [5000.0, 100.0])}
    line = format_epoch_line(1, 2, metrics)
    assert "synops/total 1200" in line and "energy/snn_nj 1.08" in line
    assert "synops/layer1" not in line and "energy/ann_nj" not in line
