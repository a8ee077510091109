"""Spikes saved for backward as uint8: exact gradients, a quarter of the bytes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from snnrun.models import cnn, mlp
from snnrun.snn import LIFParams
from snnrun.snn.memory import (
    Packed,
    compact_spikes,
    mark_binary,
    pack_binary,
    unpack_binary,
)


def saved_bytes(run) -> tuple[int, Tensor]:
    """Bytes of what autograd keeps, after snnrun's own packing (if active)."""
    sizes: list[int] = []

    def pack(tensor: Tensor):
        saved = pack_binary(tensor)
        packed = isinstance(saved, Packed)
        sizes.append(saved.nbytes() if packed else tensor.untyped_storage().nbytes())
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack_binary):
        out = run()
    return sum(sizes), out


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_same_gradients_with_less_memory(arch: str, backend: str) -> None:
    p = LIFParams(decay=0.3, threshold=0.4, backend=backend)
    torch.manual_seed(0)
    if arch == "mlp":
        net = mlp.build(mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, p)
    else:
        net = cnn.build(cnn.CNNConfig(spec="4C3-P2-8"), (1, 8, 8), 10, p)
    x = (torch.rand(6, 5, 1, 8, 8) < 0.4).float()
    grads = []
    for compact in (False, True):
        net.zero_grad()
        if compact:
            with compact_spikes():
                out = net(mark_binary(x.clone()))
        else:
            out = net(x)
        out.spikes.mean(0).square().sum().backward()
        grads.append([q.grad.clone() for q in net.parameters()])
    for plain, packed in zip(*grads, strict=True):
        assert torch.equal(plain, packed)


def test_binary_inputs_are_kept_in_a_quarter_of_the_bytes() -> None:
    linear = torch.nn.Linear(100, 10)
    x = (torch.rand(50, 100) < 0.5).float()
    plain, _ = saved_bytes(lambda: linear(x))
    with compact_spikes():
        packed, out = saved_bytes(lambda: linear(mark_binary(x)))
    assert plain == 50 * 100 * 4
    assert packed == 50 * 100 * 1
    (grad,) = torch.autograd.grad(out.sum(), linear.weight)
    torch.testing.assert_close(grad, torch.ones(10, 50) @ x)


def test_unmarked_tensors_and_marks_outside_the_context_are_untouched() -> None:
    linear = torch.nn.Linear(20, 3)
    x = torch.rand(4, 20)  # not binary: must never be packed
    with compact_spikes():
        size, _ = saved_bytes(lambda: linear(x))
    assert size == 4 * 20 * 4
    assert mark_binary(x) is x  # no context: a no-op
