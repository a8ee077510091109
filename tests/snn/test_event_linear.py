"""The event-driven Linear (``native.event_linear``) against torch's dense product:
the same values and gradients up to float rounding, on every shape it takes, and
the dense product wherever it does not apply."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
import torch
import torch.nn.functional as F

from snnrun.models import mlp
from snnrun.snn import LIFParams, native
from snnrun.snn.layers import Linear, set_event_products


def _spikes(rows: int, cols: int, density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=generator) < density).float()


def _layer(ins: int, outs: int, seed: int, bias: bool = True) -> Linear:
    torch.manual_seed(seed)
    return Linear(ins, outs, bias=bias)


def _check_against_dense(layer: Linear, x: torch.Tensor) -> None:
    """Forward and all gradients of the event path equal torch's to rounding."""
    grad = torch.randn(x.shape[0], layer.out_features)
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    x_ours = x.clone().requires_grad_(x.requires_grad)
    ours = native.event_linear(x_ours, layer.weight, layer.bias)
    assert ours is not None, "the event path must take this input"
    theirs = F.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    inputs = [*params, *([x_ours] if x.requires_grad else [])]
    got = torch.autograd.grad(ours, inputs, grad)
    want = torch.autograd.grad(
        theirs, [*params, *([x] if x.requires_grad else [])], grad
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("rows", "ins", "outs", "density"),
    [
        (1000, 784, 800, 0.13),  # the MLP's first layer at T=10, MNIST's density
        (1, 784, 800, 0.13),  # one row (B=1, T=1)
        (37, 50, 33, 0.2),  # one output past a block of 32: a partial block
        (64, 20, 32, 0.0),  # no spike at all: y = b, dW = 0
        (300, 3136, 1024, 0.05),  # the CNN's dense layer, sparse
        (1000, 800, 10, 0.17),  # the MLP's 10-class output: one partial block
        (7, 30, 1, 0.2),  # a single output
    ],
)
def test_binary_input_matches_the_dense_product(rows, ins, outs, density) -> None:
    assert native.available(), "the C++ kernel must build here (g++, ninja)"
    _check_against_dense(_layer(ins, outs, rows), _spikes(rows, ins, density, ins))


def test_exactly_at_the_density_limit_it_still_runs() -> None:
    x = torch.zeros(8, 4)
    x[:, 1] = 1.0  # 25% nonzero
    _check_against_dense(_layer(4, 64, 9), x)
    x[0, 2] = 1.0  # one more: dense
    assert native.event_linear(x, *_layer(4, 64, 9).parameters()) is None


def test_nonbinary_values_and_no_bias_and_an_input_gradient() -> None:
    x = _spikes(200, 96, 0.15, 1) * torch.rand(200, 96)  # binned counts, pooled rates
    x[0, :3] = torch.tensor([2.0, -1.5, 1.0])
    _check_against_dense(_layer(96, 40, 2, bias=False), x)
    _check_against_dense(_layer(96, 40, 3), x.requires_grad_())


def test_result_does_not_depend_on_the_thread_count() -> None:
    layer, x = _layer(784, 800, 4), _spikes(600, 784, 0.13, 4)
    grad = torch.randn(600, 800)
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            y = native.event_linear(x, layer.weight, layer.bias)
            (dw,) = torch.autograd.grad(y, layer.weight, grad)
        finally:
            torch.set_num_threads(previous)
        results.append((y, dw))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_it_steps_aside_where_it_does_not_apply() -> None:
    layer = _layer(64, 48, 5)
    x = _spikes(10, 64, 0.1, 5)
    assert (
        native.event_linear(_spikes(10, 64, 0.5, 6), layer.weight, layer.bias) is None
    )
    assert native.event_linear(x.double(), layer.weight.double(), None) is None
    assert native.event_linear(x.view(2, 5, 64), layer.weight, layer.bias) is None


@pytest.mark.parametrize("fused", [False, True])
def test_the_layer_follows_every_optimiser_step_and_obeys_its_switch(fused) -> None:
    """Fused Adam updates in place without bumping the tensor's version: a weight
    cache keyed on it trained on the first weights forever (caught: 78% vs 90%)."""
    layer, x = _layer(100, 64, 7), _spikes(30, 100, 0.1, 7)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.5, fused=fused)
    for _ in range(3):  # stale weights would give the first step's product again
        y = layer(x)
        torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias))
        y.square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    set_event_products(layer, False)
    assert not layer.event_driven
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_a_training_step_of_the_mlp_matches_the_dense_one() -> None:
    """The whole net: same loss and gradients to rounding with and without events."""
    lif = LIFParams(0.2, 0.5, "linear", backend="native")
    x = torch.rand(10, 8, 1, 28, 28, generator=torch.Generator().manual_seed(8)) < 0.13
    grads = []
    for events in (True, False):
        torch.manual_seed(8)
        net = mlp.build(mlp.MLPConfig(hidden=[800], init="stbp"), (1, 28, 28), 10, lif)
        set_event_products(net, events)
        rates = net(x.float()).spikes.mean(0)
        rates.square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_without_a_compiler_the_dense_product_runs() -> None:
    """A real process with no working C++ compiler: the layer falls back, no error."""
    code = (
        "import torch, torch.nn.functional as F\n"
        "from snnrun.snn.layers import Linear\n"
        "layer = Linear(50, 40)\n"
        "x = (torch.rand(20, 50) < 0.1).float()\n"
        "assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))\n"
        "print('ok')\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": cache}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize("cols", [1, 7, 8, 13, 32, 40, 71, 784])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("density", [0.2, 0.01])
def test_event_rows_list_every_nonzero_in_order(
    cols: int, binary: bool, density: float
) -> None:
    """The nonzero list (32 columns at a time where the CPU has AVX2, skipped at once
    when all are zero, then 8, then one at a time in the tail) is ``nonzero()`` row by
    row: columns ascending, values kept; rows split between threads as they come."""
    generator = torch.Generator().manual_seed(cols)
    x = (torch.rand(137, cols, generator=generator) < density).float()
    if not binary:
        x *= torch.randn(137, cols, generator=generator)
    rows, columns = x.nonzero(as_tuple=True)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ptr, idx, val = native._module().event_rows(x, 1, x.numel())[:3]
            assert ptr.tolist() == [0, *x.ne(0).sum(1).cumsum(0).tolist()]
            assert torch.equal(idx.long(), columns)
            if binary:
                assert val.numel() == 0  # every nonzero is 1: no values kept
            else:
                assert torch.equal(val, x[rows, columns])
    finally:
        torch.set_num_threads(before)


def test_frozen_weights_packs_once_per_pass_and_follows_changes() -> None:
    """Inside ``frozen_weights`` (an evaluation pass) a layer's packed blocks are
    built on the first batch and reused; a weight change that bumps the version
    (``copy_``, ``load_state_dict``) is seen; calls with gradients on never use the
    cache; leaving the scope drops it."""
    layer, x = _layer(100, 64, 3), _spikes(30, 100, 0.1, 3)
    with torch.no_grad(), native.frozen_weights():
        first = layer(x)
        (cache,) = native._FROZEN
        (packed,) = cache.values()
        assert torch.equal(layer(x), first)  # the same blocks, the same sums
        assert list(cache.values()) == [packed]
        layer.weight.copy_(torch.randn_like(layer.weight))
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        assert len(cache) == 2
        with torch.enable_grad():
            y = layer(x)
        assert y.requires_grad and len(cache) == 2
    assert native._FROZEN == []


def test_frozen_weights_in_an_evaluation_pass_changes_no_result() -> None:
    """A whole MLP forward inside the scope gives the same spikes as outside it,
    batch after batch."""
    torch.manual_seed(0)
    net = mlp.build(
        mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, LIFParams(backend="native")
    )
    batches = [_spikes(6 * 5, 64, 0.2, s).view(6, 5, 1, 8, 8) for s in range(3)]
    with torch.no_grad():
        plain = [net(b).spikes for b in batches]
        with native.frozen_weights():
            frozen = [net(b).spikes for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(plain, frozen, strict=True))


@pytest.mark.parametrize("where", ["first rows", "last rows", "spread"])
def test_event_rows_gives_up_exactly_past_the_cap(where: str) -> None:
    """The list is sized by a counting pass over rows split between the threads: it
    must come back whole at ``max_nnz`` = its size, and empty one below, wherever the
    nonzeros lie (in one thread's rows or in both)."""
    x = torch.zeros(300, 50)
    if where == "first rows":
        x[:40, :20] = 1.0
    elif where == "last rows":
        x[-40:, -20:] = 2.5
    else:
        x = _spikes(300, 50, 0.1, 5)
    nnz, before = int(x.ne(0).sum()), torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ptr, idx, _ = native._module().event_rows(x, 1, nnz)[:3]
            assert int(ptr[-1]) == idx.numel() == nnz
            empty = native._module().event_rows(x, 1, nnz - 1)
            assert all(t.numel() == 0 for t in empty)
    finally:
        torch.set_num_threads(before)
