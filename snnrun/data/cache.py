"""On-disk cache for derived data (binned event frames) and atomic folder writes.

Layout: ``<cache_dir>/<key>/<split>.pt``, each a ``torch.save`` of
``{"x": Tensor, "y": Tensor, "key": str}``. The key is ``cache_key(params,
file_hash)``: a SHA256 over the JSON of every transform parameter (plus
``CACHE_FORMAT_VERSION``) and the hash of the source file list, so changing any
parameter, the number of time steps or a source file gives a new key and a new entry;
nothing is ever overwritten in place. Old entries are never deleted automatically:
remove ``<cache_root>/nmnist`` to reclaim the space.

Files are written to a temp file beside the target and renamed with ``os.replace``
(atomic within a folder), so a crash or a concurrent builder never leaves a partial
file under the final name. A file that cannot be loaded, or whose content does not
match its key, is logged as a warning and rebuilt: the cache is never trusted blindly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from snnrun.data import ArraySplit

log = logging.getLogger(__name__)

# Bump when the stored layout or the meaning of a parameter changes.
CACHE_FORMAT_VERSION = 1


def file_list_hash(root: Path, files: Sequence[Path]) -> str:
    """SHA256 (hex) over the sorted ``relative/path<TAB>size_in_bytes`` lines of files.

    Identifies a set of source files cheaply (no file content is read): adding,
    removing, renaming or resizing a file changes it; the order of ``files`` does not.
    """
    lines = sorted(
        f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}" for f in files
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def cache_key(params: Mapping[str, object], file_hash: str) -> str:
    """SHA256 (hex) of the JSON-encoded ``params`` + format version + ``file_hash``."""
    blob = json.dumps(
        {"format": CACHE_FORMAT_VERSION, "params": dict(params), "files": file_hash},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load_or_build(
    cache_dir: Path | None,
    key: str,
    split: str,
    build_fn: Callable[[], ArraySplit],
    sample_shape: tuple[int, ...] | None = None,
    count: int | None = None,
) -> ArraySplit:
    """Return the split stored under ``key``, or build, store and return it.

    Args:
        cache_dir: folder of this dataset's entries (e.g. ``<cache_root>/nmnist``);
            None disables the cache (always build, store nothing).
        key: ``cache_key(...)`` of everything the split depends on.
        split: file stem, e.g. ``"train"`` → ``<cache_dir>/<key>/train.pt``.
        build_fn: makes the split when the cache misses; called at most once.
        sample_shape: the shape of one sample (``x[i]``); an entry of another shape
            (right key, wrong contents) is rebuilt like a corrupt one.
        count: the number of samples; an entry with another count is rebuilt.

    Returns:
        The split, loaded or freshly built. A cache that cannot be written (read-only
        folder, full disk) is logged and the built split returned anyway.
    """
    if cache_dir is None:
        return build_fn()
    path = Path(cache_dir) / key / f"{split}.pt"
    if path.is_file():
        cached = _load(path, key, sample_shape, count)
        if cached is not None:
            log.info("cache hit: %s", path)
            return cached
    split_data = build_fn()
    _store(path, key, split_data)
    return split_data


def _load(
    path: Path,
    key: str,
    sample_shape: tuple[int, ...] | None = None,
    count: int | None = None,
) -> ArraySplit | None:
    """The cached split, or None (with a warning) when the file is unusable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        _check_payload(payload, key)
        _check_shape(payload["x"], sample_shape, count)
        return ArraySplit(payload["x"], payload["y"])
    # Anything can come out of a damaged file (zip, pickle, shape errors): rebuild.
    except Exception as err:
        log.warning(
            "cache file %s is unusable (%s: %s); rebuilding it",
            path,
            type(err).__name__,
            err,
        )
        return None


def _check_payload(payload: object, key: str) -> None:
    """Raise ValueError unless ``payload`` is a split stored under ``key``."""
    if not isinstance(payload, dict) or payload.get("key") != key:
        raise ValueError("not an entry for this cache key")
    x, y = payload.get("x"), payload.get("y")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x or y is not a tensor")
    if y.dtype != torch.int64 or y.dim() != 1 or x.shape[:1] != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} do not fit")


def _check_shape(
    x: torch.Tensor, sample_shape: tuple[int, ...] | None, count: int | None
) -> None:
    """Raise ValueError unless ``x`` holds ``count`` samples of ``sample_shape``."""
    if sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape):
        raise ValueError(
            f"samples of shape {tuple(x.shape[1:])}, expected {tuple(sample_shape)}"
        )
    if count is not None and x.shape[0] != count:
        raise ValueError(f"{x.shape[0]} samples, expected {count}")


def _store(path: Path, key: str, split_data: ArraySplit) -> None:
    """Write the split atomically; log (do not raise) when that is impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"x": split_data.x, "y": split_data.y, "key": key}, f)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as err:
        log.warning("cannot write cache file %s (%s); continuing without it", path, err)
        return
    log.info("cache stored: %s", path)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``target``; rename it to ``target`` on success.

    Fill the yielded folder inside the ``with`` block. On a clean exit it becomes
    ``target`` in one rename, so readers see either nothing or the complete folder. If
    ``target`` appeared meanwhile (a concurrent builder won), that folder is kept and
    ours dropped. On an exception the temp folder is removed and nothing is published.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    )
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s was created concurrently; keeping that copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
