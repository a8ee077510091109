"""The benchmark networks in every implementation, all computing the same math.

Math (one definition for all): LIF with leak τ = 0.2, V_th = 0.5, hard reset
(``reset_form=linear``: u[t] = τ·(1 − o[t−1])·u[t−1] + x[t]), rectangular surrogate
of width 1 (h1, a = 1) except where a peer cannot express it (noted in ``NOTES``),
output = firing rate over T, Bernoulli rate-coded MNIST input drawn inside the step.

Networks: ``mlp`` 784-800-10 and ``cnn`` 28x28-32C5-P2-64C5-P2-1024-10 (padding 2,
average pooling), every weight layer followed by LIF neurons.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

DECAY, THRESHOLD = 0.2, 0.5
NETS = ("mlp", "cnn")
CNN_SPEC = "32C5-P2-64C5-P2-1024"
SNNRUN_IMPLS = (
    "snnrun-reference",
    "snnrun-fused",
    "snnrun-native",
    "snnrun-dense",
    "snnrun-triton",
    "snnrun-compiled",
)
CPU_ONLY = ("snnrun-native", "snnrun-dense")  # the C++ loop
CUDA_ONLY = ("snnrun-triton",)
PEER_IMPLS = ("spikingjelly", "snntorch", "norse")
BASELINE_IMPLS = ("torch", "torch-compiled")
"""Plain torch, the whole network once per step, eager and under torch.compile: what
a user writes without a library (the issue's baseline; on CUDA, compiled plain torch
is the bar a fused kernel has to clear)."""
TUNED = "+malloc"
"""Suffix of a peer run in a process with snnrun's allocator tuning (every snnrun
worker has it, as ``snnrun train`` has): ``spikingjelly+malloc``."""
TUNED_PEERS = ("spikingjelly" + TUNED,)
NOTES = {
    "snnrun-reference": "snnrun, stbp.backend=reference: autograd through every step "
    "(the default on CUDA); event-driven products on, as by default",
    "snnrun-fused": "snnrun, stbp.backend=fused: one autograd node per layer; "
    "event-driven products on, as by default",
    "snnrun-native": "snnrun default on the CPU (stbp.backend=auto runs native there):"
    " the fused recurrence as a vectorised C++ loop, and event-driven products for"
    " spike input (trainer.event_products=true)",
    "snnrun-dense": "snnrun, the default with trainer.event_products=false: native"
    " LIF loop, dense products",
    "snnrun-triton": "snnrun, stbp.backend=triton: the fused recurrence as Triton "
    "kernels (CUDA)",
    "snnrun-compiled": "snnrun default + trainer.compile=true (inductor compiles "
    "the graph around the native LIF loop and event-driven products, which it "
    "calls as registered operators)",
    "spikingjelly": "SpikingJelly 2.0 multi-step LIFNode(tau=1.25, decay_input=False, "
    "v_reset=0, surrogate Rect), layer.* step_mode='m', torch backend",
    "snntorch": "snnTorch 1.0 Leaky(beta=0.2, reset_mechanism='zero', rect "
    "surrogate), per-step loop over the whole network (reset path detached)",
    "spikingjelly+malloc": "SpikingJelly as above, in a process with snnrun's glibc "
    "allocator tuning (what every snnrun worker and `snnrun train` have)",
    "norse": "Norse 1.1 LIFBoxCell(tau_mem_inv=0.8, v_reset=0, triangle "
    "surrogate), per-step loop; W·x + b scaled by 1.25 to undo the 0.8 input gain",
    "torch": "plain torch: the whole network once per step, LIF as tensor ops, the "
    "rectangular surrogate as a straight-through term; torch's Adam",
    "torch-compiled": "plain torch as above, its forward wrapped in torch.compile "
    "(inductor, default mode)",
}

CPU = torch.device("cpu")
Forward = Callable[[Tensor], Tensor]
"""Encoded spikes ``[T, B, 1, 28, 28]`` → output rates ``[B, 10]``."""


def base(impl: str) -> str:
    """The implementation without the allocator-tuning suffix."""
    return impl.removesuffix(TUNED)


def tuned(impl: str) -> bool:
    """Whether ``impl``'s worker applies snnrun's allocator tuning: every snnrun one
    (``snnrun train`` does) and the ``+malloc`` peers."""
    return impl.startswith("snnrun") or impl.endswith(TUNED)


def in_features(net: str) -> int:
    return 784 if net == "mlp" else 1


def runs_on(impl: str, device: str) -> bool:
    """Whether ``impl`` can run on ``device`` ("cpu", "cuda", "cuda:1" ...)."""
    cuda = device.startswith("cuda")
    return not (cuda and impl in CPU_ONLY) and not (not cuda and impl in CUDA_ONLY)


def build(impl: str, net: str, device: torch.device = CPU) -> tuple[nn.Module, Forward]:
    """The module (on ``device``; its parameters are trained) and its forward."""
    if impl.startswith("snnrun"):
        return _snnrun(impl, net, device)
    builders = {
        "spikingjelly": _spikingjelly,
        "snntorch": _snntorch,
        "norse": _norse,
        "torch": _plain_torch,
        "torch-compiled": _plain_torch,
    }
    module, forward = builders[base(impl)](net)
    if impl == "torch-compiled":
        forward = torch.compile(forward)
    return module.to(device), forward


def weight_layers(net: str) -> list[nn.Module]:
    """Plain Linear/Conv2d layers of ``net`` (for the peers and the FLOP count)."""
    if net == "mlp":
        return [nn.Linear(784, 800), nn.Linear(800, 10)]
    return [
        nn.Conv2d(1, 32, 5, padding=2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.Linear(64 * 7 * 7, 1024),
        nn.Linear(1024, 10),
    ]


def _snnrun(impl: str, net: str, device: torch.device) -> tuple[nn.Module, Forward]:
    from snnrun.models import cnn, mlp
    from snnrun.snn import LIFParams
    from snnrun.snn.layers import set_event_products

    backend = {
        "snnrun-fused": "fused",
        "snnrun-native": "native",
        "snnrun-dense": "native",
        "snnrun-triton": "triton",
        "snnrun-compiled": "auto",
    }.get(impl, "reference")
    p = LIFParams(DECAY, THRESHOLD, "linear", backend=backend)
    if net == "mlp":
        model = mlp.build(
            mlp.MLPConfig(hidden=[800], init="default"), (1, 28, 28), 10, p
        )
    else:
        model = cnn.build(
            cnn.CNNConfig(spec=CNN_SPEC, init="default"), (1, 28, 28), 10, p
        )
    model = model.to(device)
    set_event_products(model, impl != "snnrun-dense")
    if impl == "snnrun-compiled":
        from snnrun.train.speed import compile_model

        compile_model(model, device)
    return model, lambda x: model(x).spikes.mean(0)


def _stack(net: str, x: Tensor, lif: Callable[[int, Tensor], Tensor], layers) -> Tensor:
    """Layerwise body shared by the peers: ops over [T·B, ...], LIF ``lif(i, I)``."""
    steps, batch = x.shape[0], x.shape[1]
    fold = x.flatten(0, 1)
    if net == "mlp":
        s = lif(0, layers[0](fold.flatten(1)).unflatten(0, (steps, batch)))
        s = lif(1, layers[1](s.flatten(0, 1)).unflatten(0, (steps, batch)))
        return s.mean(0)
    pool = nn.functional.avg_pool2d
    s = lif(0, layers[0](fold).unflatten(0, (steps, batch)))
    s = lif(1, layers[1](pool(s.flatten(0, 1), 2)).unflatten(0, (steps, batch)))
    s = pool(s.flatten(0, 1), 2).flatten(1)
    s = lif(2, layers[2](s).unflatten(0, (steps, batch)))
    s = lif(3, layers[3](s.flatten(0, 1)).unflatten(0, (steps, batch)))
    return s.mean(0)


def _spikingjelly(net: str) -> tuple[nn.Module, Forward]:
    from spikingjelly.activation_based import neuron, surrogate

    layers = nn.ModuleList(weight_layers(net))
    lifs = nn.ModuleList(
        neuron.LIFNode(
            tau=1.0 / (1.0 - DECAY),
            decay_input=False,
            v_threshold=THRESHOLD,
            v_reset=0.0,
            surrogate_function=surrogate.Rect(alpha=1.0),
            detach_reset=False,
            step_mode="m",
        )
        for _ in layers
    )
    module = nn.ModuleList([layers, lifs])

    def forward(x: Tensor) -> Tensor:
        for lif in lifs:
            lif.reset()
        return _stack(net, x, lambda i, current: lifs[i](current), layers)

    return module, forward


def _per_step(net: str, x: Tensor, cell: Callable, layers) -> Tensor:
    """The peers' idiomatic loop: the whole network once per time step."""
    pool = nn.functional.avg_pool2d
    states: list = [None] * len(layers)
    total = 0
    for xt in x.unbind(0):
        s = xt.flatten(1) if net == "mlp" else xt
        for i, layer in enumerate(layers):
            if net == "cnn" and i == 1:
                s = pool(s, 2)
            if net == "cnn" and i == 2:
                s = pool(s, 2).flatten(1)
            s, states[i] = cell(i, layer(s), states[i])
        total = total + s
    return total / x.shape[0]


def _snntorch(net: str) -> tuple[nn.Module, Forward]:
    import snntorch as snn
    from snntorch import surrogate

    def rect(input_, grad_input, spikes):  # input_ = u − V_th
        return grad_input * (input_.abs() < 0.5).to(grad_input.dtype)

    layers = nn.ModuleList(weight_layers(net))
    leaky = nn.ModuleList(
        snn.Leaky(
            beta=DECAY,
            threshold=THRESHOLD,
            spike_grad=surrogate.custom_surrogate(rect),
            reset_mechanism="zero",
        )
        for _ in layers
    )

    def cell(i: int, current: Tensor, mem):
        mem = leaky[i].reset_mem() if mem is None else mem
        return leaky[i](current, mem)

    return nn.ModuleList([layers, leaky]), lambda x: _per_step(net, x, cell, layers)


def _norse(net: str) -> tuple[nn.Module, Forward]:
    from norse.torch import LIFBoxCell
    from norse.torch.functional.lif_box import LIFBoxParameters

    gain = 1.0 / (1.0 - DECAY)
    layers = nn.ModuleList(weight_layers(net))
    cells = nn.ModuleList(
        LIFBoxCell(
            LIFBoxParameters(
                tau_mem_inv=torch.as_tensor(1.0 - DECAY),
                v_leak=torch.as_tensor(0.0),
                v_th=torch.as_tensor(THRESHOLD),
                v_reset=torch.as_tensor(0.0),
                method="triangle",
                alpha=1.0,
            ),
            dt=1.0,
        )
        for _ in layers
    )

    def cell(i: int, current: Tensor, state):
        return cells[i](current * gain, state)

    return nn.ModuleList([layers, cells]), lambda x: _per_step(net, x, cell, layers)


def _plain_torch(net: str) -> tuple[nn.Module, Forward]:
    """The benchmark's math in tensor ops: u[t] = τ·(1 − o[t−1])·u[t−1] + I[t],
    o[t] = 1[u[t] ≥ V_th], dô/du = 1[|u − V_th| < 1/2] (h1, a = 1) through both o's
    (the reset path is not detached, as everywhere here)."""
    layers = nn.ModuleList(weight_layers(net))

    def cell(i: int, current: Tensor, state):
        u = current if state is None else DECAY * (1.0 - state[1]) * state[0] + current
        return (spikes := _rect_spike(u)), (u, spikes)

    return layers, lambda x: _per_step(net, x, cell, layers)


def _rect_spike(u: Tensor) -> Tensor:
    """1[u ≥ V_th] exactly in the forward; gradient 1[|u − V_th| < 1/2] in backward
    (a straight-through term, u − u.detach(), that is 0 in the forward)."""
    fired = (u >= THRESHOLD).to(u.dtype)
    window = ((u - THRESHOLD).abs() < 0.5).to(u.dtype)
    return fired + window * (u - u.detach())
