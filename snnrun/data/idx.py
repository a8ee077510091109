"""Reader for gzip-compressed IDX files (the MNIST file format).

Layout after decompression (all integers big-endian):

    bytes 0-1   zero
    byte  2     element type, 0x08 = unsigned byte
    byte  3     number of dimensions D
    4·D bytes   the sizes of the D dimensions (uint32 each)
    rest        the data, C order, one byte per element

Only the two MNIST kinds are accepted: 0x00000803 (images ``[N, rows, cols]``) and
0x00000801 (labels ``[N]``).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from snnrun.data import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_KNOWN_MAGIC = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


def read_idx(path: Path) -> torch.Tensor:
    """Read a gzip IDX file into a writable uint8 tensor.

    Args:
        path: ``*.gz`` file holding IDX images (``0x803``) or labels (``0x801``).

    Returns:
        uint8 tensor of the shape in the header: ``[N, rows, cols]`` or ``[N]``.

    Raises:
        DataError: unreadable or truncated gzip, wrong magic number, or a data size
            that disagrees with the header. The message names the file and the fix.
    """
    raw = _decompress(path)
    dims, header_bytes = _parse_header(raw, path)
    expected = math.prod(dims)
    actual = len(raw) - header_bytes
    if actual != expected:
        raise _bad_file(
            path,
            f"the header promises {expected} bytes of data (shape {list(dims)}) but "
            f"{actual} follow",
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)
    # frombuffer views the immutable bytes object; torch needs a writable array.
    return torch.from_numpy(data.copy())


def _decompress(path: Path) -> bytes:
    """The decompressed bytes of ``path``, or a DataError saying why not."""
    try:
        return gzip.decompress(Path(path).read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise _bad_file(
            path, f"it is not a complete gzip file ({type(err).__name__}: {err})"
        ) from err
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err


def _parse_header(raw: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """Dimensions and header length in bytes of the decompressed IDX ``raw``."""
    if len(raw) < 4:
        raise _bad_file(path, f"only {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _KNOWN_MAGIC:
        raise _bad_file(
            path,
            f"wrong magic number 0x{magic:08x} (expected 0x{IMAGES_MAGIC:08x} for "
            f"images or 0x{LABELS_MAGIC:08x} for labels), so it is not an MNIST IDX "
            "file",
        )
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise _bad_file(path, f"the header of {ndim} dimensions is cut short")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, header_bytes


def _bad_file(path: Path, problem: str) -> DataError:
    """A DataError for a corrupt file, with the standard fix."""
    return DataError(
        f"{path} is corrupt: {problem}. Delete it so it is downloaded again, or set "
        "SNNRUN_DATA=/path/to/data or dataset.root=/path/to/folder to a folder with "
        "a good copy."
    )
