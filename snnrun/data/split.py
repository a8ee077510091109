"""The held-out validation split, carved from a dataset's training set.

Model selection (``val/acc_best``, ``best.pt``, a sweeper's objective) reads only this
split; the test set is evaluated and reported beside it, never selected on.

The split is a pure function of ``(n, dataset.val_size, dataset.val_seed)`` over the
*full* training set, before ``dataset.train_limit``: a shorter run validates on the
same samples as a full one, and a model seed never moves them. ``train_limit`` then
keeps the first N of the remaining samples, in their stored order.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from snnrun.data import SHORT_HASH, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainValPlan:
    """Which samples of the full training set train and which validate.

    Attributes:
        train: indices into the full training set, int64 ``[N_train]``, ascending,
            already cut to ``train_limit``.
        val: indices of the validation samples, int64 ``[N_val]``, ascending; empty
            when ``val_size`` is 0.
        digest: short SHA256 of the validation indices (provenance), ``"none"`` if empty.
    """

    train: Tensor
    val: Tensor
    digest: str

    def facts(self, val_size: float, val_seed: int) -> dict[str, str]:
        """Provenance entries for MLflow."""
        return {
            "n_val": str(len(self.val)),
            "val_size": _plain(val_size),
            "val_seed": str(val_seed),
            "val_indices_sha256": self.digest,
        }


def val_count(n: int, val_size: float) -> int:
    """Samples to hold out of ``n``: ``val_size`` < 1 is a fraction, >= 1 a count.

    Raises:
        DataError: negative, non-integral count, or nothing left to train on.
    """
    if not (math.isfinite(val_size) and val_size >= 0):
        raise DataError(
            f"dataset.val_size={_plain(val_size)}: must be a count >= 1, a fraction in "
            "(0, 1), or 0 for no validation split; try dataset.val_size=0.1"
        )
    if val_size < 1:
        count = round(val_size * n)
        if val_size > 0 and count == 0:
            count = 1
    elif float(val_size).is_integer():
        count = int(val_size)
    else:
        raise DataError(
            f"dataset.val_size={_plain(val_size)}: a value >= 1 counts samples and "
            "must be a whole number; use e.g. 5000, or a fraction such as 0.1"
        )
    if count >= n:
        raise DataError(
            f"dataset.val_size={_plain(val_size)} holds out {count} of the {n} "
            "training samples and leaves none to train on; use a smaller count or a "
            "fraction such as dataset.val_size=0.1"
        )
    return count


def plan_train_val(
    n: int, val_size: float, val_seed: int, train_limit: int | None
) -> TrainValPlan:
    """Split ``n`` training samples into train and validation indices.

    Args:
        n: samples in the full training set.
        val_size: fraction (< 1) or count (>= 1) to hold out; 0: no validation split.
        val_seed: seed of the hold-out draw (independent of the run's ``seed``).
        train_limit: keep only the first N remaining training samples (None: all).
    """
    count = val_count(n, val_size)
    generator = torch.Generator().manual_seed(int(val_seed))
    order = torch.randperm(n, generator=generator)
    val = order[:count].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    train = keep.nonzero().flatten()
    if train_limit is not None:
        warn_limit(
            "dataset.train_limit", train_limit, len(train), "after the validation split"
        )
        train = train[:train_limit]
    return TrainValPlan(train, val, indices_digest(val))


def warn_limit(key: str, limit: int, available: int, where: str = "") -> None:
    """Warn when a ``*_limit`` asks for more samples than there are: it then has no
    effect, which is easy to miss (a typo of one zero too many)."""
    if limit > available:
        log.warning(
            "%s=%d is larger than the %d samples available%s: using all %d; lower "
            "it or set it to null",
            key,
            limit,
            available,
            f" {where}" if where else "",
            available,
        )


def indices_digest(indices: Tensor) -> str:
    """Short SHA256 of int64 indices (``"none"`` for none): identifies a split."""
    if indices.numel() == 0:
        return "none"
    data = indices.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:SHORT_HASH]


def _plain(value: float) -> str:
    """5000.0 → "5000", 0.1 → "0.1" (as a user types it)."""
    return str(int(value)) if float(value).is_integer() else str(value)
