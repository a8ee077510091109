"""Seeded SYNTHETIC SUBSTITUTE for the paper's unreleased detection set (spec §10).

It is not the paper's data and its numbers are never the paper's detection result.
It writes the user folder format that ``detection.py`` reads (``docs/datasets.md``)::

    <root>/manifest.json                      generator parameters (checked on reuse)
    <root>/train/0_background/<index:05d>.pgm clutter only
    <root>/train/1_object/<index:05d>.pgm     one shape on clutter
    <root>/test/...                           the same for the test split

File names are the sample index within the split, shared by both classes, so reading
in (file name, class) order restores the generation order.

An image is a ``size``×``size`` float canvas in [0, 1]: a random base level and linear
gradient, 0–3 thin random lines, 0–3 soft blobs and Gaussian noise. Object images add
one shape: a rectangle or ellipse (filled or outlined, rotated), a stick figure or an
upright bar (pedestrian-like), 9–20 px tall (at 28 px), placed anywhere, brighter or
darker than the background by 0.3–0.6. Clutter has a random sign too, so the mean
brightness does not give the class away (90.0 vs 91.3 of 255). Learnable but not
trivial, measured on seed 0 (float pixels, Adam 1e-3, 60 epochs): logistic regression
stays at chance (44% test), a 784-400-2 ReLU MLP reaches 82% test (94% train).

Determinism: split ``s`` (0 = train, 1 = test) draws from
``numpy.random.default_rng(SeedSequence([seed, s]))``, so the same seed gives the same
bytes, and the test set does not depend on ``n_train``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from snnrun.data import DataError
from snnrun.data.cache import staged_dir
from snnrun.data.imageio import encode_pgm

log = logging.getLogger(__name__)

GENERATOR_NAME = "snnrun.data.synthetic"
GENERATOR_VERSION = 1  # bump whenever the images for a given seed change
CLASS_NAMES = ("0_background", "1_object")
SPLITS = ("train", "test")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SyntheticParams:
    """Everything the generated files depend on."""

    seed: int = 0
    n_train: int = 1509
    n_test: int = 631
    image_size: int = 28

    def digest(self) -> str:
        """12 hex digits of SHA256 over the parameters and the generator version."""
        blob = json.dumps(
            {**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_root(cache_root: Path, params: SyntheticParams) -> Path:
    """``<cache_root>/detection-synthetic/<seed>-<params digest>``."""
    return Path(cache_root) / "detection-synthetic" / f"{params.seed}-{params.digest()}"


def ensure_synthetic(root: Path, params: SyntheticParams) -> Path:
    """Generate the set into ``root`` unless a matching one is already there.

    A folder whose manifest names this generator but other parameters (or version)
    is regenerated; any other existing folder is left alone and refused, so user data
    is never overwritten.

    Returns:
        ``root``.

    Raises:
        DataError: ``root`` exists and is not a set written by this generator.
    """
    manifest = _read_manifest(root)
    if manifest == _manifest(params):
        return root
    if manifest is not None and manifest.get("generator") == GENERATOR_NAME:
        log.warning(
            "%s holds a synthetic set with other parameters; regenerating", root
        )
        shutil.rmtree(root)
    elif root.exists():
        raise DataError(
            f"dataset.root={root} exists but is not a synthetic detection set made by "
            f"snnrun (no matching {MANIFEST}); choose an empty or new folder, or use "
            "dataset.source=folder to read your own images from it"
        )
    log.info("generating the synthetic detection substitute into %s", root)
    with staged_dir(root) as stage:
        for index, split in enumerate(SPLITS):
            count = params.n_train if split == "train" else params.n_test
            rng = np.random.default_rng(np.random.SeedSequence([params.seed, index]))
            images, labels = generate_split(rng, count, params.image_size)
            write_image_folder(stage / split, images, labels, CLASS_NAMES)
        (stage / MANIFEST).write_text(json.dumps(_manifest(params), indent=2) + "\n")
    return root


def _manifest(params: SyntheticParams) -> dict[str, object]:
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "params": asdict(params),
        "note": "SYNTHETIC SUBSTITUTE, not the STBP paper's detection dataset",
    }


def _read_manifest(root: Path) -> dict[str, object] | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


# ----------------------------------------------------------------------- writing
def write_image_folder(
    split_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, str] = CLASS_NAMES,
) -> None:
    """Write ``images`` (uint8 ``[N, H, W]``) as ``<split_dir>/<class>/<i:05d>.pgm``.

    ``labels`` (``[N]``, values in {0, 1}) pick the class folder; ``i`` is the index
    in ``images``. Both class folders are created even when one stays empty.
    """
    for name in class_names:
        (split_dir / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = split_dir / class_names[int(label)] / f"{index:05d}.pgm"
        path.write_bytes(encode_pgm(image))


# ---------------------------------------------------------------------- drawing
def generate_split(
    rng: np.random.Generator, count: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images, half with an object (label 1), in random order.

    Returns:
        images uint8 ``[count, size, size]`` and labels int64 ``[count]`` with
        ``count // 2`` ones.
    """
    labels = rng.permutation(np.arange(count, dtype=np.int64) % 2)
    images = np.stack([render(rng, size, bool(label)) for label in labels])
    return images, labels


def render(rng: np.random.Generator, size: int, with_object: bool) -> np.ndarray:
    """One uint8 ``[size, size]`` image: clutter, plus a shape if ``with_object``."""
    grid = _Grid(size)
    canvas = _background(rng, grid)
    if with_object:
        mask = _random_shape(rng, grid)
        canvas += _signed(rng, 0.3, 0.6) * mask
    canvas += rng.normal(0.0, rng.uniform(0.02, 0.08), canvas.shape)
    return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


class _Grid:
    """Pixel-centre coordinates ``x`` (columns) and ``y`` (rows), each [size, size]."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.y, self.x = np.mgrid[0:size, 0:size] + 0.5

    def rotated(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, ...]:
        """Coordinates relative to (cx, cy) in a frame rotated by ``angle`` rad."""
        dx, dy = self.x - cx, self.y - cy
        cos, sin = np.cos(angle), np.sin(angle)
        return dx * cos + dy * sin, -dx * sin + dy * cos


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude in [low, high) with a random sign."""
    return float(rng.choice((-1.0, 1.0)) * rng.uniform(low, high))


def _background(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Base level + gradient + thin lines + soft blobs, float [size, size]."""
    size = grid.size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * grid.x + np.sin(angle) * grid.y) / size - 0.5
    canvas = rng.uniform(0.25, 0.6) + rng.uniform(0.0, 0.3) * ramp
    for _ in range(rng.integers(0, 4)):
        p0, p1 = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        canvas += _signed(rng, 0.1, 0.3) * _segment(grid, p0, p1, rng.uniform(0.8, 1.6))
    for _ in range(rng.integers(0, 4)):
        centre, sigma = rng.uniform(0, size, 2), rng.uniform(0.8, 2.2)
        dist2 = (grid.x - centre[0]) ** 2 + (grid.y - centre[1]) ** 2
        canvas += _signed(rng, 0.1, 0.35) * np.exp(-dist2 / (2 * sigma**2))
    return canvas


def _segment(grid: _Grid, p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    """1.0 within ``width / 2`` px of the segment p0–p1 (points are (x, y))."""
    d = p1 - p0
    length2 = max(float(d @ d), 1e-9)
    s = np.clip(((grid.x - p0[0]) * d[0] + (grid.y - p0[1]) * d[1]) / length2, 0, 1)
    dist2 = (grid.x - p0[0] - s * d[0]) ** 2 + (grid.y - p0[1] - s * d[1]) ** 2
    return (dist2 <= (width / 2) ** 2).astype(float)


def _random_shape(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Mask (float [size, size], values 0/1) of one randomly chosen object."""
    height = rng.uniform(9, 20) * grid.size / 28
    margin = height / 2 - 2  # may poke out of the image by up to 2 px
    cx, cy = rng.uniform(margin, grid.size - margin, 2)
    draw = _SHAPES[rng.integers(len(_SHAPES))]
    return draw(rng, grid, cx, cy, height)


def _box(
    rng: np.random.Generator, grid: _Grid, cx: float, cy: float, h: float
) -> np.ndarray:
    u, v = grid.rotated(cx, cy, rng.uniform(0, np.pi))
    half_w, half_h = rng.uniform(0.4, 1.0) * h / 2, h / 2
    return _filled_or_outlined(
        rng, lambda t: (np.abs(u) <= half_w - t) & (np.abs(v) <= half_h - t)
    )


def _ellipse(
    rng: np.random.Generator, grid: _Grid, cx: float, cy: float, h: float
) -> np.ndarray:
    u, v = grid.rotated(cx, cy, rng.uniform(0, np.pi))
    a, b = rng.uniform(0.4, 1.0) * h / 2, h / 2
    return _filled_or_outlined(
        rng, lambda t: (u / max(a - t, 0.5)) ** 2 + (v / max(b - t, 0.5)) ** 2 <= 1
    )


def _filled_or_outlined(
    rng: np.random.Generator, inside: Callable[[float], np.ndarray]
) -> np.ndarray:
    """``inside(t)``: the shape shrunk by t px. Filled, or a 1–2 px outline."""
    outer = inside(0.0)
    if rng.random() < 0.5:
        return outer.astype(float)
    return (outer & ~inside(float(rng.integers(1, 3)))).astype(float)


def _bar(
    rng: np.random.Generator, grid: _Grid, cx: float, cy: float, h: float
) -> np.ndarray:
    """An upright, slightly tilted blob 2.5–4 times taller than wide."""
    u, v = grid.rotated(cx, cy, rng.uniform(-0.2, 0.2))
    a = h / 2 / rng.uniform(2.5, 4.0)
    return ((u / a) ** 2 + (v / (h / 2)) ** 2 <= 1).astype(float)


def _stick_figure(
    rng: np.random.Generator, grid: _Grid, cx: float, cy: float, h: float
) -> np.ndarray:
    """Head, body, arms and legs; ``h`` tall, centred on (cx, cy)."""
    width = rng.uniform(1.0, 2.0)
    top, head_r = cy - h / 2, h / 8
    neck, hip, foot = top + 2 * head_r, cy + h / 10, cy + h / 2
    spread, arm_y = rng.uniform(0.15, 0.35) * h, neck + rng.uniform(0.1, 0.25) * h
    head = (grid.x - cx) ** 2 + (grid.y - top - head_r) ** 2 <= head_r**2
    limbs = [
        ((cx, neck), (cx, hip)),
        ((cx, hip), (cx - spread, foot)),
        ((cx, hip), (cx + spread, foot)),
        ((cx - spread, arm_y + rng.uniform(-2, 2)), (cx + spread, arm_y)),
    ]
    mask = head.astype(float)
    for p0, p1 in limbs:
        mask = np.maximum(mask, _segment(grid, np.array(p0), np.array(p1), width))
    return mask


_SHAPES = (_box, _ellipse, _bar, _stick_figure)
