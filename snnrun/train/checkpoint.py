"""Checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is a plain dict of tensors, numbers and strings so it loads with
``torch.load(weights_only=True)`` (no code from a file runs). It holds all that exact
resume needs: model, optimiser and scheduler state, the position (epoch, batch), the
best accuracy so far, every generator's state and the tracking run id.

Every checkpoint carries a SHA-256 over its contents (each tensor's dtype, shape and
bytes, every other value's repr), checked on every load: a flipped byte inside a
tensor, which torch would load without complaint, is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import IO, Any

import torch

FORMAT = "snnrun-checkpoint"
VERSION = 2  # 2: a "sha256" entry over the contents (version 1 files have none)
CHECKSUM_KEY = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says why and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A failure (disk full, no permission) leaves any previous file at ``path`` intact.
    """
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload[CHECKSUM_KEY] = state_checksum(payload)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            _torch_save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)  # make the rename itself survive a power loss


class CheckpointFolder:
    """The loop's checkpoint writer: ``<folder>/<kind>.pt`` (``last``, ``best``),
    each written atomically by :func:`save_checkpoint`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(self, kind: str, state: dict[str, Any]) -> Path:
        """Write ``state`` as ``<kind>.pt``; returns the file."""
        path = self.folder / f"{kind}.pt"
        save_checkpoint(path, state)
        return path

    def last(self) -> Path | None:
        """``last.pt`` when one has been written, else None."""
        path = self.folder / "last.pt"
        return path if path.is_file() else None


def _write_error(path: Path, error: OSError) -> CheckpointError:
    """The message for a checkpoint that could not be written."""
    return CheckpointError(
        f"could not write checkpoint {path}: {error.strerror or error}. The previous "
        f"checkpoint (if any) is intact; free disk space or make {path.parent} "
        "writable, then resume (a resumed run writes into its own folder, whatever "
        "paths.output_root says)"
    )


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk; best effort (not every OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code).

    Raises:
        CheckpointError: missing, truncated, foreign or newer-format file.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes); use the other checkpoint of that "
            "run (last.pt / best.pt) or start afresh"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refused(path, error) from error
    # Arbitrary bytes can break the parser in any way (IndexError, KeyError, ...).
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated, corrupt or not a snnrun checkpoint "
            f"({_first_line(error)}); use the other checkpoint of that run "
            "(last.pt / best.pt) or start afresh"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a snnrun checkpoint (no '{FORMAT}' marker): pass a file "
            "written by `snnrun train` (outputs/train/<time>/checkpoints/last.pt)"
        )
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['version']}, newer than this snnrun "
            f"understands ({VERSION}); upgrade snnrun"
        )
    _verify(path, state)
    return state


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 (hex) over everything in ``state`` except its own checksum entry.

    Tensors contribute their dtype, shape and raw bytes (on the CPU, so the device a
    checkpoint is loaded onto does not matter); other values their type and repr.
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` (nested dicts, lists, tuples, tensors, scalars) to ``digest``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r};".encode())


def _verify(path: Path, state: dict[str, Any]) -> None:
    """Raise CheckpointError unless the stored checksum matches the contents."""
    if state.get("version", 0) < 2:
        return  # written before checksums existed
    stored = state.get(CHECKSUM_KEY)
    actual = state_checksum(state)
    if stored != actual:
        raise CheckpointError(
            f"checkpoint {path} failed its integrity check: its contents hash to "
            f"SHA-256 {actual[:16]}…, but it was saved as {str(stored)[:16]}… (the "
            "file was altered or damaged after it was written); use the other "
            "checkpoint of that run (last.pt / best.pt) or start afresh"
        )


def load_weights(
    net: torch.nn.Module, weights: dict[str, Any], source: object = "the checkpoint"
) -> None:
    """``net.load_state_dict(weights)``; a mismatch raises CheckpointError naming the
    layers and shapes instead of torch's traceback."""
    expected = net.state_dict()
    problems = [
        f"{name}: checkpoint {tuple(weights[name].shape)}, network "
        f"{tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in weights
        and isinstance(weights[name], torch.Tensor)
        and weights[name].shape != tensor.shape
    ]
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing:
        problems.append(f"missing in the checkpoint: {', '.join(missing)}")
    if extra:
        problems.append(f"not in the network: {', '.join(extra)}")
    if problems:
        raise CheckpointError(
            f"the weights in {source} do not fit the architecture built from its "
            f"config ({'; '.join(problems)}); pass a checkpoint written by `snnrun "
            "train` for this network, unchanged"
        )
    net.load_state_dict(weights)


class _ErrorKeepingWriter:
    """A file wrapper for ``torch.save`` that keeps the first ``OSError`` of a write.

    torch's zip writer swallows the exception its ``write`` callback raises and fails
    later with an opaque ``RuntimeError`` ("unexpected pos ..."); a full disk must
    instead be reported as ``[Errno 28] No space left on device``.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _torch_save(payload: dict[str, Any], handle: IO[bytes]) -> None:
    """``torch.save`` into ``handle``; a failed write raises its own ``OSError``."""
    writer = _ErrorKeepingWriter(handle)
    try:
        torch.save(payload, writer)
    except RuntimeError:
        if writer.error is not None:
            raise writer.error from None
        raise


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0][:200] if lines else "no details"
    return f"{type(error).__name__}: {text}"


def _refused(path: Path, error: pickle.UnpicklingError) -> CheckpointError:
    """The message for a file the weights-only unpickler would not load."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found:
        return CheckpointError(
            f"{path} was refused: it holds pickled code or objects ({found.group(1)}) "
            "that a snnrun checkpoint never contains, so it is not a snnrun checkpoint "
            "or it was tampered with. Nothing in it was run (checkpoints load with "
            "torch.load(weights_only=True)); pass a checkpoint written by `snnrun train`"
        )
    return CheckpointError(
        f"checkpoint {path} is corrupt or not a torch file (its bytes are not a "
        "checkpoint: the unpickler stopped at an unknown instruction; nothing in it was "
        "run); use the other checkpoint of that run (last.pt / best.pt) or start afresh"
    )
