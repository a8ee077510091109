"""``stbp.backend`` → the function that runs one LIF layer over all steps.

All three compute the same spikes bit for bit and the same gradients up to float
rounding (``tests/snn/test_fused.py``, ``tests/snn/test_native.py``):

- ``reference`` (``lif.py``): autograd records every step;
- ``fused`` (``fused.py``): one autograd node per layer, hand-written backward in
  torch operations; any device;
- ``native`` (``native.py``): the fused recurrence as a compiled C++ loop on the CPU
  (built on first use; elsewhere, or without a compiler, it runs ``fused``);
- ``triton`` (``triton_lif.py``): the same as Triton kernels on CUDA (imported on
  first use; without CUDA or Triton's interpreter it runs ``fused``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from snnrun.snn.fused import fused_lif_sequence
from snnrun.snn.lif import Backend, LIFParams, lif_sequence
from snnrun.snn.native import native_lif_sequence

LIFSequence = Callable[[Tensor, LIFParams], Tensor]


def triton_lif_sequence(x_seq: Tensor, p: LIFParams) -> Tensor:
    """The Triton backend, imported when first used (Triton is optional)."""
    from snnrun.snn.triton_lif import triton_lif_sequence as run

    return run(x_seq, p)


BACKENDS: dict[str, LIFSequence] = {
    Backend.REFERENCE.value: lif_sequence,
    Backend.FUSED.value: fused_lif_sequence,
    Backend.NATIVE.value: native_lif_sequence,
    Backend.TRITON.value: triton_lif_sequence,
}
