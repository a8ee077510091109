"""Checkpoints: atomic writes, weights-only loads, and one clear CheckpointError for
every bad file (truncated, empty, foreign, random bytes, pickled code, full disk)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from snnrun.train import checkpoint
from snnrun.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

STATE = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 2, "batch": 0}
TRY_OTHER = "use the other checkpoint of that run"


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "last.pt"
    save_checkpoint(path, STATE)
    return path


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_round_trip_adds_the_marker(good: Path) -> None:
    state = load_checkpoint(good)
    assert (
        state["format"] == "snnrun-checkpoint"
        and state["version"] == checkpoint.VERSION
    )
    assert torch.equal(state["model"]["w"], STATE["model"]["w"])
    assert temp_files(good.parent) == []


@pytest.mark.parametrize("keep", [0.5, 0.9, 10])
def test_truncated_file(good: Path, keep: float) -> None:
    data = good.read_bytes()
    good.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError, match="truncated, corrupt") as info:
        load_checkpoint(good)
    assert str(good) in str(info.value) and TRY_OTHER in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "last.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [{"model": {"w": torch.ones(2)}}, [1, 2], "x"])
def test_foreign_torch_file_without_the_marker(tmp_path: Path, content: Any) -> None:
    torch.save(content, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a snnrun checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_random_bytes_always_give_a_checkpoint_error(tmp_path: Path) -> None:
    # Arbitrary bytes break torch's parsers in many ways (UnpicklingError,
    # IndexError, KeyError, UnicodeDecodeError ...): every one is a CheckpointError.
    rng = random.Random(0)
    path = tmp_path / "random.pt"
    for size in [1, 2, 5, 17, 100, 4096, *(rng.randrange(1, 3000) for _ in range(200))]:
        path.write_bytes(rng.randbytes(size))
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)


class RunsCode:
    """Unpickling this calls ``exec``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_pickled_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "snnrun-checkpoint", "x": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="was refused") as info:
        load_checkpoint(evil)
    assert "exec" in str(info.value) and "weights_only=True" in str(info.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_with_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    legacy = tmp_path / "legacy.pt"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        legacy.write_bytes(pickle.dumps({"x": RunsCode(marker)}, protocol=protocol))
        with pytest.raises(CheckpointError, match=str(legacy)):
            load_checkpoint(legacy)
    assert not marker.exists()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "snnrun-checkpoint", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer than this snnrun"):
        load_checkpoint(tmp_path / "new.pt")


# --- writing: a full disk or an unwritable folder ----------------------------------


class FillsUp:
    """A file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, handle: io.BufferedWriter, room: int) -> None:
        self.handle, self.room = handle, room

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()


@pytest.mark.parametrize("room", [0, 200, 1500])
def test_disk_full_while_writing(good: Path, monkeypatch, room: int) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        checkpoint.os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode), room)
    )
    bigger = {"model": {"w": torch.ones(50_000)}, "epoch": 3, "batch": 0}
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(good, bigger)
    message = str(info.value)
    assert "No space left on device" in message and str(good) in message
    assert "previous checkpoint (if any) is intact" in message
    monkeypatch.undo()
    assert temp_files(good.parent) == []
    assert load_checkpoint(good)["epoch"] == 2  # the previous checkpoint, unharmed


def test_disk_full_at_fsync(good: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(good, {**STATE, "epoch": 3})
    monkeypatch.undo()
    assert temp_files(good.parent) == []
    assert load_checkpoint(good)["epoch"] == 2


def test_folder_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / "a-file" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        save_checkpoint(target, STATE)


def test_interrupt_while_writing_keeps_the_previous_file(good: Path, monkeypatch):
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(good, {**STATE, "epoch": 3})
    monkeypatch.undo()
    assert temp_files(good.parent) == []
    assert load_checkpoint(good)["epoch"] == 2


def flip_tensor_bytes(path: Path, record: str = "data/0") -> None:
    """Flip bytes inside a stored tensor: the zip and pickle stay valid."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(record))
    with open(path, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(handle.read(2), "little") for _ in "ab")
        start = info.header_offset + 30 + name_len + extra_len
        handle.seek(start)
        data = bytearray(handle.read(4))
        handle.seek(start)
        handle.write(bytes(b ^ 0xFF for b in data))


def test_checksum_is_stored_and_checked(good: Path) -> None:
    state = load_checkpoint(good)
    assert state["sha256"] == checkpoint.state_checksum(state)
    assert len(state["sha256"]) == 64


def test_flipped_tensor_bytes_are_refused(good: Path) -> None:
    flip_tensor_bytes(good)
    raw = torch.load(good, weights_only=True)  # torch itself loads it silently
    assert not torch.equal(raw["model"]["w"], STATE["model"]["w"])
    with pytest.raises(CheckpointError, match="failed its integrity check") as info:
        load_checkpoint(good)
    assert TRY_OTHER in str(info.value)


def test_changed_number_is_refused(good: Path) -> None:
    state = torch.load(good, weights_only=True)
    state["epoch"] = 7  # a forged position, checksum left as it was
    torch.save(state, good)
    with pytest.raises(CheckpointError, match="failed its integrity check"):
        load_checkpoint(good)


def test_version_1_files_without_checksum_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, **STATE}, path)
    assert load_checkpoint(path)["epoch"] == 2


def test_weights_that_do_not_fit_name_the_layer() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    weights = {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(2)}
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_weights(net, weights, "x.pt")
    assert "0.weight: checkpoint (4, 3), network (2, 3)" in str(info.value)
    assert "x.pt" in str(info.value)
    with pytest.raises(CheckpointError, match=r"missing in the checkpoint: 0\.bias"):
        checkpoint.load_weights(net, {"0.weight": torch.zeros(2, 3)}, "x.pt")
