"""Data-parallel training: torchrun with 2 CPU ranks (gloo) against one process.

The torchrun test takes about 15 s on 2 cores (under the 20 s of the ``slow`` mark).

The equivalence run uses N-MNIST frames (no encoding noise) and plain SGD. DDP with
B/2 samples per rank averages the two half-batch gradients, which is the gradient of
the global batch of B that the single process sees, so both runs take the same steps
up to float32 summation order. Tolerance: weights ``rtol=1e-5, atol=1e-6`` (measured:
max |Δw| 1.2e-7 at |w| ≤ 0.93 after 8 steps, about float32 eps·|w|); losses and rates
``rel=1e-5`` (float64 sums of float32 batch values; measured: losses identical, rates
within 6e-8), accuracies exactly (the same spikes give the same predictions).
Adam is left out on purpose: it divides by sqrt(v) + 1e-8, so a gradient that is pure
rounding noise (|g| ≲ 1e-8) moves its weight by up to lr·|Δg|/1e-8 (measured 2.5e-6 at
lr=1e-3 on 3 of the first layer's weights), while the metrics still agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from snnrun.app.build import build_parts
from snnrun.app.train import train
from snnrun.seeding import derive_seed
from snnrun.train import distributed
from snnrun.train.checkpoint import load_checkpoint
from snnrun.train.loop import LoopSettings, Trainer
from snnrun.train.metrics import RunningMetrics

from .conftest import tiny

GLOBAL_BATCH = 32
RANKS = 2
# 128 train / 64 test samples: every shard is whole (no padded samples), 4 steps of
# 32 (single) or 2 × 16 (DDP) per epoch, 2 epochs.
EQUIVALENCE = (
    "debug=fast",
    "dataset=nmnist",
    "dataset.train_limit=128",
    "dataset.test_limit=64",
    "trainer.max_batches=null",
    "trainer.max_eval_batches=null",
    "trainer.epochs=2",
    "trainer.progress=plain",
    "optim=sgd",
    "optim.lr=0.5",
    "logger=mlflow",
)
COMPARED = ("train/loss", "val/loss", "rate/layer1", "rate/layer2")
EXACT = ("train/acc", "val/acc", "val/acc_best")


def batches(size: int) -> list[str]:
    return [f"trainer.batch_size={size}", f"trainer.eval_batch_size={size}"]


def history(store: str) -> tuple[object, dict[str, list[float]]]:
    """The store's only run and its metric histories (value per epoch)."""
    client = MlflowClient(store)
    experiments = client.search_experiments()
    runs = [r for e in experiments for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, f"expected exactly one MLflow run, found {len(runs)}"
    (run,) = runs
    values = {
        key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
        for key in (*COMPARED, *EXACT)
    }
    return run, values


def test_torchrun_two_ranks_equal_one_process_on_the_global_batch(
    compose_cfg, isolated: list[str], tmp_path: Path, shared_data: Path
) -> None:
    single_store = f"sqlite:///{tmp_path / 'single.db'}"
    cfg = compose_cfg(
        *EQUIVALENCE, *batches(GLOBAL_BATCH), f"logger.tracking_uri={single_store}"
    )
    train(cfg, tmp_path / "single", [])

    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        f"--nproc_per_node={RANKS}",
        *("-m", "snnrun", "train"),
        *isolated,
        *EQUIVALENCE,
        *batches(GLOBAL_BATCH // RANKS),
    ]
    env = {**os.environ, "SNNRUN_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    # One run folder for both ranks (rank 0's), rank 1 logging beside it.
    (run_dir,) = (tmp_path / "outputs" / "train").iterdir()
    assert {"train.log", "train_rank1.log", ".hydra", "checkpoints"} <= {
        p.name for p in run_dir.iterdir()
    }

    # Same weights; the checkpoint holds the unwrapped network (no "module." keys).
    ddp = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    assert ddp.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-5, atol=1e-6)

    # Exactly one tracked run (rank 0's), finished, with the reduced epoch metrics.
    store = next(a.split("=", 1)[1] for a in isolated if a.startswith("logger.track"))
    run, got = history(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["world_size"] == str(RANKS)
    _, want = history(single_store)
    for key in COMPARED:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    for key in EXACT:
        assert got[key] == want[key], key
    assert len(got["val/acc"]) == 2


# --- the pieces, in one process -------------------------------------------------------


def test_rank_comes_from_the_torchrun_environment() -> None:
    assert distributed.from_env({}) == distributed.RankInfo(0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    info = distributed.from_env(env)
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.is_distributed and not info.is_main
    with pytest.raises(distributed.LaunchError, match="RANK=4"):
        distributed.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert distributed.current() == distributed.RankInfo()  # no process group here


def test_a_sweep_under_torchrun_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    distributed.check_launch(["seed=1"])
    with pytest.raises(distributed.LaunchError, match="one torchrun per job"):
        distributed.check_launch(["-m", "seed=1,2"])
    assert distributed.exits_before_job(["--cfg", "job"])


def test_follower_overrides_pin_rank0_folder(compose_cfg, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from snnrun.app.schema import config_dir

    folder = tmp_path / "it's a run"
    overrides = distributed.follower_overrides(folder, rank=1)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.run.dir == str(folder)
    assert cfg.hydra.output_subdir is None
    assert cfg.hydra.job.name == "train_rank1"


def test_each_rank_draws_its_own_encoder_stream() -> None:
    def draws(rank: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1_000_003 * 7 + 3)
        distributed.split_streams([generator, None], rank)
        return torch.rand(4, generator=generator)

    assert torch.equal(draws(0), draws(0))
    assert torch.equal(
        draws(0), torch.rand(4, generator=torch.Generator().manual_seed(7_000_024))
    )
    rank1 = torch.Generator().manual_seed(derive_seed(7_000_024, "rank/1"))
    assert torch.equal(draws(1), torch.rand(4, generator=rank1))
    assert not torch.equal(draws(0), draws(1))
    assert not torch.equal(draws(1), draws(2))


def test_reduced_metrics_weigh_every_sample_alike() -> None:
    a, b = RunningMetrics(torch.device("cpu")), RunningMetrics(torch.device("cpu"))
    a.update(torch.tensor(1.0), torch.tensor([0, 1]), torch.tensor([0, 0]))
    b.update(torch.tensor(4.0), torch.tensor([1, 1, 1, 1]), torch.tensor([1] * 4))
    both = a.reduced(lambda t: t + b.totals())  # what a 2-rank all-reduce returns
    assert both.samples == 6 and int(both.correct) == 5
    assert both.loss == pytest.approx((1.0 * 2 + 4.0 * 4) / 6)
    assert a.reduced(None) is a


def test_trainer_reduces_train_eval_and_rates(compose_cfg, tmp_path: Path) -> None:
    parts = build_parts(compose_cfg(*tiny("trainer.max_batches=1")))
    seen: list[int] = []

    def twice(totals: torch.Tensor) -> torch.Tensor:  # two ranks with equal sums
        seen.append(totals.numel())
        return totals * 2

    def fit(reduce) -> dict[str, float]:
        parts.model.load_state_dict(initial)
        learner = replace(
            parts.learner(),
            optimizer=torch.optim.SGD(parts.model.parameters(), lr=0.0),
            scheduler=None,
        )
        trainer = Trainer(
            learner,
            settings=LoopSettings(epochs=1, max_batches=1, max_eval_batches=1),
            reduce=reduce,
        )
        for encoder in parts.encoders:
            encoder.generator.manual_seed(0)
        return trainer.fit(*parts.loaders)

    initial = {k: v.clone() for k, v in parts.model.state_dict().items()}
    alone, doubled = fit(None), fit(twice)
    layers = len([k for k in alone if k.startswith("rate/")])
    classes = 10
    # train, val, test totals; val SynOps per layer; test confusion; rates
    assert sorted(seen) == sorted([3, 3, layers, 3, classes**2, layers + 1])
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "synops/layer1",
        "synops/total",
        "energy/snn_nj",
        "test/loss",
        "test/acc",
        "rate/layer1",
    ):
        assert doubled[key] == pytest.approx(alone[key]), key
