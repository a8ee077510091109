"""Evaluation of a Linear stage as one C++ pass (``layers.fused_linear_lif``: the
event product and the LIF recurrence together, the synaptic input never stored):
the same spikes, bit for bit, as the two layers run one after the other."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnrun.models import cnn, mlp
from snnrun.models.synops import SynOpsMeter
from snnrun.snn import native
from snnrun.snn.layers import LIF, FoldTime, Linear, fused_linear_lif, observer
from snnrun.snn.lif import LIFParams

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the C++ kernel")


def spikes(
    steps: int, batch: int, ins: int, seed: int, persistent: bool
) -> torch.Tensor:
    """0/1 input ``[T, B, I]``: persistent (each input mostly on or off for the whole
    sample, as rate-coded pixels: temporal deltas) or independent (the nonzeros)."""
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(batch, ins, generator=generator)
    p = torch.where(p < 0.8, p * 0.05, 0.9 + 0.1 * p) if persistent else p * 0.2
    return (torch.rand(steps, batch, ins, generator=generator) < p).float()


CASES = [  # T, B, I, O, persistent
    (10, 100, 784, 800, True),
    (30, 7, 64, 45, True),
    (1, 5, 20, 33, True),
    (4, 1, 50, 10, True),
    (8, 9, 40, 96, False),
    (5, 13, 30, 1, False),
]
NEURONS = [
    LIFParams(0.2, 0.5, "exp", "ge", backend="native"),
    LIFParams(0.3, 1.0, "linear", "gt", backend="auto"),
    LIFParams(0.0, 0.25, "linear", "ge", backend="native"),
]


@pytest.mark.parametrize(("steps", "batch", "ins", "outs", "persistent"), CASES)
@pytest.mark.parametrize("params", NEURONS)
def test_one_pass_gives_the_spikes_of_the_two_layers(
    steps: int, batch: int, ins: int, outs: int, persistent: bool, params: LIFParams
) -> None:
    """Deltas and nonzero lists, partial output blocks, T = 1, B = 1, both reset
    forms and comparisons, a threshold hit exactly (weights and inputs dyadic), 1
    and 2 threads: identical spikes."""
    x = spikes(steps, batch, ins, seed=outs, persistent=persistent)
    torch.manual_seed(outs)
    linear = Linear(ins, outs)
    with torch.no_grad():  # multiples of 1/64: sums land on the threshold exactly
        linear.weight.copy_((linear.weight * 64).round() / 64)
        linear.bias.copy_((linear.bias * 64).round() / 64)
    pre, lif = FoldTime(linear), LIF(params)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                fused = fused_linear_lif(pre, lif, x)
                want = lif(pre(x))
            assert fused is not None
            assert torch.equal(fused, want)
    finally:
        torch.set_num_threads(before)


def test_it_stands_aside_where_it_does_not_apply() -> None:
    """Gradients on, event products off, another backend chosen, a stage that is not
    a Linear, a forward hook on the layer: None (the two layers run)."""
    x = spikes(4, 3, 16, seed=0, persistent=True)
    linear = Linear(16, 40)
    native_lif = LIF(LIFParams(backend="native"))
    with torch.enable_grad():
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is None
    with torch.no_grad():
        assert (
            fused_linear_lif(FoldTime(linear), LIF(LIFParams(backend="fused")), x)
            is None
        )
        conv = nn.Conv2d(1, 2, 3)
        assert (
            fused_linear_lif(FoldTime(conv), native_lif, x.view(4, 3, 1, 4, 4)) is None
        )
        handle = linear.register_forward_pre_hook(lambda module, args: None)
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is None
        handle.remove()
        handle = linear.register_forward_hook(observer(lambda m, args, out: None))
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is None  # wants y
        handle.remove()
        handle = native_lif.register_forward_pre_hook(observer(lambda m, args: None))
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is None
        handle.remove()
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is not None
        linear.event_driven = False
        assert fused_linear_lif(FoldTime(linear), native_lif, x) is None


def test_an_observer_hook_sees_the_input_and_the_pass_stays_one() -> None:
    """A pre-hook marked ``observer`` on the Linear is called with what the layer
    would have received, ``(x [T·B, I], T)``, after the flatten/pool head (whose own
    hooks run as usual), and the stage still runs in one pass."""
    x = spikes(5, 4, 64, seed=2, persistent=True).view(5, 4, 1, 8, 8)
    linear = Linear(16, 30)
    head = [nn.AvgPool2d(2), nn.Flatten()]
    pre = FoldTime(nn.Sequential(*head, linear))
    lif = LIF(LIFParams(backend="native"))
    seen, flattened = [], []
    linear.register_forward_pre_hook(observer(lambda m, args: seen.append(args)))
    head[1].register_forward_hook(lambda m, args, out: flattened.append(out))
    with torch.no_grad():
        got = fused_linear_lif(pre, lif, x)
        assert got is not None
        assert torch.equal(got, lif(pre(x)))
    assert len(seen) == 2 and len(flattened) == 2  # the one pass, then the layers
    for args, out in zip(seen, flattened, strict=True):
        assert args[1] == 5 and torch.equal(args[0], out)
    assert torch.equal(seen[0][0], nn.Flatten()(nn.AvgPool2d(2)(x.flatten(0, 1))))


def test_synaptic_operations_are_counted_in_evaluation(one_pass_calls) -> None:
    """``SynOpsMeter`` counts each layer's input through a forward pre-hook: under
    no_grad (where stages would run in one pass) it counts what it counts with
    gradients on."""
    torch.manual_seed(0)
    p = LIFParams(0.2, 0.5, "linear", backend="native")
    model = mlp.build(mlp.MLPConfig(hidden=[64]), (1, 8, 8), 10, p)
    x = spikes(6, 5, 64, seed=1, persistent=True).view(6, 5, 1, 8, 8)
    counts, taken = [], one_pass_calls
    for grad in (False, True):
        with torch.set_grad_enabled(grad), SynOpsMeter(model) as meter:
            model(x)
        counts.append(meter.synops.clone())
    assert counts[0].sum() > 0 and torch.equal(counts[0], counts[1])
    assert taken == [True, True]  # both stages in one pass while counted (no_grad)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_a_whole_network_evaluates_to_the_same_spikes_and_rates(
    net: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MLP (flatten + Linear stages) and a CNN (its pooled, flattened Linear
    stages) under no_grad — every Linear stage in one pass — against the same network
    with gradients on (two layers each): identical output spikes and layer rates."""
    passes: list[bool] = []
    real = native.event_linear_lif

    def spy(*args):
        out = real(*args)
        passes.append(out is not None)
        return out

    monkeypatch.setattr(native, "event_linear_lif", spy)
    torch.manual_seed(0)
    p = LIFParams(0.2, 0.5, "linear", backend="native")
    if net == "mlp":
        model = mlp.build(mlp.MLPConfig(hidden=[64, 48]), (1, 8, 8), 10, p)
    else:
        spec = "4C3-P2-32"
        model = cnn.build(cnn.CNNConfig(spec=spec), (1, 8, 8), 10, p)
    x = spikes(6, 5, 64, seed=1, persistent=True).view(6, 5, 1, 8, 8)
    with torch.no_grad():
        fast = model(x)
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(passes) == linears and passes[-1]  # every Linear stage tried it; the
    assert all(passes) or net == "cnn"  # CNN's pooled input may be too dense (None)
    slow = model(x)
    assert torch.equal(fast.spikes, slow.spikes.detach())
    assert torch.equal(fast.layer_rates, slow.layer_rates)
