"""Surrogate contract (spec sections 5 and 11.3): the forward is exactly the Heaviside
step, the backward is grad·h with h as printed in the spec, unit area, right peak."""

from __future__ import annotations

import math

import pytest
import torch

from snnrun.snn.surrogate import SURROGATES, Surrogate, spike

WIDTHS = [0.25, 0.5, 1.0, 4.0]


def spec_formula(name: str, delta: torch.Tensor, a: float) -> torch.Tensor:
    """Section 5, written out independently of the package (float64)."""
    if name == "h1":
        return (1 / a) * (delta.abs() < a / 2).double()
    if name == "h2":
        inside = (delta.abs() < 2 / math.sqrt(a)).double()
        return (math.sqrt(a) / 2 - (a / 4) * delta.abs()) * inside
    if name == "h3":
        e = torch.exp(-delta / a)
        return (1 / a) * e / (1 + e) ** 2
    if name == "h4":
        return torch.exp(-(delta**2) / (2 * a)) / math.sqrt(2 * math.pi * a)
    raise AssertionError(name)


def surrogate_grad(
    u: torch.Tensor, threshold: float, name: str, a: float
) -> torch.Tensor:
    """dg/du as the production spike() backward reports it."""
    u = u.detach().clone().requires_grad_()
    spike(u, threshold, name, a, "ge").sum().backward()
    return u.grad


def test_registry_lists_the_four_names() -> None:
    assert list(SURROGATES) == [s.value for s in Surrogate] == ["h1", "h2", "h3", "h4"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(SURROGATES))
def test_forward_is_exact_heaviside(name: str, dtype: torch.dtype) -> None:
    threshold = 0.3
    u = torch.tensor([-1.0, 0.0, 0.3, 0.2999, 0.3001, 2.0], dtype=dtype)
    u[2] = threshold  # the exact tie, in this dtype
    ge = spike(u, threshold, name, 1.0, "ge")
    gt = spike(u, threshold, name, 1.0, "gt")
    assert ge.dtype == gt.dtype == dtype
    assert ge.tolist() == [0, 0, 1, 0, 1, 1]
    assert gt.tolist() == [0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("a", WIDTHS)
@pytest.mark.parametrize("name", list(SURROGATES))
def test_backward_is_grad_times_formula(name: str, a: float) -> None:
    gen = torch.Generator().manual_seed(0)
    threshold = 0.5
    u = threshold + torch.linspace(-6, 6, 2001, dtype=torch.float64)
    grad_out = torch.randn(u.shape, dtype=torch.float64, generator=gen)
    x = u.clone().requires_grad_()
    spike(x, threshold, name, a, "gt").backward(grad_out)
    expected = grad_out * spec_formula(name, u - threshold, a)
    # atol: h3 = s·(1 − s)/a (the spec's overflow-free form) loses relative precision
    # in the far tails, where 1 − s cancels; absolute error there is ~1e-15
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(
        SURROGATES[name](u - threshold, a),
        spec_formula(name, u - threshold, a),
        rtol=1e-12,
        atol=1e-13,
    )


@pytest.mark.parametrize("a", WIDTHS)
@pytest.mark.parametrize("name", list(SURROGATES))
def test_unit_area(name: str, a: float) -> None:
    half_range = 60.0 * max(a, 1.0)
    delta = torch.linspace(-half_range, half_range, 2_400_001, dtype=torch.float64)
    area = torch.trapezoid(surrogate_grad(delta, 0.0, name, a), delta).item()
    assert area == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("a", WIDTHS)
def test_h2_vanishes_outside_window(a: float) -> None:
    edge = 2 / math.sqrt(a)
    outside = torch.tensor([edge, edge * 1.01, edge * 3, 100.0], dtype=torch.float64)
    for delta in (outside, -outside):
        assert surrogate_grad(0.7 + delta, 0.7, "h2", a).abs().max().item() < 1e-12
    inside = torch.tensor([0.0, edge * 0.5, edge * 0.99], dtype=torch.float64)
    assert (surrogate_grad(0.7 + inside, 0.7, "h2", a) > 0).all()


def test_h1_at_width_one_is_the_official_code_window() -> None:
    """Official code: grad · (|u − V_th| < lens), lens = 0.5, height 1."""
    threshold = 0.5
    u = torch.linspace(-1.5, 2.5, 4001, dtype=torch.float64)
    code = (torch.abs(u - threshold) < 0.5).double()
    assert torch.equal(surrogate_grad(u, threshold, "h1", 1.0), code)


@pytest.mark.parametrize(
    ("name", "peak"), [("h1", 1.0), ("h2", 0.5), ("h3", 0.25), ("h4", 0.3989423)]
)
@pytest.mark.parametrize("threshold", [0.2, 0.5, 1.5])
def test_peak_sits_at_the_forward_threshold(
    name: str, peak: float, threshold: float
) -> None:
    # offsets ±k·step, step chosen so no grid point sits on a window edge (±0.5, ±2)
    offsets = torch.arange(-3000, 3001, dtype=torch.float64) * 0.00099971
    grad = surrogate_grad(threshold + offsets, threshold, name, 1.0)
    assert grad[3000].item() == pytest.approx(peak, abs=1e-6)
    assert grad.max().item() == pytest.approx(peak, abs=1e-6)
    # symmetric about V_th: a curve centred anywhere else (a port that fired at
    # u > 2·V_th, thiswinex/STBP-simple#8) fails here for every threshold above
    torch.testing.assert_close(grad, grad.flip(0), rtol=1e-9, atol=1e-12)


def test_enum_names_and_errors() -> None:
    u = torch.tensor([0.4, 0.6])
    assert torch.equal(spike(u, 0.5, Surrogate.H2, 1.0, "ge"), torch.tensor([0.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"stbp\.surrogate=h7 is unknown; choose one of h1, h2, h3, h4"
    ):
        spike(u, 0.5, "h7", 1.0, "ge")
    with pytest.raises(
        ValueError, match=r"stbp\.spike_cmp=lt is unknown; choose one of ge, gt"
    ):
        spike(u, 0.5, "h1", 1.0, "lt")


def test_spike_keeps_only_u_for_backward() -> None:
    """The hot path saves one tensor (u), not a mask or a copy per surrogate."""
    u = torch.randn(10, requires_grad=True)
    out = spike(u * 1.0, 0.5, "h1", 1.0, "ge")
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 1
    assert saved[0].shape == u.shape


PRIMITIVES = {  # H with H' = h: the smooth step each surrogate stands for
    "h3": lambda delta, a: torch.sigmoid(delta / a),
    "h4": lambda delta, a: 0.5 * (1 + torch.erf(delta / math.sqrt(2 * a))),
}


@pytest.mark.parametrize("a", WIDTHS)
@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_smooth_surrogates_are_derivatives_of_their_step(name: str, a: float) -> None:
    """A central finite difference of the smooth primitive equals the backward."""
    delta = torch.linspace(-5 * a, 5 * a, 1001, dtype=torch.float64)
    eps = 1e-6
    primitive = PRIMITIVES[name]
    finite = (primitive(delta + eps, a) - primitive(delta - eps, a)) / (2 * eps)
    torch.testing.assert_close(
        surrogate_grad(delta, 0.0, name, a), finite, atol=1e-8, rtol=1e-6
    )


@pytest.mark.parametrize("a", WIDTHS)
@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_soft_steps_are_the_primitives_of_the_surrogates(name: str, a: float) -> None:
    from snnrun.snn.surrogate import SOFT_STEPS

    delta = torch.linspace(-5 * a, 5 * a, 1001, dtype=torch.float64)
    torch.testing.assert_close(SOFT_STEPS[name](delta, a), PRIMITIVES[name](delta, a))


@pytest.mark.parametrize("a", WIDTHS)
@pytest.mark.parametrize("name", ["h1", "h2", "h3", "h4"])
def test_each_soft_step_differentiates_to_its_surrogate(name: str, a: float) -> None:
    from snnrun.snn.surrogate import SOFT_STEPS, SURROGATES

    reach = max(5 * a, 3 / math.sqrt(a))  # past h2's support |δ| < 2/√a
    delta = torch.linspace(-reach, reach, 1000, dtype=torch.float64)  # no exact kinks
    delta.requires_grad_()
    (slope,) = torch.autograd.grad(SOFT_STEPS[name](delta, a).sum(), delta)
    torch.testing.assert_close(slope, SURROGATES[name](delta.detach(), a))
    steps = SOFT_STEPS[name](delta.detach(), a)
    assert steps[0] < 0.01 and steps[-1] > 0.99  # a step from 0 to 1
