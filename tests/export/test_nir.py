"""NIR export round trip: the file, read back with ``nir`` and run by a small
discrete-time interpreter written here from the NIR node definitions, gives the
spikes of snnrun's own network in every layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

import snnrun
from snnrun.data.idx import read_idx
from snnrun.export.nir import ExportError, to_nir, write
from snnrun.models import mlp
from snnrun.snn import LIFParams

# --- the interpreter: one sample, float64, Euler steps of dt = 1 ----------------------


def affine(node: nir.Affine, x: np.ndarray) -> np.ndarray:
    return node.weight.astype(np.float64) @ x + node.bias


def conv2d(node: nir.Conv2d, x: np.ndarray) -> np.ndarray:
    """x [C, H, W] → [O, H', W']: cross-correlation with zero padding (groups 1)."""
    assert node.groups == 1 and tuple(node.dilation) == (1, 1)
    (ph, pw), (sh, sw) = node.padding, node.stride
    kh, kw = node.weight.shape[2:]
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    out = np.einsum("chwij,ocij->ohw", windows, node.weight.astype(np.float64))
    return out + node.bias[:, None, None]


def avg_pool(node: nir.AvgPool2d, x: np.ndarray) -> np.ndarray:
    assert not np.any(node.padding)
    (kh, kw), (sh, sw) = node.kernel_size, node.stride
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return windows.mean(axis=(-2, -1))


def flatten(node: nir.Flatten, x: np.ndarray) -> np.ndarray:
    start, end = node.start_dim, node.end_dim % x.ndim
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])


class LIFState:
    """NIR LIF, τ·dv/dt = (v_leak − v) + R·I, Euler dt = 1; z = 1[v > v_th];
    v ← v_reset where z."""

    def __init__(self, node: nir.LIF) -> None:
        self.node = node
        self.v = np.zeros(node.tau.shape)

    def step(self, current: np.ndarray) -> np.ndarray:
        n, dt = self.node, 1.0
        tau, r = n.tau.astype(np.float64), n.r.astype(np.float64)
        self.v = self.v + dt / tau * (n.v_leak - self.v + r * current)
        z = (self.v > n.v_threshold).astype(np.float64)
        self.v = np.where(z > 0, n.v_reset, self.v)
        return z


STATELESS = {
    nir.Affine: affine,
    nir.Conv2d: conv2d,
    nir.AvgPool2d: avg_pool,
    nir.Flatten: flatten,
}


def simulate(graph: nir.NIRGraph, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Run the graph over inputs [T, *in_shape]; every node's output per step."""
    source = {dst: src for src, dst in graph.edges}
    assert len(source) == len(graph.edges), "one input per node"
    order = ["input"]
    while len(order) < len(graph.nodes):
        order += [d for d, s in source.items() if s == order[-1]]
    lifs = {k: LIFState(n) for k, n in graph.nodes.items() if isinstance(n, nir.LIF)}
    trace: dict[str, list[np.ndarray]] = {name: [] for name in order}
    for x_t in inputs:
        value = {"input": x_t}
        for name in order[1:]:
            node, x = graph.nodes[name], value[source[name]]
            if name in lifs:
                value[name] = lifs[name].step(x)
            elif isinstance(node, nir.Output):
                value[name] = x
            else:
                value[name] = STATELESS[type(node)](node, x)
            trace[name].append(value[name])
    return {name: np.stack(steps) for name, steps in trace.items() if steps}


def graph_spikes(graph: nir.NIRGraph, inputs: torch.Tensor) -> list[np.ndarray]:
    """Spikes of every LIF node, [T, B, ...] per layer, sample by sample."""
    names = sorted(
        (n for n in graph.nodes if n.startswith("lif")), key=lambda n: int(n[3:])
    )
    runs = [
        simulate(graph, inputs[:, b].double().numpy()) for b in range(inputs.shape[1])
    ]
    return [np.stack([run[name] for run in runs], axis=1) for name in names]


def assert_same_spikes(
    graph: nir.NIRGraph, net: torch.nn.Module, x: torch.Tensor
) -> None:
    with torch.no_grad():
        record = net.double().record(x.double())
    ours = graph_spikes(graph, x)
    assert len(ours) == len(record.spikes)
    for layer, (theirs, mine) in enumerate(zip(ours, record.spikes, strict=True), 1):
        mine = mine.numpy()
        assert theirs.shape == mine.shape, layer
        assert mine.sum() > 0, f"layer {layer} is silent: the test would prove little"
        assert np.array_equal(theirs, mine), (
            f"layer {layer}: {int((theirs != mine).sum())} of {mine.size} spikes differ"
        )


# --- tests ----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_export_round_trips_to_identical_spikes(
    cli_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "net.nir"
    result = subprocess.run(
        [sys.executable, "-m", "snnrun", "export", str(cli_checkpoint), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    graph = nir.read(out)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Conv2d", "AvgPool2d", "Flatten", "Affine", "LIF"} <= kinds
    assert graph.metadata["time_steps"] == 8

    network, _cfg = snnrun.load(cli_checkpoint)
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:6]
    x = network.encode(images, seed=3)  # [T=8, 6, 1, 28, 28] input spikes
    assert_same_spikes(graph, network.net, x)


@pytest.mark.parametrize("spike_cmp", ["ge", "gt"])
def test_mlp_round_trip_on_threshold_hits(spike_cmp: str, tmp_path: Path) -> None:
    """Weights of 1/8 make potentials land exactly on V_th = 0.5, where ge and gt
    disagree: the exported threshold must keep snnrun's comparison."""
    lif = LIFParams(decay=0.25, threshold=0.5, reset_form="linear", spike_cmp=spike_cmp)
    net = mlp.build(mlp.MLPConfig(hidden=[6], init="default"), (2, 2, 2), 3, lif)
    with torch.no_grad():
        for layer in net.weight_layers():
            layer.weight.fill_(0.125)
            layer.bias.zero_()
    x = torch.rand(5, 7, 2, 2, 2, generator=torch.Generator().manual_seed(1)) < 0.6
    write(to_nir(net), tmp_path / "mlp.nir")
    graph = nir.read(tmp_path / "mlp.nir")
    with torch.no_grad():
        hits = net.record(x.float()).potentials[0] == 0.5
    assert hits.any(), "no potential hit V_th exactly: the test lost its point"
    assert_same_spikes(graph, net, x.float())


def test_exp_reset_is_refused_with_the_fix() -> None:
    net = mlp.build(mlp.MLPConfig(hidden=[4]), (3,), 2, LIFParams(reset_form="exp"))
    with pytest.raises(ExportError, match="reset_form=linear"):
        to_nir(net)
    graph = to_nir(net, approximate=True)  # a hard reset, said so in the message
    assert np.all(graph.nodes["lif1"].v_reset == 0)
