"""MNIST from the four standard gzip IDX files, as uint8 tensors for rate encoding.

The files live in ``dataset.root`` (default ``<paths.data_root>/mnist``). With
``download=true`` missing files are fetched from the mirrors below; with
``verify=true`` every file must match the SHA256 of the canonical release, so a
changed or truncated file is refused instead of silently training on it. Set
``verify=false`` to read another dataset in the same format (e.g. Fashion-MNIST);
its actual hashes still go into the provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
from snnrun.data.download import ensure_file, sha256_file
from snnrun.data.idx import read_idx
from snnrun.data.split import plan_train_val

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# SHA256 of the canonical files (identical on every mirror below).
SHA256 = {
    TRAIN_IMAGES: "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    TRAIN_LABELS: "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    TEST_IMAGES: "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    TEST_LABELS: "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}

# Tried in this order; each ends in "/" and is followed by a file name.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_DESCRIPTIONS = {
    TRAIN_IMAGES: "MNIST training images",
    TRAIN_LABELS: "MNIST training labels",
    TEST_IMAGES: "MNIST test images",
    TEST_LABELS: "MNIST test labels",
}
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@dataclass
class MNISTConfig:
    """``dataset=mnist``.

    Attributes:
        name: registry key.
        root: folder with the four IDX files; None means ``<data_root>/mnist``.
        download: fetch missing files from the mirrors.
        verify: require the canonical SHA256 of each file.
        train_limit: keep only the first N training samples (None: all 60,000 less
            the validation split).
        test_limit: keep only the first N test samples (None: all 10,000).
        val_size: training samples held out for validation and model selection: a
            count (>= 1) or a fraction (< 1); 0 turns the split off.
        val_seed: seed of the hold-out draw (the split stays fixed across ``seed``).
    """

    name: str = "mnist"
    root: Optional[str] = None  # noqa: UP045 (OmegaConf structured configs need it)
    download: bool = True
    verify: bool = True
    train_limit: Optional[int] = None  # noqa: UP045
    test_limit: Optional[int] = None  # noqa: UP045
    val_size: float = 5000
    val_seed: int = 0


def build(cfg: MNISTConfig, ctx: BuildContext) -> DataBundle:
    """Load MNIST as in-memory tensors.

    Returns:
        DataBundle whose splits hold ``x`` uint8 ``[N, 1, 28, 28]`` (intensity
        0..255) and ``y`` int64 ``[N]`` (digit 0..9); ``meta.encoding == "rate"``.

    Raises:
        DataError: missing, corrupt or mismatched files, or a bad limit; the message
            names the file and the fix.
    """
    check_limits(cfg, "samples")
    root = _resolve_root(cfg, ctx)
    paths = _ensure_files(root, download=cfg.download, verify=cfg.verify)
    train_full = _load_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_full = _load_split(paths[TEST_IMAGES], paths[TEST_LABELS])
    plan = plan_train_val(len(train_full), cfg.val_size, cfg.val_seed, cfg.train_limit)
    train = train_full.take(plan.train)
    test = test_full.subset(cfg.test_limit)
    hashes = {
        name: SHA256[name] if cfg.verify else sha256_file(paths[name]) for name in FILES
    }
    meta = DataMeta(
        name="mnist",
        in_shape=IMAGE_SHAPE,
        num_classes=NUM_CLASSES,
        encoding="rate",
        provenance=_provenance(
            root,
            cfg.verify,
            hashes,
            (len(train), len(train_full) - len(plan.val)),
            (len(test), len(test_full)),
        )
        | plan.facts(cfg.val_size, cfg.val_seed),
    )
    val = train_full.take(plan.val) if len(plan.val) else None
    return DataBundle(train=train, test=test, meta=meta, val=val)


def _resolve_root(cfg: MNISTConfig, ctx: BuildContext) -> Path:
    root = Path(cfg.root) if cfg.root is not None else Path(ctx.data_root) / "mnist"
    return root.expanduser().absolute()


def _ensure_files(root: Path, *, download: bool, verify: bool) -> dict[str, Path]:
    """Check (and if allowed fetch) the four files; name → absolute path."""
    if not download:
        for name in FILES:
            if not (root / name).is_file():
                raise DataError(
                    f"dataset.root={root} has no {name}; set SNNRUN_DATA or "
                    "dataset.root to a folder with the four MNIST IDX files "
                    "(dataset.download=true fetches them when online)"
                )
    return {
        name: ensure_file(
            root / name,
            [mirror + name for mirror in MIRRORS],
            SHA256[name] if verify else None,
            download=download,
            what=_DESCRIPTIONS[name],
        )
        for name in FILES
    }


def _load_split(images_path: Path, labels_path: Path) -> ArraySplit:
    """Read one images/labels pair and check that they fit MNIST."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dim() != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE[1:]:
        raise DataError(
            f"{images_path} holds shape {list(images.shape)}, not [N, 28, 28] "
            "MNIST images; are the image and label files swapped or from another "
            "dataset?"
        )
    if labels.dim() != 1:
        raise DataError(
            f"{labels_path} holds shape {list(labels.shape)}, not [N] labels; are "
            "the image and label files swapped?"
        )
    if int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{labels_path} has label {int(labels.max())}, but MNIST has classes "
            f"0..{NUM_CLASSES - 1}"
        )
    try:
        return ArraySplit(images.unsqueeze(1), labels.to(torch.int64))
    except DataError as err:
        raise DataError(f"{images_path} and {labels_path}: {err}") from err


def _provenance(
    root: Path,
    verified: bool,
    hashes: dict[str, str],
    train: tuple[int, int],
    test: tuple[int, int],
) -> dict[str, str]:
    """Flat facts for MLflow; ``train``/``test`` are (used, available) counts, the
    training samples available being those the validation split leaves."""
    facts = {
        "source": str(root),
        "n_train": str(train[0]),
        "n_test": str(test[0]),
        "n_train_available": str(train[1]),
        "n_test_full": str(test[1]),
        "subset": _subset_label(train, test),
        "sha256_verified": str(verified).lower(),
    }
    for name in FILES:
        facts[f"sha256.{name}"] = hashes[name][:SHORT_HASH]
    return facts


def _subset_label(train: tuple[int, int], test: tuple[int, int]) -> str:
    """``"full"``, or e.g. ``"train: first 1000; test: full"``."""
    parts = {
        split: "full" if used == available else f"first {used}"
        for split, (used, available) in (("train", train), ("test", test))
    }
    if set(parts.values()) == {"full"}:
        return "full"
    return "; ".join(f"{split}: {label}" for split, label in parts.items())
