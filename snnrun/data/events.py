"""Pure numpy helpers for event streams: decode N-MNIST bytes, bin events to frames.

An event stream is a numpy structured array with integer fields ``x``, ``y``, ``t``
(µs) and ``p`` (0 = OFF, 1 = ON), the layout tonic uses (``EVENT_DTYPE``), so tonic
transforms such as ``tonic.transforms.Denoise`` apply to it unchanged.

N-MNIST byte format (STBP spec section 6; Orchard et al. 2015), 5 bytes per event::

    byte 0: x            byte 1: y (240 marks a timestamp-overflow event)
    byte 2: bit 7 = polarity, bits 6..0 = timestamp bits 22..16
    byte 3: timestamp bits 15..8        byte 4: timestamp bits 7..0

Binning (spec section 6): an event at time t goes to frame
``k = floor((t - t_start) / bin)`` and is dropped unless ``0 <= k < T``, so the frames
cover exactly ``[t_start, t_start + T*bin)``. ``tonic.transforms.ToFrame`` with
``time_window``, ``start_time`` and ``end_time`` slices the same half-open windows
(``tests/data/test_nmnist.py`` checks they agree on the real sample), but it cannot
merge polarities (a 1-polarity sensor rejects events of both), returns int16, derives
its frame count from a float ``floor`` of the duration, and runs one ``np.add.at`` per
frame. One ``np.bincount`` over the flat index ``(k, c, y, x)`` states the rule
directly and is ~2.3x faster (1,100 sample files: 0.21 s vs 0.49 s).
"""

from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
BYTES_PER_EVENT = 5
OVERFLOW_Y = 240
FRAME_MODES = ("binary", "count")
UINT8_MAX = 255
NMNIST_SENSOR_HW = (34, 34)  # (H, W) pixels of the ATIS recordings


class EventFormatError(ValueError):
    """Bytes that are not a valid N-MNIST event stream; the message says why."""


def decode_nmnist(raw: np.ndarray) -> np.ndarray:
    """Decode and validate N-MNIST bytes.

    Args:
        raw: the file's bytes, uint8 ``[5 * n_events]``.

    Returns:
        Structured array ``[n_events]`` of ``EVENT_DTYPE``: ``x``, ``y`` in 0..33
        (pixels), ``t`` in µs (non-decreasing), ``p`` in {0, 1}.

    Raises:
        EventFormatError: the file is empty or its length is not a multiple of 5,
            an overflow event (y = 240) or a coordinate above 33 occurs, or a
            timestamp decreases.
    """
    if raw.size == 0:
        raise EventFormatError(
            "the file is empty (0 events): truncated or never written"
        )
    if raw.size % BYTES_PER_EVENT:
        raise EventFormatError(
            f"{raw.size} bytes is not a multiple of {BYTES_PER_EVENT} (5 bytes per "
            "event): the file is truncated"
        )
    rows = raw.reshape(-1, BYTES_PER_EVENT).astype(np.int64)
    events = np.empty(rows.shape[0], dtype=EVENT_DTYPE)
    events["x"] = rows[:, 0]
    events["y"] = rows[:, 1]
    events["p"] = rows[:, 2] >> 7
    events["t"] = ((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4]
    _check_events(events, sensor_hw=NMNIST_SENSOR_HW)
    return events


def _check_events(events: np.ndarray, *, sensor_hw: tuple[int, int]) -> None:
    """Raise ``EventFormatError`` on overflow events, bad coordinates, time reversal."""
    height, width = sensor_hw
    overflow = np.flatnonzero(events["y"] == OVERFLOW_Y)
    if overflow.size:
        raise EventFormatError(
            f"event {overflow[0]} is a timestamp-overflow event (y = {OVERFLOW_Y}); "
            "N-MNIST recordings (~300 ms) never need one, so the file is corrupt"
        )
    bad = np.flatnonzero((events["x"] >= width) | (events["y"] >= height))
    if bad.size:
        i = bad[0]
        raise EventFormatError(
            f"event {i} lies at x={events['x'][i]}, y={events['y'][i]}, outside the "
            f"{width}x{height} sensor"
        )
    back = np.flatnonzero(np.diff(events["t"]) < 0)
    if back.size:
        i = back[0] + 1
        raise EventFormatError(
            f"timestamps decrease at event {i} ({events['t'][i - 1]} -> "
            f"{events['t'][i]} µs)"
        )


def bin_events(
    events: np.ndarray,
    *,
    time_steps: int,
    bin_us: float,
    t_start_us: float = 0.0,
    sensor_hw: tuple[int, int] = NMNIST_SENSOR_HW,
    frame_mode: str = "binary",
    merge_polarity: bool = False,
) -> np.ndarray:
    """Accumulate events into ``time_steps`` frames of ``bin_us`` each.

    Frame ``k = floor((t - t_start_us) / bin_us)``; events with ``k < 0`` or
    ``k >= time_steps`` are dropped.

    Args:
        events: structured array with fields ``x``, ``y``, ``t`` (µs), ``p``.
        time_steps: T, the number of frames.
        bin_us: frame width in µs (> 0).
        t_start_us: start of frame 0 in µs.
        sensor_hw: (H, W) in pixels.
        frame_mode: ``"binary"``: 1 where a pixel had at least one event;
            ``"count"``: the number of events, clipped to 255.
        merge_polarity: False: channel c = polarity p (C = 2); True: one channel
            counting both polarities (C = 1).

    Returns:
        uint8 ``[T, C, H, W]``; flattening a frame gives index ``(c*H + y)*W + x``.
    """
    if frame_mode not in FRAME_MODES:
        raise ValueError(f"frame_mode={frame_mode!r}: expected one of {FRAME_MODES}")
    height, width = sensor_hw
    channels = 1 if merge_polarity else 2
    frame = np.floor((events["t"] - t_start_us) / bin_us)
    keep = (frame >= 0) & (frame < time_steps)
    channel = 0 if merge_polarity else events["p"][keep]
    flat = (
        (frame[keep].astype(np.int64) * channels + channel) * height + events["y"][keep]
    ) * width + events["x"][keep]
    counts = np.bincount(flat, minlength=time_steps * channels * height * width)
    limit = 1 if frame_mode == "binary" else UINT8_MAX
    frames = np.minimum(counts, limit).astype(np.uint8)
    return frames.reshape(time_steps, channels, height, width)
