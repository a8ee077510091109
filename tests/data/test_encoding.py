"""Input encoders (STBP spec sections 6 and 11.8)."""

from __future__ import annotations

import pytest
import torch

from snnrun.data.encoding import (
    FrameEncoder,
    RateEncoder,
    _bernoulli_torch,
    make_encoder,
    stream_bytes,
    stream_words,
    true_positions,
)
from snnrun.snn import native


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch() -> torch.Tensor:
    """uint8 [4, 1, 8, 8] covering 0..255."""
    return torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)


def test_rate_shape_dtype_values() -> None:
    spikes = RateEncoder(5, gen())(batch())
    assert spikes.shape == (5, 4, 1, 8, 8) and spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_rate_extremes_are_exact() -> None:
    x = torch.tensor([[0, 255]], dtype=torch.uint8)
    spikes = RateEncoder(1000, gen())(x)
    assert spikes[:, 0, 0].sum() == 0  # p = 0 never fires (r >= 0 is never < 0)
    assert spikes[:, 0, 1].sum() == 1000  # p = 1 always fires (r < 1)


def test_rate_same_seed_same_spikes_different_seed_differs() -> None:
    a = RateEncoder(8, gen(3))(batch())
    b = RateEncoder(8, gen(3))(batch())
    c = RateEncoder(8, gen(4))(batch())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_rate_generator_state_restores_exactly() -> None:
    encoder = RateEncoder(4, gen(1))
    encoder(batch())
    state = encoder.generator.get_state()
    first = encoder(batch())
    encoder.generator.set_state(state)
    assert torch.equal(encoder(batch()), first)
    assert not torch.equal(encoder(batch()), first)  # the stream moved on


def test_rate_steps_differ() -> None:
    x = torch.full((2, 1, 28, 28), 128, dtype=torch.uint8)
    spikes = RateEncoder(3, gen())(x)
    assert not torch.equal(spikes[0], spikes[1])
    assert not torch.equal(spikes[1], spikes[2])


@pytest.mark.parametrize("pixel", [1, 26, 128, 200, 254])
def test_rate_mean_matches_probability(pixel: int) -> None:
    x = torch.full((1000,), pixel, dtype=torch.uint8)
    spikes = RateEncoder(100, gen(pixel))(x)  # 1e5 draws
    assert abs(spikes.mean().item() - pixel / 255) < 0.01


U64 = 2**64


def splitmix64(key: int, n: int) -> int:
    """SplitMix64's output number n (0-based) for seed ``key``, in Python integers."""
    z = (key + (n + 1) * 0x9E3779B97F4A7C15) % U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % U64
    return z ^ (z >> 31)


def reference_spikes(k: list[int], steps: int, key: int) -> list[float]:
    """The encoder's definition, element by element: digit d of element e is byte
    d·count + e of the key's stream; the first digit unequal to k decides."""
    count = steps * len(k)

    def byte(j: int) -> int:
        return (splitmix64(key % U64, j // 8) >> (8 * (j % 8))) & 255

    out = []
    for e in range(count):
        level, depth = k[e % len(k)], 0
        while (digit := byte(depth * count + e)) == level:
            depth += 1
        out.append(float(digit < level))
    return out


def test_stream_is_splitmix64() -> None:
    """The stream's words are SplitMix64 (seed 0 starts 0xE220A8397B1DCDAF, the
    published first output), its bytes little end first, at any positions."""
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF
    for key in (0, 1, -1, -(2**63), 2**63 - 1, 987654321987654321):
        words = stream_words(torch.tensor(key), torch.arange(40))
        assert [w % U64 for w in words.tolist()] == [
            splitmix64(key % U64, n) for n in range(40)
        ]
        positions = torch.tensor([0, 1, 7, 8, 63, 319, 10**9 + 5])
        expected = [(splitmix64(key % U64, j // 8) >> (8 * (j % 8))) & 255 for j in
                    positions.tolist()]  # fmt: skip
        assert stream_bytes(torch.tensor(key), positions).tolist() == expected


@pytest.mark.parametrize("torch_only", [False, True])
def test_rate_decides_by_the_first_digit_that_differs_from_k(
    torch_only: bool, monkeypatch
) -> None:
    """Against the definition in Python integers, ties (1 in 256 draws, ~160 here)
    and deeper ties included: the C++ pass and the torch operations."""
    import snnrun.data.encoding as encoding

    if torch_only:
        monkeypatch.setattr(encoding.native, "rate_spikes", lambda k, steps, key: None)
    k = torch.arange(256, dtype=torch.uint8).repeat(40)
    generator = gen(11)
    key = int(encoding.draw_key(gen(11), k.device))
    spikes = encoding.bernoulli_spikes(k, 4, generator)
    assert spikes.view(-1).tolist() == reference_spikes(k.tolist(), 4, key)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1, 28, 28), (2, 2, 34, 34)])
@pytest.mark.parametrize("steps", [1, 3, 30])
def test_native_pass_equals_torch_operations(shape: tuple, steps: int) -> None:
    """Bit for bit, over sizes that end inside a word and inside a 4 KiB piece."""
    assert native.available(), "the C++ kernel must build here (g++, ninja)"
    k = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen(steps))
    for key in (0, -(2**63), 2**63 - 1, 1234567):
        fast = native.rate_spikes(k, steps, key)
        assert torch.equal(fast, _bernoulli_torch(k, steps, torch.tensor(key)))


def test_native_pass_is_the_same_for_any_thread_count() -> None:
    k = torch.randint(0, 256, (100, 784), dtype=torch.uint8, generator=gen(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.rate_spikes(k, 10, 42)
        torch.set_num_threads(2)
        two = native.rate_spikes(k, 10, 42)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_rate_every_intensity_fires_at_its_probability() -> None:
    x = torch.arange(256, dtype=torch.uint8).repeat(40)  # each k 40 times × T=500
    spikes = RateEncoder(500, gen(7))(x).view(500, 40, 256)
    rate = spikes.mean(dim=(0, 1))
    p = torch.arange(256) / 255
    sigma = (p * (1 - p) / 20_000).sqrt()
    assert ((rate - p).abs() <= 5 * sigma + 1e-12).all()


def test_rate_output_has_no_grad() -> None:
    spikes = RateEncoder(2, gen())(batch())
    assert not spikes.requires_grad and spikes.grad_fn is None


def test_rate_rejects_float_input() -> None:
    with pytest.raises(TypeError, match="expects uint8"):
        RateEncoder(2, gen())(torch.rand(2, 3))


def test_frames_move_time_first() -> None:
    x = torch.randint(0, 3, (2, 5, 2, 3, 3), dtype=torch.uint8)  # [B, T, C, H, W]
    out = FrameEncoder(5)(x)
    assert out.shape == (5, 2, 2, 3, 3) and out.dtype == torch.float32
    assert out.is_contiguous()
    assert torch.equal(out[4, 1], x[1, 4].float())


def test_frames_cut_gradient() -> None:
    x = torch.rand(2, 3, 4, requires_grad=True)
    assert not FrameEncoder(3)(x).requires_grad


def test_frames_wrong_time_steps() -> None:
    with pytest.raises(ValueError, match=r"should be \[B, T=4, \.\.\.\]"):
        FrameEncoder(4)(torch.zeros(2, 5, 3))


def test_make_encoder() -> None:
    g = gen()
    rate = make_encoder("rate", 6, g)
    frames = make_encoder("frames", 6, g)
    assert isinstance(rate, RateEncoder) and rate.time_steps == 6
    assert isinstance(frames, FrameEncoder) and frames.generator is g
    assert rate.generator is g
    with pytest.raises(ValueError, match="unknown encoding 'poisson'"):
        make_encoder("poisson", 6, g)
    with pytest.raises(ValueError, match="time_steps=0"):
        make_encoder("rate", 0, g)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 64, 1001, 235_200])
@pytest.mark.parametrize("share", [0.0, 1 / 256, 0.5, 1.0])
def test_true_positions_are_nonzero_exactly(size: int, share: float) -> None:
    """The word-wise search the encoder uses for its ties finds every set position,
    in ascending order, as nonzero() does (the encoder's draws depend on that order)."""
    generator = torch.Generator().manual_seed(size)
    mask = torch.rand(size, generator=generator) < share
    assert torch.equal(true_positions(mask), mask.nonzero().squeeze(1))
