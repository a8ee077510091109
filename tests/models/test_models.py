"""Networks: preset widths (spec 11.10), layerwise ≡ per-step, no delay, init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnrun.models import ARCHS, INITS, NetOutput, cnn, mlp
from snnrun.models.readout import firing_rate, stbp_loss
from snnrun.snn import FoldTime, LIFParams, LIFState, init_stbp_, lif_step

LIF = LIFParams(decay=0.3, threshold=0.5)


def shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(type(m).__name__, tuple(m.weight.shape)) for m in net.weight_layers()]


def binary_input(*shape: int, seed: int = 0, p: float = 0.5) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=gen) < p).double()


# ------------------------------------------------------------------ presets (11.10)


@pytest.mark.parametrize(
    ("in_shape", "hidden", "classes", "expected"),
    [
        ((1, 28, 28), [800], 10, [(800, 784), (10, 800)]),  # mnist_mlp
        ((2, 34, 34), [800], 10, [(800, 2312), (10, 800)]),  # nmnist_mlp
        ((784,), [400], 2, [(400, 784), (2, 400)]),  # detection_mlp
    ],
)
def test_mlp_presets(in_shape, hidden, classes, expected) -> None:
    net = mlp.build(mlp.MLPConfig(hidden=hidden), in_shape, classes, LIF)
    assert shapes(net) == [("Linear", s) for s in expected]
    assert all(m.bias is not None for m in net.weight_layers())
    out = net(binary_input(3, 2, *in_shape).float())
    assert out.spikes.shape == (3, 2, classes)


def test_mnist_cnn_preset() -> None:
    net = cnn.build(cnn.CNNConfig(spec="15C5-P2-40C5-P2-300"), (1, 28, 28), 10, LIF)
    assert shapes(net) == [
        ("Conv2d", (15, 1, 5, 5)),
        ("Conv2d", (40, 15, 5, 5)),
        ("Linear", (300, 1960)),
        ("Linear", (10, 300)),
    ]
    convs = [m for m in net.weight_layers() if isinstance(m, nn.Conv2d)]
    assert all(c.padding == (2, 2) and c.stride == (1, 1) for c in convs)
    pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d)]
    assert [p.kernel_size for p in pools] == [2, 2]


def test_mnist_cnn_code_preset() -> None:
    net = cnn.build(cnn.CNNConfig(spec="32C3-P2-32C3-P2-128"), (1, 28, 28), 10, LIF)
    assert shapes(net) == [
        ("Conv2d", (32, 1, 3, 3)),
        ("Conv2d", (32, 32, 3, 3)),
        ("Linear", (128, 1568)),
        ("Linear", (10, 128)),
    ]
    same = cnn.build(cnn.CNNConfig(spec="32C3-AP2-32C3-AP2-128"), (1, 28, 28), 10, LIF)
    assert shapes(same) == shapes(net)


def test_cnn_on_nmnist_frames() -> None:
    net = cnn.build(cnn.CNNConfig(), (2, 34, 34), 10, LIF)
    assert shapes(net)[2] == ("Linear", (300, 40 * 8 * 8))
    out = net(binary_input(2, 3, 2, 34, 34, p=0.3).float())
    assert out.spikes.shape == (2, 3, 10)
    assert out.layer_rates.shape == (4,)


def test_arch_registry() -> None:
    assert set(ARCHS) == {"mlp", "cnn"}
    for config_cls, build in ARCHS.values():
        net = build(config_cls(), (1, 28, 28), 10, LIF)
        assert net.weight_layers()[-1].out_features == 10
    assert INITS == ("stbp", "default")


# ------------------------------------------------------------------ init


def test_stbp_init_unit_rows_default_bias() -> None:
    for layer in (nn.Linear(30, 7), nn.Conv2d(3, 5, 3)):
        bias = layer.bias.detach().clone()
        init_stbp_(layer, generator=torch.Generator().manual_seed(0))
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(rows.shape[0]))
        # non-zero PyTorch bias kept: a zero bias can freeze a net behind a silent layer
        assert torch.equal(layer.bias, bias) and bool(bias.ne(0).all())
        assert rows.min() < -0.05 and rows.max() > 0.05  # signed, from U[-1, 1]


def test_arch_init_names() -> None:
    torch.manual_seed(0)
    stbp = mlp.build(mlp.MLPConfig(hidden=[20], init="stbp"), (12,), 3, LIF)
    default = mlp.build(mlp.MLPConfig(hidden=[20], init="default"), (12,), 3, LIF)
    for layer in stbp.weight_layers():
        torch.testing.assert_close(
            layer.weight.norm(dim=1), torch.ones(layer.out_features)
        )
    norms = default.weight_layers()[0].weight.norm(dim=1)
    assert (norms < 0.9).all()  # PyTorch's kaiming-uniform rows, bound 1/sqrt(12)
    assert default.weight_layers()[0].bias.abs().max() > 0
    conv = cnn.build(cnn.CNNConfig(spec="4C3-5", init="stbp"), (2, 6, 6), 3, LIF)
    conv_rows = conv.weight_layers()[0].weight.reshape(4, -1)
    torch.testing.assert_close(conv_rows.norm(dim=1), torch.ones(4))
    with pytest.raises(
        ValueError, match=r"arch\.init=xavier is unknown; choose one of stbp, default"
    ):
        mlp.build(mlp.MLPConfig(init="xavier"), (12,), 3, LIF)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", r"arch\.spec='' is empty"),
        ("15C5-P2-40X5", r"arch\.spec='15C5-P2-40X5': bad token '40X5'; use <out>C<k>"),
        ("15C5--300", r"bad token ''"),
        ("15C5-P64", r"arch\.spec='15C5-P64': P64 shrinks a 28×28 map to 0"),
        ("300-15C5", r"15C5: a conv after a fully connected layer"),
        ("300-P2", r"P2: a pool after a fully connected layer"),
        ("0C5", r"0C5: channels and kernel size must be >= 1"),
        ("P0", r"P0: pool size must be >= 1"),
        ("15C5-0", r"0: a layer needs >= 1 units"),
    ],
)
def test_bad_cnn_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cnn.build(cnn.CNNConfig(spec=spec), (1, 28, 28), 10, LIF)


def test_bad_shapes_and_widths() -> None:
    with pytest.raises(ValueError, match=r"arch\.hidden is empty"):
        mlp.build(mlp.MLPConfig(hidden=[]), (784,), 10, LIF)
    with pytest.raises(ValueError, match=r"arch\.hidden=\[800, 0\] holds 0"):
        mlp.build(mlp.MLPConfig(hidden=[800, 0]), (784,), 10, LIF)
    with pytest.raises(ValueError, match=r"arch=cnn needs image input"):
        cnn.build(cnn.CNNConfig(), (784,), 10, LIF)
    with pytest.raises(ValueError, match=r"stbp\.decay=1\.5 is outside"):
        mlp.build(mlp.MLPConfig(), (784,), 10, LIF._replace(decay=1.5))
    net = mlp.build(mlp.MLPConfig(hidden=[4]), (1, 28, 28), 10, LIF)
    with pytest.raises(ValueError, match=r"expects \[T, B, 1, 28, 28\]"):
        net(torch.zeros(3, 2, 784))


# ------------------------------------------------------------------ evaluation order


def test_fold_time_equals_per_step_loop() -> None:
    torch.manual_seed(0)
    x = binary_input(4, 3, 2, 9, 9)
    for module in (
        nn.Conv2d(2, 5, 3, padding=1),
        nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 6)),
    ):
        module = module.double()
        folded = FoldTime(module)(x)
        looped = torch.stack([module(x_t) for x_t in x.unbind(0)])
        assert folded.shape == looped.shape
        torch.testing.assert_close(folded, looped, rtol=1e-12, atol=1e-12)


def per_step_cnn(net: nn.Module, x: Tensor, p: LIFParams) -> Tensor:
    """The spec's order for 4C3-P2-6C3-P2-8-(3): time outer, layers inner, written with
    functional ops so the preset structure (pool placement, flatten order) is pinned."""
    conv1, conv2, fc1, fc2 = net.weight_layers()
    batch = x.shape[1]
    sizes = [(4, 8, 8), (6, 4, 4), (8,), (3,)]
    states = [LIFState(x.new_zeros(batch, *s), x.new_zeros(batch, *s)) for s in sizes]
    out = []
    for x_t in x.unbind(0):
        ops = [
            lambda h: F.conv2d(h, conv1.weight, conv1.bias, padding=1),
            lambda h: F.conv2d(F.avg_pool2d(h, 2), conv2.weight, conv2.bias, padding=1),
            lambda h: F.linear(
                F.avg_pool2d(h, 2).reshape(batch, -1), fc1.weight, fc1.bias
            ),
            lambda h: F.linear(h, fc2.weight, fc2.bias),
        ]
        h = x_t
        for n, op in enumerate(ops):
            h, states[n] = lif_step(op(h), states[n], p)
        out.append(h)
    return torch.stack(out)


def test_layerwise_cnn_equals_per_step_order() -> None:
    p = LIFParams(decay=0.4, threshold=0.3, reset_form="exp")
    torch.manual_seed(0)
    net = cnn.build(cnn.CNNConfig(spec="4C3-P2-6C3-P2-8", init="stbp"), (2, 8, 8), 3, p)
    net = net.double()
    x = binary_input(6, 5, 2, 8, 8)
    out = net(x)
    reference = per_step_cnn(net, x, p)
    assert torch.equal(out.spikes, reference)
    assert out.layer_rates.min() > 0
    assert out.layer_rates.max() < 1
    labels = torch.tensor([0, 1, 2, 0, 1])
    grads = []
    for spikes in (out.spikes, reference):
        net.zero_grad()
        stbp_loss(firing_rate(spikes), labels, "paper").backward()
        grads.append([m.weight.grad.clone() for m in net.weight_layers()])
    assert grads[0][0].abs().max() > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_mlp_flattens_channel_major() -> None:
    """Index p·H·W + y·W + x: an image equals its reshape(-1) fed to the same net."""
    torch.manual_seed(0)
    image_net = mlp.build(mlp.MLPConfig(hidden=[16]), (2, 3, 4), 3, LIF).double()
    flat_net = mlp.build(mlp.MLPConfig(hidden=[16]), (24,), 3, LIF).double()
    flat_net.load_state_dict(image_net.state_dict())
    x = binary_input(5, 4, 2, 3, 4)
    expected = flat_net(x.reshape(5, 4, 24)).spikes
    assert torch.equal(image_net(x).spikes, expected)
    # only input index p·H·W + y·W + x = 1·12 + 1·4 + 2 = 18 drives hidden neuron 0
    with torch.no_grad():
        first = image_net.weight_layers()[0]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 18] = 1.0
    pixel = torch.zeros(5, 4, 2, 3, 4, dtype=torch.float64)
    pixel[:, :, 1, 1, 2] = 1.0
    assert image_net(pixel).layer_rates[0].item() == 1 / 16
    transposed = torch.zeros_like(pixel)
    transposed[:, :, 1, 0, 2] = 1.0  # index 18 under a (p, x, y) order: 12 + 2·3 + 0
    assert image_net(transposed).layer_rates[0].item() == 0.0


def test_no_synaptic_delay() -> None:
    """T = 1: a strong input makes the output layer of a 2-layer net spike at step 1."""
    net = mlp.build(mlp.MLPConfig(hidden=[3], init="stbp"), (2,), 2, LIF)
    with torch.no_grad():
        for layer in net.weight_layers():
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    out = net(torch.ones(1, 4, 2))
    assert out.spikes.tolist() == [[[1.0, 1.0]] * 4]
    assert out.layer_rates.tolist() == [1.0, 1.0]


def test_last_batch_of_another_size() -> None:
    torch.manual_seed(0)
    net = cnn.build(cnn.CNNConfig(spec="3C3-P2-5"), (1, 6, 6), 4, LIF).double()
    x = binary_input(4, 7, 1, 6, 6)
    full = net(x)
    short = net(x[:, :3])
    assert torch.equal(short.spikes, full.spikes[:, :3])
    assert torch.equal(net(x).spikes, full.spikes)  # nothing carried between calls


def test_layer_rates_are_detached_means() -> None:
    torch.manual_seed(0)
    net = mlp.build(mlp.MLPConfig(hidden=[30, 20]), (10,), 4, LIF.validate())
    captured: list[Tensor] = []
    for stage in net.stages:
        stage.lif.register_forward_hook(lambda mod, inp, out: captured.append(out))
    out = net(binary_input(5, 6, 10).float())
    assert isinstance(out, NetOutput)
    assert not out.layer_rates.requires_grad and out.spikes.requires_grad
    expected = torch.stack([s.mean() for s in captured]).detach()
    assert torch.equal(out.layer_rates, expected)
    assert torch.equal(out.spikes, captured[-1])
    assert (out.layer_rates > 0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_backward_matches_cpu() -> None:
    p = LIFParams(decay=0.3, threshold=0.5, surrogate="h3")
    torch.manual_seed(0)
    cpu_net = cnn.build(cnn.CNNConfig(spec="4C3-P2-8"), (2, 8, 8), 3, p).double()
    gpu_net = cnn.build(cnn.CNNConfig(spec="4C3-P2-8"), (2, 8, 8), 3, p).double().cuda()
    gpu_net.load_state_dict(cpu_net.state_dict())
    x = binary_input(5, 6, 2, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    grads = []
    for net, device in ((cpu_net, "cpu"), (gpu_net, "cuda")):
        out = net(x.to(device))
        assert (
            out.spikes.device.type == device and out.layer_rates.device.type == device
        )
        stbp_loss(firing_rate(out.spikes), labels.to(device), "paper").backward()
        grads.append([m.weight.grad.cpu() for m in net.weight_layers()])
    assert grads[0][0].abs().max() > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
