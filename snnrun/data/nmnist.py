"""N-MNIST event recordings, binned into ``stbp.time_steps`` frames (STBP spec §6).

Folder layout (the official archives, and ``../shared/data/nmnist-sample``)::

    <root>/Train/<digit>/<mnist-index:05d>.bin     (60,000 files in the full set)
    <root>/Test/<digit>/<mnist-index:05d>.bin      (10,000 files)

``dataset.root=null`` looks in ``<data_root>/nmnist`` (full set), then
``<data_root>/nmnist-sample`` (the real 1,000/100 subset). With ``download=true`` and
neither present, the official archives are fetched and extracted into
``<data_root>/nmnist`` (``nmnist_download.py``).

Reading: each file is read once with ``numpy.fromfile`` and decoded and validated by
``events.decode_nmnist`` (tonic's ``read_mnist_file`` decodes the same bits, which a
test checks, but it silently drops y = 240 overflow events and shifts later
timestamps, and never checks the length, so a corrupt file would train silently);
files listed in the folder's ``SHA256SUMS``, if any, are checked first
(``sha256sums.py``).
Binning: ``events.bin_events`` (the spec's ``floor((t - t_start) / bin)``, exactly T
frames). tonic supplies the optional ``Denoise`` filter (imported only when used:
importing tonic costs over a second). Binned frames are cached on disk (``cache.py``).

Sample order: by file name (the MNIST index), then digit, i.e. MNIST order, so
``train_limit`` keeps the first N MNIST indices and a mix of all digits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from snnrun.data import (
    SHORT_HASH,
    ArraySplit,
    BuildContext,
    DataBundle,
    DataError,
    DataMeta,
    check_limits,
)
from snnrun.data.cache import cache_key, file_list_hash, load_or_build
from snnrun.data.events import (
    FRAME_MODES,
    NMNIST_SENSOR_HW,
    EventFormatError,
    bin_events,
    decode_nmnist,
)
from snnrun.data.nmnist_download import ARCHIVES, download_nmnist
from snnrun.data.sha256sums import checksum_facts, read_sha256sums, verify_files
from snnrun.data.split import plan_train_val

log = logging.getLogger(__name__)

NUM_CLASSES = 10
FULL_COUNTS = {"train": 60_000, "test": 10_000}
SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
POLARITY_MODES = ("split", "merge")
_DIGITS = frozenset("0123456789")


@dataclass
class NMNISTConfig:
    """``dataset=nmnist``; T is ``stbp.time_steps`` (spec §6 gives the defaults).

    Attributes:
        name: registry key.
        root: folder holding ``Train/`` and ``Test/``; None: ``<data_root>/nmnist``,
            else ``<data_root>/nmnist-sample``.
        bin_ms: frame width in ms; event → frame ``floor((t - t_start) / bin)``.
        t_start_ms: start of frame 0 in ms; events before it or after
            ``t_start + T * bin`` are dropped.
        frame_mode: ``"binary"`` (min(count, 1), a spike train) or ``"count"``
            (events per pixel and frame, clipped to 255).
        polarity: ``"split"`` (2 channels, one per polarity) or ``"merge"`` (1
            channel counting both).
        denoise_ms: tonic ``Denoise`` filter time in ms (drops events with no
            neighbour within 1 pixel and this time); None: off (the spec's default).
        download: fetch the full set (~1 GB) when no folder is found.
        train_limit: keep the first N training recordings (MNIST order); None: all.
        test_limit: keep the first N test recordings; None: all.
        val_size: training recordings held out for validation and model selection:
            a count (>= 1) or a fraction (< 1); 0 turns the split off.
        val_seed: seed of the hold-out draw (the split stays fixed across ``seed``).
        cache: keep binned frames under ``<cache_root>/nmnist`` for the next run.
    """

    name: str = "nmnist"
    root: Optional[str] = None  # noqa: UP045 (OmegaConf structured configs need it)
    bin_ms: float = 10.0
    t_start_ms: float = 0.0
    frame_mode: str = "binary"
    polarity: str = "split"
    denoise_ms: Optional[float] = None  # noqa: UP045
    download: bool = True
    train_limit: Optional[int] = None  # noqa: UP045
    test_limit: Optional[int] = None  # noqa: UP045
    val_size: float = 0.1
    val_seed: int = 0
    cache: bool = True


@dataclass(frozen=True)
class Recording:
    """One ``.bin`` file and its digit label."""

    path: Path
    label: int


def build(cfg: NMNISTConfig, ctx: BuildContext) -> DataBundle:
    """Load N-MNIST as binned frames.

    Returns:
        DataBundle whose splits hold ``x`` uint8 ``[N, T, C, 34, 34]`` (C = 2 for
        ``polarity=split``, channel = polarity; 1 for ``merge``) and ``y`` int64
        ``[N]`` (digit 0..9); ``meta.encoding == "frames"``.

    Raises:
        DataError: bad config value, missing folder (with where to put the files),
            failed download, or a corrupt recording (named, with the fix).
    """
    _validate(cfg, ctx)
    root = _resolve_root(cfg, ctx)
    available = {split: list_recordings(root, split) for split in SPLIT_FOLDERS}
    pool = available["train"]
    plan = plan_train_val(len(pool), cfg.val_size, cfg.val_seed, cfg.train_limit)
    used = {
        "train": [pool[i] for i in plan.train.tolist()],
        "test": available["test"][: cfg.test_limit],
    }
    if len(plan.val):
        used["val"] = [pool[i] for i in plan.val.tolist()]
    params = transform_params(cfg, ctx.time_steps)
    files_hash = file_list_hash(root, _paths(used))
    key = cache_key(params, files_hash)
    cache_dir = Path(ctx.cache_root) / "nmnist" if cfg.cache else None
    sums = read_sha256sums(root)
    if sums is None:
        log.warning(
            "%s has no SHA256SUMS: the recordings' contents are not checked (only "
            "their names and sizes, which key the frame cache); a file altered in "
            "place goes unnoticed. Put a SHA256SUMS file there (sha256sum "
            "Train/*/*.bin Test/*/*.bin > SHA256SUMS) to check them",
            root,
        )
    splits = {
        split: load_or_build(  # files are read (and checked) only on a cache miss
            cache_dir,
            key,
            split,
            lambda rs=recs: _bin_checked(root, rs, sums, params),
            sample_shape=(ctx.time_steps, _channels(cfg.polarity), *NMNIST_SENSOR_HW),
            count=len(recs),
        )
        for split, recs in used.items()
    }
    facts = _provenance(root, available, used, params)
    facts.update(plan.facts(cfg.val_size, cfg.val_seed))
    facts.update(file_list_sha256=files_hash[:SHORT_HASH], cache_key=key[:SHORT_HASH])
    facts.update(checksum_facts(root, _paths(used), sums))
    meta = DataMeta(
        name=dataset_label(len(used["train"]), len(used["test"])),
        in_shape=(_channels(cfg.polarity), *NMNIST_SENSOR_HW),
        num_classes=NUM_CLASSES,
        encoding="frames",
        provenance=facts,
    )
    return DataBundle(
        train=splits["train"], test=splits["test"], meta=meta, val=splits.get("val")
    )


def _provenance(
    root: Path,
    available: dict[str, list[Recording]],
    used: dict[str, list[Recording]],
    params: dict[str, object],
) -> dict[str, str]:
    """Flat str facts for MLflow: source, counts, full or not, transform parameters."""
    full = all(len(available[s]) >= FULL_COUNTS[s] for s in SPLIT_FOLDERS)
    facts = {"source": str(root), "full_dataset": str(full).lower()}
    facts.update({f"n_{s}": str(len(r)) for s, r in used.items()})
    facts.update({f"n_{s}_available": str(len(r)) for s, r in available.items()})
    facts.update({k: "none" if v is None else str(v) for k, v in params.items()})
    return facts


def _paths(recordings: dict[str, list[Recording]]) -> list[Path]:
    return [r.path for rs in recordings.values() for r in rs]


def transform_params(cfg: NMNISTConfig, time_steps: int) -> dict[str, object]:
    """Every parameter the frames depend on (cache key and provenance)."""
    return {
        "bin_ms": float(cfg.bin_ms),
        "t_start_ms": float(cfg.t_start_ms),
        "time_steps": int(time_steps),
        "frame_mode": cfg.frame_mode,
        "polarity": cfg.polarity,
        "denoise_ms": None if cfg.denoise_ms is None else float(cfg.denoise_ms),
    }


def dataset_label(n_train: int, n_test: int) -> str:
    """``"nmnist"`` for all 60k/10k recordings, else e.g.
    ``"nmnist (1k-train/100-test subset)"`` (spec §6: never plain N-MNIST)."""
    if n_train >= FULL_COUNTS["train"] and n_test >= FULL_COUNTS["test"]:
        return "nmnist"

    def short(n: int) -> str:
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    return f"nmnist ({short(n_train)}-train/{short(n_test)}-test subset)"


def _channels(polarity: str) -> int:
    return 1 if polarity == "merge" else 2


# --------------------------------------------------------------------- validation
def _validate(cfg: NMNISTConfig, ctx: BuildContext) -> None:
    """Raise ``DataError`` naming the first bad key."""
    if not (math.isfinite(cfg.bin_ms) and cfg.bin_ms > 0):
        raise DataError(f"dataset.bin_ms={cfg.bin_ms}: the frame width must be > 0 ms")
    if not (math.isfinite(cfg.t_start_ms) and cfg.t_start_ms >= 0):
        raise DataError(
            f"dataset.t_start_ms={cfg.t_start_ms}: the window start must be >= 0 ms"
        )
    if cfg.frame_mode not in FRAME_MODES:
        raise DataError(
            f"dataset.frame_mode={cfg.frame_mode}: choose one of {FRAME_MODES}"
        )
    if cfg.polarity not in POLARITY_MODES:
        raise DataError(
            f"dataset.polarity={cfg.polarity}: choose one of {POLARITY_MODES}"
        )
    if cfg.denoise_ms is not None and not cfg.denoise_ms > 0:
        raise DataError(
            f"dataset.denoise_ms={cfg.denoise_ms}: must be > 0 ms, or null to turn "
            "the filter off"
        )
    check_limits(cfg, "recordings")
    if ctx.time_steps < 1:
        raise DataError(f"stbp.time_steps={ctx.time_steps}: N-MNIST needs >= 1 frame")


# ----------------------------------------------------------------------- folders
def _resolve_root(cfg: NMNISTConfig, ctx: BuildContext) -> Path:
    """The first candidate folder with ``Train/`` and ``Test/``; download if allowed."""
    if cfg.root is not None:
        candidates = [Path(cfg.root).expanduser().absolute()]
    else:
        data_root = Path(ctx.data_root).expanduser().absolute()
        candidates = [data_root / "nmnist", data_root / "nmnist-sample"]
    for folder in candidates:
        if _has_layout(folder):
            return folder
        if folder.exists():
            raise DataError(
                f"{folder} exists but has no Train/ and Test/ folders (an "
                f"incomplete copy?). {_layout_help(candidates[0])}"
            )
    where = " and ".join(str(c) for c in candidates)
    if not cfg.download:
        raise DataError(
            f"N-MNIST not found: looked in {where}; downloading is off "
            f"(dataset.download=false). {_layout_help(candidates[0])}"
        )
    try:
        downloads = Path(ctx.cache_root) / "downloads"
        return download_nmnist(candidates[0], downloads, ARCHIVES)
    except DataError as err:
        raise DataError(
            f"N-MNIST not found in {where}, and downloading it failed: {err} "
            f"{_layout_help(candidates[0])}"
        ) from err


def _has_layout(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in SPLIT_FOLDERS.values())


def _layout_help(target: Path) -> str:
    return (
        f"Put the recordings at {target}/Train/<digit>/*.bin and "
        f"{target}/Test/<digit>/*.bin (the official archives from "
        "https://www.garrickorchard.com/datasets/n-mnist unzip to that layout), or "
        "set SNNRUN_DATA=/path/to/data or dataset.root=/path/to/folder."
    )


def list_recordings(root: Path, split: str) -> list[Recording]:
    """All ``<root>/<Train|Test>/<digit>/*.bin``, sorted by (file name, digit).

    Raises:
        DataError: the split folder has no digit folders or no ``.bin`` files.
    """
    folder = root / SPLIT_FOLDERS[split]
    recordings = [
        Recording(path, int(digit_dir.name))
        for digit_dir in folder.iterdir()
        if digit_dir.is_dir() and digit_dir.name in _DIGITS
        for path in digit_dir.glob("*.bin")
        if not path.name.startswith(".")
    ]
    if not recordings:
        raise DataError(
            f"{folder} holds no <digit>/*.bin recordings. {_layout_help(root)}"
        )
    return sorted(recordings, key=lambda r: (r.path.name, r.label))


# ------------------------------------------------------------------------ binning
def _bin_checked(
    root: Path,
    recordings: list[Recording],
    sums: dict[str, str] | None,
    params: dict[str, object],
) -> ArraySplit:
    """Check the recordings against ``SHA256SUMS`` (if any), then read and bin them."""
    verify_files(root, [r.path for r in recordings], sums, "N-MNIST recording")
    return bin_recordings(recordings, params)


def read_recording(path: Path) -> np.ndarray:
    """Decode one ``.bin`` file into events (``events.EVENT_DTYPE``, t in µs).

    Raises:
        DataError: unreadable or corrupt file; the message names it and the fix.
    """
    try:
        return decode_nmnist(np.fromfile(path, dtype=np.uint8))
    except (OSError, EventFormatError) as err:
        raise DataError(
            f"corrupt N-MNIST recording {path}: {err}. Delete it and restore it from "
            "the official archive (or delete the whole folder and download again)."
        ) from err


def bin_recordings(
    recordings: list[Recording], params: dict[str, object]
) -> ArraySplit:
    """Read, optionally denoise, and bin recordings with ``transform_params`` values.

    Returns:
        ``x`` uint8 ``[N, T, C, 34, 34]``, ``y`` int64 ``[N]``.
    """
    time_steps = int(params["time_steps"])
    merge = params["polarity"] == "merge"
    x = np.empty(
        (len(recordings), time_steps, 1 if merge else 2, *NMNIST_SENSOR_HW), np.uint8
    )
    for i, recording in enumerate(recordings):
        events = read_recording(recording.path)
        if params["denoise_ms"] is not None:
            events = denoise(events, float(params["denoise_ms"]))
        x[i] = bin_events(
            events,
            time_steps=time_steps,
            bin_us=float(params["bin_ms"]) * 1000.0,
            t_start_us=float(params["t_start_ms"]) * 1000.0,
            frame_mode=str(params["frame_mode"]),
            merge_polarity=merge,
        )
    y = torch.tensor([r.label for r in recordings], dtype=torch.int64)
    return ArraySplit(torch.from_numpy(x), y)


def denoise(events: np.ndarray, filter_ms: float) -> np.ndarray:
    """tonic ``Denoise``: drop events with no neighbour (±1 px) within ``filter_ms``."""
    if events.size == 0:  # tonic's filter takes max() of the coordinates
        return events
    from tonic.transforms import Denoise  # lazy: importing tonic takes > 1 s

    return Denoise(filter_time=filter_ms * 1000.0)(events)
