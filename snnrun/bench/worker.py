"""Measure one implementation in this (fresh) process; print one JSON line.

``python -m snnrun.bench.worker '{"impl": "snnrun-fused", "net": "mlp", "T": 10}'``
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time

import torch
from torch import Tensor

from snnrun.bench import flops, nets
from snnrun.snn.memory import compact_spikes, mark_binary
from snnrun.train.memory_plan import saved_activation_bytes


def measure(spec: dict) -> dict:
    torch.set_num_threads(int(spec.get("threads", 2)))
    torch.manual_seed(0)
    impl, net, steps = spec["impl"], spec["net"], int(spec["T"])
    batch, seconds = int(spec.get("batch", 100)), float(spec.get("seconds", 6.0))
    model, forward = nets.build(impl, net)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 1, 28, 28)
    labels = torch.randint(0, 10, (batch,))
    generator = torch.Generator().manual_seed(1)

    def encode() -> Tensor:  # Bernoulli rate coding, drawn every step as in training
        draw = torch.rand((steps, *images.shape), generator=generator)
        return (draw < images).float()

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

    train = _rate(train_step, batch, seconds, warmup=int(spec.get("warmup", 3)))
    evaluate = _rate(eval_step, batch, seconds / 2, warmup=1)
    activation = saved_activation_bytes(forward, encode(), model.parameters(), own)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        **spec,
        "train_samples_per_s": train,
        "eval_samples_per_s": evaluate,
        "activation_mb": activation / 2**20,
        "peak_rss_mb": rss_mb,
        "gemm_flops_per_s": flops.gemm_rate(),
        "torch": torch.__version__,
    }


def _rate(step, batch: int, seconds: float, warmup: int) -> float:
    for _ in range(warmup):
        step()
    done, start = 0, time.perf_counter()
    while True:
        step()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 3:
            return done * batch / elapsed


if __name__ == "__main__":
    sys.stdout.write(json.dumps(measure(json.loads(sys.argv[1]))) + "\n")
