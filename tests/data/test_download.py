"""ensure_file against a real local HTTP server (no mocks except where noted)."""

from __future__ import annotations

import hashlib
import socket
import tempfile
from pathlib import Path

import pytest

from snnrun.data import DataError
from snnrun.data.download import ensure_file, sha256_file

PAYLOAD = b"spikes\n" * 50_000  # 350 kB: several 1 MiB-chunk-boundary-free reads
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD * 4)  # > 1 MiB: several chunks
    assert sha256_file(path) == hashlib.sha256(PAYLOAD * 4).hexdigest()


def test_download_success(tmp_path: Path, http_server) -> None:
    (http_server.root / "file.bin").write_bytes(PAYLOAD)
    target = tmp_path / "data" / "sub" / "file.bin"
    got = ensure_file(
        target, [http_server.url + "file.bin"], PAYLOAD_SHA, download=True, what="demo"
    )
    assert got == target.absolute()
    assert target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == ["file.bin"]  # no temp file left


def test_present_file_is_not_downloaded_again(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(PAYLOAD)
    got = ensure_file(target, [closed_port_url()], PAYLOAD_SHA, download=True, what="x")
    assert got == target


def test_checksum_mismatch_on_download_leaves_no_file(
    tmp_path: Path, http_server
) -> None:
    (http_server.root / "file.bin").write_bytes(PAYLOAD + b"tampered")
    target = tmp_path / "file.bin"
    url = http_server.url + "file.bin"
    with pytest.raises(DataError) as info:
        ensure_file(target, [url], PAYLOAD_SHA, download=True, what="demo file")
    message = str(info.value)
    assert "could not download demo file" in message
    assert url in message
    assert f"expected {PAYLOAD_SHA}" in message
    assert leftovers(tmp_path) == ["served"]  # neither final nor temp file


def test_404_falls_back_to_next_url(tmp_path: Path, http_server) -> None:
    (http_server.root / "mirror2").mkdir()
    (http_server.root / "mirror2" / "file.bin").write_bytes(PAYLOAD)
    target = tmp_path / "out" / "file.bin"
    urls = [http_server.url + "mirror1/file.bin", http_server.url + "mirror2/file.bin"]
    ensure_file(target, urls, PAYLOAD_SHA, download=True, what="demo")
    assert target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == ["file.bin"]


def test_all_urls_fail_gives_offline_guidance(tmp_path: Path, http_server) -> None:
    target = tmp_path / "out" / "file.bin"
    urls = [http_server.url + "missing.bin", closed_port_url()]
    with pytest.raises(DataError) as info:
        ensure_file(target, urls, PAYLOAD_SHA, download=True, what="demo file")
    message = str(info.value)
    assert str(target.absolute()) in message
    assert all(url in message for url in urls)
    assert "last error" in message and "URLError" in message  # the refused one
    assert f"copy file.bin into {target.parent.absolute()}" in message
    assert "SNNRUN_DATA=" in message and "dataset.root=" in message
    assert leftovers(target.parent) == []


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(DataError, match="could not download demo file") as info:
        ensure_file(tmp_path / "f.bin", [url], None, download=True, what="demo file")
    assert "refused" in str(info.value).lower()
    assert url in str(info.value)


def test_missing_without_download(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with pytest.raises(DataError) as info:
        ensure_file(target, [closed_port_url()], None, download=False, what="demo")
    message = str(info.value)
    assert "demo not found" in message and "downloading is off" in message
    assert f"copy f.bin into {tmp_path}" in message


def test_existing_corrupt_file_names_both_hashes(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"not the payload")
    actual = hashlib.sha256(b"not the payload").hexdigest()
    with pytest.raises(DataError) as info:
        ensure_file(target, [], PAYLOAD_SHA, download=True, what="demo file")
    message = str(info.value)
    assert "corrupt or altered" in message
    assert f"expected {PAYLOAD_SHA}" in message and f"got {actual}" in message
    assert "Delete it" in message
    assert target.read_bytes() == b"not the payload"  # never deleted for the user


def test_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(DataError, match="cannot create the folder"):
        ensure_file(
            blocker / "f.bin", ["http://127.0.0.1:1/"], None, download=True, what="d"
        )


def test_unwritable_folder_is_reported(tmp_path: Path, monkeypatch) -> None:
    # Mocked because the tests may run as root, where chmod cannot make a folder
    # read-only; this is what NamedTemporaryFile raises in a read-only folder.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(DataError, match=r"folder .* is not writable"):
        ensure_file(
            tmp_path / "f.bin", ["http://127.0.0.1:1/"], None, download=True, what="d"
        )
