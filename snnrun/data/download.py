"""Fetch a data file once, verify it, and never leave a half-written file behind.

``ensure_file`` is the one entry point: a file that is present is checked against its
SHA256; a missing one is downloaded (mirror by mirror) into a temporary file in the
same folder, verified, fsynced and renamed into place with ``os.replace``. A rename
within one folder is atomic, so concurrent builders (e.g. DDP ranks) and interrupted
downloads never expose a partial file under the final name. Every failure is a
``DataError`` that says which file, where it was looked for, and how to fix it
offline.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from snnrun import __version__
from snnrun.data import DataError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
USER_AGENT = f"snnrun/{__version__} (python-urllib)"

# Per-URL failures that mean "try the next mirror": URLError/HTTPError and timeouts are
# OSErrors, a truncated body is an HTTPException, a malformed URL a ValueError.
_FETCH_ERRORS = (OSError, http.client.HTTPException, ValueError)


class _ChecksumMismatch(Exception):
    """A download finished but its bytes hash to something unexpected."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Lowercase hex digest of a file (a ``hashlib`` algorithm name), read in 1 MiB
    chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA256 of a file as 64 lowercase hex digits."""
    return file_digest(path, "sha256")


def offline_fix(path: Path) -> str:
    """The sentence telling a user how to supply ``path`` by hand."""
    return (
        f"To fix it offline, copy {path.name} into {path.parent}, or set "
        "SNNRUN_DATA=/path/to/data or dataset.root=/path/to/folder to use a folder "
        "that already has it."
    )


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise ``DataError`` unless ``path`` hashes to ``expected`` (hex, any case)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DataError(
            f"{what} at {path} is corrupt or altered: SHA256 expected {expected}, "
            f"got {actual}. Delete it so it is downloaded again, or set "
            "SNNRUN_DATA=/path/to/data or dataset.root=/path/to/folder to a folder "
            "with a good copy."
        )


def ensure_file(
    path: Path,
    urls: Sequence[str],
    sha256: str | None,
    *,
    download: bool,
    what: str,
) -> Path:
    """Make sure ``path`` exists with the expected content and return its absolute path.

    Args:
        path: where the file belongs; its folder is created when downloading.
        urls: full URLs to try in order (mirrors).
        sha256: expected hex digest, or None to skip the check.
        download: fetch the file when it is missing; if False a missing file is an
            error.
        what: human label for messages, e.g. ``"MNIST training images"``.

    Raises:
        DataError: the file is corrupt, missing (and not downloadable), every URL
            failed, or its folder is not writable.
    """
    path = Path(path).expanduser().absolute()
    if path.is_file():
        if sha256 is not None:
            check_sha256(path, sha256, what)
        return path
    if path.exists():
        raise DataError(f"{what}: {path} exists but is not a file. {offline_fix(path)}")
    if not download:
        raise DataError(
            f"{what} not found: {path} does not exist and downloading is off "
            f"(dataset.download=false). {offline_fix(path)}"
        )
    return _download_first(path, urls, sha256, what)


def _download_first(
    path: Path, urls: Sequence[str], sha256: str | None, what: str
) -> Path:
    """Try each URL until one yields a verified file at ``path``."""
    if not urls:
        raise DataError(
            f"{what}: {path} is missing and no URL is known for it. {offline_fix(path)}"
        )
    _make_folder(path, what)
    last_error = "none"
    for url in urls:
        log.info("downloading %s from %s", path.name, url)
        try:
            _download_one(url, path, sha256)
        except (*_FETCH_ERRORS, _ChecksumMismatch) as err:
            last_error = f"{url}: {type(err).__name__}: {err}"
            log.warning("download failed: %s", last_error)
            continue
        log.info("saved %s", path)
        return path
    tried = ", ".join(urls)
    raise DataError(
        f"could not download {what} ({path.name}) to {path}: tried {tried}; last "
        f"error: {last_error}. {offline_fix(path)}"
    )


def _make_folder(path: Path, what: str) -> None:
    """Create the target folder, or explain why it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{what}: cannot create the folder {path.parent} to download "
            f"{path.name} into ({err}). {offline_fix(path)}"
        ) from err


def _download_one(url: str, path: Path, sha256: str | None) -> None:
    """Stream ``url`` into a temp file beside ``path``, verify, then rename it."""
    tmp = _temp_file_beside(path)
    try:
        with tmp:
            digest = _stream(url, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        if sha256 is not None and digest != sha256.lower():
            raise _ChecksumMismatch(
                f"downloaded bytes have SHA256 {digest}, expected {sha256}"
            )
        os.replace(tmp.name, path)
    finally:
        # After a successful os.replace the temp name is gone; otherwise clean up.
        Path(tmp.name).unlink(missing_ok=True)


def _temp_file_beside(path: Path) -> IO[bytes]:
    """A new temp file in ``path``'s folder (same file system: rename is atomic)."""
    try:
        return tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
        )
    except OSError as err:
        raise DataError(
            f"the folder {path.parent} is not writable, so {path.name} cannot be "
            f"downloaded there ({err}). {offline_fix(path)}"
        ) from err


def _stream(url: str, out: IO[bytes]) -> str:
    """Copy the body of ``url`` into ``out``; return its SHA256 hex digest."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        expected = response.headers.get("Content-Length")
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
    if expected is not None and expected.isdigit() and int(expected) != received:
        raise http.client.IncompleteRead(b"", int(expected) - received)
    return digest.hexdigest()
