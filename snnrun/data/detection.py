"""Two-class detection images (object present / absent), rate-coded (spec §10).

The paper's detection set was never released. ``dataset.source`` picks:

- ``folder``: your own images in ``dataset.root`` (format in ``docs/datasets.md``)::

      <root>/train/<class>/*.pgm|*.png|*.npy     exactly two class folders; sorted,
      <root>/test/<class>/*.pgm|*.png|*.npy      their names give indices 0 and 1

  or one ``<root>/detection.npz`` holding ``x_train`` uint8 ``[N, H, W]``,
  ``y_train`` ``[N]``, ``x_test``, ``y_test``. Images are ``image_size``² 8-bit
  grayscale. PGM means binary P5; PNG means 8-bit grayscale, non-interlaced (decoded
  here with ``zlib``: no Pillow needed); NPY means a uint8 ``[H, W]`` array.
- ``synthetic``: the seeded SUBSTITUTE of ``synthetic.py``, written once in that same
  folder format and read back through the same code, labelled as a substitute in
  ``meta.name`` and the MLflow tag ``substitute=true``.

Sample order: by file name, then class index, so a running index shared by both
classes (as the generator writes) keeps a mixed order for ``*_limit``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from snnrun.data import ArraySplit, BuildContext, DataBundle, DataError, DataMeta
from snnrun.data.cache import file_list_hash
from snnrun.data.synthetic import SyntheticParams, default_root, ensure_synthetic

SOURCES = ("synthetic", "folder")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".pgm", ".png", ".npy")
NPZ_NAME = "detection.npz"
NUM_CLASSES = 2
_SHORT_HASH = 16  # hex digits kept in the provenance
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
    train, test = data.train.subset(cfg.train_limit), data.test.subset(cfg.test_limit)
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
        "file_list_sha256": data.files_hash[:_SHORT_HASH],
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
    return DataBundle(train=train, test=test, meta=meta)


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
    for key in ("train_limit", "test_limit"):
        limit = getattr(cfg, key)
        if limit is not None and limit < 1:
            raise DataError(
                f"dataset.{key}={limit}: must be a positive number of images, or null "
                "for all of them"
            )


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


def read_image(path: Path) -> np.ndarray:
    """One 8-bit grayscale image (``.pgm``, ``.png`` or ``.npy``) as uint8 ``[H, W]``.

    Raises:
        DataError: unreadable, corrupt or not 8-bit grayscale; names the file.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            decode = decode_pgm if suffix == ".pgm" else decode_png
            image = decode(path.read_bytes())
    except (OSError, ValueError, EOFError, zlib.error, struct.error) as err:
        raise DataError(
            f"cannot read {path}: {err}. Re-export it as an 8-bit grayscale PGM/PNG or "
            "a uint8 .npy array, or remove it."
        ) from err
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DataError(
            f"{path} holds {image.dtype} with shape {image.shape}, expected a uint8 "
            "[H, W] grayscale image; convert it (e.g. array.astype(np.uint8))"
        )
    return image


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


# ---------------------------------------------------------------------- decoders
def decode_pgm(data: bytes) -> np.ndarray:
    """Binary PGM (P5, maxval ≤ 255) → uint8 ``[H, W]`` (scaled to 0..255).

    Raises:
        ValueError: not P5, a 16-bit PGM, or truncated pixel data.
    """
    tokens, offset = _pgm_header(data)
    width, height, maxval = tokens
    if not 0 < maxval <= 255:
        raise ValueError(f"PGM maxval {maxval}: only 8-bit PGM (maxval <= 255) is read")
    pixels = np.frombuffer(data, dtype=np.uint8, count=-1, offset=offset)
    if pixels.size < width * height:
        raise ValueError(
            f"truncated PGM: {pixels.size} pixel bytes, expected {width * height}"
        )
    image = pixels[: width * height].reshape(height, width)
    if maxval != 255:
        image = np.round(image.astype(np.float64) * 255 / maxval).astype(np.uint8)
    return image.copy()


def _pgm_header(data: bytes) -> tuple[tuple[int, int, int], int]:
    """((width, height, maxval), offset of the first pixel byte)."""
    if not data.startswith(b"P5"):
        raise ValueError("not a binary PGM (the file does not start with P5)")
    tokens, pos = [], 2
    while len(tokens) < 3:
        while pos < len(data) and (data[pos : pos + 1].isspace() or data[pos] == 35):
            if data[pos] == 35:  # '#': a comment runs to the end of the line
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise ValueError("truncated or malformed PGM header")
        tokens.append(int(data[start:pos]))
    return (tokens[0], tokens[1], tokens[2]), pos + 1  # one whitespace byte follows


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}


def decode_png(data: bytes) -> np.ndarray:
    """8-bit grayscale, non-interlaced PNG → uint8 ``[H, W]`` (stdlib ``zlib`` only).

    Raises:
        ValueError: not a PNG, a chunk with a bad CRC (corrupt or truncated), or
            another pixel format (the message says which, and how to convert).
    """
    chunks = _png_chunks(data)
    if len(chunks.get(b"IHDR", b"")) != 13:
        raise ValueError("PNG without a valid IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(
        ">IIBBBBB", chunks[b"IHDR"]
    )
    if (depth, colour, interlace) != (8, 0, 0):
        kind = _PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise ValueError(
            f"PNG is {depth}-bit {kind}{', interlaced' if interlace else ''}; only "
            "8-bit grayscale non-interlaced PNG is read: convert it, e.g. "
            "`convert in.png -colorspace Gray -depth 8 -interlace none out.png`"
        )
    raw = np.frombuffer(zlib.decompress(chunks.get(b"IDAT", b"")), dtype=np.uint8)
    if raw.size != height * (width + 1):
        raise ValueError(
            f"PNG pixel data holds {raw.size} bytes, not {height}x{width + 1}"
        )
    return _png_unfilter(raw.reshape(height, width + 1))


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    """Chunk type → body (IDAT bodies concatenated), CRC-checked, up to IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    chunks: dict[bytes, bytes] = {}
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ValueError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body, crc = (
            data[pos + 8 : pos + 8 + length],
            data[pos + 8 + length : pos + 12 + length],
        )
        if len(crc) != 4 or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            raise ValueError(
                f"PNG chunk {kind.decode(errors='replace')} is truncated or corrupt"
            )
        if kind == b"IEND":
            return chunks
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length


def _png_unfilter(rows: np.ndarray) -> np.ndarray:
    """Undo the per-row PNG filters (1 byte per pixel). ``rows``: [H, 1 + W] uint8."""
    height, width = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, width), dtype=np.int64)
    previous = np.zeros(width, dtype=np.int64)
    for r in range(height):
        kind, line = int(rows[r, 0]), rows[r, 1:].astype(np.int64)
        if kind == 0:
            current = line
        elif kind == 1:  # Sub: adding the left neighbour mod 256 is a running sum
            current = np.cumsum(line) & 0xFF
        elif kind == 2:  # Up
            current = (line + previous) & 0xFF
        elif kind in (3, 4):  # Average, Paeth: depend on the decoded left pixel
            current = _unfilter_sequential(kind, line.tolist(), previous.tolist())
        else:
            raise ValueError(f"PNG row {r} has unknown filter type {kind}")
        out[r] = previous = current
    return out.astype(np.uint8)


def _unfilter_sequential(kind: int, line: list[int], above: list[int]) -> np.ndarray:
    """PNG Average (3) or Paeth (4) filter of one row, pixel by pixel."""
    current, left, upper_left = [], 0, 0
    for value, up in zip(line, above, strict=True):
        if kind == 3:
            predicted = (left + up) >> 1
        else:
            p = left + up - upper_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
            predicted = (
                left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
            )
        left, upper_left = (value + predicted) & 0xFF, up
        current.append(left)
    return np.array(current, dtype=np.int64)
