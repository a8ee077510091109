"""The training loop on its own: a tiny network, in-memory data, no Hydra, no MLflow."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from snnrun.data import ArraySplit
from snnrun.data.encoding import RateEncoder
from snnrun.data.loader import BatchLoader
from snnrun.models import mlp
from snnrun.models.readout import RateReadout
from snnrun.snn import LIFParams
from snnrun.train.checkpoint import CheckpointFolder, load_checkpoint
from snnrun.train.hooks import Hook
from snnrun.train.loop import Learner, LoopSettings, NonFiniteLossError, Trainer

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


def make_learner(readout=None, lr: float = 0.02) -> Learner:
    torch.manual_seed(0)
    p = LIFParams(decay=0.3, threshold=0.5)
    net = mlp.build(mlp.MLPConfig(hidden=[32], init="default"), (1, 4, 4), CLASSES, p)
    encoders = tuple(
        RateEncoder(6, torch.Generator().manual_seed(s)) for s in (1, 2, 3)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    readout = readout or RateReadout("paper")
    return Learner(net, optimizer, None, readout, encoders, torch.device("cpu"))


def make_trainer(
    folder: Path | None, epochs: int, hooks=(), readout=None, lr: float = 0.02,
    autocast: torch.dtype | None = None,
) -> Trainer:  # fmt: skip
    return Trainer(
        make_learner(readout, lr),
        list(hooks),
        LoopSettings(epochs=epochs, autocast=autocast),
        checkpoints=None if folder is None else CheckpointFolder(folder),
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


class Counting(RateReadout):
    """The paper's readout, counting how often the loop asks it for what."""

    def __init__(self) -> None:
        super().__init__("paper")
        object.__setattr__(self, "calls", {"rate": 0, "loss": 0, "predict": 0})

    def rate(self, spikes):
        self.calls["rate"] += 1
        return super().rate(spikes)

    def loss(self, rate, labels):
        self.calls["loss"] += 1
        return super().loss(rate, labels)

    def predict(self, rate):
        self.calls["predict"] += 1
        return super().predict(rate)


def test_the_loop_reads_the_network_only_through_its_readout() -> None:
    readout = Counting()
    train, val, test = loaders()
    make_trainer(None, 1, readout=readout).fit(train, val, test)
    steps = len(train)
    evals = len(val) + len(test)  # one pass each, repeats=1
    assert readout.calls == {
        "rate": 2 * steps + evals,  # the loss's rate and the accuracy's (detached)
        "loss": steps + evals,
        "predict": steps + evals,
    }


class Backwards(RateReadout):
    """A readout that predicts the class of the lowest rate: a broken answer."""

    def predict(self, rate):
        return rate.argmin(dim=1)


def test_a_different_readout_changes_what_is_reported() -> None:
    right = make_trainer(None, 2).fit(*loaders())
    wrong = make_trainer(None, 2, readout=Backwards()).fit(*loaders())
    # the loss (and so training) is the same; only the prediction differs
    assert wrong["train/loss"] == pytest.approx(right["train/loss"])
    assert right["val/acc"] > 0.9 and wrong["val/acc"] < 0.5


class InMemory:
    """Checkpoints kept in a dict: the loop writes only through its writer."""

    def __init__(self) -> None:
        self.saved: dict[str, list[int]] = {"last": [], "best": []}
        self.states: dict[str, dict] = {}

    def save(self, kind: str, state: dict) -> Path:
        self.saved[kind].append(int(state["epoch"]) - 1)
        self.states[kind] = state
        return Path(f"memory/{kind}.pt")

    def last(self) -> Path | None:
        return Path("memory/last.pt") if self.saved["last"] else None


def test_checkpoints_go_through_the_injected_writer(tmp_path: Path) -> None:
    store, recorder = InMemory(), Recorder()
    trainer = Trainer(
        make_learner(), [recorder], LoopSettings(epochs=3), checkpoints=store
    )
    with contextlib.chdir(tmp_path):
        trainer.fit(*loaders())
    assert store.saved["last"] == [1, 2, 3]
    assert store.saved["best"] and set(store.saved["best"]) <= {1, 2, 3}
    assert not list(tmp_path.rglob("*.pt"))  # nothing else was written
    # what the writer got restores the trainer exactly
    again = Trainer(make_learner(), settings=LoopSettings(epochs=3))
    again.load_state_dict(store.states["last"])
    for name, tensor in trainer.net.state_dict().items():
        assert torch.equal(tensor, again.net.state_dict()[name]), name


def test_a_blown_up_run_names_the_checkpoint_it_keeps(tmp_path: Path) -> None:
    class Explode(Hook):
        def __init__(self) -> None:
            self.trainer: Trainer | None = None

        def on_epoch_end(self, event) -> None:  # after epoch 1's checkpoint
            with torch.no_grad():
                next(self.trainer.net.parameters()).fill_(float("inf"))

    hook = Explode()
    trainer = make_trainer(tmp_path, 2, [hook])
    hook.trainer = trainer
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit(*loaders())
    assert f"{tmp_path / 'last.pt'} is kept" in str(raised.value)
    assert int(load_checkpoint(tmp_path / "last.pt")["epoch"]) == 2  # epoch 1 done


def test_bf16_runs_the_products_in_bf16_and_the_neurons_in_fp32() -> None:
    trainer = make_trainer(None, 3, autocast=torch.bfloat16)
    seen: dict[str, set] = {"products": set(), "neurons in": set(), "spikes": set()}

    def product(module, inputs, output) -> None:
        seen["products"].add(output.dtype)

    for module in trainer.net.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(product)
    lifs = [stage.lif for stage in trainer.net.stages]
    originals = [lif._run for lif in lifs]
    for lif, run in zip(lifs, originals, strict=True):

        def spy(x, p, run=run):  # what the recurrence is handed, and gives back
            seen["neurons in"].add(x.dtype)
            out = run(x, p)
            seen["spikes"].add(out.dtype)
            return out

        lif._run = spy
    last = trainer.fit(*loaders())
    assert seen["products"] == {torch.bfloat16}
    assert seen["neurons in"] == {torch.float32} and seen["spikes"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())
    assert last["val/acc"] > 0.9 and last["test/acc"] > 0.9  # chance is 1/3


def test_bf16_is_really_another_computation() -> None:
    fp32 = make_trainer(None, 1)
    bf16 = make_trainer(None, 1, autocast=torch.bfloat16)
    fp32.fit(*loaders())
    bf16.fit(*loaders())
    differ = [
        not torch.equal(a, b)
        for a, b in zip(fp32.net.parameters(), bf16.net.parameters(), strict=True)
    ]
    assert any(differ)  # the same seed and data: only the rounding differs
