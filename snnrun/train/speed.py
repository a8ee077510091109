"""Speed switches that change how fast a run computes, never what: the fused Adam
kernel and ``torch.compile`` (``trainer.compile``).

Both keep the model and optimiser objects the rest of snnrun sees: the network stays
the same ``nn.Module`` (``nn.Module.compile`` works in place, so ``state_dict`` keys,
checkpoints, resume and DDP's ``.module`` are untouched) and the optimiser stays
``torch.optim.Adam`` with the same update rule and state. Measured gains and the
commands behind them: ``benchmarks/bench_step.py`` and ``benchmarks/results/``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Iterable

import torch
from torch import nn

from snnrun.snn import native

log = logging.getLogger(__name__)

# Devices whose fused Adam kernel torch < 2.4 lacks the helper to list (CUDA only then).
_FALLBACK_FUSED_DEVICES = ("cuda",)


def fused_devices() -> set[str]:
    """Device types that have torch's fused optimiser kernels in this torch build."""
    try:  # private, but the list torch itself checks at the optimiser's first step
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return set(_FALLBACK_FUSED_DEVICES)
    return set(_get_fused_kernels_supported_devices())


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether ``Adam(params, fused=True)`` can step: every parameter a plain
    floating-point tensor on a device with the fused kernel.

    torch checks this only at the first ``step()`` (a RuntimeError mid-run), so it is
    checked here, at build time, to fall back to the for-loop kernel instead.
    """
    devices = fused_devices()
    params = list(params)
    return bool(params) and all(
        type(p) in (torch.Tensor, nn.Parameter)
        and p.is_floating_point()
        and p.device.type in devices
        for p in params
    )


def make_adam(
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> torch.optim.Adam:
    """``torch.optim.Adam``, with the fused kernel where the parameters allow it.

    Same update rule as the default for-loop kernel, equal up to float rounding
    (``tests/app/test_speed.py``), in one pass over each tensor instead of about ten:
    on the 2-core CPU it took 0.38 ms per MLP 784-800-10 step against 1.19 ms.
    """
    params = list(params)
    fused = fused_supported(params)
    if not fused:
        log.info("Adam: the fused kernel does not support these parameters; for-loop")
    return torch.optim.Adam(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        fused=fused or None,
    )


class CompileUnavailableError(RuntimeError):
    """``trainer.compile=true`` cannot work here; the message says what is missing."""


def check_compile_backend(device: torch.device) -> None:
    """Fail at build time, not at the first batch, when inductor lacks its tool chain:
    a C++ compiler for CPU kernels, Triton for CUDA ones."""
    if not hasattr(nn.Module, "compile"):
        raise CompileUnavailableError(
            f"trainer.compile=true needs torch >= 2.2 (nn.Module.compile); this is "
            f"torch {torch.__version__}: upgrade torch or set trainer.compile=false"
        )
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise CompileUnavailableError(
                "trainer.compile=true on CUDA needs Triton (pip install triton, or the "
                "CUDA torch wheel that ships it); or set trainer.compile=false"
            )
        return
    if device.type == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(shutil.which(c) for c in compilers if c):
            raise CompileUnavailableError(
                "trainer.compile=true on the CPU needs a C++ compiler (g++ or clang++ "
                "on PATH, or $CXX) for inductor's kernels; install one (e.g. apt-get "
                "install g++) or set trainer.compile=false"
            )
        return
    raise CompileUnavailableError(
        f"trainer.compile=true is supported on cpu and cuda, not on {device.type}; "
        "set trainer.compile=false"
    )


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Compile ``model``'s forward (and, through AOTAutograd, its backward) in place.

    * ``nn.Module.compile``, not ``torch.compile(model)``: the latter wraps the model
      in an ``OptimizedModule`` whose ``state_dict`` keys start with ``_orig_mod.``;
      in place, checkpoints, resume, ``snnrun eval`` and DDP see the plain network.
    * ``dynamic=False``: one graph per input shape. A run meets few shapes — the
      training batch, a short last batch, the evaluation batch and its last batch,
      each with and without grad — and the static graphs are the fast ones (a graph
      dynamic in the batch size ran the CNN markedly slower on the CPU).
    * On the CPU, inductor's layout optimisation is off: it stores convolution
      outputs channels-last, and every C++ operator around them (LIF loop, average
      pool: contiguous NCHW) then costs a copy each way. Measured on the benchmark
      CNN (32C5-P2-64C5-P2-1024, T=10, batch 100, same run): 687 ms per step with it,
      597 ms without, 601 ms eager.
    * The compile cache starts empty (``torch._dynamo.reset``): the jobs of a sweep
      share one process, and each new model's graphs would pile up under the same
      ``forward`` until dynamo's recompile limit silently fell back to eager.

    Compiling happens at the first call of each shape, not here: it is part of epoch
    1 (and shows in its ``time/epoch_s`` and ``perf/samples_per_s``).
    """
    check_compile_backend(device)
    if device.type == "cpu":  # build (or find) the C++ kernels now, outside any graph:
        native.available()  # traced, the build's file reads would break the graph
    torch._dynamo.reset()
    options = {"layout_optimization": False} if device.type == "cpu" else None
    model.compile(dynamic=False, options=options)
    log.info(
        "trainer.compile: %s's forward and backward compile at their first batch "
        "(seconds to a minute on a CPU; counted in epoch 1's time)",
        type(model).__name__,
    )
    return model
