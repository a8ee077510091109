"""A data folder's own ``SHA256SUMS`` manifest: read it, check files against it.

The manifest is optional (the official N-MNIST archives have none; the shared sample
has one). Files it lists are checked before they are read (~30 ms per 1,100 small
files); files it does not list pass unchecked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from snnrun.data import SHORT_HASH, DataError
from snnrun.data.download import sha256_file

SHA256SUMS = "SHA256SUMS"


def read_sha256sums(root: Path) -> dict[str, str] | None:
    """``<root>/SHA256SUMS`` (``sha256sum`` format) as relative path → hex digest.

    Returns None when the folder has no such file (the official archives do not).

    Raises:
        DataError: the file exists but a line is not ``<64 hex>  <path>``.
    """
    path = root / SHA256SUMS
    if not path.is_file():
        return None
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")  # "*" marks binary mode in sha256sum output
        if len(digest) != 64 or not name:
            raise DataError(
                f"{path} line {number} is not '<sha256>  <path>': {line[:80]!r}; "
                "fix or delete that file"
            )
        sums[name] = digest.lower()
    return sums


def verify_files(
    root: Path, paths: Iterable[Path], sums: dict[str, str] | None, what: str
) -> None:
    """Check every file of ``root`` in ``paths`` against ``sums``.

    Files the sums do not list, or no sums at all, pass unchecked.

    Raises:
        DataError: a file whose SHA256 differs, named (as a ``what``) with the fix.
    """
    if not sums:
        return
    for path in paths:
        expected = sums.get(path.relative_to(root).as_posix())
        if expected is None:
            continue
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(
                f"corrupt {what} {path}: SHA256 {actual[:16]}… "
                f"differs from {expected[:16]}… in {root / SHA256SUMS} (truncated or "
                "altered). Restore it from the original copy, or delete the folder "
                "and download again."
            )


def checksum_facts(
    root: Path, paths: Iterable[Path], sums: dict[str, str] | None
) -> dict[str, str]:
    """Provenance: how many used files SHA256SUMS covers, and one hash over their
    listed digests (it changes when any used file's expected content does)."""
    if sums is None:
        return {"sha256sums": "none"}
    names = sorted(path.relative_to(root).as_posix() for path in paths)
    listed = [f"{sums[n]}  {n}" for n in names if n in sums]
    summary = hashlib.sha256("\n".join(listed).encode()).hexdigest()
    return {
        "sha256sums": summary[:SHORT_HASH],
        "sha256_checked": f"{len(listed)}/{len(names)}",
    }
