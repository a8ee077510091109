"""``stbp.backend`` → the function that runs one LIF layer over all steps.

All three compute the same spikes bit for bit and the same gradients up to float
rounding (``tests/snn/test_fused.py``, ``tests/snn/test_native.py``):

- ``reference`` (``lif.py``): autograd records every step;
- ``fused`` (``fused.py``): one autograd node per layer, hand-written backward in
  torch operations; any device;
- ``native`` (``native.py``): the fused recurrence as a compiled C++ loop on the CPU
  (built on first use; elsewhere, or without a compiler, it runs ``fused``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from snnrun.snn.fused import fused_lif_sequence
from snnrun.snn.lif import Backend, LIFParams, lif_sequence
from snnrun.snn.native import native_lif_sequence

LIFSequence = Callable[[Tensor, LIFParams], Tensor]

BACKENDS: dict[str, LIFSequence] = {
    Backend.REFERENCE.value: lif_sequence,
    Backend.FUSED.value: fused_lif_sequence,
    Backend.NATIVE.value: native_lif_sequence,
}
