"""Every neuron backend on a CUDA device against the CPU reference (``-m gpu``).

Run where a GPU is: ``pytest -m gpu`` (``benchmarks/gpu.sh`` does). ``make test``
deselects them; on a machine without CUDA they are skipped.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from snnrun.snn import LIFParams, lif_sequence
from snnrun.snn.backends import BACKENDS

from .lif_cases import params, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GRID = list(
    itertools.product(("exp", "linear"), (True, False), (False, True), ("h1", "h3"))
)


def _on_cpu(fn, x: torch.Tensor, w: torch.Tensor, p: LIFParams):
    """:func:`lif_cases.run`, brought back to the CPU."""
    spikes, grad = run(fn, x, w, p)
    return spikes.cpu(), grad.cpu()


@pytest.mark.parametrize("backend", ["reference", "fused", "triton"])
def test_cuda_backend_matches_the_cpu_reference_in_float64(backend: str) -> None:
    """float64: identical spikes, gradients equal to 1e-9 (relative), every switch."""
    for reset_form, td_grad, detach_reset, surrogate in GRID:
        p = params(reset_form, td_grad, detach_reset, surrogate, backend=backend)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(12, 64, 300, generator=g, dtype=torch.float64) * 0.9
        w = torch.randn(12, 64, 300, generator=g, dtype=torch.float64)
        o_cpu, g_cpu = _on_cpu(lif_sequence, x, w, p._replace(backend="reference"))
        o_gpu, g_gpu = _on_cpu(BACKENDS[backend], x.cuda(), w.cuda(), p)
        where = (backend, reset_form, td_grad, detach_reset, surrogate)
        assert torch.equal(o_cpu, o_gpu), where
        error = float((g_cpu - g_gpu).abs().max() / g_cpu.abs().max())
        assert error < 1e-9, (where, error)


@pytest.mark.parametrize("backend", ["fused", "triton"])
def test_cuda_backend_agrees_with_cuda_reference_in_float32(backend: str) -> None:
    """float32 on the GPU at a paper-sized layer (T=30, B=100, 800 neurons): spikes
    may differ only where a fused multiply-add rounds a potential across the
    threshold (counted, at most 1 in 10^5), gradients agree to 1e-4."""
    p = LIFParams(decay=0.2, threshold=0.5, backend=backend).validate()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(30, 100, 800, generator=g, device="cuda") * 0.6
    w = torch.randn(30, 100, 800, generator=g, device="cuda")
    o_ref, g_ref = _on_cpu(lif_sequence, x, w, p._replace(backend="reference"))
    o, grad = _on_cpu(BACKENDS[backend], x, w, p)
    assert float((o_ref != o).float().mean()) <= 1e-5
    if torch.equal(o_ref, o):
        error = float((g_ref - grad).abs().max() / g_ref.abs().max())
        assert error < 1e-4, error
