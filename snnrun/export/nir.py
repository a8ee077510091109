"""A SpikingNet as a NIR graph (Neuromorphic Intermediate Representation, ``nir``).

Nodes, per stage: ``AvgPool2d`` / ``Flatten`` (shapes without the batch axis,
flattened channel-major like torch), then ``Affine`` (Linear) or ``Conv2d``, then a
``LIF`` node per layer; ``input`` takes the encoded spikes of one step, ``output``
gives the output layer's spikes. The input encoding (Bernoulli rate coding of the
image, or event frames) stays outside the graph: feed the graph spikes.

How the NIR ``LIF`` node reproduces STBP's discrete LIF (``snn/lif.py``)
-------------------------------------------------------------------------
NIR's LIF is continuous: τ·dv/dt = (v_leak − v) + R·I, spike z = 1[v > v_th], then
v ← v_reset. Forward Euler with dt = 1 (one time step) gives

    v[t] = (1 − 1/τ)·v[t-1] + (R/τ)·I[t]

and with τ = 1/(1 − decay), R = τ, v_leak = 0, v_reset = 0 this is STBP's
u[t] = decay·u[t-1] + x[t] for a neuron that did not fire at t-1. After a spike NIR
sets v = 0, so the next step gives v[t] = x[t], exactly STBP's ``linear`` reset
f(1) = decay·(1 − 1) = 0. The ``exp`` reset f(1) = decay·e^(−1/decay) keeps a small
part of u and has no NIR form: it is refused unless ``approximate=True``, which
exports it as the hard reset above (spikes may then differ). The threshold: NIR fires
on v > v_th; STBP's ``ge`` (u ≥ V_th) is exported as v_th = V_th − ε and ``gt`` as
V_th + ε, ε = a quarter of float32's spacing at V_th (:func:`threshold_for`): the same
test on float32 potentials, with room for a simulator's rounding. Neuron parameters
are float64 arrays (τ, R, v_th exact as computed). The graph's metadata records
dt = 1 and this mapping.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from snnrun.models.net import SpikingNet
from snnrun.snn import LIFParams, ResetForm, SpikeCmp


class ExportError(ValueError):
    """The network holds something NIR cannot express; the message says what."""


MAPPING = (
    "Euler dt=1: v[t] = (1 - 1/tau) v[t-1] + (r/tau) I[t], with tau = 1/(1-decay), "
    "r = tau, v_leak = 0, hard reset to v_reset = 0 (STBP reset_form=linear); "
    "v_threshold = V_th - eps (spike_cmp=ge) or V_th + eps (gt), eps = spacing of "
    "float32 at V_th / 4"
)


def lif_node(
    p: LIFParams, shape: tuple[int, ...], approximate: bool = False
) -> nir.LIF:
    """The NIR LIF node of one layer of ``shape`` neurons (see the module docstring).

    Raises: ExportError for ``reset_form=exp`` unless ``approximate``.
    """
    if p.reset_form == ResetForm.EXP.value and not approximate:
        raise ExportError(
            "stbp.reset_form=exp: after a spike STBP keeps decay·e^(-1/decay) of the "
            "potential, which NIR's LIF (reset to v_reset) cannot express. Train with "
            "stbp.reset_form=linear for an exact export, or pass --approximate to "
            "export a hard reset (spikes may differ)"
        )
    tau = 1.0 / (1.0 - p.decay)
    threshold = threshold_for(p)

    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return nir.LIF(
        tau=full(tau),
        r=full(tau),
        v_leak=full(0.0),
        v_threshold=full(threshold),
        v_reset=full(0.0),
    )


def threshold_for(p: LIFParams) -> float:
    """NIR's v_th for STBP's comparison: V_th ∓ a quarter of float32's spacing at
    V_th (ge: below, gt: above). No float32 lies strictly between the two, so on
    float32 potentials u ≥ V_th ⇔ u > v_th (ge) and u > V_th ⇔ u > v_th (gt); and
    a simulator's own rounding (float64: ~1e-16) cannot flip a spike at u = V_th."""
    centre = np.float32(p.threshold)  # what float32 potentials are compared with
    margin = float(np.spacing(centre)) / 4
    return float(centre) + (-margin if p.spike_cmp == SpikeCmp.GE.value else margin)


def to_nir(
    net: SpikingNet, approximate: bool = False, metadata: dict | None = None
) -> nir.NIRGraph:
    """The NIR graph of ``net``: input → per stage [pool…][flatten] affine|conv → lif
    → … → output. ``metadata`` is added to the graph's own (dt, mapping)."""
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array(net.in_shape))}
    edges: list[tuple[str, str]] = []
    previous, shape = "input", tuple(net.in_shape)
    for index, stage in enumerate(net.stages, start=1):
        for name, module in _stage_modules(stage, index):
            nodes[name] = _node(module, shape)
            edges.append((previous, name))
            previous, shape = name, _out_shape(module, shape)
        name = f"lif{index}"
        nodes[name] = lif_node(stage.lif.params, shape, approximate)
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(np.array(shape))
    edges.append((previous, "output"))
    info = {"exporter": "snnrun", "dt": 1.0, "lif_mapping": MAPPING, **(metadata or {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=info)


def write(graph: nir.NIRGraph, path: Path) -> None:
    """Save ``graph`` as a NIR (HDF5) file."""
    nir.write(str(path), graph)


def _stage_modules(stage: nn.Module, index: int) -> list[tuple[str, nn.Module]]:
    """(node name, module) of a stage's pre-module, in order."""
    pre = stage.pre.module
    modules = list(pre) if isinstance(pre, nn.Sequential) else [pre]
    kinds = {nn.AvgPool2d: "pool", nn.Flatten: "flatten", nn.Linear: "affine"}
    kinds[nn.Conv2d] = "conv"
    named = []
    for position, module in enumerate(modules):
        kind = next((k for t, k in kinds.items() if isinstance(module, t)), None)
        if kind is None:
            raise ExportError(f"stage {index}: {module!r} has no NIR node here")
        named.append(
            (
                f"{kind}{index}"
                + ("" if position == len(modules) - 1 else f"_{position}"),
                module,
            )
        )
    return named


def _node(module: nn.Module, shape: tuple[int, ...]) -> nir.NIRNode:
    """The NIR node of one stateless module reading samples of ``shape``."""
    if isinstance(module, nn.Linear):
        return nir.Affine(weight=_array(module.weight), bias=_bias(module))
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ExportError(f"{module!r}: only zero padding exports to NIR")
        return nir.Conv2d(
            input_shape=shape[1:],
            weight=_array(module.weight),
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=_bias(module),
        )
    if isinstance(module, nn.AvgPool2d):
        if module.padding or module.ceil_mode:
            raise ExportError(
                f"{module!r}: NIR export needs padding=0, ceil_mode=False"
            )
        return nir.AvgPool2d(
            kernel_size=np.array(_pair(module.kernel_size)),
            stride=np.array(_pair(module.stride)),
            padding=np.array([0, 0]),
        )
    if isinstance(module, nn.Flatten):  # NIR shapes have no batch axis
        return nir.Flatten(
            input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1
        )
    raise ExportError(f"{module!r} has no NIR node")


def _out_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample output shape of ``module`` (a float32 probe, no batch axis)."""
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *shape))).shape[1:])


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy().copy()


def _bias(layer: nn.Linear | nn.Conv2d) -> np.ndarray:
    """The layer's bias, zeros when it has none."""
    if layer.bias is None:
        return np.zeros(layer.weight.shape[0], dtype=np.float32)
    return _array(layer.bias)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)
