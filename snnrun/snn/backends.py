"""``stbp.backend`` → the function that runs one LIF layer over all steps.

All three compute the same spikes bit for bit and the same gradients up to float
rounding (``tests/snn/test_fused.py``, ``tests/snn/test_native.py``):

- ``reference`` (``lif.py``): autograd records every step;
- ``fused`` (``fused.py``): one autograd node per layer, hand-written backward in
  torch operations; any device;
- ``native`` (``native.py``): the fused recurrence as a compiled C++ loop on the CPU
  (built on first use; elsewhere, or without a compiler, it runs ``fused``);
- ``triton`` (``triton_lif.py``): the same as Triton kernels on CUDA (imported on
  first use; without CUDA or Triton's interpreter it runs ``fused``);
- ``auto`` (the configuration's default): :func:`resolve` picks per call from the
  input's device — ``native`` on the CPU where the C++ kernel builds (measured the
  fastest there: ``docs/performance.md``), else ``reference``. On CUDA it stays
  ``reference`` until the Triton kernels have been measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from snnrun.snn import native
from snnrun.snn.fused import fused_lif_sequence
from snnrun.snn.lif import Backend, LIFParams, lif_sequence
from snnrun.snn.native import native_lif_sequence

LIFSequence = Callable[[Tensor, LIFParams], Tensor]


def triton_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """The Triton backend, imported when first used (Triton is optional)."""
    from snnrun.snn.triton_lif import triton_lif_sequence as run

    return run(x_seq, p)


def resolve(backend: str, device: torch.device | str) -> str:
    """The backend that ``backend`` runs as on ``device``: itself, except ``auto`` —
    ``native`` on the CPU when the C++ kernel is or can be built, else ``reference``.
    ``native`` is a registered operator (``snnrun::lif_forward``), so torch.compile
    keeps it as one call and compiles the layers around it. The first call on a CPU
    may compile the kernel (about a minute, once per machine; cached)."""
    if backend != Backend.AUTO.value:
        return backend
    if torch.device(device).type == "cpu" and native.available():
        return Backend.NATIVE.value
    return Backend.REFERENCE.value


def auto_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """``stbp.backend=auto``: the backend :func:`resolve` picks for x's device."""
    chosen = resolve(Backend.AUTO.value, x_seq.device)
    return BACKENDS[chosen](x_seq, p)


BACKENDS: dict[str, LIFSequence] = {
    Backend.AUTO.value: auto_lif_sequence,
    Backend.REFERENCE.value: lif_sequence,
    Backend.FUSED.value: fused_lif_sequence,
    Backend.NATIVE.value: native_lif_sequence,
    Backend.TRITON.value: triton_lif_sequence,
}
