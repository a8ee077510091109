"""Exact training FLOPs of the benchmark networks and the machine's fp32 GEMM rate.

Per time step and sample, a weight layer with K inputs per output and N outputs
over P positions (1 for Linear, H_out·W_out for a conv) costs 2·K·N·P FLOPs in the
forward pass, the same again for the weight gradient, and the same again for the
input gradient, which the first layer does not need (its input is data). Everything
else (LIF, pooling, encoding, optimiser) is counted as zero: the roofline is the
time the matrix products alone would take at the measured GEMM rate.
"""

from __future__ import annotations

import time

import torch

LAYERS = {  # (K, N, P) per weight layer
    "mlp": [(784, 800, 1), (800, 10, 1)],
    "cnn": [(25, 32, 784), (800, 64, 196), (3136, 1024, 1), (1024, 10, 1)],
}


def train_flops(net: str, steps: int) -> float:
    """FLOPs of one training sample over ``steps`` time steps (matrix products only)."""
    total = 0.0
    for index, (k, n, positions) in enumerate(LAYERS[net]):
        passes = 2 if index == 0 else 3
        total += passes * 2.0 * k * n * positions
    return total * steps


def eval_flops(net: str, steps: int) -> float:
    """FLOPs of one evaluated sample (the forward products only)."""
    return steps * sum(2.0 * k * n * p for k, n, p in LAYERS[net])


def gemm_rate(
    rows: int = 1000,
    inner: int = 784,
    cols: int = 800,
    device: torch.device | str = "cpu",
) -> float:
    """Measured fp32 matmul rate in FLOP/s at a typical MLP shape (best of 5), on
    ``device`` (CUDA: queued products are waited for before the clock is read)."""
    device = torch.device(device)
    a = torch.randn(rows, inner, device=device)
    b = torch.randn(inner, cols, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops = 2.0 * rows * inner * cols
    best = 0.0
    for _ in range(5):
        sync()
        start = time.perf_counter()
        repeats = 0
        while time.perf_counter() - start < 0.2:
            torch.mm(a, b)
            repeats += 1
        sync()
        best = max(best, flops * repeats / (time.perf_counter() - start))
    return best
