"""8-bit grayscale image files without Pillow: read PGM, PNG and NPY; write PGM.

PGM means binary P5 (maxval ≤ 255, scaled to 0..255); PNG means 8-bit grayscale,
non-interlaced, decoded here with ``zlib``; NPY means a uint8 ``[H, W]`` array. The
decoders raise ``ValueError`` with the reason; :func:`read_image` turns any failure
into a ``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from snnrun.data import DataError


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


# ----------------------------------------------------------------------- encoder
def encode_pgm(image: np.ndarray) -> bytes:
    """Binary PGM (P5, maxval 255) bytes of a uint8 ``[H, W]`` image."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected uint8 [H, W], got {image.dtype} {image.shape}")
    height, width = image.shape
    return f"P5\n{width} {height}\n255\n".encode() + image.tobytes()
