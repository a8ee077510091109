"""Event products from temporal deltas (``native.event_linear(..., steps=T)``): rows
t·B + b of 0/1 spikes are summed as each sample's majority pattern once plus, per
step, only where the step differs from it. Checked against the definition of the
lists, against torch's dense product (values and every gradient), across thread
counts, and where the deltas must not be used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnrun.snn import native
from snnrun.snn.layers import FoldTime, Linear


def persistent_spikes(steps: int, batch: int, ins: int, seed: int) -> torch.Tensor:
    """Rate-coded-like 0/1 spikes ``[T·B, I]``, time-major: each (sample, input) has
    its own firing probability, mostly near 0 or 1 (as MNIST's pixels are), so that
    most of a sample's spikes repeat from step to step."""
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(batch, ins, generator=generator)
    p = torch.where(p < 0.8, p * 0.05, 0.9 + 0.1 * p)  # 80% quiet, 20% near-certain
    draw = torch.rand(steps, batch, ins, generator=generator)
    return (draw < p).float().reshape(steps * batch, ins)


def lists_of(x: torch.Tensor, steps: int) -> tuple[torch.Tensor, ...]:
    return tuple(native._module().event_rows(x, steps, x.numel()))


GROUP = 4
"""Samples whose bases are decided together (``kGroup`` in ``native_linear.cpp``)."""


def expected_bases(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The bases ``[B, I]`` by their definition: each sample's majority pattern (inputs
    firing in more than T/2 steps), kept by a group of :data:`GROUP` samples only where
    its bases and deltas together are at least a fifth below its nonzeros."""
    by_step = x.view(steps, -1, x.shape[1])
    base = (by_step.sum(0) * 2 > steps).float()
    for g0 in range(0, base.shape[0], GROUP):
        group = slice(g0, g0 + GROUP)
        listed = base[group].sum() + by_step[:, group].ne(base[group]).sum()
        if 5 * listed > 4 * by_step[:, group].ne(0).sum():
            base[group] = 0.0
    return base


def mixed_spikes(steps: int, batch: int, ins: int, seed: int) -> torch.Tensor:
    """Persistent spikes for the first half of the samples, independent ones (no
    pattern to keep) for the rest."""
    x = persistent_spikes(steps, batch, ins, seed).view(steps, batch, ins)
    generator = torch.Generator().manual_seed(seed + 1)
    noise = torch.rand(steps, batch - batch // 2, ins, generator=generator) < 0.15
    x[:, batch // 2 :] = noise.float()
    return x.reshape(steps * batch, ins)


@pytest.mark.parametrize(
    ("steps", "batch", "ins", "spikes"),
    [
        (10, 7, 50, persistent_spikes),
        (3, 1, 9, persistent_spikes),
        (30, 4, 784, persistent_spikes),
        (10, 13, 64, mixed_spikes),
        (4, 9, 33, mixed_spikes),
    ],
)
def test_delta_lists_follow_their_definition(
    steps: int, batch: int, ins: int, spikes
) -> None:
    """Bases as :func:`expected_bases` defines them (columns ascending); a row's deltas
    are where it differs from its sample's base, columns ascending, value x − base =
    ±1; base + deltas gives x back exactly; 1 and 2 threads give the same lists. With
    no base kept anywhere, the lists are the nonzero lists (no values, no bases)."""
    x = spikes(steps, batch, ins, seed=steps)
    base = expected_bases(x, steps)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = lists_of(x, steps)
        torch.set_num_threads(2)
        ptr, idx, val, bptr, bidx = lists_of(x, steps)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(single, (ptr, idx, val, bptr, bidx), strict=True):
        assert torch.equal(a, b)
    assert ptr.numel() == steps * batch + 1
    if not base.any():
        assert val.numel() == bptr.numel() == bidx.numel() == 0
        assert torch.equal(idx.long(), x.nonzero(as_tuple=True)[1])
        return
    assert bptr.numel() == batch + 1
    for b in range(batch):
        want = base[b].nonzero().flatten()
        assert torch.equal(bidx[bptr[b] : bptr[b + 1]].long(), want)
    for n in range(steps * batch):
        row, a = x[n], base[n % batch]
        cols = (row != a).nonzero().flatten()
        got = slice(int(ptr[n]), int(ptr[n + 1]))
        assert torch.equal(idx[got].long(), cols)
        assert torch.equal(val[got], (row - a)[cols])
        rebuilt = a.clone()
        rebuilt[idx[got].long()] += val[got]
        assert torch.equal(rebuilt, row)


def test_delta_lists_are_shorter_on_persistent_spikes_and_declined_otherwise() -> None:
    """Persistent spikes: deltas + bases well under the nonzero count. Independent
    spikes (no sample keeps a pattern), values other than 0/1, one step, or rows that
    are not whole steps: no bases, and the lists are x's nonzeros (``nonzero()`` row
    by row, values kept where one is not 1). A cap one below the deltas' size (and so
    below the nonzeros): all five lists empty (the dense product)."""
    x = persistent_spikes(10, 20, 100, seed=1)
    _, idx, _, _, bidx = lists_of(x, 10)
    size = idx.numel() + bidx.numel()
    assert size < 0.6 * int(x.ne(0).sum())
    generator = torch.Generator().manual_seed(2)
    independent = (torch.rand(200, 100, generator=generator) < 0.15).float()
    valued = x * 0.5
    cases = ((independent, 10), (valued, 10), (x, 1), (x[:-1].contiguous(), 10))
    for case, steps in cases:
        ptr, idx, val, bptr, bidx = lists_of(case, steps)
        assert bptr.numel() == bidx.numel() == 0
        rows, columns = case.nonzero(as_tuple=True)
        assert ptr.tolist() == [0, *case.ne(0).sum(1).cumsum(0).tolist()]
        assert torch.equal(idx.long(), columns)
        want = case[rows, columns]
        assert torch.equal(val, want) if case is valued else val.numel() == 0
    lists = native._module().event_rows(x, 10, size)  # a cap at their size: kept
    assert lists[3].numel() == x.shape[0] // 10 + 1
    capped = native._module().event_rows(x, 10, size - 1)  # one below: no lists
    assert all(t.numel() == 0 for t in capped)
    plain = native._event_lists(independent, 10)
    assert plain is not None and plain[3].numel() == 0  # no bases: the nonzero list


@pytest.mark.parametrize(
    ("steps", "batch", "ins", "outs"),
    [
        (10, 100, 784, 800),
        (10, 9, 50, 10),
        (4, 3, 20, 33),
        (30, 5, 64, 1),
        (2, 1, 40, 40),
    ],
)
@pytest.mark.parametrize("input_grad", [False, True])
def test_delta_products_match_the_dense_product(
    steps: int, batch: int, ins: int, outs: int, input_grad: bool
) -> None:
    """Forward, weight, bias and input gradients against torch's dense product:
    equal up to float rounding (the deltas add and subtract the same weight rows)."""
    x = persistent_spikes(steps, batch, ins, seed=outs)
    assert native._event_lists(x, steps)[3].numel() > 0  # the deltas are used
    torch.manual_seed(outs)
    layer = Linear(ins, outs)
    x_ours = x.clone().requires_grad_(input_grad)
    x_ref = x.clone().requires_grad_(input_grad)
    ours = layer(x_ours, steps)
    theirs = F.linear(x_ref, layer.weight, layer.bias)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(theirs)
    params = [layer.weight, layer.bias]
    got = torch.autograd.grad(ours, [*params, *([x_ours] if input_grad else [])], grad)
    want = torch.autograd.grad(
        theirs, [*params, *([x_ref] if input_grad else [])], grad
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_delta_products_do_not_depend_on_the_thread_count() -> None:
    x = persistent_spikes(10, 37, 100, seed=3)
    torch.manual_seed(3)
    layer = Linear(100, 70)
    grad = torch.randn(370, 70)
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = layer(x, 10)
            (dw,) = torch.autograd.grad(y, [layer.weight], grad)
            results.append((y.detach(), dw))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_fold_time_tells_linear_layers_the_number_of_steps() -> None:
    """FoldTime passes T to a Linear, alone or inside an nn.Sequential, and the
    result is the per-step product."""
    seen: list[int] = []
    linear = Linear(12, 5)
    linear.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    x_seq = persistent_spikes(6, 4, 12, seed=4).view(6, 4, 3, 4)
    for module in (nn.Sequential(nn.Flatten(), linear), linear):
        flat = x_seq if module is not linear else x_seq.flatten(2)
        y = FoldTime(module)(flat)
        want = F.linear(flat.flatten(2), linear.weight, linear.bias)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert seen == [6, 6]


def test_delta_operators_pass_torchs_checks() -> None:
    """The registered operators with ``steps`` (what torch.compile calls)."""
    x = persistent_spikes(5, 6, 50, seed=5)
    weight = torch.randn(40, 50, requires_grad=True)
    bias = torch.randn(40, requires_grad=True)
    torch.library.opcheck(native._event_linear_op, (x, weight, bias, 5))
    torch.library.opcheck(native._event_wgrad_op, (x, torch.randn(30, 40), 5))
    y = native._event_linear_op(x, weight.detach(), bias.detach(), 5)
    torch.testing.assert_close(y, F.linear(x, weight.detach(), bias.detach()))


@pytest.mark.parametrize(("outs", "told"), [(10, 1), (32, 1), (33, 10)])
def test_only_layers_wider_than_one_block_sum_deltas(
    outs: int, told: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer of at most one block of outputs (32: an output layer) lists x's
    nonzeros even when told T (the deltas' extra work on x would not pay there); a
    wider one lists the deltas. Either way the product is torch's, up to rounding."""
    seen: list[int] = []
    real = native._event_lists

    def spy(x: torch.Tensor, steps: int):
        seen.append(steps)
        return real(x, steps)

    monkeypatch.setattr(native, "_event_lists", spy)
    x = persistent_spikes(10, 6, 40, seed=outs)
    torch.manual_seed(outs)
    layer = Linear(40, outs)
    with torch.no_grad():
        got = layer(x, 10)
    assert seen == [told]
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias))
