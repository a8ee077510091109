"""N-MNIST: decoding and binning (spec §6, test 11.9), the builder, its errors.

Real data: the 1,000/100 sample under ``shared_data`` (conftest). Hand-made event
streams pin the binning rule ``k = floor((t - t_start) / bin)``, 0 <= k < T.
"""

from __future__ import annotations

import csv
import hashlib
import io
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from snnrun.data import BuildContext, DataError
from snnrun.data import nmnist as nmnist_module
from snnrun.data.events import EVENT_DTYPE, bin_events
from snnrun.data.nmnist import (
    NMNISTConfig,
    build,
    dataset_label,
    list_recordings,
    read_recording,
)
from snnrun.data.nmnist_download import ARCHIVES, Archive, download_nmnist

PIXELS = 34 * 34


# ------------------------------------------------------------------------ helpers
def encode_events(x, y, t, p) -> bytes:
    """The spec's 5-byte layout: x | y | p(1) t(23, big-endian)."""
    out = bytearray()
    for xi, yi, ti, pi in zip(x, y, t, p, strict=True):
        out += bytes([xi, yi, (pi << 7) | (ti >> 16), (ti >> 8) & 0xFF, ti & 0xFF])
    return bytes(out)


def make_events(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Structured events from (x, y, t_us, p) tuples."""
    return np.array(rows, dtype=EVENT_DTYPE)


def write_fake_root(root: Path, per_split: int = 3) -> Path:
    """``root/{Train,Test}/<digit>/<index>.bin`` with a few valid recordings."""
    for folder in ("Train", "Test"):
        for index in range(1, per_split + 1):
            digit = index % 10
            path = root / folder / str(digit) / f"{index:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_events([1, 2], [3, 4], [1000, 25_000], [0, 1]))
    return root


def context(data_root: Path, cache_root: Path, time_steps: int = 30) -> BuildContext:
    return BuildContext(data_root, cache_root, time_steps, torch.Generator())


@pytest.fixture(scope="module")
def sample_root(shared_data: Path) -> Path:
    return shared_data / "nmnist-sample"


@pytest.fixture(scope="module")
def manifest(sample_root: Path) -> list[dict[str, str]]:
    with open(sample_root / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# ------------------------------------------------------ spec 11.9 on real data
def test_every_sample_file_decodes_as_the_manifest_says(
    sample_root: Path, manifest: list[dict[str, str]]
) -> None:
    assert len(manifest) == 1100
    for row in manifest:
        events = read_recording(sample_root / row["path"])
        assert len(events) == int(row["n_events"]), row["path"]
        assert int(events["t"][-1]) == int(row["t_max_us"]), row["path"]
        assert events["x"].max() <= 33 and events["y"].max() <= 33
        assert events["x"].min() >= 0 and events["y"].min() >= 0
        assert np.all(np.diff(events["t"]) >= 0)
        assert set(np.unique(events["p"])) <= {0, 1}


def test_decoder_agrees_with_tonic_reader(sample_root: Path) -> None:
    tonic_io = pytest.importorskip("tonic.io")
    for path in sorted(sample_root.glob("Test/*/*.bin"))[:40]:
        ours = read_recording(path)
        theirs = tonic_io.read_mnist_file(str(path), dtype=EVENT_DTYPE)
        for field in ("x", "y", "t", "p"):
            np.testing.assert_array_equal(ours[field], theirs[field])


@pytest.mark.parametrize(
    ("bin_ms", "time_steps", "t_start_ms"),
    [(10.0, 30, 0.0), (5.0, 15, 0.0), (1.0, 30, 50.0)],
)
def test_frame_counts_sum_to_events_in_window(
    sample_root: Path, bin_ms: float, time_steps: int, t_start_ms: float
) -> None:
    start_us, end_us = t_start_ms * 1000, (t_start_ms + time_steps * bin_ms) * 1000
    for path in sorted(sample_root.glob("Train/3/*.bin"))[:20]:
        events = read_recording(path)
        frames = bin_events(
            events,
            time_steps=time_steps,
            bin_us=bin_ms * 1000,
            t_start_us=start_us,
            frame_mode="count",
        )
        in_window = int(((events["t"] >= start_us) & (events["t"] < end_us)).sum())
        assert frames.shape == (time_steps, 2, 34, 34)
        assert frames.max() < 255  # no clipping, so the sum is exact
        assert int(frames.sum(dtype=np.int64)) == in_window
        for polarity in (0, 1):
            in_pol = (events["p"] == polarity) & (events["t"] >= start_us)
            in_pol &= events["t"] < end_us
            assert int(frames[:, polarity].sum(dtype=np.int64)) == int(in_pol.sum())


def test_binning_agrees_with_tonic_toframe(sample_root: Path) -> None:
    transforms = pytest.importorskip("tonic.transforms")
    to_frame = transforms.ToFrame(
        sensor_size=(34, 34, 2), time_window=10_000, start_time=0, end_time=300_000
    )
    for path in sorted(sample_root.glob("Train/7/*.bin"))[:20]:
        events = read_recording(path)
        ours = bin_events(events, time_steps=30, bin_us=10_000.0, frame_mode="count")
        np.testing.assert_array_equal(ours, to_frame(events))


def test_build_on_the_sample(
    shared_data: Path, tmp_path: Path, manifest: list[dict[str, str]]
) -> None:
    bundle = build(NMNISTConfig(val_size=0), context(shared_data, tmp_path))
    assert bundle.train.x.shape == (1000, 30, 2, 34, 34)
    assert bundle.test.x.shape == (100, 30, 2, 34, 34)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.y.dtype == torch.int64
    assert int(bundle.train.x.max()) == 1  # binary frames
    # MNIST order: file name (index) first, so the labels follow the manifest by index
    train_rows = sorted(
        (r for r in manifest if r["split"] == "Train"),
        key=lambda r: int(r["mnist_index_1based"]),
    )
    assert bundle.train.y.tolist() == [int(r["label"]) for r in train_rows]
    meta = bundle.meta
    assert meta.name == "nmnist (1k-train/100-test subset)"
    assert (meta.in_shape, meta.num_classes, meta.encoding) == (
        (2, 34, 34),
        10,
        "frames",
    )
    facts = meta.provenance
    assert facts["full_dataset"] == "false"
    assert (facts["n_train"], facts["n_test"]) == ("1000", "100")
    assert facts["source"] == str((shared_data / "nmnist-sample").absolute())
    assert (facts["bin_ms"], facts["time_steps"], facts["frame_mode"]) == (
        "10.0",
        "30",
        "binary",
    )
    assert facts["polarity"] == "split" and facts["denoise_ms"] == "none"
    assert len(facts["file_list_sha256"]) == 16


def test_build_frames_flatten_as_p_y_x(sample_root: Path, tmp_path: Path) -> None:
    """Spec §6: the MLP's input index is p·1156 + y·34 + x."""
    bundle = build(
        NMNISTConfig(
            val_size=0, root=str(sample_root), train_limit=1, test_limit=1, cache=False
        ),
        context(tmp_path, tmp_path),
    )
    first = list_recordings(sample_root, "train")[0]
    events = read_recording(first.path)
    events = events[events["t"] < 10_000]  # frame 0
    flat = bundle.train.x[0, 0].reshape(-1)
    expected = np.zeros(2 * PIXELS, dtype=np.uint8)
    expected[events["p"] * PIXELS + events["y"] * 34 + events["x"]] = 1
    np.testing.assert_array_equal(flat.numpy(), expected)


# ------------------------------------------------------- hand-made event streams
def test_binning_window_edges() -> None:
    """t_start = 10 ms, bin = 5 ms, T = 3: the window is [10, 25) ms."""
    events = make_events(
        [
            (0, 0, 9_999, 0),  # before t_start: dropped
            (1, 0, 10_000, 0),  # k = 0 (left edge included)
            (2, 0, 14_999, 1),  # k = 0
            (3, 0, 15_000, 0),  # k = 1
            (4, 0, 24_999, 1),  # k = 2 (last µs of the window)
            (5, 0, 25_000, 0),  # k = 3 = T: dropped
            (6, 0, 90_000, 1),  # far after: dropped
        ]
    )
    frames = bin_events(
        events, time_steps=3, bin_us=5_000.0, t_start_us=10_000.0, frame_mode="count"
    )
    assert frames.shape == (3, 2, 34, 34) and frames.dtype == np.uint8
    hits = sorted(zip(*np.nonzero(frames), strict=True))
    assert hits == [(0, 0, 0, 1), (0, 1, 0, 2), (1, 0, 0, 3), (2, 1, 0, 4)]
    assert int(frames.sum()) == 4


def test_binary_count_and_merge_modes() -> None:
    # pixel (x=7, y=2): two OFF and one ON event in frame 0; 300 ON events at (0, 0)
    rows = [(7, 2, 100, 0), (7, 2, 200, 0), (7, 2, 300, 1)]
    rows += [(0, 0, 400, 1)] * 300
    events = make_events(rows)
    kwargs = {"time_steps": 2, "bin_us": 1_000.0}
    count = bin_events(events, frame_mode="count", **kwargs)
    assert (count[0, 0, 2, 7], count[0, 1, 2, 7], count[0, 1, 0, 0]) == (2, 1, 255)
    binary = bin_events(events, frame_mode="binary", **kwargs)
    assert (binary[0, 0, 2, 7], binary[0, 1, 2, 7], binary[0, 1, 0, 0]) == (1, 1, 1)
    assert int(binary.sum()) == 3
    merged = bin_events(events, frame_mode="count", merge_polarity=True, **kwargs)
    assert merged.shape == (2, 1, 34, 34)
    assert (merged[0, 0, 2, 7], merged[0, 0, 0, 0]) == (3, 255)
    merged_binary = bin_events(
        events, frame_mode="binary", merge_polarity=True, **kwargs
    )
    assert int(merged_binary.sum()) == 2


def test_flatten_index_of_a_single_event() -> None:
    frames = bin_events(make_events([(3, 5, 0, 1)]), time_steps=1, bin_us=1.0)
    assert np.flatnonzero(frames[0].reshape(-1)).tolist() == [1 * PIXELS + 5 * 34 + 3]


def test_empty_stream_gives_empty_frames() -> None:
    frames = bin_events(make_events([]), time_steps=4, bin_us=10.0)
    assert frames.shape == (4, 2, 34, 34) and not frames.any()


def test_merge_build_equals_sum_of_split_channels(
    sample_root: Path, tmp_path: Path
) -> None:
    base = {"root": str(sample_root), "train_limit": 5, "test_limit": 1, "cache": False}
    ctx = context(tmp_path, tmp_path, time_steps=10)
    split = build(NMNISTConfig(val_size=0, frame_mode="count", **base), ctx)
    merged = build(
        NMNISTConfig(val_size=0, frame_mode="count", polarity="merge", **base), ctx
    )
    assert merged.meta.in_shape == (1, 34, 34)
    assert torch.equal(
        merged.train.x[:, :, 0], split.train.x.sum(dim=2, dtype=torch.uint8)
    )


def test_denoise_only_removes_events(sample_root: Path, tmp_path: Path) -> None:
    base = {"root": str(sample_root), "train_limit": 3, "test_limit": 1, "cache": False}
    ctx = context(tmp_path, tmp_path)
    plain = build(NMNISTConfig(val_size=0, frame_mode="count", **base), ctx)
    clean = build(
        NMNISTConfig(val_size=0, frame_mode="count", denoise_ms=5.0, **base), ctx
    )
    assert bool((clean.train.x <= plain.train.x).all())
    assert int(clean.train.x.sum()) < int(plain.train.x.sum())
    assert clean.meta.provenance["denoise_ms"] == "5.0"


def test_limits_keep_the_first_mnist_indices(sample_root: Path, tmp_path: Path) -> None:
    cfg = NMNISTConfig(
        val_size=0, root=str(sample_root), train_limit=12, test_limit=4, cache=False
    )
    bundle = build(cfg, context(tmp_path, tmp_path, time_steps=2))
    # MNIST labels of training indices 1..12 and test indices 1..4
    assert bundle.train.y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5]
    assert bundle.test.y.tolist() == [7, 2, 1, 0]
    assert bundle.meta.name == "nmnist (12-train/4-test subset)"
    assert bundle.meta.provenance["n_train_available"] == "1000"


def test_dataset_label() -> None:
    assert dataset_label(60_000, 10_000) == "nmnist"
    assert dataset_label(1000, 100) == "nmnist (1k-train/100-test subset)"
    assert dataset_label(60_000, 500) == "nmnist (60k-train/500-test subset)"


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"bin_ms": 0.0}, "dataset.bin_ms"),
        ({"bin_ms": float("nan")}, "dataset.bin_ms"),
        ({"t_start_ms": -1.0}, "dataset.t_start_ms"),
        ({"frame_mode": "rate"}, "dataset.frame_mode"),
        ({"polarity": "both"}, "dataset.polarity"),
        ({"denoise_ms": 0.0}, "dataset.denoise_ms"),
        ({"train_limit": 0}, "dataset.train_limit"),
        ({"test_limit": -3}, "dataset.test_limit"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, override: dict, key: str) -> None:
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        build(NMNISTConfig(val_size=0, **override), context(tmp_path, tmp_path))


def test_zero_time_steps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"stbp\.time_steps=0"):
        build(NMNISTConfig(val_size=0), context(tmp_path, tmp_path, time_steps=0))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (encode_events([1], [2], [3], [0]) + b"\x01\x02", "not a multiple of 5"),
        (b"", "the file is empty"),
        (encode_events([1, 1], [2, 240], [3, 4], [0, 0]), "overflow"),
        (encode_events([34], [2], [3], [1]), "x=34"),
        (encode_events([1, 1], [2, 2], [500, 400], [0, 0]), "timestamps decrease"),
    ],
)
def test_corrupt_recording_names_file_and_fix(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    root = write_fake_root(tmp_path / "nmnist")
    bad = root / "Train" / "2" / "00002.bin"
    bad.write_bytes(payload)
    with pytest.raises(DataError) as info:
        build(
            NMNISTConfig(val_size=0, root=str(root), cache=False),
            context(tmp_path, tmp_path),
        )
    message = str(info.value)
    assert str(bad) in message and reason in message
    assert "Delete it" in message


def test_offline_message_names_both_places(tmp_path: Path) -> None:
    data_root = tmp_path / "empty"
    data_root.mkdir()
    with pytest.raises(DataError) as info:
        build(NMNISTConfig(val_size=0, download=False), context(data_root, tmp_path))
    message = str(info.value)
    assert str(data_root / "nmnist") in message
    assert str(data_root / "nmnist-sample") in message
    assert f"{data_root / 'nmnist'}/Train/<digit>/*.bin" in message
    assert "SNNRUN_DATA" in message and "dataset.root" in message
    assert "dataset.download=false" in message


def test_incomplete_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "nmnist"
    (root / "Train" / "0").mkdir(parents=True)
    with pytest.raises(DataError, match="has no Train/ and Test/"):
        build(NMNISTConfig(val_size=0, download=False), context(tmp_path, tmp_path))


def test_empty_split_folder_is_refused(tmp_path: Path) -> None:
    root = write_fake_root(tmp_path / "nmnist")
    for path in (root / "Test").rglob("*.bin"):
        path.unlink()
    with pytest.raises(DataError, match=r"Test holds no <digit>/\*\.bin"):
        build(NMNISTConfig(val_size=0, download=False), context(tmp_path, tmp_path))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/train.zip"


def test_failed_download_explains_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real archives are on Mendeley (no internet here): point the list elsewhere.
    unreachable = (Archive("Train", "train.zip", (closed_port_url(),), "0" * 32),)
    monkeypatch.setattr(nmnist_module, "ARCHIVES", unreachable)
    data_root = tmp_path / "data"
    data_root.mkdir()
    with pytest.raises(DataError) as info:
        build(
            NMNISTConfig(val_size=0, download=True),
            context(data_root, tmp_path / "cache"),
        )
    message = str(info.value)
    assert "downloading it failed" in message and "could not download" in message
    assert f"{data_root / 'nmnist'}/Train/<digit>/*.bin" in message
    assert not (data_root / "nmnist").exists()
    assert sorted(p.name for p in data_root.iterdir()) == []  # no temp folder left


def zip_split(folder: str, count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(1, count + 1):
            name = f"{folder}/{index % 10}/{index:05d}.bin"
            archive.writestr(name, encode_events([index], [1], [index * 1000], [1]))
    return buffer.getvalue()


def test_download_extracts_verified_archives(tmp_path: Path, http_server) -> None:
    archives = []
    for folder, count in (("Train", 12), ("Test", 5)):
        payload = zip_split(folder, count)
        (http_server.root / f"{folder}.zip").write_bytes(payload)
        md5 = hashlib.md5(payload).hexdigest()
        url = http_server.url + f"{folder}.zip"
        archives.append(Archive(folder, f"{folder.lower()}.zip", (url,), md5))
    target, downloads = tmp_path / "data" / "nmnist", tmp_path / "downloads"
    assert download_nmnist(target, downloads, tuple(archives)) == target
    assert len(list(target.glob("Train/*/*.bin"))) == 12
    assert len(list(target.glob("Test/*/*.bin"))) == 5
    assert sorted(p.name for p in target.iterdir()) == ["Test", "Train"]
    assert list(downloads.iterdir()) == []  # zips removed after extraction
    bundle = build(
        NMNISTConfig(val_size=0, root=str(target)), context(tmp_path, tmp_path, 3)
    )
    assert bundle.train.y.tolist() == [i % 10 for i in range(1, 13)]


def test_download_with_wrong_md5_publishes_nothing(tmp_path: Path, http_server) -> None:
    (http_server.root / "Train.zip").write_bytes(zip_split("Train", 2))
    wrong = (Archive("Train", "train.zip", (http_server.url + "Train.zip",), "0" * 32),)
    target, downloads = tmp_path / "nmnist", tmp_path / "downloads"
    with pytest.raises(DataError, match="MD5"):
        download_nmnist(target, downloads, wrong)
    assert not target.exists()
    assert list(downloads.iterdir()) == []  # the bad zip was deleted
    assert list(tmp_path.glob(".nmnist*")) == []  # no temp folder left


def test_archive_urls_match_tonic() -> None:
    datasets = pytest.importorskip("tonic.datasets")
    tonic_nmnist = datasets.NMNIST
    train, test = ARCHIVES
    assert (train.folder, train.urls, train.md5) == (
        tonic_nmnist.train_folder,
        (tonic_nmnist.train_url,),
        tonic_nmnist.train_md5,
    )
    assert (test.folder, test.urls, test.md5) == (
        tonic_nmnist.test_folder,
        (tonic_nmnist.test_url,),
        tonic_nmnist.test_md5,
    )
