"""Measure one implementation in this (fresh) process; print one JSON line.

``python -m snnrun.bench.worker '{"impl": "snnrun-fused", "net": "mlp", "T": 10}'``
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from snnrun.app.runtime import tune_allocator
from snnrun.bench import flops, nets
from snnrun.data import DataError
from snnrun.data.idx import read_idx
from snnrun.snn.memory import compact_spikes, mark_binary
from snnrun.snn.native import frozen_weights
from snnrun.train.memory_plan import saved_activation_bytes


def measure(spec: dict) -> dict:
    impl, net, steps = spec["impl"], spec["net"], int(spec["T"])
    # snnrun workers run as `snnrun train` does: allocator tuning, snnrun's Adam
    malloc_tuned = nets.tuned(impl) and tune_allocator()
    torch.set_num_threads(int(spec.get("threads", 2)))
    torch.manual_seed(0)
    batch, seconds = int(spec.get("batch", 100)), float(spec.get("seconds", 6.0))
    device = torch.device(spec.get("device", "cpu"))
    model, forward = nets.build(impl, net, device)
    optimizer = _optimizer(impl, model)
    intensities, labels, source = input_batch(spec.get("data"), batch)
    intensities, labels = intensities.to(device), labels.to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    encode = _encoder(impl, intensities, steps, generator)
    own = impl.startswith("snnrun")  # peers run as they are, without our packing

    def train_step() -> None:
        with compact_spikes() if own else contextlib.nullcontext():
            rates = forward(mark_binary(encode()))
        one_hot = torch.nn.functional.one_hot(labels, 10).float()
        loss = (rates - one_hot).square().sum() / (2 * batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step() -> None:
        forward(encode())

    sync = _synchronizer(device)
    warmup = int(spec.get("warmup", 3))
    train = _rate(train_step, batch, seconds, warmup, sync)
    with frozen_weights():  # as a pass of `Trainer.evaluate` runs
        evaluate = _rate(eval_step, batch, seconds / 2, 1, sync)
    activation = saved_activation_bytes(forward, encode(), model.parameters(), own)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = device.type == "cuda"
    return {
        **spec,
        "train_samples_per_s": train,
        "eval_samples_per_s": evaluate,
        "activation_mb": activation / 2**20,
        "peak_rss_mb": rss_mb,
        # the GPU's own peak (the caching allocator's high-water mark), in MiB
        "peak_device_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if cuda
        else None,
        "gemm_flops_per_s": flops.gemm_rate(device=device),
        "torch": torch.__version__,
        "malloc_tuned": malloc_tuned,
        "fused_adam": bool(optimizer.defaults.get("fused")),
        "input": source,
        "peer_kernel": _peer_kernel(impl, device),
    }


def _peer_kernel(impl: str, device: torch.device) -> str | None:
    """Which LIF implementation SpikingJelly picked on CUDA (at run time: its CUDA
    extension, Triton or torch, by what is installed), or None elsewhere."""
    if device.type != "cuda" or nets.base(impl) != "spikingjelly":
        return None
    try:  # private registry: report "unknown" rather than fail the measurement
        from spikingjelly._ops.lif import _selection

        picked = {s.name for s in _selection._selections.values() if s is not None}
    except (ImportError, AttributeError):
        return "unknown"
    return ",".join(sorted(picked)) or "unknown"


def input_batch(data: str | None, batch: int) -> tuple[Tensor, Tensor, str]:
    """The first ``batch`` MNIST training images ``[B, 1, 28, 28]`` (uint8) and
    labels, read from ``<data>/mnist`` — the input density (13% of the rate-coded
    pixels fire per step) is part of what is measured; without the files, uniform
    random intensities (50% fire), said in the result."""
    folder = Path(data or ".") / "mnist"
    try:
        images = read_idx(folder / "train-images-idx3-ubyte.gz")[:batch]
        labels = read_idx(folder / "train-labels-idx1-ubyte.gz")[:batch]
    except DataError:
        images = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8)
        labels = torch.randint(0, 10, (batch,), dtype=torch.uint8)
        return images.unsqueeze(1), labels.long(), "uniform random intensities"
    if images.shape[0] < batch:
        images = images.repeat(-(-batch // images.shape[0]), 1, 1)[:batch]
        labels = labels.repeat(-(-batch // labels.shape[0]))[:batch]
    return images.unsqueeze(1), labels.long(), f"MNIST train[:{batch}]"


def _encoder(impl: str, k: Tensor, steps: int, generator: torch.Generator):
    """Bernoulli rate coding of intensities k/255, drawn anew every step as in
    training: snnrun's own encoder (``data.encoding.bernoulli_spikes``) for snnrun,
    ``rand < p`` (what the peers' Poisson/rate encoders do) for the peers."""
    if impl.startswith("snnrun"):
        from snnrun.data.encoding import bernoulli_spikes

        return lambda: bernoulli_spikes(k, steps, generator)
    p = k.float() / 255

    def encode() -> Tensor:
        draw = torch.rand((steps, *k.shape), generator=generator, device=k.device)
        return (draw < p).float()

    return encode


def _optimizer(impl: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam, lr 1e-3: snnrun's own (``train.speed.make_adam``: the fused kernel where
    the parameters allow, as ``snnrun train`` builds it) for snnrun, torch's default
    for the peers, as their users get it."""
    if impl.startswith("snnrun"):
        from snnrun.train.speed import make_adam

        return make_adam(model.parameters(), 1e-3, (0.9, 0.999), 1e-8, 0.0)
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _synchronizer(device: torch.device):
    """Waits for the device's queued work (CUDA runs asynchronously); CPU: no-op."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _rate(step, batch: int, seconds: float, warmup: int, sync=lambda: None) -> float:
    """Samples/s of ``step`` over at least ``seconds`` and 3 steps, after warm-up."""
    for _ in range(warmup):
        step()
    sync()
    done, start = 0, time.perf_counter()
    while True:
        step()
        done += 1
        if done >= 3 and time.perf_counter() - start >= seconds:
            sync()
            return done * batch / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(measure(json.loads(sys.argv[1]))) + "\n")
