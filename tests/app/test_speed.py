"""Speed switches (``train/speed.py``): fused Adam and ``trainer.compile``.

Both must leave the computation as it was: the fused Adam kernel follows the for-loop
kernel's update rule up to float rounding, and the compiled network gives the eager
network's spikes and gradients, except that float32 rounding in fused kernels may
flip a spike where |u − V_th| ≈ 1e-5 (design.md §7), so a tiny fraction may differ.
No timings here: speed lives in ``benchmarks/``. Tests that run inductor are ``slow``
(a cold compile takes 10–40 s on 2 cores); the fast ones check the wiring.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from snnrun.app.build import ConfigError, build_parts
from snnrun.models import cnn, mlp
from snnrun.snn import LIFParams
from snnrun.snn.layers import Linear
from snnrun.train import speed

from .conftest import tiny

LIF = LIFParams(decay=0.2, threshold=0.5, reset_form="linear").validate()


ADAM_KEYS = ("lr", "betas", "eps", "weight_decay")
Optimizer = torch.optim.Optimizer


def adam_pair(
    compose_cfg, *overrides: str
) -> tuple[nn.Module, Optimizer, nn.Module, Optimizer]:
    """The real MLP and optimiser of the config, twice: fused (as built) and for-loop."""
    cfg = compose_cfg(*tiny(*overrides))
    parts = build_parts(cfg)
    loop_model = copy.deepcopy(parts.model)
    fused = parts.optimizer
    loop = torch.optim.Adam(
        loop_model.parameters(), **{k: fused.defaults[k] for k in ADAM_KEYS}
    )
    return parts.model, fused, loop_model, loop


def test_adam_is_built_fused_on_the_cpu(compose_cfg) -> None:
    _, fused, _, loop = adam_pair(compose_cfg)
    assert fused.param_groups[0]["fused"] is True
    assert loop.param_groups[0]["fused"] is None  # torch's default: for-loop on CPU
    assert isinstance(fused, torch.optim.Adam)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_adam_takes_the_for_loop_steps(compose_cfg, weight_decay) -> None:
    model, fused, loop_model, loop = adam_pair(
        compose_cfg, f"optim.weight_decay={weight_decay}", "optim.lr=1e-2"
    )
    start = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        fused.zero_grad(set_to_none=True)
        loop.zero_grad(set_to_none=True)
        for p, q in zip(model.parameters(), loop_model.parameters(), strict=True):
            grad = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = grad.clone(), grad.clone()
        fused.step()
        loop.step()
    for p, q, p0 in zip(
        model.parameters(), loop_model.parameters(), start, strict=True
    ):
        assert (p - p0).abs().max() > 1e-3  # the steps moved the weights
        # float32 rounding of the same rule: |Δ| ≤ a few ulp of lr-sized steps
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert fused.state_dict()["state"].keys() == loop.state_dict()["state"].keys()


def test_adam_falls_back_when_the_fused_kernel_is_missing(
    compose_cfg, monkeypatch
) -> None:
    # torch < 2.4 has fused Adam on CUDA only: CPU parameters must use the for-loop
    monkeypatch.setattr(speed, "fused_devices", lambda: {"cuda"})
    cfg = compose_cfg(*tiny())
    parts = build_parts(cfg)
    assert parts.optimizer.param_groups[0]["fused"] is None
    for p in parts.model.parameters():
        p.grad = torch.ones_like(p)
    parts.optimizer.step()  # would raise "`fused=True` requires ..." if fused


def test_fused_support_follows_device_and_dtype() -> None:
    cpu = nn.Linear(3, 2)
    assert speed.fused_supported(cpu.parameters())
    assert speed.fused_supported(cpu.double().parameters())
    assert not speed.fused_supported(nn.Linear(3, 2, device="meta").parameters())
    assert not speed.fused_supported([])


def test_compile_keeps_plain_state_dict_keys(compose_cfg) -> None:
    eager = build_parts(compose_cfg(*tiny()))
    compiled = build_parts(compose_cfg(*tiny("trainer.compile=true")))
    keys = list(compiled.model.state_dict())
    assert keys == list(eager.model.state_dict())
    assert not any("_orig_mod" in k for k in keys)
    assert compiled.model._compiled_call_impl is not None
    assert eager.model._compiled_call_impl is None
    compiled.model.load_state_dict(eager.model.state_dict())  # checkpoints interchange


def test_compile_without_a_cpp_compiler_is_a_config_error(
    compose_cfg, monkeypatch
) -> None:
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(
        ConfigError, match=r"needs a C\+\+ compiler .* trainer\.compile"
    ):
        build_parts(compose_cfg(*tiny("trainer.compile=true")))


def agree(net: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Compiled and eager copies of ``net``: same spikes (up to rare flips) and
    nearly the same gradients."""
    eager = copy.deepcopy(net)
    compiled = speed.compile_model(copy.deepcopy(net), torch.device("cpu"))
    results = []
    for model in (eager, compiled):
        spikes = model(x).spikes
        loss = (spikes.mean(0) - nn.functional.one_hot(labels, 10)).square().sum()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        results.append((spikes.detach(), grads))
    (s_eager, g_eager), (s_compiled, g_compiled) = results
    assert 0.01 < s_eager.mean() < 0.9  # the network fires: the check means something
    flipped = (s_eager != s_compiled).float().mean().item()
    assert flipped <= 1e-3, f"{flipped:.2%} of the spikes differ"
    for a, b in zip(g_eager, g_compiled, strict=True):
        assert a.abs().sum() > 0
        assert (a - b).norm() <= 1e-3 * a.norm() + 1e-6


@pytest.mark.slow  # compiling takes ~20 s on 2 cores with a cold inductor cache
def test_compiled_mlp_matches_eager() -> None:
    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, LIF)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 16, 1, 8, 8, generator=gen) < 0.5).float()
    agree(net, x, torch.randint(0, 10, (16,), generator=gen))


@pytest.mark.slow
def test_compiled_cnn_matches_eager() -> None:
    torch.manual_seed(0)
    lif = LIF._replace(threshold=0.3)  # lower: the small net's output layer fires
    spec = cnn.CNNConfig(spec="4C3-P2-8C3-P2-16")
    net = cnn.build(spec, (1, 12, 12), 10, lif)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 8, 1, 12, 12, generator=gen) < 0.5).float()
    agree(net, x, torch.randint(0, 10, (8,), generator=gen))


@pytest.mark.slow
def test_batch_sizes_and_eval_mode_compile_once_each() -> None:
    """A short last batch and no-grad evaluation add one graph each, then no more."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[32]), (1, 6, 6), 10, LIF)
    speed.compile_model(net, torch.device("cpu"))  # resets dynamo's caches
    counters.clear()

    def run_epoch() -> None:
        net.train()
        for batch in (8, 8, 5):  # a short last batch
            net(torch.rand(4, batch, 1, 6, 6).round()).spikes.sum().backward()
        net.eval()
        with torch.no_grad():
            for batch in (12, 12, 7):
                net(torch.rand(4, batch, 1, 6, 6).round())

    run_epoch()
    first = counters["stats"]["unique_graphs"]
    assert first == 2  # batches 8 and 5 with grad; evaluation runs eagerly (one pass)
    for _ in range(2):
        run_epoch()
    assert counters["stats"]["unique_graphs"] == first


@pytest.mark.slow
def test_debug_fast_run_with_compile(run_cli, tmp_path) -> None:
    from snnrun.train.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    done = run_cli(
        "train",
        "debug=fast",
        "trainer.compile=true",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"hydra.run.dir={run_dir}",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert not any("_orig_mod" in k for k in state["model"])
    assert state["epoch"] == 2  # one epoch finished
    evaluated = run_cli("eval", str(run_dir / "checkpoints" / "last.pt"), timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test/acc" in evaluated.stdout


@pytest.mark.parametrize("events", [True, False])
def test_event_products_reach_every_linear_layer(compose_cfg, events) -> None:
    """``trainer.event_products`` switches the event-driven Linear of the built net."""
    parts = build_parts(compose_cfg(*tiny(f"trainer.event_products={events}")))
    layers = [m for m in parts.model.modules() if isinstance(m, Linear)]
    assert layers and all(layer.event_driven is events for layer in layers)


def test_compiled_evaluation_on_the_cpu_runs_the_one_pass_eagerly(
    one_pass_calls,
) -> None:
    """Gradients off, a compiled network evaluates as the eager one does — through
    the one-pass C++ evaluation, which a graph cannot hold — with the same spikes bit
    for bit and no graph compiled for it (no inductor run: this test is fast)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[48]), (1, 8, 8), 10, LIF)
    eager = copy.deepcopy(net).eval()
    speed.compile_model(net, torch.device("cpu"))
    counters.clear()
    calls = one_pass_calls
    net.eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in (9, 9, 4):
            x = (torch.rand(5, batch, 1, 8, 8, generator=gen) < 0.15).float()
            got, want = net(x), eager(x)
            assert torch.equal(got.spikes, want.spikes)
            assert torch.equal(got.layer_rates, want.layer_rates)
            assert want.layer_rates[0] > 0  # the hidden layer fires: spikes to compare
    assert calls and all(calls)  # every stage of every batch took the one pass
    assert net._compiled_call_impl is not None  # still the compiled module
    assert counters["stats"]["unique_graphs"] == 0
