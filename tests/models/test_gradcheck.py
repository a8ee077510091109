"""``snnrun gradcheck``: the window probe finds a mis-centred surrogate, and the
gradient comparison sees dropped temporal paths."""

from __future__ import annotations

import pytest
import torch

import snnrun.snn.surrogate as surrogate
from snnrun.models import mlp
from snnrun.models.gradcheck import compare_gradients, probe_window
from snnrun.snn import LIF, SURROGATES, LIFParams


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("surrogate", ["h1", "h2", "h3", "h4"])
def test_window_sits_on_the_threshold(backend: str, surrogate: str) -> None:
    p = LIFParams(threshold=0.7, surrogate=surrogate, backend=backend)
    check = probe_window(LIF(p))
    assert check.ok, check
    assert check.fires_at == pytest.approx(0.7, abs=2 * check.spacing)


def off_centre(u, threshold, name, a):
    """The known bug: h evaluated at u, not at u − V_th (window centred on 0)."""
    return SURROGATES[name](u, a)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_a_surrogate_of_u_instead_of_u_minus_threshold_is_caught(
    monkeypatch, backend: str
) -> None:
    monkeypatch.setattr(surrogate, "slope_at", off_centre)
    check = probe_window(LIF(LIFParams(threshold=0.7, backend=backend)))
    assert not check.ok
    assert check.centre == pytest.approx(0.0, abs=1e-3)


def test_the_cli_reports_the_bug_with_exit_1(monkeypatch, capsys, shared_data) -> None:
    from snnrun.app import gradcheck

    # the simulated bug lives in the Python surrogate (surrogate.slope_at), which the
    # reference and fused backends call; the C++ kernel of auto/native has its own
    overrides = [
        "debug=fast",
        f"paths.data_root={shared_data}",
        "arch.hidden=[32]",
        "stbp.backend=reference",
    ]
    assert gradcheck.main(overrides) == 0
    assert "PASS: every surrogate window is centred" in capsys.readouterr().out
    monkeypatch.setattr(surrogate, "slope_at", off_centre)
    assert gradcheck.main(overrides) == 1
    out = capsys.readouterr().out
    assert "OFF THE THRESHOLD" in out and out.rstrip().endswith("firing threshold")


def test_gradient_rows_per_weight_layer_leave_the_network_unchanged() -> None:
    torch.manual_seed(0)
    x = (torch.rand(12, 16, 20) < 0.4).float()
    labels = torch.randint(0, 4, (16,))
    p = LIFParams(decay=0.5, threshold=0.4, surrogate="h3")
    net = mlp.build(mlp.MLPConfig(hidden=[24], init="default"), (20,), 4, p)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rows = compare_gradients(net, x, labels, "paper")
    assert [r.name for r in rows] == ["layer1", "layer2"]
    assert all(0 < r.cosine <= 1 and r.norm_ratio > 0 for r in rows)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(param.grad is None for param in net.parameters())
