"""Iterative leaky integrate-and-fire neuron of STBP (Wu et al. 2018), spec §2 and §4.

For one layer n, steps t = 1..T, with u[0] = o[0] = 0::

    x[t] = W · A(o[t, n-1]) + b          synaptic input of this step (same t: no delay)
    u[t] = f(o[t-1]) · u[t-1] + x[t]      leak and reset act on the previous potential
    o[t] = g(u[t])                        g(u) = 1[u >= V_th] ("ge"), 1[u > V_th] ("gt")

Leak/reset f, τ = ``stbp.decay`` (a unitless per-step factor in [0, 1)):

    exp     f(o) = τ · exp(−o/τ)          f(0) = τ, f(1) = τ·e^(−1/τ) ≈ 0   (paper)
    linear  f(o) = τ · (1 − o)            f(0) = τ, f(1) = 0               (the code)

STBP's gradient is plain BPTT through these lines with g' replaced by a surrogate h
(``surrogate.py``). f(o[t-1]) is computed from the spike tensor *without* detaching it,
so autograd yields both temporal paths of spec section 4: TD-leak (dU[t+1]·f(o[t])) and
TD-reset (dU[t+1]·u[t]·f'(o[t])). Switches:

    detach_reset = true    f(o[t-1].detach()): drops TD-reset only
    td_grad = false        u[t] = detach(f(o[t-1])·u[t-1]) + x[t]: drops both temporal
                           paths (spatial-only ablation); the forward is unchanged
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

import torch
from torch import Tensor

from snnrun.snn.surrogate import SURROGATES, Surrogate, choice_name, spike

__all__ = [
    "Backend",
    "LIFParams",
    "LIFState",
    "ResetForm",
    "SpikeCmp",
    "Surrogate",
    "choice_name",
    "leak_reset",
    "leak_reset_slope",
    "lif_sequence",
    "lif_sequence_record",
    "lif_step",
]


class ResetForm(str, Enum):
    """``stbp.reset_form``: the leak/reset function f."""

    EXP = "exp"
    LINEAR = "linear"


class SpikeCmp(str, Enum):
    """``stbp.spike_cmp``: the threshold comparison of g."""

    GE = "ge"
    GT = "gt"


class Backend(str, Enum):
    """``stbp.backend``: how the recurrence runs (same math, same spikes).

    ``reference``: autograd records every step (``lif_sequence``); ``fused``: one
    autograd node per layer with the hand-written section-4 backward (``fused.py``);
    ``native``: the same as a compiled C++ loop on the CPU (``native.py``);
    ``triton``: the same as Triton kernels on CUDA (``triton_lif.py``);
    ``auto``: the fastest measured one where it runs — ``native`` on the CPU where
    the C++ kernel builds, else ``reference`` (``backends.resolve``).
    """

    AUTO = "auto"
    REFERENCE = "reference"
    FUSED = "fused"
    NATIVE = "native"
    TRITON = "triton"


class LIFParams(NamedTuple):
    """Neuron hyper-parameters (the ``stbp`` config group).

    Attributes:
        decay: τ, leak factor per time step, unitless, in [0, 1) (> 0 for ``exp``).
        threshold: V_th, in units of u, > 0.
        reset_form: "exp" | "linear" (:class:`ResetForm`).
        spike_cmp: "ge" | "gt" (:class:`SpikeCmp`).
        surrogate: "h1" … "h4" (:class:`Surrogate`).
        surrogate_a: surrogate width a, > 0.
        detach_reset: drop the TD-reset gradient path.
        td_grad: keep the temporal gradient paths (false = spatial-only ablation).
        backend: "auto" | "reference" | "fused" | "native" | "triton"
            (:class:`Backend`);
            changes speed and memory, not the result.
    """

    decay: float = 0.2
    threshold: float = 0.5
    reset_form: str = "exp"
    spike_cmp: str = "ge"
    surrogate: str = "h1"
    surrogate_a: float = 1.0
    detach_reset: bool = False
    td_grad: bool = True
    backend: str = "auto"

    def validate(self) -> LIFParams:
        """Check every field; return a copy with plain strings and floats.

        Raises: ValueError naming the key as users type it (``stbp.decay``) and a fix.
        """
        p = self._replace(
            reset_form=choice_name(self.reset_form),
            spike_cmp=choice_name(self.spike_cmp),
            surrogate=choice_name(self.surrogate),
            backend=choice_name(self.backend),
        )
        _check_choice("stbp.reset_form", p.reset_form, [m.value for m in ResetForm])
        _check_choice("stbp.spike_cmp", p.spike_cmp, [m.value for m in SpikeCmp])
        _check_choice("stbp.surrogate", p.surrogate, list(SURROGATES))
        _check_choice("stbp.backend", p.backend, [m.value for m in Backend])
        for key, value in (
            ("stbp.detach_reset", p.detach_reset),
            ("stbp.td_grad", p.td_grad),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{key}={value!r} must be true or false")
        decay = _as_float("stbp.decay", p.decay)
        threshold = _as_float("stbp.threshold", p.threshold)
        surrogate_a = _as_float("stbp.surrogate_a", p.surrogate_a)
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                f"stbp.decay={p.decay} is outside [0, 1): decay is a per-step factor; "
                "try 0.2"
            )
        if p.reset_form == ResetForm.EXP.value and decay == 0.0:
            raise ValueError(
                "stbp.decay=0 with stbp.reset_form=exp: f(o) = decay·exp(-o/decay) "
                "needs decay > 0; try stbp.decay=0.2, or stbp.reset_form=linear"
            )
        if not (threshold > 0.0 and math.isfinite(threshold)):
            raise ValueError(
                f"stbp.threshold={p.threshold} must be a finite number > 0: "
                "it is the firing threshold V_th; try 0.5"
            )
        if not (surrogate_a > 0.0 and math.isfinite(surrogate_a)):
            raise ValueError(
                f"stbp.surrogate_a={p.surrogate_a} must be a finite number > 0: "
                "it is the surrogate width; try 1.0"
            )
        return p._replace(decay=decay, threshold=threshold, surrogate_a=surrogate_a)


def _check_choice(key: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        raise ValueError(f"{key}={value} is unknown; choose one of {', '.join(valid)}")


def _as_float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}={value!r} must be a number")
    return float(value)


class LIFState(NamedTuple):
    """State of one LIF layer after a step: potential u and spikes o, each [B, ...]."""

    u: Tensor
    o: Tensor


def leak_reset(o_prev: Tensor, p: LIFParams) -> Tensor:
    """f(o[t-1]): τ·exp(−o/τ) (``exp``) or τ·(1 − o) (``linear``); not detached.

    The one definition of f: the reference step and the fused backend both call it,
    so their potentials agree bit for bit."""
    if choice_name(p.reset_form) == ResetForm.EXP.value:
        return torch.exp(o_prev * (-1.0 / p.decay)) * p.decay
    return (1.0 - o_prev) * p.decay


def leak_reset_slope(o: Tensor, p: LIFParams) -> Tensor:
    """f'(o) = ∂f/∂o: −exp(−o/τ) (``exp``) or −τ (``linear``), same shape as o."""
    if choice_name(p.reset_form) == ResetForm.EXP.value:
        return torch.exp(o * (-1.0 / p.decay)).neg_()
    return torch.full_like(o, -p.decay)


def lif_step(x: Tensor, state: LIFState, p: LIFParams) -> tuple[Tensor, LIFState]:
    """Advance one layer of LIF neurons by one time step (charge, fire; reset via f).

    Args:
        x: synaptic input W·A(o[t, n-1]) + b for this step, [B, ...].
        state: potential u[t-1] and spikes o[t-1], each [B, ...].
        p: neuron parameters (see :class:`LIFParams`).
    Returns: spikes o[t] in {0., 1.}, [B, ...], and the state (u[t], o[t]).
    """
    u_prev, o_prev = state
    if not p.td_grad:  # detach(f(o)·u): same values, no graph built for them
        u_prev, o_prev = u_prev.detach(), o_prev.detach()
    elif p.detach_reset:
        o_prev = o_prev.detach()
    u = leak_reset(o_prev, p) * u_prev + x
    o = spike(u, p.threshold, p.surrogate, p.surrogate_a, p.spike_cmp)
    return o, LIFState(u, o)


def lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """Run one LIF layer over all time steps.

    Args:
        x_seq: synaptic input for every step, [T, B, ...]; any B, dtype, device.
        p: neuron parameters.
    Returns: spikes, [T, B, ...], same dtype as x_seq.
    """
    return _run(x_seq, p, None)


def lif_sequence_record(x_seq: Tensor, p: LIFParams) -> tuple[Tensor, Tensor]:
    """:func:`lif_sequence` that also returns the membrane potentials (diagnostics).

    Args:
        x_seq: synaptic input for every step, [T, B, ...].
        p: neuron parameters.
    Returns: spikes o and potentials u (after charging, before the reset that f
        applies on the next step; units of V_th), each [T, B, ...].
    """
    potentials: list[Tensor] = []
    spikes = _run(x_seq, p, potentials)
    return spikes, torch.stack(potentials)


def _run(x_seq: Tensor, p: LIFParams, potentials: list[Tensor] | None) -> Tensor:
    """Step the layer; append u[t] to ``potentials`` when it is a list."""
    # unbind + stack, not x_seq[t]: indexing makes autograd build one zero-filled
    # full-size gradient buffer per step (O(T²) memory traffic in backward).
    steps = x_seq.unbind(0)
    if not steps:
        raise ValueError(f"x_seq has shape {list(x_seq.shape)}: no time steps (T = 0)")
    # Step 1 starts from u = o = 0, so u[1] = f(0)·0 + x[1] = x[1] exactly and no
    # gradient reaches the zero state: skip the leak arithmetic of that step.
    u = steps[0]
    o = spike(u, p.threshold, p.surrogate, p.surrogate_a, p.spike_cmp)
    state = LIFState(u, o)
    spikes = [o]
    if potentials is not None:
        potentials.append(u)
    for x in steps[1:]:
        o, state = lif_step(x, state, p)
        spikes.append(o)
        if potentials is not None:
            potentials.append(state.u)
    return torch.stack(spikes)
