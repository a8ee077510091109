"""Binary activations kept for backward as one byte instead of four.

Spikes are 0/1. A Linear or Conv2d after a spiking layer saves its input for the
weight gradient; inside :class:`compact_spikes` every tensor that was marked binary
(:func:`mark_binary`: the LIF outputs, the rate encoder's spikes) is packed as uint8
when autograd saves it and unpacked to its dtype when backward needs it: exact, and
3/4 of that memory is gone. Outside the context, marking costs one list check.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

_STATE = threading.local()


def _active() -> dict[int, Tensor] | None:
    """Storage address → the marked tensor, held so that no other tensor can reuse
    the address while the context is open."""
    return getattr(_STATE, "binary", None)


def mark_binary(tensor: Tensor) -> Tensor:
    """Declare ``tensor`` 0/1-valued (its storage), if a :class:`compact_spikes`
    context is open; returns ``tensor`` unchanged. Inside a torch.compile graph it
    does nothing: the compiled graph decides what it saves, not these hooks."""
    if torch.compiler.is_compiling():
        return tensor
    registry = _active()
    if registry is not None and tensor.is_floating_point():
        registry[tensor.untyped_storage().data_ptr()] = tensor
    return tensor


class Packed:
    """A saved binary tensor as uint8 plus the dtype to restore."""

    __slots__ = ("data", "dtype")

    def __init__(self, data: Tensor, dtype: torch.dtype) -> None:
        self.data, self.dtype = data, dtype

    def nbytes(self) -> int:
        return self.data.untyped_storage().nbytes()


class compact_spikes:
    """``with compact_spikes(): out = net(x)``: marked binary tensors are saved for
    backward as uint8. Nest-safe; the backward may run after the context closed."""

    def __enter__(self) -> compact_spikes:
        self._outer = _active()
        _STATE.binary = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(
            pack_binary, unpack_binary
        )
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        _STATE.binary = self._outer


def pack_binary(tensor: Tensor) -> Tensor | Packed:
    """The saved-tensor pack hook: a marked binary tensor → :class:`Packed`."""
    registry = _active()
    if (
        registry is not None
        and tensor.is_floating_point()
        and tensor.untyped_storage().data_ptr() in registry
    ):
        return Packed(tensor.to(torch.uint8), tensor.dtype)
    return tensor


def unpack_binary(saved: Tensor | Packed) -> Tensor:
    """The matching unpack hook: :class:`Packed` → a tensor of its dtype."""
    if isinstance(saved, Packed):
        return saved.data.to(saved.dtype)
    return saved
