"""The training loop on its own: a tiny network, in-memory data, no Hydra, no MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.data import ArraySplit
from snnrun.data.encoding import RateEncoder
from snnrun.data.loader import BatchLoader
from snnrun.models import mlp
from snnrun.models.readout import stbp_loss
from snnrun.snn import LIFParams
from snnrun.train.checkpoint import load_checkpoint
from snnrun.train.hooks import Hook
from snnrun.train.loop import LoopSettings, Trainer

CLASSES = 3


def blobs(n: int, seed: int) -> ArraySplit:
    """Three classes of 4x4 images, each bright in its own corner band."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    x = torch.randint(0, 60, (n, 1, 4, 4), generator=generator, dtype=torch.int64)
    for c in range(CLASSES):
        x[y == c, 0, c, :] += 190
    return ArraySplit(x.clamp(max=255).to(torch.uint8), y)


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.metrics: list[dict[str, float]] = []

    def on_fit_start(self, event) -> None:
        self.events.append("fit_start")

    def on_eval_start(self, event) -> None:
        self.events.append("eval_start")

    def on_epoch_end(self, event) -> None:
        self.events.append("epoch_end")
        self.metrics.append(event.metrics)

    def on_checkpoint(self, event) -> None:
        self.events.append(f"checkpoint:{event.kind}")

    def on_fit_end(self, event) -> None:
        self.events.append(f"fit_end:{event.status}")


def make_trainer(folder: Path | None, epochs: int, hooks=()) -> Trainer:
    torch.manual_seed(0)
    p = LIFParams(decay=0.3, threshold=0.5)
    net = mlp.build(mlp.MLPConfig(hidden=[32], init="default"), (1, 4, 4), CLASSES, p)
    encoders = tuple(
        RateEncoder(6, torch.Generator().manual_seed(s)) for s in (1, 2, 3)
    )
    return Trainer(
        net,
        torch.optim.Adam(net.parameters(), lr=0.02),
        None,
        lambda rate, y: stbp_loss(rate, y, "paper"),
        encoders,
        torch.device("cpu"),
        list(hooks),
        LoopSettings(epochs=epochs, checkpoint_dir=folder),
    )


def loaders():
    train = BatchLoader(blobs(240, 0), 20, shuffle=True, seed=0)
    val = BatchLoader(blobs(60, 1), 30, shuffle=False, seed=0)
    test = BatchLoader(blobs(60, 2), 30, shuffle=False, seed=0)
    return train, val, test


def test_it_learns_and_reports_in_order(tmp_path: Path) -> None:
    recorder = Recorder()
    trainer = make_trainer(tmp_path, 4, [recorder])
    last = trainer.fit(*loaders())
    first = recorder.metrics[0]
    assert last["train/loss"] < first["train/loss"]
    assert last["val/acc"] > 0.9 and last["test/acc"] > 0.9  # chance is 1/3
    assert (
        recorder.events[0] == "fit_start" and recorder.events[-1] == "fit_end:FINISHED"
    )
    # per epoch: evaluation, then the checkpoints, then the tracker sees the metrics
    epoch1 = recorder.events[1 : recorder.events.index("epoch_end") + 1]
    assert epoch1 == ["eval_start", "checkpoint:last", "checkpoint:best", "epoch_end"]
    best = load_checkpoint(tmp_path / "best.pt")
    val = [m["val/acc"] for m in recorder.metrics]
    assert int(best["best_epoch"]) == max(
        i for i, v in enumerate(val, 1) if v == max(val)
    )


def test_resuming_from_a_checkpoint_gives_the_same_weights(tmp_path: Path) -> None:
    straight = make_trainer(tmp_path / "a", 3)
    straight.fit(*loaders())
    first = make_trainer(tmp_path / "b", 2)
    first.fit(*loaders())
    resumed = make_trainer(tmp_path / "b", 3)
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "last.pt"))
    resumed.fit(*loaders())
    for name, tensor in straight.net.state_dict().items():
        assert torch.equal(tensor, resumed.net.state_dict()[name]), name


def test_an_interrupt_is_killed_and_keeps_a_consistent_checkpoint(
    tmp_path: Path,
) -> None:
    class StopAfterThree(Hook):
        def __init__(self, trainer: Trainer) -> None:
            self.trainer, self.seen = trainer, 0

        def on_batch_end(self, event) -> None:
            self.seen += 1
            if self.seen == 3:
                self.trainer.request_stop()

    recorder = Recorder()
    trainer = make_trainer(tmp_path, 2, [recorder])
    trainer.hooks.append(StopAfterThree(trainer))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*loaders())
    assert recorder.events[-1] == "fit_end:KILLED"
    saved = load_checkpoint(tmp_path / "last.pt")
    assert (int(saved["epoch"]), int(saved["batch"])) == (1, 3)


def test_without_a_validation_split_nothing_is_selected(tmp_path: Path) -> None:
    train, _val, test = loaders()
    metrics = make_trainer(tmp_path, 1).fit(train, None, test)
    assert "val/acc" not in metrics and "test/acc" in metrics
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
