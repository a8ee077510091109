"""The validation split: disjoint, seeded, fixed across limits, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.data import BuildContext, DataError
from snnrun.data.mnist import MNISTConfig, build
from snnrun.data.split import plan_train_val, val_count


def test_counts_and_fractions() -> None:
    assert val_count(60_000, 5000) == 5000
    assert val_count(1000, 0.1) == 100
    assert val_count(10, 0.01) == 1  # a positive fraction never rounds to nothing
    assert val_count(10, 0) == 0


@pytest.mark.parametrize("bad", [-1, 2.5, float("nan"), 60_000, 1e9])
def test_bad_sizes_are_refused_with_the_key(bad: float) -> None:
    with pytest.raises(DataError, match=r"dataset\.val_size"):
        val_count(60_000, bad)


def test_plan_is_disjoint_complete_and_seeded() -> None:
    plan = plan_train_val(1000, 0.1, 7, None)
    train, val = set(plan.train.tolist()), set(plan.val.tolist())
    assert len(val) == 100 and len(train) == 900
    assert not train & val and train | val == set(range(1000))
    again = plan_train_val(1000, 0.1, 7, None)
    assert torch.equal(again.val, plan.val) and again.digest == plan.digest
    other = plan_train_val(1000, 0.1, 8, None)
    assert not torch.equal(other.val, plan.val) and other.digest != plan.digest
    # labels of a sorted dataset: the held-out draw is random, not the tail
    assert plan.val.min() < 500 < plan.val.max()


def test_train_limit_never_moves_the_validation_samples() -> None:
    full = plan_train_val(1000, 100, 0, None)
    short = plan_train_val(1000, 100, 0, 50)
    assert torch.equal(full.val, short.val)
    assert torch.equal(short.train, full.train[:50])


def test_mnist_holds_out_5000_training_images(shared_data: Path) -> None:
    ctx = BuildContext(shared_data, shared_data, 4, torch.Generator())
    bundle = build(MNISTConfig(download=False), ctx)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (
        55_000,
        5000,
        10_000,
    )
    facts = bundle.meta.provenance
    assert facts["n_val"] == "5000" and facts["val_seed"] == "0"
    assert len(facts["val_indices_sha256"]) == 16
    # the validation images are training images, none of them also trained on
    plain = build(MNISTConfig(download=False, val_size=0), ctx)
    assert plain.val is None and len(plain.train) == 60_000
    plan = plan_train_val(60_000, 5000, 0, None)
    assert torch.equal(bundle.val.x, plain.train.x[plan.val])
    assert torch.equal(bundle.train.y, plain.train.y[plan.train])
