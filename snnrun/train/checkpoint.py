"""Checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is a plain dict of tensors, numbers and strings so it loads with
``torch.load(weights_only=True)`` (no code from a file runs). It holds all that exact
resume needs: model, optimiser and scheduler state, the position (epoch, batch), the
best accuracy so far, every generator's state and the tracking run id.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "snnrun-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says why and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A failure (disk full, no permission) leaves any previous file at ``path`` intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path}: {error.strerror or error}. The previous "
            "checkpoint (if any) is intact; free disk space or set paths.output_root "
            "to a writable folder, then resume"
        ) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code).

    Raises:
        CheckpointError: missing, truncated, foreign or newer-format file.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated, corrupt or not a snnrun checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); use the "
            "other checkpoint of that run (last.pt / best.pt) or start afresh"
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
    return state
