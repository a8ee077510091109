"""Two-class detection images (object present / absent), rate-coded (spec §10).

The paper's detection set was never released. ``dataset.source`` picks:

- ``folder``: your own images in ``dataset.root`` (format in ``docs/datasets.md``)::

      <root>/train/<class>/*.pgm|*.png|*.npy     exactly two class folders; sorted,
      <root>/test/<class>/*.pgm|*.png|*.npy      their names give indices 0 and 1

  or one ``<root>/detection.npz`` holding ``x_train`` uint8 ``[N, H, W]``,
  ``y_train`` ``[N]``, ``x_test``, ``y_test``. Images are ``image_size``² 8-bit
  grayscale. PGM means binary P5; PNG means 8-bit grayscale, non-interlaced (decoded
  with ``zlib`` in ``imageio.py``: no Pillow needed); NPY means a uint8 ``[H, W]``
  array.
- ``synthetic``: the seeded SUBSTITUTE of ``synthetic.py``, written once in that same
  folder format and read back through the same code, labelled as a substitute in
  ``meta.name`` and the MLflow tag ``substitute=true``.

Sample order: by file name, then class index, so a running index shared by both
classes (as the generator writes) keeps a mixed order for ``*_limit``.
"""

from __future__ import annotations

import zlib
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
from snnrun.data.cache import file_list_hash
from snnrun.data.imageio import read_image
from snnrun.data.split import plan_train_val
from snnrun.data.synthetic import SyntheticParams, default_root, ensure_synthetic

SOURCES = ("synthetic", "folder")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".pgm", ".png", ".npy")
NPZ_NAME = "detection.npz"
NUM_CLASSES = 2
_FORMAT_HELP = "see docs/datasets.md for the folder format"


@dataclass
class DetectionConfig:
    """``dataset=detection``.

    Attributes:
        name: registry key.
        source: ``"synthetic"`` (the seeded substitute) or ``"folder"`` (your images).
        root: the folder; required for ``folder``; for ``synthetic`` None means
            ``<cache_root>/detection-synthetic/<seed>-<params hash>``.
        n_train: synthetic training images (the paper's recalled 1,509).
        n_test: synthetic test images (recalled 631).
        synthetic_seed: seed of the synthetic generator.
        image_size: side in pixels; folder images must have it, synthetic ones get it.
        train_limit: keep the first N training images; None: all.
        test_limit: keep the first N test images; None: all.
        val_size: training images held out for validation and model selection: a
            count (>= 1) or a fraction (< 1); 0 turns the split off.
        val_seed: seed of the hold-out draw (the split stays fixed across ``seed``).
    """

    name: str = "detection"
    source: str = "synthetic"
    root: Optional[str] = None  # noqa: UP045 (OmegaConf structured configs need it)
    n_train: int = 1509
    n_test: int = 631
    synthetic_seed: int = 0
    image_size: int = 28
    train_limit: Optional[int] = None  # noqa: UP045
    test_limit: Optional[int] = None  # noqa: UP045
    val_size: float = 0.1
    val_seed: int = 0


@dataclass(frozen=True)
class FolderData:
    """Both splits of a detection folder and what identifies them."""

    train: ArraySplit
    test: ArraySplit
    class_names: tuple[str, ...]
    files_hash: str
    layout: str  # "images" or "npz"


def build(cfg: DetectionConfig, ctx: BuildContext) -> DataBundle:
    """Load (generating first if needed) the detection set.

    Returns:
        DataBundle whose splits hold ``x`` uint8 ``[N, 1, S, S]`` (S =
        ``image_size``, intensity 0..255) and ``y`` int64 ``[N]`` (0 or 1);
        ``meta.encoding == "rate"``.

    Raises:
        DataError: a bad config value or any problem with the folder; the message
            names the file or folder and the fix.
    """
    _validate(cfg)
    synthetic = cfg.source == "synthetic"
    root = _resolve_root(cfg, ctx)
    data = read_detection_folder(root, cfg.image_size)
    plan = plan_train_val(len(data.train), cfg.val_size, cfg.val_seed, cfg.train_limit)
    train, test = data.train.take(plan.train), data.test.subset(cfg.test_limit)
    facts = {
        "source": cfg.source,
        "root": str(root),
        "layout": data.layout,
        "n_train": str(len(train)),
        "n_test": str(len(test)),
        "n_train_available": str(len(data.train)),
        "n_test_available": str(len(data.test)),
        "classes": ",".join(data.class_names),
        "image_size": str(cfg.image_size),
        "file_list_sha256": data.files_hash[:SHORT_HASH],
        **plan.facts(cfg.val_size, cfg.val_seed),
    }
    if synthetic:
        facts["synthetic_seed"] = str(cfg.synthetic_seed)
    meta = DataMeta(
        name="detection (synthetic substitute)" if synthetic else f"detection ({root})",
        in_shape=(1, cfg.image_size, cfg.image_size),
        num_classes=NUM_CLASSES,
        encoding="rate",
        provenance=facts,
        tags={"substitute": str(synthetic).lower()},
    )
    val = data.train.take(plan.val) if len(plan.val) else None
    return DataBundle(train=train, test=test, meta=meta, val=val)


def _validate(cfg: DetectionConfig) -> None:
    """Raise ``DataError`` naming the first bad key."""
    if cfg.source not in SOURCES:
        raise DataError(f"dataset.source={cfg.source}: choose one of {SOURCES}")
    if cfg.source == "folder" and cfg.root is None:
        raise DataError(
            "dataset.source=folder needs dataset.root=/path/to/images, a folder with "
            f"train/ and test/ (or {NPZ_NAME}); {_FORMAT_HELP}"
        )
    minimum = 16 if cfg.source == "synthetic" else 1
    if cfg.image_size < minimum:
        raise DataError(f"dataset.image_size={cfg.image_size}: must be >= {minimum}")
    for key in ("n_train", "n_test"):
        if getattr(cfg, key) < 2:
            raise DataError(f"dataset.{key}={getattr(cfg, key)}: must be >= 2")
    check_limits(cfg, "images")


def _resolve_root(cfg: DetectionConfig, ctx: BuildContext) -> Path:
    """The folder to read; for ``synthetic`` it is generated first when needed."""
    if cfg.root is not None:
        root = Path(cfg.root).expanduser().absolute()
        if cfg.source == "folder":
            return root
    params = SyntheticParams(
        cfg.synthetic_seed, cfg.n_train, cfg.n_test, cfg.image_size
    )
    if cfg.root is None:  # _validate let only the synthetic source get here
        root = default_root(Path(ctx.cache_root).expanduser().absolute(), params)
    try:
        return ensure_synthetic(root, params)
    except OSError as err:
        raise DataError(
            f"cannot write the synthetic detection set into {root} ({err}); set "
            "paths.cache_root or dataset.root to a writable folder"
        ) from err


# ---------------------------------------------------------------- folder reading
def read_detection_folder(root: Path, image_size: int) -> FolderData:
    """Read ``<root>/{train,test}/<class>/*`` or ``<root>/detection.npz``.

    Raises:
        DataError: missing root or split, not exactly two classes, classes that
            differ between splits, an empty split or class, an unreadable file or an
            image whose size is not ``image_size``².
    """
    if not root.is_dir():
        raise DataError(f"dataset.root={root} does not exist; {_FORMAT_HELP}")
    npz = root / NPZ_NAME
    has_tree = any((root / split).exists() for split in SPLITS)
    if npz.exists() and has_tree:
        raise DataError(
            f"{root} holds both {NPZ_NAME} and train/ or test/ folders; keep one of "
            "the two layouts"
        )
    if npz.exists():
        return _read_npz(root, npz, image_size)
    return _read_tree(root, image_size)


def _read_tree(root: Path, image_size: int) -> FolderData:
    """The image-folder layout."""
    classes = {split: _class_names(root, split) for split in SPLITS}
    if classes["train"] != classes["test"]:
        raise DataError(
            f"{root}: the class folders differ between train/ {list(classes['train'])} "
            f"and test/ {list(classes['test'])}; use the same two names in both"
        )
    files = {split: _image_files(root / split, classes[split]) for split in SPLITS}
    splits = {split: _load_images(files[split], image_size) for split in SPLITS}
    all_files = [path for split in SPLITS for path, _ in files[split]]
    return FolderData(
        splits["train"],
        splits["test"],
        classes["train"],
        file_list_hash(root, all_files),
        "images",
    )


def _class_names(root: Path, split: str) -> tuple[str, ...]:
    """The sorted class folder names of one split (exactly two)."""
    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"{root} has no {split}/ folder; expected {folder}/<class>/*.pgm (or "
            f"{root}/{NPZ_NAME}); {_FORMAT_HELP}"
        )
    names = tuple(sorted(p.name for p in folder.iterdir() if _visible_dir(p)))
    if len(names) != NUM_CLASSES:
        raise DataError(
            f"{folder} must hold exactly two class folders (e.g. 0_background/ and "
            f"1_object/), found {len(names)}: {list(names)}"
        )
    return names


def _visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _image_files(folder: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(path, class index) of every image, sorted by (file name, class index)."""
    files = []
    for label, name in enumerate(classes):
        found = [p for p in (folder / name).iterdir() if not p.name.startswith(".")]
        if not found:
            raise DataError(f"{folder / name} holds no images: empty class folder")
        for path in found:
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise DataError(
                    f"{path}: not an image file (expected "
                    f"{', '.join(IMAGE_SUFFIXES)}); convert or remove it"
                )
            files.append((path, label))
    return sorted(files, key=lambda item: (item[0].name, item[1]))


def _load_images(files: list[tuple[Path, int]], image_size: int) -> ArraySplit:
    """Stack checked images into ``x`` uint8 ``[N, 1, S, S]``, ``y`` int64 ``[N]``."""
    x = np.empty((len(files), 1, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        image = read_image(path)
        _check_size(image.shape, image_size, str(path))
        x[i, 0] = image
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ArraySplit(torch.from_numpy(x), y)


def _check_size(shape: tuple[int, ...], image_size: int, where: str) -> None:
    if tuple(shape) != (image_size, image_size):
        size = "x".join(str(s) for s in shape[::-1]) if len(shape) == 2 else shape
        raise DataError(
            f"{where} is {size} (width x height), expected {image_size}x{image_size} "
            "(dataset.image_size); resize it"
        )


def _read_npz(root: Path, npz: Path, image_size: int) -> FolderData:
    """The single-file layout: ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {npz}: {err}; re-create or remove it") from err
    splits = {split: _npz_split(npz, loaded, split, image_size) for split in SPLITS}
    files_hash = file_list_hash(root, [npz])
    return FolderData(splits["train"], splits["test"], ("0", "1"), files_hash, "npz")


def _npz_split(
    npz: Path, arrays: dict[str, np.ndarray], split: str, image_size: int
) -> ArraySplit:
    """Check and convert one split of the npz layout."""
    x_key, y_key = f"x_{split}", f"y_{split}"
    missing = [key for key in (x_key, y_key) if key not in arrays]
    if missing:
        raise DataError(f"{npz} has no {missing} (found {sorted(arrays)})")
    x, y = arrays[x_key], arrays[y_key]
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(
            f"{npz}: {x_key} is {x.dtype} {list(x.shape)}, expected uint8 [N, H, W]"
        )
    _check_size(x.shape[1:], image_size, f"{npz} {x_key}")
    if len(x) == 0:
        raise DataError(f"{npz}: {x_key} is empty")
    if y.shape != (len(x),) or not np.isin(y, (0, 1)).all():
        raise DataError(f"{npz}: {y_key} must be [{len(x)}] labels in {{0, 1}}")
    return ArraySplit(
        torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    )
