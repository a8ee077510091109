"""The native average pool against torch's: identical values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snnrun.models import cnn
from snnrun.snn import LIFParams, native
from snnrun.snn.layers import AvgPool2d


@pytest.mark.parametrize(
    ("shape", "kernel", "dtype"),
    [
        ((7, 3, 9, 11), 2, torch.float32),  # odd sizes: the floor drops a row, a column
        ((5, 4, 10, 13), 3, torch.float64),
        ((2, 2, 4, 4), 1, torch.float32),
        ((3, 1, 28, 28), 2, torch.float32),
        ((2, 3, 5, 5), 5, torch.float32),
    ],
)
def test_same_values_and_gradients_as_torch(shape, kernel, dtype) -> None:
    assert native.available(), "the C++ kernel must build here (g++, ninja)"
    generator = torch.Generator().manual_seed(kernel)
    x = torch.randn(shape, dtype=dtype, generator=generator).requires_grad_()
    ours, theirs = native.avg_pool(x, kernel), F.avg_pool2d(x, kernel)
    assert ours is not None and torch.equal(ours, theirs)
    grad = torch.randn(theirs.shape, dtype=dtype, generator=generator)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    assert torch.equal(g_ours, g_theirs)


def test_it_steps_aside_where_it_does_not_apply() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert native.avg_pool(x.transpose(2, 3), 2) is None  # not contiguous
    assert native.avg_pool(x.half(), 2) is None
    assert native.avg_pool(x[0], 2) is None  # not [N, C, H, W]
    pool = AvgPool2d(2)
    for y in (x.transpose(2, 3), x.double()):
        assert torch.equal(pool(y), F.avg_pool2d(y, 2))


def test_the_cnn_pools_with_it_and_stays_an_avgpool() -> None:
    net = cnn.build(cnn.CNNConfig(spec="4C3-P2-8"), (1, 8, 8), 3, LIFParams())
    pools = [m for m in net.modules() if isinstance(m, torch.nn.AvgPool2d)]
    assert pools and all(isinstance(m, AvgPool2d) for m in pools)
