"""Every random stream of a run has its own seed: no stream or epoch shares one."""

from __future__ import annotations

import itertools

from snnrun import seeding
from snnrun.seeding import derive_seed, order_stream

NAMED = [
    seeding.DATA,
    seeding.INIT,
    seeding.TRAIN_ENCODING,
    seeding.VAL_ENCODING,
    seeding.TEST_ENCODING,
]


def test_streams_and_epochs_never_share_a_seed() -> None:
    streams = NAMED + [order_stream(epoch) for epoch in range(1000)]
    for seed in (0, 1, 2, 41, 10**6):
        seeds = [derive_seed(seed, s) for s in streams]
        assert len(set(seeds)) == len(seeds)
    # nor across run seeds: run 0's epoch-1 order is not run 1's anything
    across = {derive_seed(a, s) for a, s in itertools.product(range(20), streams)}
    assert len(across) == 20 * len(streams)


def test_seeds_are_deterministic_63_bit_ints() -> None:
    value = derive_seed(3, seeding.INIT)
    assert value == derive_seed(3, seeding.INIT)
    assert 0 <= value < 2**63
    assert derive_seed(3, seeding.INIT) != derive_seed(4, seeding.INIT)
