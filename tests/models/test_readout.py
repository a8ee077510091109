"""Rate readout, loss forms and prediction (spec sections 3 and 11.7)."""

from __future__ import annotations

import pytest
import torch

from snnrun.models.readout import count_ties, firing_rate, predict, stbp_loss


def test_firing_rate_is_mean_over_steps() -> None:
    spikes = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    assert firing_rate(spikes).tolist() == [[0.75, 0.5]]


def test_paper_loss_by_hand() -> None:
    rate = torch.tensor([[0.5, 0.25, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    # ‖y − r‖²: (0.25 + 0.0625 + 0) + (0 + 1 + 0) = 1.3125; paper: /(2S) = /4
    loss = stbp_loss(rate, labels, "paper")
    assert loss.dtype == torch.float64
    assert loss.item() == 1.3125 / 4
    assert stbp_loss(rate, labels, "mean").item() == pytest.approx(
        1.3125 / 6, rel=1e-15
    )


def test_mean_form_is_two_over_c_times_paper_form() -> None:
    gen = torch.Generator().manual_seed(0)
    classes = 10
    rate = torch.rand(8, classes, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, classes, (8,), generator=gen)
    grads, losses = {}, {}
    for form in ("paper", "mean"):
        r = rate.clone().requires_grad_()
        losses[form] = stbp_loss(r, labels, form)
        losses[form].backward()
        grads[form] = r.grad
    ratio = 2 / classes
    assert losses["mean"].item() == pytest.approx(
        ratio * losses["paper"].item(), rel=1e-14
    )
    torch.testing.assert_close(
        grads["mean"], ratio * grads["paper"], rtol=1e-14, atol=0
    )
    mse = torch.nn.functional.mse_loss(
        rate, torch.nn.functional.one_hot(labels, classes).double()
    )
    assert losses["mean"].item() == pytest.approx(mse.item(), rel=1e-14)
    target = torch.nn.functional.one_hot(labels, classes).double()
    torch.testing.assert_close(grads["paper"], -(target - rate) / 8)  # ∂L/∂r, section 4


def test_loss_errors() -> None:
    rate = torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"stbp\.loss_form=sum is unknown; choose one of paper, mean"
    ):
        stbp_loss(rate, torch.tensor([0, 1]), "sum")
    with pytest.raises(ValueError, match=r"labels have shape \[3\]; expected \[2\]"):
        stbp_loss(rate, torch.tensor([0, 1, 2]), "paper")


def test_argmax_tie_goes_to_lowest_index() -> None:
    rate = torch.tensor(
        [
            [0.2, 0.5, 0.5, 0.1],
            [0.0, 0.0, 0.0, 0.0],
            [0.3, 0.1, 0.6, 0.6],
            [0.9, 0.1, 0.2, 0.3],
        ]
    )
    assert predict(rate).tolist() == [1, 0, 2, 0]
    assert predict(rate).dtype == torch.int64
    assert count_ties(rate) == 3
    assert count_ties(rate[3:]) == 0
