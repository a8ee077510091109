"""Fetch the official N-MNIST archives and extract them atomically.

Two zips (``train.zip``, ``test.zip``, ~1 GB together) from Mendeley, each checked
against its MD5 and unpacked into a temp folder beside the target; the target appears
under its final name only when both splits are complete, so an interrupted or failed
download never leaves a half-extracted data set behind.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from snnrun.data import DataError
from snnrun.data.cache import staged_dir
from snnrun.data.download import ensure_file, file_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One official N-MNIST zip: the split folder it holds, where to get it, its MD5."""

    folder: str
    filename: str
    urls: tuple[str, ...]
    md5: str


_MENDELEY = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
# Same URLs and MD5s as tonic 1.7's tonic.datasets.NMNIST (a test pins the match);
# copied so that importing snnrun does not import tonic.
ARCHIVES = (
    Archive(
        "Train",
        "train.zip",
        (_MENDELEY + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",),
        "20959b8e626244a1b502305a9e6e2031",
    ),
    Archive(
        "Test",
        "test.zip",
        (_MENDELEY + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",),
        "69ca8762b2fe404d9b9bad1103e97832",
    ),
)


def download_nmnist(
    target: Path, download_dir: Path, archives: tuple[Archive, ...] = ARCHIVES
) -> Path:
    """Fetch the official zips, check their MD5 and extract them into ``target``.

    Extraction happens in a temp folder beside ``target`` that is renamed into place
    only when both splits are complete; the zips (in ``download_dir``) are deleted
    afterwards.

    Returns:
        ``target``, now holding ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``.

    Raises:
        DataError: a download failed, a checksum differs, or an archive is broken.
    """
    try:
        with staged_dir(target) as stage:
            for archive in archives:
                zip_path = ensure_file(
                    download_dir / f"nmnist-{archive.filename}",
                    archive.urls,
                    None,
                    download=True,
                    what=f"N-MNIST {archive.folder} archive",
                )
                _check_md5(zip_path, archive.md5)
                _extract_split(zip_path, stage, archive.folder)
    except OSError as err:
        raise DataError(f"cannot write N-MNIST into {target} ({err}).") from err
    for archive in archives:
        (download_dir / f"nmnist-{archive.filename}").unlink(missing_ok=True)
    log.info("N-MNIST extracted into %s", target)
    return target


def _check_md5(path: Path, expected: str) -> None:
    actual = file_digest(path, "md5")
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{path} has MD5 {actual}, expected {expected}: the download "
            "is corrupt; it was deleted, run again to download it anew."
        )


def _extract_split(zip_path: Path, stage: Path, folder: str) -> None:
    """Unzip into ``stage`` and move the archive's ``folder`` (at any depth ≤ 2) to
    ``stage/folder``."""
    scratch = stage / f".extract-{folder}"
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(scratch)
    except zipfile.BadZipFile as err:
        zip_path.unlink(missing_ok=True)
        raise DataError(
            f"{zip_path} is not a valid zip ({err}); it was deleted, run again to "
            "download it anew."
        ) from err
    found = [p for p in (*scratch.glob("*"), *scratch.glob("*/*")) if p.name == folder]
    if not found or not found[0].is_dir():
        raise DataError(
            f"{zip_path} holds no {folder}/ folder; is it the right archive?"
        )
    found[0].rename(stage / folder)
    shutil.rmtree(scratch)
