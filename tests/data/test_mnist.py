"""MNIST builder and IDX reader on the real files and on damaged copies of them."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from snnrun.data import BuildContext, DataBundle, DataError, mnist
from snnrun.data.idx import read_idx
from snnrun.data.mnist import FILES, SHA256, MNISTConfig, build

# Class counts of the canonical release (train, test).
TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
LABELS = "train-labels-idx1-ubyte.gz"


@pytest.fixture(scope="module")
def mnist_dir(shared_data: Path) -> Path:
    folder = shared_data / "mnist"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"{folder} lacks {missing}; set SNNRUN_DATA", pytrace=False)
    return folder


def make_ctx(data_root: Path) -> BuildContext:
    return BuildContext(
        data_root=data_root,
        cache_root=data_root / "cache",
        time_steps=4,
        generator=torch.Generator().manual_seed(0),
    )


@pytest.fixture(scope="module")
def full(shared_data: Path, mnist_dir: Path) -> DataBundle:
    return build(MNISTConfig(val_size=0, download=False), make_ctx(shared_data))


def copy_with(tmp_path: Path, source: Path, replaced: dict[str, bytes]) -> Path:
    """A folder with the real files linked in, except ``replaced`` name → bytes."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in FILES:
        if name in replaced:
            (folder / name).write_bytes(replaced[name])
        else:
            (folder / name).symlink_to(source / name)
    return folder


def labels_payload(mnist_dir: Path) -> bytes:
    """Decompressed train labels: 8-byte header + 60,000 bytes."""
    return gzip.decompress((mnist_dir / LABELS).read_bytes())


# --- the real files ---------------------------------------------------------------


def test_shapes_dtypes_and_counts(full: DataBundle) -> None:
    assert full.train.x.shape == (60_000, 1, 28, 28)
    assert full.test.x.shape == (10_000, 1, 28, 28)
    assert full.train.x.dtype == torch.uint8 and full.train.y.dtype == torch.int64
    assert full.test.x.dtype == torch.uint8 and full.test.y.dtype == torch.int64


def test_label_histogram_and_pixel_range(full: DataBundle) -> None:
    assert torch.bincount(full.train.y, minlength=10).tolist() == TRAIN_HISTOGRAM
    assert torch.bincount(full.test.y, minlength=10).tolist() == TEST_HISTOGRAM
    assert full.train.y[:5].tolist() == [5, 0, 4, 1, 9]
    for x in (full.train.x, full.test.x):
        assert int(x.min()) == 0 and int(x.max()) == 255
    assert 33.0 < full.train.x.float().mean().item() < 33.6  # MNIST mean 0.1307·255


def test_meta_and_provenance(full: DataBundle, mnist_dir: Path) -> None:
    meta = full.meta
    assert (meta.name, meta.in_shape, meta.num_classes, meta.encoding) == (
        "mnist",
        (1, 28, 28),
        10,
        "rate",
    )
    facts = meta.provenance
    assert facts["source"] == str(mnist_dir.absolute())
    assert (facts["n_train"], facts["n_test"]) == ("60000", "10000")
    assert (facts["n_train_available"], facts["n_test_full"]) == ("60000", "10000")
    assert facts["subset"] == "full" and facts["sha256_verified"] == "true"
    for name in FILES:
        assert SHA256[name].startswith(facts[f"sha256.{name}"])
    assert all(isinstance(v, str) for v in facts.values())


def test_limits_take_the_first_samples(
    full: DataBundle, shared_data: Path, mnist_dir: Path
) -> None:
    cfg = MNISTConfig(
        val_size=0, root=str(mnist_dir), train_limit=100, test_limit=20_000
    )
    small = build(cfg, make_ctx(shared_data / "elsewhere"))  # root overrides
    assert len(small.train) == 100 and len(small.test) == 10_000
    assert torch.equal(small.train.x, full.train.x[:100])
    assert torch.equal(small.train.y, full.train.y[:100])
    facts = small.meta.provenance
    assert facts["n_train"] == "100" and facts["n_train_available"] == "60000"
    assert facts["subset"] == "train: first 100; test: full"


def test_zero_limit_is_refused(shared_data: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.test_limit=0"):
        build(MNISTConfig(val_size=0, test_limit=0), make_ctx(shared_data))


def test_download_through_mirrors(
    tmp_path: Path, mnist_dir: Path, http_server, monkeypatch
) -> None:
    # Real HTTP on 127.0.0.1; only the mirror list is swapped for the local server.
    for name in FILES:
        (http_server.root / name).symlink_to(mnist_dir / name)
    monkeypatch.setattr(mnist, "MIRRORS", (http_server.url + "gone/", http_server.url))
    ctx = make_ctx(tmp_path / "data")
    bundle = build(MNISTConfig(val_size=0, test_limit=10), ctx)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        FILES
    )
    assert len(bundle.train) == 60_000 and bundle.meta.provenance["n_test"] == "10"


# --- missing and damaged files ----------------------------------------------------


def test_missing_folder_names_root_and_fix(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        build(
            MNISTConfig(val_size=0, root=str(root), download=False), make_ctx(tmp_path)
        )
    assert str(info.value) == (
        f"dataset.root={root} has no train-images-idx3-ubyte.gz; set SNNRUN_DATA "
        "or dataset.root to a folder with the four MNIST IDX files "
        "(dataset.download=true fetches them when online)"
    )


def test_wrong_checksum_is_refused(tmp_path: Path, mnist_dir: Path) -> None:
    payload = bytearray(labels_payload(mnist_dir))
    payload[8] = (payload[8] + 1) % 10  # a valid file with one label changed
    altered = gzip.compress(bytes(payload))
    folder = copy_with(tmp_path, mnist_dir, {LABELS: altered})
    with pytest.raises(DataError) as info:
        build(
            MNISTConfig(val_size=0, root=str(folder), download=False),
            make_ctx(tmp_path),
        )
    message = str(info.value)
    assert f"{folder / LABELS} is corrupt or altered" in message
    assert f"expected {SHA256[LABELS]}" in message
    assert "Delete it so it is downloaded again" in message


def test_verify_false_accepts_altered_file_and_records_hash(
    tmp_path: Path, mnist_dir: Path
) -> None:
    payload = bytearray(labels_payload(mnist_dir))
    payload[8] = 9
    altered = gzip.compress(bytes(payload))
    folder = copy_with(tmp_path, mnist_dir, {LABELS: altered})
    cfg = MNISTConfig(val_size=0, root=str(folder), download=False, verify=False)
    bundle = build(cfg, make_ctx(tmp_path))
    assert int(bundle.train.y[0]) == 9
    facts = bundle.meta.provenance
    assert facts["sha256_verified"] == "false"
    assert not SHA256[LABELS].startswith(facts[f"sha256.{LABELS}"])


def test_truncated_gzip_is_caught_by_checksum(tmp_path: Path, mnist_dir: Path) -> None:
    data = (mnist_dir / LABELS).read_bytes()
    folder = copy_with(tmp_path, mnist_dir, {LABELS: data[: len(data) // 2]})
    with pytest.raises(DataError, match="corrupt or altered"):
        build(
            MNISTConfig(val_size=0, root=str(folder), download=False),
            make_ctx(tmp_path),
        )


def test_truncated_gzip_without_verify(tmp_path: Path, mnist_dir: Path) -> None:
    data = (mnist_dir / LABELS).read_bytes()
    folder = copy_with(tmp_path, mnist_dir, {LABELS: data[: len(data) // 2]})
    cfg = MNISTConfig(val_size=0, root=str(folder), download=False, verify=False)
    with pytest.raises(DataError) as info:
        build(cfg, make_ctx(tmp_path))
    message = str(info.value)
    assert f"{folder / LABELS} is corrupt: it is not a complete gzip file" in message
    assert "EOFError" in message and "Delete it" in message


def test_swapped_files_are_named(tmp_path: Path, mnist_dir: Path) -> None:
    images = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    folder = copy_with(tmp_path, mnist_dir, {"t10k-labels-idx1-ubyte.gz": images})
    cfg = MNISTConfig(val_size=0, root=str(folder), download=False, verify=False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz holds shape"):
        build(cfg, make_ctx(tmp_path))


def test_files_of_different_lengths(tmp_path: Path, mnist_dir: Path) -> None:
    test_labels = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    folder = copy_with(tmp_path, mnist_dir, {LABELS: test_labels})
    cfg = MNISTConfig(val_size=0, root=str(folder), download=False, verify=False)
    with pytest.raises(DataError, match="60000 samples but 10000 labels"):
        build(cfg, make_ctx(tmp_path))


# --- read_idx on crafted files ----------------------------------------------------


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


def test_read_idx_shapes(tmp_path: Path) -> None:
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") * 2 + (3).to_bytes(4, "big")
    images = read_idx(write_gz(tmp_path / "i.gz", header + bytes(range(12))))
    assert images.shape == (2, 2, 3) and images.dtype == torch.uint8
    assert images.flatten().tolist() == list(range(12))
    images[0, 0, 0] = 7  # writable, not a view of the immutable bytes


def test_read_idx_bad_magic(tmp_path: Path, mnist_dir: Path) -> None:
    payload = b"\x00\x00\x08\x02" + labels_payload(mnist_dir)[4:]
    path = write_gz(tmp_path / "labels.gz", payload)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert f"{path} is corrupt: wrong magic number 0x00000802" in str(info.value)


def test_read_idx_size_mismatch(tmp_path: Path, mnist_dir: Path) -> None:
    path = write_gz(tmp_path / "labels.gz", labels_payload(mnist_dir)[:-1])
    with pytest.raises(DataError, match=r"promises 60000 bytes .* but 59999 follow"):
        read_idx(path)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"plain text, not gzip", "BadGzipFile"),
        (gzip.compress(b"\x00\x00\x08\x01" + b"x" * 100)[:-12], "EOFError"),
        (gzip.compress(b"abc")[:10] + b"\xff" * 20, "error"),  # broken deflate data
    ],
)
def test_read_idx_broken_gzip(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "f.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"not a complete gzip file \\({error}"):
        read_idx(path)


def test_read_idx_short_header(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(write_gz(tmp_path / "f.gz", b"\x00\x00"))
    with pytest.raises(DataError, match="header of 3 dimensions is cut short"):
        read_idx(write_gz(tmp_path / "g.gz", b"\x00\x00\x08\x03\x00\x00\x00\x01"))
