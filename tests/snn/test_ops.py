"""The C++ kernels as registered operators (``snnrun::lif_forward``, ``lif_backward``,
``event_linear``, ``event_wgrad``, ``avg_pool``, ``avg_pool_backward``): torch's own
operator checks (schema, fake tensors for tracing, autograd registration, AOT
dispatch), and a whole MLP training step traced by torch.compile in one graph
(``fullgraph=True`` fails on any graph break) that gives the eager step's values.
Inductor itself is in the slow tests (``tests/app/test_speed.py``)."""

from __future__ import annotations

import pytest
import torch

from snnrun.models import mlp
from snnrun.snn import LIFParams, native

LIF = LIFParams(decay=0.2, threshold=0.5, reset_form="linear").validate()


@pytest.fixture(autouse=True)
def _built() -> None:
    assert native.available(), "the C++ kernel must build here (g++, ninja)"


def spikes(shape: tuple[int, ...], share: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < share).float()


@pytest.mark.parametrize(
    "fields",
    [
        ("linear", "ge", "h1", False, True),
        ("exp", "gt", "h3", True, True),
        ("exp", "ge", "h4", False, False),
    ],
)
def test_lif_operators_pass_torchs_checks(fields: tuple) -> None:
    reset_form, spike_cmp, surrogate, detach_reset, td_grad = fields
    args = (0.3, 0.5, reset_form, spike_cmp, surrogate, 1.0, detach_reset, td_grad)
    x = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(native._lif_forward, (x, *args))
    u, _ = native._lif_forward(x.detach(), *args)
    go = torch.randn(6, 40, dtype=torch.float64)
    torch.library.opcheck(native._lif_backward, (u, go, *args))


@pytest.mark.parametrize("share", [0.13, 0.6])  # event-driven, and dense past the cap
@pytest.mark.parametrize("bias", [True, False])
def test_event_operators_pass_torchs_checks(share: float, bias: bool) -> None:
    x = spikes((30, 50), share)
    weight = torch.randn(40, 50, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    torch.library.opcheck(native._event_linear_op, (x, weight, b))
    torch.library.opcheck(native._event_wgrad_op, (x, torch.randn(30, 40)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pool_operators_pass_torchs_checks(dtype: torch.dtype) -> None:
    x = spikes((4, 3, 8, 6), 0.3).to(dtype).requires_grad_()
    torch.library.opcheck(native._avg_pool_op, (x, 2))
    grad = torch.randn(4, 3, 4, 3, dtype=dtype)
    torch.library.opcheck(native._avg_pool_backward_op, (grad, 8, 6, 2))
    pooled = native._avg_pool_op(x, 2)
    assert torch.equal(pooled, torch.nn.functional.avg_pool2d(x, 2))


def step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    out = model(x).spikes
    out.mean(0).square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_a_compiled_mlp_step_is_one_graph_with_the_eager_values() -> None:
    """Native LIF and event products inside one traced graph (no break), their
    backward through the registered autograd formulas: the eager step's spikes and
    gradients (AOT tracing without inductor: the same kernels run)."""
    torch.manual_seed(0)
    lif = LIF._replace(threshold=0.15)  # low: the small net's output layer fires
    eager = mlp.build(mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, lif)
    traced = mlp.build(mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, lif)
    traced.load_state_dict(eager.state_dict())
    called: list[str] = []

    def backend(graph: torch.fx.GraphModule, inputs: list):
        called.extend(str(node.target) for node in graph.graph.nodes)
        return torch._dynamo.lookup_backend("aot_eager")(graph, inputs)

    traced.compile(backend=backend, fullgraph=True, dynamic=False)
    x = spikes((5, 16, 1, 8, 8), 0.2, seed=3)
    (s_eager, g_eager), (s_traced, g_traced) = step(eager, x), step(traced, x)
    assert called.count("snnrun.event_linear.default") == 2
    assert called.count("snnrun.lif_forward.default") == 2
    assert 0.01 < s_eager.mean() < 0.9  # the network fires: the check means something
    assert torch.equal(s_eager, s_traced)
    for a, b in zip(g_eager, g_traced, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
