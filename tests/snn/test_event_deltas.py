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
    return tuple(native._module().delta_rows(x, steps, x.numel()))


@pytest.mark.parametrize(
    ("steps", "batch", "ins"), [(10, 7, 50), (3, 1, 9), (30, 4, 784)]
)
def test_delta_lists_follow_their_definition(steps: int, batch: int, ins: int) -> None:
    """base = majority over the steps (more than T/2); a row's deltas are where it
    differs from its sample's base, columns ascending, value x − base = ±1; base +
    deltas gives x back exactly."""
    x = persistent_spikes(steps, batch, ins, seed=steps)
    ptr, idx, val, bptr, bidx = lists_of(x, steps)
    assert ptr.numel() == steps * batch + 1 and bptr.numel() == batch + 1
    by_step = x.view(steps, batch, ins)
    base = (by_step.sum(0) * 2 > steps).float()  # [B, I]
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
    spikes (no sample keeps a pattern), values other than 0/1, one step, rows that
    are not whole steps, or a cap below the lists' size: no deltas (all empty), and
    ``_event_lists`` hands back the plain nonzero lists instead."""
    x = persistent_spikes(10, 20, 100, seed=1)
    _, idx, _, _, bidx = lists_of(x, 10)
    assert idx.numel() + bidx.numel() < 0.6 * int(x.ne(0).sum())
    generator = torch.Generator().manual_seed(2)
    independent = (torch.rand(200, 100, generator=generator) < 0.15).float()
    valued = x * 0.5
    for case, steps in ((independent, 10), (valued, 10), (x, 1), (x[:-1], 10)):
        assert all(t.numel() == 0 for t in lists_of(case.contiguous(), steps))
    capped = native._module().delta_rows(x, 10, idx.numel() + bidx.numel() - 1)
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
