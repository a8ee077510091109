"""BatchLoader: epoch order as a pure function of (seed, epoch), resume, DDP shards."""

from __future__ import annotations

import pytest
import torch

from snnrun.data import ArraySplit
from snnrun.data.loader import BatchLoader

N = 23


def split(n: int = N) -> ArraySplit:
    """x[i] is filled with i (as [1, 2, 2] uint8), y[i] = i: batches reveal indices."""
    ids = torch.arange(n)
    return ArraySplit(ids.to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2), ids)


def seen(loader: BatchLoader) -> list[int]:
    return [i for _, y in loader for i in y.tolist()]


def test_batches_cover_every_sample_once_and_match_x() -> None:
    loader = BatchLoader(split(), 5, shuffle=True, seed=1)
    order = seen(loader)
    assert sorted(order) == list(range(N)) and order != list(range(N))
    for x, y in loader:
        assert x.shape == (len(y), 1, 2, 2) and x.dtype == torch.uint8
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_last_batch_smaller_and_len() -> None:
    loader = BatchLoader(split(), 5, shuffle=True, seed=1)
    assert [len(y) for _, y in loader] == [5, 5, 5, 5, 3]
    assert len(loader) == 5


def test_drop_last() -> None:
    loader = BatchLoader(split(), 5, shuffle=True, seed=1, drop_last=True)
    assert [len(y) for _, y in loader] == [5, 5, 5, 5]
    assert len(loader) == 4


def test_epochs_differ_and_are_reproducible() -> None:
    a = BatchLoader(split(), 4, shuffle=True, seed=7)
    b = BatchLoader(split(), 4, shuffle=True, seed=7)
    first = seen(a)
    a.set_epoch(1)
    second = seen(a)
    assert first != second and sorted(second) == list(range(N))
    b.set_epoch(1)
    assert seen(b) == second  # same (seed, epoch), fresh object: same order
    assert seen(b) == second  # iterating again does not advance anything
    b.set_epoch(0)
    assert seen(b) == first


def test_seeds_differ() -> None:
    a = seen(BatchLoader(split(), 4, shuffle=True, seed=1))
    b = seen(BatchLoader(split(), 4, shuffle=True, seed=2))
    assert a != b


def test_no_shuffle_keeps_order() -> None:
    loader = BatchLoader(split(), 4, shuffle=False, seed=5)
    loader.set_epoch(3)
    assert seen(loader) == list(range(N))


@pytest.mark.parametrize("start", [0, 1, 3, 5])
def test_iter_from_equals_tail(start: int) -> None:
    loader = BatchLoader(split(), 5, shuffle=True, seed=3)
    loader.set_epoch(2)
    full = [y.tolist() for _, y in loader]
    tail = [y.tolist() for _, y in loader.iter_from(start)]
    assert tail == full[start:]


def test_iter_from_out_of_range() -> None:
    loader = BatchLoader(split(), 5, shuffle=True, seed=3)
    with pytest.raises(ValueError, match="start_batch=6: an epoch has 5 batches"):
        loader.iter_from(6)


@pytest.mark.parametrize(("n", "world_size"), [(23, 2), (23, 4), (3, 4)])
def test_ranks_cover_everything_with_equal_lengths(n: int, world_size: int) -> None:
    loaders = [
        BatchLoader(split(n), 3, shuffle=True, seed=9, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for loader in loaders:
        loader.set_epoch(1)
    shards = [seen(loader) for loader in loaders]
    assert len({len(loader) for loader in loaders}) == 1
    assert len({len(shard) for shard in shards}) == 1
    together = [i for shard in shards for i in shard]
    assert set(together) == set(range(n))
    assert len(together) == -(-n // world_size) * world_size  # padded by repeats


def test_ranks_follow_distributed_sampler_layout() -> None:
    order = BatchLoader(split(), 100, shuffle=True, seed=9).indices()
    padded = torch.cat([order, order[:1]])  # 23 → 24 for two ranks
    for rank in range(2):
        loader = BatchLoader(
            split(), 100, shuffle=True, seed=9, rank=rank, world_size=2
        )
        assert torch.equal(loader.indices(), padded[rank::2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2, "rank": 2, "world_size": 2}, "rank=2, world_size=2"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchLoader(split(), shuffle=True, seed=0, **kwargs)
