"""LIF neuron: golden trajectories (spec 11.1), sequence loop, parameter checks."""

from __future__ import annotations

import pytest
import torch

from snnrun.snn.lif import (
    LIFParams,
    LIFState,
    ResetForm,
    SpikeCmp,
    lif_sequence,
    lif_step,
)
from snnrun.snn.surrogate import Surrogate

GOLDEN_INPUT = [0.5, 0.75, 0.5, 1.0, 0.25]  # V_th = 1, τ = 0.5, b = 0; step 2 ties
GOLDEN = {  # (reset_form, spike_cmp): (u trajectory, o trajectory), spec section 11.1
    ("linear", "ge"): ([0.5, 1.0, 0.5, 1.25, 0.25], [0, 1, 0, 1, 0]),
    ("linear", "gt"): ([0.5, 1.0, 1.0, 1.5, 0.25], [0, 0, 0, 1, 0]),
    ("exp", "ge"): ([0.5, 1.0, 0.5676676, 1.2838338, 0.3368740], [0, 1, 0, 1, 0]),
    ("exp", "gt"): ([0.5, 1.0, 1.0, 1.5, 0.3515015], [0, 0, 0, 1, 0]),
}


def golden_params(reset_form: str, spike_cmp: str, **switches) -> LIFParams:
    return LIFParams(
        decay=0.5, threshold=1.0, reset_form=reset_form, spike_cmp=spike_cmp, **switches
    )


def run_steps(x_seq: torch.Tensor, p: LIFParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step loop from a zero state; returns (u, o), each [T, ...]."""
    state = LIFState(torch.zeros_like(x_seq[0]), torch.zeros_like(x_seq[0]))
    us, os_ = [], []
    for x in x_seq.unbind(0):
        o, state = lif_step(x, state, p)
        us.append(state.u)
        os_.append(o)
    return torch.stack(us), torch.stack(os_)


@pytest.mark.parametrize(("reset_form", "spike_cmp"), list(GOLDEN))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_golden_trajectory(reset_form: str, spike_cmp: str, dtype: torch.dtype) -> None:
    u_expected, o_expected = GOLDEN[(reset_form, spike_cmp)]
    x = torch.tensor(GOLDEN_INPUT, dtype=dtype).view(5, 1)
    p = golden_params(reset_form, spike_cmp)
    u, o = run_steps(x, p)
    tol = 1e-7 if dtype == torch.float64 else 1e-6
    assert u.flatten().tolist() == pytest.approx(u_expected, abs=tol)
    assert o.flatten().tolist() == o_expected
    assert o.dtype == dtype
    assert lif_sequence(x, p).flatten().tolist() == o_expected


@pytest.mark.parametrize(("reset_form", "spike_cmp"), list(GOLDEN))
def test_golden_trajectory_unchanged_by_gradient_switches(
    reset_form: str, spike_cmp: str
) -> None:
    x = torch.tensor(GOLDEN_INPUT, dtype=torch.float64).view(5, 1)
    u_ref, _ = run_steps(x, golden_params(reset_form, spike_cmp))
    for td_grad in (True, False):
        for detach_reset in (True, False):
            p = golden_params(
                reset_form, spike_cmp, td_grad=td_grad, detach_reset=detach_reset
            )
            u, _ = run_steps(x, p)
            assert torch.equal(u, u_ref)


def test_linear_reset_is_exact() -> None:
    """linear: f(1) = 0 exactly, so the step after a spike starts from the input."""
    x = torch.tensor(GOLDEN_INPUT, dtype=torch.float64).view(5, 1)
    u, _ = run_steps(x, golden_params("linear", "ge"))
    assert u.flatten().tolist() == [0.5, 1.0, 0.5, 1.25, 0.25]


def test_sequence_matches_step_loop_on_many_neurons() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, 3, 5, dtype=torch.float64, generator=gen)
    for reset_form in ResetForm:
        p = LIFParams(decay=0.3, threshold=0.4, reset_form=reset_form)
        _, o_ref = run_steps(x, p)
        o = lif_sequence(x, p)
        assert o.shape == x.shape
        assert torch.equal(o, o_ref)
        assert 0 < o.mean() < 1


def test_sequence_has_no_state_between_calls() -> None:
    """A second call with another batch size just works and starts from zero."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 5, 8, generator=gen)
    p = LIFParams()
    first = lif_sequence(x, p)
    short = lif_sequence(x[:, :3], p)
    assert torch.equal(short, first[:, :3])
    assert torch.equal(lif_sequence(x, p), first)


def test_enum_members_behave_like_strings() -> None:
    x = torch.tensor(GOLDEN_INPUT, dtype=torch.float64).view(5, 1)
    p = LIFParams(
        decay=0.5,
        threshold=1.0,
        reset_form=ResetForm.EXP,
        spike_cmp=SpikeCmp.GT,
        surrogate=Surrogate.H3,
    )
    u, o = run_steps(x, p)
    assert o.flatten().tolist() == GOLDEN[("exp", "gt")][1]
    assert u.flatten().tolist() == pytest.approx(GOLDEN[("exp", "gt")][0], abs=1e-7)
    checked = p.validate()
    assert (checked.reset_form, checked.spike_cmp, checked.surrogate) == (
        "exp",
        "gt",
        "h3",
    )
    assert type(checked.reset_form) is str


def test_validate_returns_defaults_unchanged() -> None:
    assert LIFParams().validate() == LIFParams()
    assert LIFParams(decay=0.0, reset_form="linear").validate().decay == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"decay": 1.2},
            r"stbp\.decay=1\.2 is outside \[0, 1\): decay is a per-step factor; "
            r"try 0\.2",
        ),
        ({"decay": -0.1}, r"stbp\.decay=-0\.1 is outside \[0, 1\)"),
        ({"decay": 1.0}, r"stbp\.decay=1\.0 is outside \[0, 1\)"),
        ({"decay": float("nan")}, r"stbp\.decay=nan is outside"),
        ({"decay": "0.2"}, r"stbp\.decay='0\.2' must be a number"),
        (
            {"decay": 0.0},
            r"stbp\.decay=0 with stbp\.reset_form=exp.*stbp\.reset_form=linear",
        ),
        (
            {"threshold": 0.0},
            r"stbp\.threshold=0\.0 must be a finite number > 0.*try 0\.5",
        ),
        ({"threshold": -1.0}, r"stbp\.threshold=-1\.0 must be"),
        ({"threshold": float("inf")}, r"stbp\.threshold=inf must be"),
        (
            {"surrogate_a": 0.0},
            r"stbp\.surrogate_a=0\.0 must be a finite number > 0.*try 1\.0",
        ),
        (
            {"surrogate": "h5"},
            r"stbp\.surrogate=h5 is unknown; choose one of h1, h2, h3, h4",
        ),
        (
            {"reset_form": "step"},
            r"stbp\.reset_form=step is unknown; choose one of exp, linear",
        ),
        ({"spike_cmp": "le"}, r"stbp\.spike_cmp=le is unknown; choose one of ge, gt"),
        ({"td_grad": "yes"}, r"stbp\.td_grad='yes' must be true or false"),
        ({"detach_reset": 1}, r"stbp\.detach_reset=1 must be true or false"),
    ],
)
def test_validate_names_key_and_fix(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LIFParams(**fields).validate()
