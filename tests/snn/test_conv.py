"""The first-layer convolution (``snn/conv.py``): torch's values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnrun.models import cnn
from snnrun.snn import LIFParams, conv
from snnrun.snn.layers import Conv2d
from snnrun.snn.memory import compact_spikes, mark_binary


def pair(*args, dtype=torch.float32, **kwargs) -> tuple[Conv2d, nn.Conv2d]:
    """Our Conv2d and torch's, with the same weights."""
    torch.manual_seed(0)
    ours = Conv2d(*args, **kwargs).to(dtype)
    theirs = nn.Conv2d(*args, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def spikes(*shape: int, dtype=torch.float32, density: float = 0.2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sum(shape))
    return (torch.rand(shape, generator=generator) < density).to(dtype)


@pytest.mark.parametrize(
    ("shape", "out", "kernel", "padding", "bias"),
    [
        ((6, 1, 12, 12), 4, 5, 2, True),
        ((1, 1, 7, 9), 3, 3, 1, True),  # one sample, not square
        ((5, 2, 10, 8), 6, 3, 0, False),  # two channels, no padding, no bias
        ((4, 2, 9, 9), 5, 5, (2, 1), True),  # padding differs per side
        ((3, 1, 6, 6), 2, 1, 0, True),  # 1x1 kernel
    ],
)
def test_same_output_and_close_gradients(shape, out, kernel, padding, bias) -> None:
    ours, theirs = pair(shape[1], out, kernel, padding=padding, bias=bias)
    x = spikes(*shape)
    assert conv.batch_wgrad_applies(ours, x)
    y_ours, y_theirs = ours(x), theirs(x)
    assert type(y_ours.grad_fn).__name__ == "_BatchWgradConvBackward"
    assert torch.equal(y_ours, y_theirs)  # the same forward call
    grad = torch.randn(y_theirs.shape, generator=torch.Generator().manual_seed(3))
    g_ours = torch.autograd.grad(y_ours, list(ours.parameters()), grad)
    g_theirs = torch.autograd.grad(y_theirs, list(theirs.parameters()), grad)
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert a.shape == b.shape and a.is_contiguous()
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_float64_gradcheck_of_the_weight_gradient() -> None:
    ours, _ = pair(2, 3, 3, padding=1, dtype=torch.float64)
    x = spikes(3, 2, 5, 6, dtype=torch.float64, density=0.4)
    assert conv.batch_wgrad_applies(ours, x)
    weight = ours.weight.detach().clone().requires_grad_()
    bias = ours.bias.detach().clone().requires_grad_()

    def f(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return conv._BatchWgradConv.apply(x, w, b, (1, 1))

    assert torch.autograd.gradcheck(f, (weight, bias))


def test_the_saved_input_may_be_packed_spikes() -> None:
    ours, theirs = pair(1, 4, 3, padding=1)
    x = spikes(8, 1, 10, 10)
    with compact_spikes():
        y = ours(mark_binary(x))
    y.square().sum().backward()
    theirs(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)


def test_it_steps_aside_where_it_does_not_apply() -> None:
    ours, theirs = pair(1, 4, 3, padding=1)
    x = spikes(2, 1, 8, 8)
    wants_grad = x.clone().requires_grad_()
    assert not conv.batch_wgrad_applies(ours, wants_grad)  # a later layer
    assert type(ours(wants_grad).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert not conv.batch_wgrad_applies(ours, x)
        assert torch.equal(ours(x), theirs(x))
    assert not conv.batch_wgrad_applies(ours, x.half())
    three = Conv2d(3, 4, 3)  # more channels: oneDNN's own kernel is as fast
    assert not conv.batch_wgrad_applies(three, spikes(2, 3, 8, 8))
    for kwargs in ({"stride": 2}, {"dilation": 2}, {"groups": 1, "padding": "same"}):
        other = Conv2d(1, 4, 3, **kwargs)
        assert not conv.batch_wgrad_applies(other, x), kwargs
        assert type(other(x).grad_fn).__name__ == "ConvolutionBackward0"
    frozen = Conv2d(1, 4, 3).requires_grad_(False)
    assert not conv.batch_wgrad_applies(frozen, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv.batch_wgrad_applies(ours, x)


def test_the_cnn_takes_it_in_its_first_layer_only(monkeypatch) -> None:
    """A whole CNN's gradients match those with torch's convolutions throughout."""
    spec = cnn.CNNConfig(spec="4C3-P2-8C3-P2-16")
    lif = LIFParams(threshold=0.3)
    torch.manual_seed(0)
    net = cnn.build(spec, (1, 12, 12), 10, lif)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(isinstance(m, Conv2d) for m in convs)
    seen: list[str] = []
    for layer in convs:
        layer.register_forward_hook(
            lambda m, i, y: seen.append(type(y.grad_fn).__name__)
        )
    x = spikes(4, 6, 1, 12, 12, density=0.5)
    grads = []
    for largest in (conv.MAX_IN_CHANNELS, 0):  # 0: torch's kernel everywhere
        monkeypatch.setattr(conv, "MAX_IN_CHANNELS", largest)
        net.zero_grad()
        net(x).spikes.mean(0).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    fast, torch_own = "_BatchWgradConvBackward", "ConvolutionBackward0"
    assert seen == [fast, torch_own, torch_own, torch_own]  # first layer, first run
    for a, b in zip(*grads, strict=True):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
