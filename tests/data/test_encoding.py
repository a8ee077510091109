"""Input encoders (STBP spec sections 6 and 11.8)."""

from __future__ import annotations

import pytest
import torch

from snnrun.data.encoding import (
    FrameEncoder,
    RateEncoder,
    make_encoder,
    true_positions,
)


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


def test_rate_decides_by_the_first_digit_that_differs_from_k(monkeypatch) -> None:
    """r's base-256 digits against p = k/255 = 0.kkk…: scripted digits, known answers."""
    import snnrun.data.encoding as encoding

    k = torch.tensor([7, 7, 7, 7, 0, 255], dtype=torch.uint8)
    script = iter(
        [
            torch.tensor([6, 8, 7, 7, 0, 255], dtype=torch.uint8),  # first digits
            torch.tensor([6, 7, 0, 255], dtype=torch.uint8),  # the four ties
            torch.tensor([8, 3, 200], dtype=torch.uint8),  # three ties again
        ]
    )
    monkeypatch.setattr(encoding, "random_bytes", lambda count, g, d: next(script))
    spikes = encoding.bernoulli_spikes(k, 1, gen())[0]
    # 6<7 fires; 8>7 not; 7,6 fires; 7,7,8 not; 0,0,3: 3 > 0 not; 255,255,200 fires
    assert spikes.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert next(script, None) is None  # no draw after the last tie resolved


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
