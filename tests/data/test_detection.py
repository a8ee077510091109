"""Detection: the synthetic substitute, the user folder format, decoders, errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from snnrun.data import BuildContext, DataError
from snnrun.data import synthetic as synthetic_module
from snnrun.data.detection import DetectionConfig, build
from snnrun.data.imageio import decode_pgm, decode_png, encode_pgm, read_image
from snnrun.data.synthetic import (
    CLASS_NAMES,
    SyntheticParams,
    ensure_synthetic,
    write_image_folder,
)

SMALL = SyntheticParams(seed=3, n_train=24, n_test=10)


def context(tmp_path: Path) -> BuildContext:
    return BuildContext(tmp_path / "data", tmp_path / "cache", 8, torch.Generator())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


def random_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def make_folder(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, tuple]:
    """A user folder in the PGM layout; returns split → (images, labels)."""
    data = {}
    for seed, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = random_images(n, seed=seed), np.arange(n) % 2
        write_image_folder(root / split, images, labels)
        data[split] = (images, labels)
    return data


def encode_png(image: np.ndarray, filters: list[int]) -> bytes:
    """8-bit grayscale PNG with the given filter type per row (test-only encoder)."""
    height, width = image.shape
    raw, above = bytearray(), [0] * width
    for row, kind in zip(image.astype(int).tolist(), filters, strict=True):
        raw.append(kind)
        for i, value in enumerate(row):
            left = row[i - 1] if i else 0
            upper_left = above[i - 1] if i else 0
            raw.append((value - png_predict(kind, left, above[i], upper_left)) & 0xFF)
        above = row

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return png_file(header, zlib.compress(bytes(raw)))


def png_file(header: bytes, idat: bytes) -> bytes:
    """Signature + IHDR + IDAT + IEND chunks, with correct CRCs."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return struct.pack(">I", len(body)) + kind + body + crc

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def png_predict(kind: int, left: int, up: int, upper_left: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return left
    if kind == 2:
        return up
    if kind == 3:
        return (left + up) // 2
    p = left + up - upper_left
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
    return left if pa <= pb and pa <= pc else up if pb <= pc else upper_left


# ------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = tree_bytes(ensure_synthetic(tmp_path / "a", SMALL))
    b = tree_bytes(ensure_synthetic(tmp_path / "b", SMALL))
    assert a == b
    assert len(a) == 24 + 10 + 1  # images + manifest
    other = SyntheticParams(seed=4, n_train=24, n_test=10)
    c = tree_bytes(ensure_synthetic(tmp_path / "c", other))
    assert a != c


def test_synthetic_test_split_does_not_depend_on_n_train(tmp_path: Path) -> None:
    a = ensure_synthetic(tmp_path / "a", SMALL)
    b = ensure_synthetic(tmp_path / "b", SyntheticParams(seed=3, n_train=30, n_test=10))
    assert tree_bytes(a / "test") == tree_bytes(b / "test")
    assert tree_bytes(a / "train") != tree_bytes(b / "train")


def test_synthetic_default_build(tmp_path: Path) -> None:
    bundle = build(DetectionConfig(val_size=0), context(tmp_path))
    train, test, meta = bundle.train, bundle.test, bundle.meta
    assert train.x.shape == (1509, 1, 28, 28) and test.x.shape == (631, 1, 28, 28)
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    assert (int(train.y.sum()), int(test.y.sum())) == (754, 315)  # n // 2 objects
    assert meta.name == "detection (synthetic substitute)"
    assert meta.tags == {"substitute": "true"}
    assert (meta.in_shape, meta.num_classes, meta.encoding) == ((1, 28, 28), 2, "rate")
    facts = meta.provenance
    assert facts["source"] == "synthetic" and facts["synthetic_seed"] == "0"
    assert facts["classes"] == "0_background,1_object"
    assert (facts["n_train"], facts["n_test"]) == ("1509", "631")
    root = Path(facts["root"])
    assert root.parent == (tmp_path / "cache" / "detection-synthetic").absolute()
    assert root.name.startswith("0-")
    # object images and clutter images do not differ in mean brightness by much
    means = [float(train.x[train.y == c].float().mean()) for c in (0, 1)]
    assert abs(means[0] - means[1]) < 10


def test_synthetic_is_reused_not_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DetectionConfig(
        val_size=0, n_train=SMALL.n_train, n_test=SMALL.n_test, synthetic_seed=3
    )
    first = build(cfg, context(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("regenerated although a matching set exists")

    monkeypatch.setattr(synthetic_module, "generate_split", refuse)
    second = build(cfg, context(tmp_path))
    assert torch.equal(first.train.x, second.train.x)


def test_synthetic_with_changed_manifest_is_regenerated(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "set", SMALL)
    original = tree_bytes(root)
    manifest = root / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 3', '"seed": 99'))
    (root / "train" / CLASS_NAMES[0] / "stray.pgm").write_bytes(b"junk")
    ensure_synthetic(root, SMALL)
    assert tree_bytes(root) == original


def test_synthetic_refuses_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my data")
    cfg = DetectionConfig(val_size=0, root=str(foreign))
    with pytest.raises(DataError, match="not a synthetic detection set"):
        build(cfg, context(tmp_path))
    assert (foreign / "notes.txt").read_text() == "my data"


def test_synthetic_limits_keep_a_mix(tmp_path: Path) -> None:
    cfg = DetectionConfig(
        val_size=0, n_train=40, n_test=10, train_limit=12, test_limit=4
    )
    bundle = build(cfg, context(tmp_path))
    assert len(bundle.train) == 12 and len(bundle.test) == 4
    assert 0 < int(bundle.train.y.sum()) < 12
    assert bundle.meta.provenance["n_train_available"] == "40"


# ---------------------------------------------------------------- user folder
def test_user_folder_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    data = make_folder(root)
    # replace two training images by PNG and NPY copies of the same pixels
    images, labels = data["train"]
    png = root / "train" / CLASS_NAMES[labels[0]] / "00000.pgm"
    png.unlink()
    png.with_suffix(".png").write_bytes(encode_png(images[0], [0] * 28))
    npy = root / "train" / CLASS_NAMES[labels[1]] / "00001.pgm"
    npy.unlink()
    np.save(npy.with_suffix(".npy"), images[1])
    bundle = build(
        DetectionConfig(val_size=0, source="folder", root=str(root)), context(tmp_path)
    )
    for split, (images, labels) in data.items():
        got = getattr(bundle, split)
        assert torch.equal(got.x[:, 0], torch.from_numpy(images))
        assert got.y.tolist() == labels.tolist()
    meta = bundle.meta
    assert meta.name == f"detection ({root.absolute()})"
    assert meta.tags == {"substitute": "false"}
    assert meta.provenance["source"] == "folder"
    assert "synthetic_seed" not in meta.provenance


def test_user_npz_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "npz"
    root.mkdir()
    x_train, x_test = random_images(5, seed=1), random_images(3, seed=2)
    y_train, y_test = np.array([0, 1, 1, 0, 1]), np.array([1, 0, 0])
    np.savez(
        root / "detection.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    bundle = build(
        DetectionConfig(val_size=0, source="folder", root=str(root)), context(tmp_path)
    )
    assert torch.equal(bundle.train.x[:, 0], torch.from_numpy(x_train))
    assert bundle.test.y.tolist() == [1, 0, 0]
    assert bundle.meta.provenance["layout"] == "npz"


def test_user_folder_of_another_size(tmp_path: Path) -> None:
    root = tmp_path / "big"
    for split in ("train", "test"):
        write_image_folder(
            root / split, random_images(4, size=32), np.array([0, 1, 0, 1])
        )
    cfg = DetectionConfig(val_size=0, source="folder", root=str(root), image_size=32)
    assert build(cfg, context(tmp_path)).meta.in_shape == (1, 32, 32)


# --------------------------------------------------------------------- errors
def folder_cfg(root: Path) -> DetectionConfig:
    return DetectionConfig(val_size=0, source="folder", root=str(root))


def expect_error(tmp_path: Path, root: Path, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        build(folder_cfg(root), context(tmp_path))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_root(tmp_path: Path) -> None:
    expect_error(
        tmp_path, tmp_path / "nowhere", f"{tmp_path / 'nowhere'} does not exist"
    )


def test_folder_source_needs_a_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.source=folder needs dataset\.root"):
        build(DetectionConfig(val_size=0, source="folder"), context(tmp_path))


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split(tmp_path: Path, split: str) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    for path in sorted((root / split).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / split).rmdir()
    expect_error(tmp_path, root, f"has no {split}/ folder")


@pytest.mark.parametrize(
    ("names", "found"),
    [
        (["0_bg", "1_obj", "2_extra"], "found 3: ['0_bg', '1_obj', '2_extra']"),
        (["only"], "found 1: ['only']"),
    ],
)
def test_not_two_classes(tmp_path: Path, names: list[str], found: str) -> None:
    root = tmp_path / "mine"
    for split in ("train", "test"):
        for name in names:
            (root / split / name).mkdir(parents=True)
            (root / split / name / "a.pgm").write_bytes(encode_pgm(random_images(1)[0]))
    expect_error(tmp_path, root, "exactly two class folders", found)


def test_classes_differ_between_splits(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    (root / "test" / CLASS_NAMES[1]).rename(root / "test" / "1_person")
    expect_error(tmp_path, root, "differ between train/", "'1_person'")


def test_wrong_image_size_names_file_and_size(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    bad = root / "test" / CLASS_NAMES[0] / "00002.pgm"
    bad.write_bytes(encode_pgm(np.zeros((28, 20), dtype=np.uint8)))
    expect_error(tmp_path, root, str(bad), "is 20x28 (width x height), expected 28x28")


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("00002.pgm", b"P5\n28 28\n255\n" + bytes(100), "truncated PGM"),
        ("00002.pgm", b"P2\n28 28\n255\n0 0 0", "not a binary PGM"),
        ("00002.png", b"\x89PNG\r\n\x1a\n garbage", "truncated or corrupt"),
        ("00002.npy", b"not numpy", "cannot read"),
    ],
)
def test_corrupt_image_is_named(
    tmp_path: Path, name: str, payload: bytes, reason: str
) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    (root / "train" / CLASS_NAMES[0] / "00002.pgm").unlink()
    bad = root / "train" / CLASS_NAMES[0] / name
    bad.write_bytes(payload)
    expect_error(tmp_path, root, f"cannot read {bad}", reason)


def test_empty_split(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    for path in (root / "test").rglob("*.pgm"):
        path.unlink()
    expect_error(tmp_path, root, f"{root / 'test' / CLASS_NAMES[0]} holds no images")


def test_unsupported_file_type(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    stray = root / "train" / CLASS_NAMES[1] / "photo.jpg"
    stray.write_bytes(b"\xff\xd8")
    expect_error(tmp_path, root, f"{stray}: not an image file")


def test_hidden_files_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    (root / "train" / CLASS_NAMES[1] / ".DS_Store").write_bytes(b"\x00")
    (root / "train" / ".hidden_dir").mkdir()
    assert len(build(folder_cfg(root), context(tmp_path)).train) == 6


def test_npz_and_folders_together_are_ambiguous(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    make_folder(root)
    np.savez(root / "detection.npz", x_train=random_images(2))
    expect_error(tmp_path, root, "keep one of the two layouts")


def test_npz_missing_key_and_bad_labels(tmp_path: Path) -> None:
    root = tmp_path / "npz"
    root.mkdir()
    images = random_images(2)
    np.savez(
        root / "detection.npz", x_train=images, y_train=np.array([0, 1]), x_test=images
    )
    expect_error(tmp_path, root, "has no ['y_test']")
    np.savez(
        root / "detection.npz",
        x_train=images,
        y_train=np.array([0, 2]),
        x_test=images,
        y_test=np.array([0, 1]),
    )
    expect_error(tmp_path, root, "y_train must be [2] labels in {0, 1}")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"source": "web"}, "dataset.source"),
        ({"image_size": 8}, "dataset.image_size"),
        ({"n_train": 1}, "dataset.n_train"),
        ({"test_limit": 0}, "dataset.test_limit"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, override: dict, key: str) -> None:
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        build(DetectionConfig(val_size=0, **override), context(tmp_path))


# ------------------------------------------------------------------- decoders
def test_png_decoder_undoes_every_filter() -> None:
    image = random_images(1, seed=5)[0]
    image[10:20] = 200  # flat rows exercise Up and Paeth ties
    for filters in (
        [0] * 28,
        [1] * 28,
        [2] * 28,
        [3] * 28,
        [4] * 28,
        [i % 5 for i in range(28)],
    ):
        np.testing.assert_array_equal(decode_png(encode_png(image, filters)), image)


def test_png_decoder_agrees_with_pillow(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    image = random_images(1, seed=6)[0]
    image[:, :14] = np.arange(14, dtype=np.uint8) * 9  # smooth part: non-zero filters
    path = tmp_path / "x.png"
    image_module.fromarray(image, mode="L").save(path)
    np.testing.assert_array_equal(read_image(path), image)


def test_png_colour_image_asks_for_conversion() -> None:
    header = struct.pack(">IIBBBBB", 28, 28, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = png_file(header, zlib.compress(bytes(28 * (1 + 3 * 28))))
    with pytest.raises(ValueError, match="PNG is 8-bit RGB; only 8-bit grayscale"):
        decode_png(data)


def test_png_with_bad_crc_is_refused() -> None:
    data = bytearray(encode_png(random_images(1)[0], [0] * 28))
    data[60] ^= 0xFF  # a byte inside the IDAT body
    with pytest.raises(ValueError, match="chunk IDAT is truncated or corrupt"):
        decode_png(bytes(data))


def test_pgm_header_comments_and_maxval() -> None:
    pixels = bytes([0, 5, 10, 15])
    image = decode_pgm(b"P5 # made by hand\n2 # width\n2\n15\n" + pixels)
    np.testing.assert_array_equal(image, [[0, 85], [170, 255]])
    with pytest.raises(ValueError, match="only 8-bit PGM"):
        decode_pgm(b"P5\n2 2\n65535\n" + bytes(8))


def test_pgm_round_trip() -> None:
    image = random_images(1, seed=7)[0]
    np.testing.assert_array_equal(decode_pgm(encode_pgm(image)), image)
