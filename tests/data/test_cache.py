"""The frame cache: keys, hits, misses, damaged files, atomic folders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from snnrun.data import ArraySplit, BuildContext
from snnrun.data import nmnist as nmnist_module
from snnrun.data.cache import (
    cache_key,
    file_list_hash,
    load_or_build,
    staged_dir,
)
from snnrun.data.nmnist import NMNISTConfig, build

PARAMS = {"bin_ms": 10.0, "time_steps": 30, "frame_mode": "binary"}


class CountingBuilder:
    """A build function that records how often it ran."""

    def __init__(self, n: int = 4) -> None:
        self.calls = 0
        self.split = ArraySplit(
            torch.arange(n * 6, dtype=torch.uint8).reshape(n, 2, 3),
            torch.arange(n, dtype=torch.int64) % 2,
        )

    def __call__(self) -> ArraySplit:
        self.calls += 1
        return self.split


def assert_same(a: ArraySplit, b: ArraySplit) -> None:
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


# --------------------------------------------------------------------- keys
def test_file_list_hash_tracks_names_and_sizes(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "1.bin", tmp_path / "b" / "2.bin"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(b"12345")
    first = file_list_hash(tmp_path, [a, b])
    assert file_list_hash(tmp_path, [b, a]) == first  # order does not matter
    assert file_list_hash(tmp_path, [a]) != first
    b.write_bytes(b"1234567890")
    assert file_list_hash(tmp_path, [a, b]) != first
    b.rename(tmp_path / "b" / "3.bin")
    assert file_list_hash(tmp_path, [a, tmp_path / "b" / "3.bin"]) != first


def test_cache_key_changes_with_every_parameter() -> None:
    key = cache_key(PARAMS, "files")
    assert key == cache_key(dict(reversed(PARAMS.items())), "files")
    assert len(key) == 64
    changed = [
        {**PARAMS, "bin_ms": 5.0},
        {**PARAMS, "time_steps": 31},
        {**PARAMS, "frame_mode": "count"},
        {**PARAMS, "denoise_ms": None},
    ]
    keys = {cache_key(p, "files") for p in changed} | {cache_key(PARAMS, "other")}
    assert key not in keys and len(keys) == len(changed) + 1


# ------------------------------------------------------------ load_or_build
def test_hit_does_not_build_again(tmp_path: Path) -> None:
    builder = CountingBuilder()
    first = load_or_build(tmp_path, "k1", "train", builder)
    second = load_or_build(tmp_path, "k1", "train", builder)
    assert builder.calls == 1
    assert_same(first, second)
    assert sorted(p.name for p in (tmp_path / "k1").iterdir()) == ["train.pt"]


def test_new_key_builds_a_new_entry(tmp_path: Path) -> None:
    builder = CountingBuilder()
    load_or_build(tmp_path, "k1", "train", builder)
    load_or_build(tmp_path, "k2", "train", builder)
    load_or_build(tmp_path, "k1", "test", builder)
    assert builder.calls == 3
    assert sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt")
    ) == [
        "k1/test.pt",
        "k1/train.pt",
        "k2/train.pt",
    ]


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not a torch file")


def corrupt_other_key(path: Path) -> None:
    torch.save(
        {"x": torch.zeros(2, 1), "y": torch.zeros(2, dtype=torch.int64), "key": "x"},
        path,
    )


def corrupt_misfit(path: Path) -> None:
    torch.save(
        {"x": torch.zeros(3, 1), "y": torch.zeros(2, dtype=torch.int64), "key": "k1"},
        path,
    )


@pytest.mark.parametrize(
    "damage", [corrupt_truncate, corrupt_garbage, corrupt_other_key, corrupt_misfit]
)
def test_damaged_file_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    builder = CountingBuilder()
    load_or_build(tmp_path, "k1", "train", builder)
    path = tmp_path / "k1" / "train.pt"
    damage(path)
    with caplog.at_level(logging.WARNING, logger="snnrun.data.cache"):
        again = load_or_build(tmp_path, "k1", "train", builder)
    assert builder.calls == 2
    assert_same(again, builder.split)
    assert any(
        "unusable" in r.message and str(path) in r.message for r in caplog.records
    )
    # the rebuilt file is good again: the next call is a hit
    load_or_build(tmp_path, "k1", "train", builder)
    assert builder.calls == 2


def test_no_cache_dir_always_builds(tmp_path: Path) -> None:
    builder = CountingBuilder()
    load_or_build(None, "k1", "train", builder)
    load_or_build(None, "k1", "train", builder)
    assert builder.calls == 2


def test_unwritable_cache_still_returns_the_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    builder = CountingBuilder()
    with caplog.at_level(logging.WARNING, logger="snnrun.data.cache"):
        got = load_or_build(blocker, "k1", "train", builder)
    assert_same(got, builder.split)
    assert any("cannot write cache file" in r.message for r in caplog.records)


# --------------------------------------------------------------- staged_dir
def test_staged_dir_publishes_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with staged_dir(target) as stage:
        assert not target.exists()
        (stage / "a.txt").write_text("done")
    assert (target / "a.txt").read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_publishes_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(target) as stage:
        (stage / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------- through the N-MNIST build
@pytest.fixture
def counted_binning(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of nmnist.bin_recordings (the expensive cold path)."""
    calls: list[int] = []
    real = nmnist_module.bin_recordings

    def counting(recordings, params):
        calls.append(len(recordings))
        return real(recordings, params)

    monkeypatch.setattr(nmnist_module, "bin_recordings", counting)
    return calls


def test_nmnist_build_uses_the_cache(
    shared_data: Path, tmp_path: Path, counted_binning: list[int]
) -> None:
    ctx = BuildContext(shared_data, tmp_path, 8, torch.Generator())
    cfg = NMNISTConfig(val_size=0, train_limit=20, test_limit=5)
    cold = build(cfg, ctx)
    assert counted_binning == [20, 5]
    warm = build(cfg, ctx)
    assert counted_binning == [20, 5]  # a hit: nothing binned again
    assert_same(cold.train, warm.train)
    assert_same(cold.test, warm.test)
    assert cold.meta == warm.meta
    entries = list((tmp_path / "nmnist").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(
        cold.meta.provenance["cache_key"]
    )


@pytest.mark.parametrize(
    ("override", "time_steps"),
    [
        ({"bin_ms": 5.0}, 8),
        ({"frame_mode": "count"}, 8),
        ({}, 9),
        ({"train_limit": 21}, 8),
    ],
)
def test_nmnist_parameter_change_makes_a_new_entry(
    shared_data: Path,
    tmp_path: Path,
    counted_binning: list[int],
    override: dict,
    time_steps: int,
) -> None:
    base = {"train_limit": 20, "test_limit": 5}
    build(
        NMNISTConfig(val_size=0, **base),
        BuildContext(shared_data, tmp_path, 8, torch.Generator()),
    )
    ctx = BuildContext(shared_data, tmp_path, time_steps, torch.Generator())
    changed = build(NMNISTConfig(val_size=0, **{**base, **override}), ctx)
    assert len(counted_binning) == 4  # both splits binned again
    assert len(list((tmp_path / "nmnist").iterdir())) == 2
    assert changed.train.x.shape[1] == time_steps


def test_nmnist_cache_off_writes_nothing(
    shared_data: Path, tmp_path: Path, counted_binning: list[int]
) -> None:
    ctx = BuildContext(shared_data, tmp_path, 4, torch.Generator())
    cfg = NMNISTConfig(val_size=0, train_limit=3, test_limit=2, cache=False)
    build(cfg, ctx)
    build(cfg, ctx)
    assert len(counted_binning) == 4
    assert not (tmp_path / "nmnist").exists()


def test_nmnist_corrupt_cache_is_rebuilt(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = BuildContext(shared_data, tmp_path, 4, torch.Generator())
    cfg = NMNISTConfig(val_size=0, train_limit=6, test_limit=2)
    good = build(cfg, ctx)
    (entry,) = (tmp_path / "nmnist").iterdir()
    corrupt_truncate(entry / "train.pt")
    with caplog.at_level(logging.WARNING, logger="snnrun.data.cache"):
        again = build(cfg, ctx)
    assert_same(good.train, again.train)
    assert any("rebuilding" in r.message for r in caplog.records)


@pytest.mark.parametrize("bad", ["shape", "count"])
def test_nmnist_cache_entry_of_the_wrong_shape_is_rebuilt(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    """Right key, wrong contents (a half-written or hand-edited entry): rebuilt."""
    ctx = BuildContext(shared_data, tmp_path, 4, torch.Generator())
    cfg = NMNISTConfig(val_size=0, train_limit=6, test_limit=2)
    good = build(cfg, ctx)
    (entry,) = (tmp_path / "nmnist").iterdir()
    payload = torch.load(entry / "train.pt", weights_only=True)
    if bad == "shape":  # frames of another T: what a training run would choke on
        payload["x"] = payload["x"][:, :2].clone()
    else:  # fewer samples than the key's file list names
        payload["x"], payload["y"] = payload["x"][:3].clone(), payload["y"][:3].clone()
    torch.save(payload, entry / "train.pt")
    with caplog.at_level(logging.WARNING, logger="snnrun.data.cache"):
        again = build(cfg, ctx)
    assert_same(good.train, again.train)
    assert any(
        "rebuilding" in r.message and "expected" in r.message for r in caplog.records
    )
    assert_same(good.train, build(cfg, ctx).train)  # the rebuilt entry is good
