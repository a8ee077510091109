"""STBP gradients (spec sections 4 and 11.4–11.6).

The section-4 recursion is written out here by hand, independently of the package,
and compared with autograd through the production network in float64.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

import snnrun.snn.lif as lif_module
from snnrun.models import cnn, mlp
from snnrun.models.readout import firing_rate, stbp_loss
from snnrun.snn import SURROGATES, LIFParams, LIFState, lif_step

SWITCHES = list(
    itertools.product(("exp", "linear"), (True, False), (True, False))
)  # reset_form × td_grad × detach_reset
THRESHOLD = 0.5
DECAY = 0.5  # f(1) = 0.5·e^(−2) ≈ 0.068 under exp: the reset path carries gradient


def f(o: Tensor, p: LIFParams) -> Tensor:
    if p.reset_form == "exp":
        return p.decay * torch.exp(-o / p.decay)
    return p.decay * (1 - o)


def f_prime(o: Tensor, p: LIFParams) -> Tensor:
    if p.reset_form == "exp":
        return -torch.exp(-o / p.decay)
    return torch.full_like(o, -p.decay)


def manual_forward(
    weights: list[Tensor], biases: list[Tensor], x: Tensor, p: LIFParams
) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """Section 2, time outer, layers inner: u[t][n], o[t][n]."""
    steps, layers = x.shape[0], len(weights)
    u = [[x.new_zeros(0)] * layers for _ in range(steps)]
    o = [[x.new_zeros(0)] * layers for _ in range(steps)]
    for t in range(steps):
        below = x[t]
        for n in range(layers):
            drive = below @ weights[n].T + biases[n]
            u[t][n] = drive if t == 0 else f(o[t - 1][n], p) * u[t - 1][n] + drive
            o[t][n] = (u[t][n] >= p.threshold).to(x.dtype)
            below = o[t][n]
    return u, o


def manual_backward(
    weights: list[Tensor],
    x: Tensor,
    u: list[list[Tensor]],
    o: list[list[Tensor]],
    labels: Tensor,
    p: LIFParams,
) -> tuple[list[Tensor], list[Tensor]]:
    """Section 4 with the paper loss: returns dW[n], db[n]."""
    steps, layers, samples = x.shape[0], len(weights), x.shape[1]
    h = SURROGATES[p.surrogate]
    rate = sum(o[t][layers - 1] for t in range(steps)) / steps
    target = torch.nn.functional.one_hot(labels, weights[-1].shape[0]).to(x.dtype)
    d_rate = -(target - rate) / samples
    d_u: list[list[Tensor]] = [[x.new_zeros(0)] * layers for _ in range(steps)]
    d_w = [torch.zeros_like(w) for w in weights]
    d_b = [torch.zeros(w.shape[0], dtype=x.dtype) for w in weights]
    for t in reversed(range(steps)):
        for n in reversed(range(layers)):
            is_output = n == layers - 1  # output term, else SD from layer n + 1
            d_o = d_rate / steps if is_output else d_u[t][n + 1] @ weights[n + 1]
            temporal = t < steps - 1 and p.td_grad
            if temporal and not p.detach_reset:  # TD-reset
                d_o = d_o + d_u[t + 1][n] * u[t][n] * f_prime(o[t][n], p)
            d_u[t][n] = d_o * h(u[t][n] - p.threshold, p.surrogate_a)  # spike
            if temporal:  # TD-leak
                d_u[t][n] = d_u[t][n] + d_u[t + 1][n] * f(o[t][n], p)
            below = x[t] if n == 0 else o[t][n - 1]
            d_w[n] += d_u[t][n].T @ below
            d_b[n] += d_u[t][n].sum(0)
    return d_w, d_b


def small_problem(seed: int = 0, steps: int = 5, batch: int = 3, widths=(6, 5, 4)):
    gen = torch.Generator().manual_seed(seed)
    weights = [
        0.9 * torch.randn(out, inp, dtype=torch.float64, generator=gen)
        for inp, out in itertools.pairwise(widths)
    ]
    biases = [
        0.2 * torch.randn(w.shape[0], dtype=torch.float64, generator=gen)
        for w in weights
    ]
    x = (torch.rand(steps, batch, widths[0], generator=gen) < 0.5).double()
    labels = torch.randint(0, widths[-1], (batch,), generator=gen)
    return weights, biases, x, labels


def autograd_grads(
    weights: list[Tensor], biases: list[Tensor], x: Tensor, labels: Tensor, p: LIFParams
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Output spikes and dW, db from the production MLP (paper loss)."""
    hidden = [w.shape[0] for w in weights[:-1]]
    net = mlp.build(
        mlp.MLPConfig(hidden=hidden, init="default"),
        (x.shape[2],),
        weights[-1].shape[0],
        p,
    )
    net = net.double()
    with torch.no_grad():
        for layer, w, b in zip(net.weight_layers(), weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    spikes = net(x).spikes
    stbp_loss(firing_rate(spikes), labels, "paper").backward()
    layers = net.weight_layers()
    return (
        spikes.detach(),
        [m.weight.grad for m in layers],
        [m.bias.grad for m in layers],
    )


def params(reset_form: str, td_grad: bool, detach_reset: bool, **kw) -> LIFParams:
    fields = {
        "decay": DECAY,
        "threshold": THRESHOLD,
        "surrogate": "h3",
        "surrogate_a": 1.0,
    }
    fields.update(kw)
    return LIFParams(
        reset_form=reset_form, td_grad=td_grad, detach_reset=detach_reset, **fields
    )


@pytest.mark.parametrize("surrogate", ["h1", "h3"])
@pytest.mark.parametrize(("reset_form", "td_grad", "detach_reset"), SWITCHES)
def test_autograd_equals_section4_recursion(
    reset_form: str, td_grad: bool, detach_reset: bool, surrogate: str
) -> None:
    p = params(reset_form, td_grad, detach_reset, surrogate=surrogate)
    weights, biases, x, labels = small_problem()
    u, o = manual_forward(weights, biases, x, p)
    for n in range(len(weights)):  # the draw exercises firing and silent neurons
        rate = torch.stack([o[t][n] for t in range(x.shape[0])]).mean().item()
        assert 0.1 < rate < 0.9
    d_w, d_b = manual_backward(weights, x, u, o, labels, p)
    spikes, g_w, g_b = autograd_grads(weights, biases, x, labels, p)
    assert torch.equal(spikes, torch.stack([o[t][-1] for t in range(x.shape[0])]))
    assert all(d.abs().max() > 1e-3 for d in d_w)
    for manual, auto in zip(d_w + d_b, g_w + g_b, strict=True):
        assert (manual - auto).abs().max().item() < 1e-12


def test_switches_change_the_gradient() -> None:
    """Full STBP, detach_reset and td_grad=false give three different gradients;
    td_grad=false makes detach_reset moot."""
    weights, biases, x, labels = small_problem()
    for reset_form in ("exp", "linear"):
        grads = {}
        for _, td_grad, detach_reset in SWITCHES[:4]:
            p = params(reset_form, td_grad, detach_reset)
            grads[td_grad, detach_reset] = autograd_grads(
                weights, biases, x, labels, p
            )[1][0]
        full, detached = grads[True, False], grads[True, True]
        spatial = grads[False, False]
        assert (full - detached).abs().max() > 1e-4
        assert (full - spatial).abs().max() > 1e-4
        assert (detached - spatial).abs().max() > 1e-4
        assert torch.equal(grads[False, True], spatial)


@pytest.mark.parametrize(("reset_form", "td_grad", "detach_reset"), SWITCHES)
def test_forward_identical_under_every_switch(
    reset_form: str, td_grad: bool, detach_reset: bool
) -> None:
    weights, biases, x, labels = small_problem(seed=3)
    reference, _, _ = autograd_grads(
        weights, biases, x, labels, params(reset_form, True, False)
    )
    spikes, _, _ = autograd_grads(
        weights, biases, x, labels, params(reset_form, td_grad, detach_reset)
    )
    assert torch.equal(spikes, reference)


def spatial_only_step_by_step(
    weights: list[Tensor], biases: list[Tensor], x: Tensor, labels: Tensor, p: LIFParams
) -> list[Tensor]:
    """Each step through lif_step with full STBP, but from a detached previous state:
    only same-step (spatial) paths carry gradient."""
    leaves = [w.clone().requires_grad_() for w in weights]
    full = p._replace(td_grad=True, detach_reset=False)
    states = [
        LIFState(
            x.new_zeros(x.shape[1], w.shape[0]), x.new_zeros(x.shape[1], w.shape[0])
        )
        for w in weights
    ]
    out = []
    for x_t in x.unbind(0):
        below = x_t
        for n, (w, b) in enumerate(zip(leaves, biases, strict=True)):
            detached = LIFState(states[n].u.detach(), states[n].o.detach())
            below, states[n] = lif_step(below @ w.T + b, detached, full)
        out.append(below)
    stbp_loss(firing_rate(torch.stack(out)), labels, "paper").backward()
    return [w.grad for w in leaves]


@pytest.mark.parametrize("reset_form", ["exp", "linear"])
def test_td_grad_false_is_spatial_only(reset_form: str) -> None:
    weights, biases, x, labels = small_problem(seed=1)
    p = params(reset_form, td_grad=False, detach_reset=False)
    _, g_w, _ = autograd_grads(weights, biases, x, labels, p)
    expected = spatial_only_step_by_step(weights, biases, x, labels, p)
    for got, want in zip(g_w, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("reset_form", "decay", "steps"),
    [("exp", DECAY, 1), ("linear", DECAY, 1), ("linear", 0.0, 5)],
)
def test_td_grad_false_equals_full_without_temporal_paths(
    reset_form: str, decay: float, steps: int
) -> None:
    """T = 1 has no step t+1; linear with τ = 0 has f = f' = 0."""
    weights, biases, x, labels = small_problem(seed=2, steps=steps)
    grads = [
        autograd_grads(
            weights, biases, x, labels, params(reset_form, td, False, decay=decay)
        )
        for td in (True, False)
    ]
    for a, b in zip(grads[0][1] + grads[0][2], grads[1][1] + grads[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    assert grads[0][1][0].abs().max() > 1e-4  # not trivially equal: both nonzero


# ---------------------------------------------------------------- gradcheck (11.5)


def smooth_spike(
    u: Tensor, threshold: float, surrogate: str, a: float, cmp: str
) -> Tensor:
    """g replaced by sigmoid(4·(u − V_th)); autograd gives its exact derivative."""
    return torch.sigmoid(4.0 * (u - threshold))


def check_net_gradients(net: torch.nn.Module, x: Tensor) -> None:
    names = [name for name, _ in net.named_parameters()]
    values = tuple(
        param.detach().clone().requires_grad_() for param in net.parameters()
    )

    def run(*tensors: Tensor) -> Tensor:
        out = torch.func.functional_call(
            net, dict(zip(names, tensors, strict=True)), (x,)
        )
        return out.spikes

    spikes = run(*values)
    assert ((spikes > 0.01) & (spikes < 0.99)).any()  # the smooth spike is in use
    assert torch.autograd.gradcheck(run, values, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reset_form", ["exp", "linear"])
def test_gradcheck_mlp_with_smooth_spike(reset_form: str, monkeypatch) -> None:
    monkeypatch.setattr(lif_module, "spike", smooth_spike)
    p = LIFParams(
        decay=DECAY, threshold=THRESHOLD, reset_form=reset_form, backend="reference"
    )
    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[4], init="stbp"), (3,), 2, p).double()
    x = (torch.rand(4, 2, 3) < 0.6).double()
    check_net_gradients(net, x)


@pytest.mark.parametrize("reset_form", ["exp", "linear"])
def test_gradcheck_cnn_with_smooth_spike(reset_form: str, monkeypatch) -> None:
    monkeypatch.setattr(lif_module, "spike", smooth_spike)
    p = LIFParams(
        decay=DECAY, threshold=THRESHOLD, reset_form=reset_form, backend="reference"
    )
    torch.manual_seed(0)
    net = cnn.build(
        cnn.CNNConfig(spec="2C3-P2-3", init="stbp"), (1, 5, 5), 2, p
    ).double()
    x = (torch.rand(4, 2, 1, 5, 5) < 0.6).double()
    check_net_gradients(net, x)


def test_gradcheck_detects_a_broken_reset_path(monkeypatch) -> None:
    """detach_reset drops a true gradient path: gradcheck must notice it."""
    monkeypatch.setattr(lif_module, "spike", smooth_spike)
    p = LIFParams(
        decay=DECAY,
        threshold=THRESHOLD,
        reset_form="exp",
        detach_reset=True,
        backend="reference",
    )
    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[4], init="stbp"), (3,), 2, p).double()
    x = (torch.rand(4, 2, 3) < 0.6).double()
    with pytest.raises(GradcheckError):
        check_net_gradients(net, x)


def test_smooth_spike_patch_is_test_only() -> None:
    """The production module still uses the surrogate spike (binary forward)."""
    p = LIFParams(decay=DECAY, threshold=THRESHOLD)
    o, _ = lif_step(
        torch.tensor([0.2, 0.7]), LIFState(torch.zeros(2), torch.zeros(2)), p
    )
    assert o.tolist() == [0.0, 1.0]
    assert math.isclose(float(p.decay), DECAY)
