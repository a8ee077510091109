"""SynOps and ANN MACs counted by hand on tiny layers; the potential record path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnrun.models import cnn, mlp
from snnrun.models.synops import (
    AC_PJ,
    MAC_PJ,
    SynOpsMeter,
    fan_out,
    nonzeros,
    synops_metrics,
)
from snnrun.snn import LIFParams, lif_sequence, lif_sequence_record


def test_linear_fan_out_is_out_features() -> None:
    assert torch.equal(fan_out(nn.Linear(5, 3), (5,)), torch.full((5,), 3.0).double())


def test_conv_fan_out_counts_border_taps() -> None:
    # 3×3 kernel, padding 1 on a 3×3 map, 2 output channels: the centre pixel is read
    # by all 9 output positions, a corner by 4, an edge by 6; times 2 channels.
    fan = fan_out(nn.Conv2d(1, 2, 3, padding=1), (1, 3, 3))
    assert fan[0].tolist() == [[8, 12, 8], [12, 18, 12], [8, 12, 8]]


def test_meter_counts_spikes_times_fan_out() -> None:
    lif = LIFParams(threshold=0.5)
    net = mlp.build(mlp.MLPConfig(hidden=[3]), (4,), 2, lif)
    x = torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]])  # [T=2, B=1, 4]
    with SynOpsMeter(net) as meter, torch.no_grad():
        record = net.record(x)
    hidden_spikes = float(record.spikes[0].sum())
    # 3 input spikes × 3 hidden units; each hidden spike × 2 outputs
    assert meter.synops.tolist() == [9.0, 2.0 * hidden_spikes]
    assert meter.macs.tolist() == [4 * 3, 3 * 2]
    net(x)  # detached: no more counting
    assert meter.synops.tolist() == [9.0, 2.0 * hidden_spikes]


def test_cnn_macs_match_the_layer_arithmetic() -> None:
    net = cnn.build(cnn.CNNConfig(spec="4C3-P2-6"), (1, 6, 6), 2, LIFParams())
    with SynOpsMeter(net) as meter:
        net(torch.zeros(1, 1, 1, 6, 6))
    conv_macs = float(fan_out(nn.Conv2d(1, 4, 3, padding=1), (1, 6, 6)).sum())
    assert conv_macs < 4 * 9 * 36  # padding taps are no MACs
    assert meter.macs.tolist() == [conv_macs, 4 * 3 * 3 * 6, 6 * 2]
    assert meter.synops.tolist() == [0.0, 0.0, 0.0]  # no spike, no operation


def test_metrics_use_the_stated_energy_constants() -> None:
    metrics = synops_metrics([1000.0, 500.0], [2000.0, 1000.0])
    assert metrics["synops/total"] == 1500.0
    assert metrics["energy/snn_nj"] == pytest.approx(1500 * AC_PJ / 1000)
    assert metrics["energy/ann_nj"] == pytest.approx(3000 * MAC_PJ / 1000)
    assert (AC_PJ, MAC_PJ) == (0.9, 4.6)


@pytest.mark.parametrize("reset_form", ["exp", "linear"])
def test_record_path_gives_the_same_spikes_and_the_potentials(reset_form: str) -> None:
    p = LIFParams(decay=0.3, threshold=0.5, reset_form=reset_form)
    x = torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(0))
    spikes, u = lif_sequence_record(x, p)
    assert torch.equal(spikes, lif_sequence(x, p))
    assert torch.equal(u[0], x[0])
    assert torch.equal(spikes, (u >= 0.5).float())  # o[t] = 1[u[t] >= V_th]


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64]
)
def test_nonzeros_counts_what_differs_from_zero(dtype: torch.dtype) -> None:
    """−0.0 is zero, NaN, ±inf and subnormals are not; any dtype, any strides."""
    values = [0.0, -0.0, 1.0, -2.5, 0.0, 3.0]
    if dtype.is_floating_point:
        tiny = torch.finfo(dtype).smallest_normal / 4  # a subnormal
        values += [float("nan"), float("-inf"), tiny, -0.0]
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    want = int((x != 0).sum())
    assert int(nonzeros(x)) == want == len(values) - values.count(0.0)
    grid = torch.stack([x, torch.zeros_like(x), x])  # a strided column view too
    assert int(nonzeros(grid)) == 2 * want
    assert int(nonzeros(grid.t())) == 2 * want
    assert int(nonzeros(grid[:, ::2])) == int((grid[:, ::2] != 0).sum())
