"""Turn a batch into the spike input ``[T, B, ...]`` the network steps through.

STBP spec section 6: a static image is Bernoulli rate-encoded afresh at every step,

    p = pixel / 255 ∈ [0, 1]        (no mean/std normalisation, no rate scaling)
    o[t] = 1[r < p],  r ~ U[0, 1)   drawn for every pixel, sample and step t

with r from a dedicated, seeded ``torch.Generator`` on the compute device (training
and evaluation use separate ones). r is drawn lazily, one base-256 digit (a byte) at
a time: p = k/255 is 0.kkk… in base 256, so r < p is decided by the first digit of
r that differs from k — ``digit < k`` fires, ``digit > k`` does not, and the ~1/256
of draws that tie take the next digit. That is 1[r < p] exactly (a float32 r would
round p to 24 bits). The digits are bytes of a counter-based stream (SplitMix64 over
a 64-bit key that each call draws from the generator), so every element is computed
from (key, its index) alone: on the CPU one C++ pass encodes a whole batch
(``snn/native_rate.cpp``; 0.3 ms for MNIST's [10, 100, 784] on 2 cores, where the
same scheme in torch operations takes 1.8 ms and bytes drawn from the generator
itself took 3.0 ms), and elsewhere torch operations give the same spikes bit for
bit. Event data arrive as ready frames and only move the time axis to the front.
Both encoders expose ``.generator`` so a checkpoint can save and restore its state
for an exact resume.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

import snnrun.snn.native as native

ENCODINGS = ("rate", "frames")


class Encoder(Protocol):
    """Batch ``[B, ...]`` from a loader → float32 spikes ``[T, B, ...]``."""

    time_steps: int
    generator: torch.Generator | None

    def __call__(self, x: Tensor) -> Tensor: ...


class RateEncoder:
    """Bernoulli rate coding of uint8 intensities, one independent draw per step.

    Args:
        time_steps: T, the number of simulation steps.
        generator: source of r; must live on the device of the batches it encodes.
    """

    def __init__(self, time_steps: int, generator: torch.Generator) -> None:
        self.time_steps = _check_time_steps(time_steps)
        self.generator = generator

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Encode intensities.

        Args:
            x: uint8 ``[B, ...]`` (0..255), on the compute device.

        Returns:
            float32 ``[T, B, ...]`` in {0., 1.}, on ``x``'s device, without grad.
        """
        if x.dtype != torch.uint8:
            raise TypeError(
                f"RateEncoder expects uint8 intensities 0..255, got {x.dtype}; "
                "datasets with encoding='rate' must keep x as uint8"
            )
        if self.generator.device.type != x.device.type:
            raise ValueError(
                f"the encoder's generator is on {self.generator.device} but the batch "
                f"is on {x.device}; create the generator on the compute device"
            )
        return bernoulli_spikes(x, self.time_steps, self.generator)


def bernoulli_spikes(k: Tensor, steps: int, generator: torch.Generator) -> Tensor:
    """o[t] = 1[r < k/255] for r ~ U[0, 1) drawn per element and step, exactly.

    Args:
        k: uint8 intensities ``[B, ...]`` (0..255) on the generator's device.
        steps: T.
        generator: the source of the call's 64-bit key (one draw per call).

    Returns:
        float32 ``[T, B, ...]`` in {0., 1.}.

    r's base-256 digits come from the key's counter-based stream
    (:func:`stream_bytes`): digit d of element e (of ``count`` = T·B·…) is byte
    d·count + e. Every element takes its first digit; one whose digits so far all
    equal k (probability 1/256 each) takes the next, until it differs; k = 255
    (p = 1) ties forever with probability 0. On the CPU one C++ pass computes this
    (``snn.native.rate_spikes``, the same spikes bit for bit); elsewhere, or
    without a compiler, the torch operations below.
    """
    key = draw_key(generator, k.device)
    if k.device.type == "cpu":
        spikes = native.rate_spikes(k, steps, int(key))
        if spikes is not None:
            return spikes
    return _bernoulli_torch(k, steps, key)


def _bernoulli_torch(k: Tensor, steps: int, key: Tensor) -> Tensor:
    """:func:`bernoulli_spikes` in torch operations (any device): first digits for
    all, then the ties, a digit at a time."""
    shape = (steps, *k.shape)
    count = math.prod(shape)
    words = stream_words(key, torch.arange((count + 7) // 8, device=k.device))
    digits = words.view(torch.uint8)[:count].view(shape)  # little end first
    spikes = torch.empty(shape, device=k.device)
    torch.lt(digits, k, out=spikes)  # broadcast over T: one kernel, no loop over t
    pending = true_positions((digits == k).view(-1))
    level = k.reshape(-1)[pending % k.numel()]
    flat, depth = spikes.view(-1), 1
    while pending.numel():
        digit = stream_bytes(key, depth * count + pending)
        flat[pending[digit < level]] = 1.0
        tie = digit == level
        pending, level, depth = pending[tie], level[tie], depth + 1
    return spikes


def true_positions(mask: Tensor) -> Tensor:
    """``mask.nonzero()`` of a 1-D bool tensor, ascending (int64): the nonzero 8-byte
    words first, then their bytes — the same positions at half the time on the CPU
    when few are set (the encoder's ties, 1/256: 0.9 ms instead of 2.0 ms for 2.4 M)."""
    pad = (-mask.numel()) % 8
    if pad:
        mask = torch.cat([mask, mask.new_zeros(pad)])
    words = mask.view(torch.int64).nonzero().squeeze(1)
    offsets = torch.arange(8, device=mask.device)
    candidates = (words.unsqueeze(1) * 8 + offsets).view(-1)
    return candidates[mask[candidates]]


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return value - 2**64 if value >= 2**63 else value


GOLDEN = _signed(0x9E3779B97F4A7C15)
MIX = (_signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB))


def draw_key(generator: torch.Generator, device: torch.device) -> Tensor:
    """One uniform 64-bit key (a 0-dim int64 on ``device``) from ``generator``."""
    key = torch.empty((), dtype=torch.int64, device=device)
    return key.random_(-(2**63), None, generator=generator)  # the full 64-bit range


def stream_words(key: Tensor, counters: Tensor) -> Tensor:
    """SplitMix64's outputs number ``counters`` (int64, 0-based) for seed ``key``:
    z = key + (n + 1)·γ, then two xor-shift-multiply rounds and a final xor-shift,
    all modulo 2⁶⁴ (int64 arithmetic wraps; shifts are logical)."""
    z = key + (counters + 1) * GOLDEN
    z = (z ^ _shift_right(z, 30)) * MIX[0]
    z = (z ^ _shift_right(z, 27)) * MIX[1]
    return z ^ _shift_right(z, 31)


def stream_bytes(key: Tensor, positions: Tensor) -> Tensor:
    """Bytes at ``positions`` (int64) of ``key``'s stream, as uint8: byte j is byte
    j mod 8, little end first, of :func:`stream_words` number ⌊j/8⌋."""
    word = stream_words(key, torch.div(positions, 8, rounding_mode="floor"))
    # an arithmetic shift by ≤ 56 keeps the low 8 bits the logical one would
    return ((word >> (8 * (positions % 8))) & 255).to(torch.uint8)


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 ``z`` by ``bits`` (1..63): the arithmetic shift
    with the sign's copies masked off."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


class FrameEncoder:
    """Pass ready frames through, time axis first.

    Args:
        time_steps: T; every sample must hold exactly this many frames.
        generator: unused (frames are deterministic); kept so every encoder exposes
            ``.generator`` alike.
    """

    def __init__(
        self, time_steps: int, generator: torch.Generator | None = None
    ) -> None:
        self.time_steps = _check_time_steps(time_steps)
        self.generator = generator

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Reorder frames.

        Args:
            x: ``[B, T, ...]`` of any dtype (binary or event counts).

        Returns:
            float32 ``[T, B, ...]``, contiguous, without grad.
        """
        if x.dim() < 2 or x.shape[1] != self.time_steps:
            raise ValueError(
                f"frames of shape {list(x.shape)} should be [B, T={self.time_steps}, "
                "...]: the frames were binned for a different stbp.time_steps; "
                "rebuild them (clear the dataset cache) or set stbp.time_steps to "
                "match"
            )
        return x.transpose(0, 1).float().contiguous()


def make_encoder(encoding: str, time_steps: int, generator: torch.Generator) -> Encoder:
    """The encoder for ``DataMeta.encoding`` (``"rate"`` or ``"frames"``)."""
    if encoding == "rate":
        return RateEncoder(time_steps, generator)
    if encoding == "frames":
        return FrameEncoder(time_steps, generator)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def _check_time_steps(time_steps: int) -> int:
    if time_steps < 1:
        raise ValueError(f"stbp.time_steps={time_steps}: must be at least 1")
    return int(time_steps)
