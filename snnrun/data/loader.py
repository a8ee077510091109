"""Mini-batches straight from in-memory tensors (no DataLoader, no workers).

The data are already tensors, so a batch is one ``index_select`` per tensor. The
order of an epoch is a pure function of ``(seed, epoch)``: a fresh generator seeded
with ``derive_seed(seed, order_stream(epoch))`` (``snnrun/seeding.py``) draws the
permutation. A resumed run therefore needs
no loader state beyond the epoch and the batch to start from (``iter_from``).

Under DDP every rank builds the same permutation, pads it to a multiple of
``world_size`` by repeating its head, and takes every ``world_size``-th index starting
at its ``rank`` (as ``torch.utils.data.DistributedSampler`` does), so all ranks run
the same number of batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from snnrun.data import ArraySplit
from snnrun.seeding import derive_seed, order_stream


class BatchLoader:
    """Iterate ``(x, y)`` batches of one split, reshuffled per epoch.

    Args:
        split: the samples, ``x`` ``[N, ...]`` and ``y`` ``[N]``, on the CPU.
        batch_size: samples per batch (per rank under DDP).
        shuffle: permute every epoch; False keeps the stored order.
        seed: base seed of the per-epoch permutations.
        drop_last: skip a final batch smaller than ``batch_size``.
        rank: this process's index in ``[0, world_size)``.
        world_size: number of DDP processes sharing the split.
    """

    def __init__(
        self,
        split: ArraySplit,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size"
            )
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padded share of the split)."""
        return math.ceil(len(self.split) / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (0-based) for the next iteration."""
        self.epoch = int(epoch)

    def indices(self) -> Tensor:
        """This rank's sample order for the current epoch, int64 ``[num_samples]``."""
        n = len(self.split)
        if self.shuffle:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, order_stream(self.epoch))
            )
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:  # repeat the head (several times if n < world_size)
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield this epoch's batches from ``start_batch`` (0-based) to the end.

        Yields:
            ``x`` ``[b, ...]`` and ``y`` ``[b]`` CPU tensors, ``b <= batch_size``.
        """
        if not 0 <= start_batch <= len(self):
            raise ValueError(
                f"start_batch={start_batch}: an epoch has {len(self)} batches"
            )
        return self._batches(self.indices(), start_batch)

    def _batches(
        self, order: Tensor, start_batch: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield (
                self.split.x.index_select(0, index),
                self.split.y.index_select(0, index),
            )
