"""``snnrun bench``: FLOP counts, the same math in every implementation, a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from snnrun.bench import flops, nets


def test_flop_counts_are_exact() -> None:
    # MLP 784-800-10: first layer forward + weight grad, second layer all three
    per_step = 2 * (2 * 784 * 800) + 3 * (2 * 800 * 10)
    assert flops.train_flops("mlp", 10) == 10 * per_step
    assert flops.eval_flops("mlp", 1) == 2 * 784 * 800 + 2 * 800 * 10
    # CNN: a 5x5 conv over 28x28 positions, then over 14x14
    conv1 = 2 * 25 * 32 * 28 * 28
    assert flops.train_flops("cnn", 1) > 2 * conv1


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def firing_layers(net: str) -> list[torch.nn.Module]:
    """The net's plain weight layers, strong enough that every layer fires."""
    layers = nets.weight_layers(net)
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(6.0)
            layer.bias.add_(0.1)
    return layers


def built_with(impl: str, net: str, reference: list) -> tuple[list, nets.Forward]:
    """``impl``'s network with the weights of ``reference``: (its weight layers,
    its forward)."""
    module, forward = nets.build(impl, net)
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    layers = [m for m in module.modules() if isinstance(m, kinds)]
    for mine, ref in zip(layers, reference, strict=True):
        mine.load_state_dict(ref.state_dict())
    return layers, forward


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_every_installed_implementation_computes_the_same_forward(net: str) -> None:
    """With the same weights and input spikes, every implementation gives the same
    rates (same LIF, threshold, reset, leak); the peers that are not installed are
    checked wherever they are."""
    impls = [*nets.SNNRUN_IMPLS[:2], "torch"]
    impls += [p for p in nets.PEER_IMPLS if importable(p)]
    torch.manual_seed(0)
    x = (torch.rand(6, 3, 1, 28, 28) < 0.3).float()
    reference_layers = firing_layers(net)
    outputs = {}
    for impl in impls:
        _, forward = built_with(impl, net, reference_layers)
        with torch.no_grad():
            outputs[impl] = forward(x)
    first = outputs[impls[0]]
    assert 0 < first.mean() < 1
    for impl, rates in outputs.items():
        torch.testing.assert_close(rates, first, msg=impl, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "impl", ["torch", pytest.param("torch-compiled", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_plain_torch_has_snnruns_gradients(net: str, impl: str) -> None:
    """The plain-torch baseline trains the same math as snnrun's reference backend:
    the same rates and the same weight gradients (surrogate, reset path and all)."""
    torch.manual_seed(0)
    x = (torch.rand(5, 4, 1, 28, 28) < 0.3).float()
    grads, rates = [], []
    reference_layers = firing_layers(net)
    for name in ("snnrun-reference", impl):
        layers, forward = built_with(name, net, reference_layers)
        out = forward(x)
        (out * torch.arange(1.0, 11.0)).sum().backward()
        rates.append(out.detach())
        grads.append([layer.weight.grad for layer in layers])
    assert 0 < rates[0].mean() < 1
    torch.testing.assert_close(rates[1], rates[0], atol=1e-6, rtol=0)
    for ours, theirs in zip(*grads, strict=True):
        assert ours.abs().sum() > 0
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_the_table_has_a_ratio_to_compiled_plain_torch_and_names_kernels() -> None:
    from snnrun.app import bench

    def run(impl: str, rate: float, **extra) -> dict:
        return dict(
            impl=impl,
            config="mlp10",
            round=0,
            train_samples_per_s=rate,
            eval_samples_per_s=3 * rate,
            activation_mb=1.0,
            peak_rss_mb=100.0,
            gemm_flops_per_s=1e11,
            **extra,
        )

    raw = [
        run("snnrun-fused", 300.0),
        run("torch-compiled", 100.0),
        run("spikingjelly", 150.0, peer_kernel="triton"),
    ]
    impls = ["snnrun-fused", "torch-compiled", "spikingjelly"]
    table = bench.summarise(raw, ["mlp10"], impls)
    assert table["mlp10"]["snnrun-fused"]["ratio"]["torch-compiled"] == 3.0
    assert table["mlp10"]["snnrun-fused"]["ratio"]["spikingjelly"] == 2.0
    meta = dict(command="c", machine="m", torch="t", batch=100, threads=2, rounds=1)
    text = bench.markdown(table, ["mlp10"], impls, {**meta, "missing": []})
    assert "| vs spikingjelly | vs torch-compiled |" in text
    assert "| snnrun-fused | 300 | 2.00× | 3.00× |" in text
    assert "its LIF ran as `triton`" in text


@pytest.mark.slow
def test_bench_writes_its_tables(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snnrun",
            "bench",
            "--configs",
            "mlp10",
            "--impls",
            "snnrun-reference,snnrun-fused",
            "--rounds",
            "1",
            "--seconds",
            "0.3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    row = data["summary"]["mlp10"]["snnrun-fused"]
    assert row["train_samples_per_s"] > 0 and row["roofline_samples_per_s"] > 0
    # The roofline is the dense fp32 bound: the event product may beat it (share > 1),
    # so the share is checked for what it is, the measured rate over the bound.
    assert row["roofline_share"] == pytest.approx(
        row["train_samples_per_s"] / row["roofline_samples_per_s"]
    )
    assert 0 < row["roofline_share"] < 20
    assert (
        row["activation_mb"]
        < data["summary"]["mlp10"]["snnrun-reference"]["activation_mb"]
    )
    text = (tmp_path / "bench.md").read_text()
    assert "| snnrun-fused |" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1, table  # columns line up


def test_each_implementation_runs_only_where_it_can() -> None:
    from snnrun.bench import nets

    assert nets.runs_on("snnrun-native", "cpu") and not nets.runs_on(
        "snnrun-native", "cuda"
    )
    assert nets.runs_on("snnrun-triton", "cuda:0") and not nets.runs_on(
        "snnrun-triton", "cpu"
    )
    assert all(
        nets.runs_on(i, d) for i in ("snnrun-fused", "norse") for d in ("cpu", "cuda")
    )
