"""Will the run fit in memory? Estimated from one profiled forward before training.

Training memory is about ``fixed + BACKWARD_FACTOR · activations``: the parameters
with their gradients and two Adam moments (4 copies), and the tensors autograd keeps
for backward, which grow linearly with the batch size B and (nearly) with T; while
backward runs, the gradients of those activations need about half as much again
(``BACKWARD_FACTOR`` = 1.5, a stated rule of thumb). The activations are measured,
not guessed: one forward of a real batch under the training step's own packing
(``snnrun/snn/memory.py``), counting every saved storage once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from snnrun.snn.memory import (
    Packed,
    compact_spikes,
    mark_binary,
    pack_binary,
    unpack_binary,
)

BACKWARD_FACTOR = 1.5
PARAMETER_COPIES = 4  # weights, gradients, Adam's two moments
GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a training step needs, and what the device has free.

    Attributes:
        batch: the batch size the activations were measured at.
        activation_bytes: bytes autograd keeps for backward at ``batch``.
        fixed_bytes: parameters × ``PARAMETER_COPIES``.
        available_bytes: free memory on the device now (None: unknown).
    """

    batch: int
    activation_bytes: int
    fixed_bytes: int
    available_bytes: int | None

    def peak(self, batch: int | None = None) -> float:
        """Estimated peak bytes at ``batch`` (default: the measured one)."""
        scale = (batch or self.batch) / self.batch
        return self.fixed_bytes + BACKWARD_FACTOR * self.activation_bytes * scale

    def fits(self) -> bool:
        return self.available_bytes is None or self.peak() <= self.available_bytes

    def largest_batch(self) -> int:
        """The largest batch whose estimated peak fits (0: none does)."""
        if self.available_bytes is None:
            return self.batch
        room = self.available_bytes - self.fixed_bytes
        per_sample = BACKWARD_FACTOR * self.activation_bytes / self.batch
        return max(0, math.floor(room / per_sample)) if per_sample > 0 else self.batch


def saved_activation_bytes(
    forward: Callable[[Tensor], object],
    x: Tensor,
    parameters: Iterable[Tensor],
    packed: bool = True,
) -> int:
    """Bytes autograd keeps for backward in one forward of ``x``: unique storages,
    ``parameters`` excluded; ``packed``: as the training step packs spikes
    (``snnrun/snn/memory.py``), else as plain autograd keeps them."""
    params = {p.untyped_storage().data_ptr() for p in parameters}
    sizes: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor | Packed:
        saved = pack_binary(tensor) if packed else tensor
        address = tensor.untyped_storage().data_ptr()
        if address not in params:
            small = isinstance(saved, Packed)
            sizes[address] = (
                saved.nbytes() if small else tensor.untyped_storage().nbytes()
            )
        return saved

    context = compact_spikes() if packed else contextlib.nullcontext()
    with context, torch.autograd.graph.saved_tensors_hooks(pack, unpack_binary):
        forward(mark_binary(x))
    return sum(sizes.values())


def available_bytes(device: torch.device) -> int | None:
    """Free memory: CUDA's free bytes, or the kernel's MemAvailable on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if device.type == "cpu" and meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def plan(model: nn.Module, x: Tensor, device: torch.device) -> MemoryPlan:
    """Profile one forward of the encoded batch ``x`` ``[T, B, ...]`` on ``device``."""
    model.train()
    activations = saved_activation_bytes(model, x, model.parameters())
    fixed = PARAMETER_COPIES * sum(
        p.numel() * p.element_size() for p in model.parameters()
    )
    return MemoryPlan(int(x.shape[1]), activations, fixed, available_bytes(device))
