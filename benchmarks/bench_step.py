"""Training-step throughput: layerwise SpikingNet vs a naive per-step loop (not a test).

One step = forward + rate readout + loss + backward + Adam step of the 784-800-10 MLP
at T=10, batch 100, on 2 CPU threads (the section-9 sanity settings: τ 0.2, linear,
gt, h1 a=1, PyTorch init, mean loss). All variants start from the same weights and
see the same inputs; the naive one runs the whole net per time step and indexes x[t].
Extra rows: the layerwise net with Adam(fused=True) (same update rule, one kernel),
and with torch.compile (--compile). Variants are timed in alternating rounds.

    PYTHONPATH=. MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 \
        python benchmarks/bench_step.py [--steps 60] [--compile]

Prints a table and writes benchmarks/results/step.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from snnrun.models import mlp
from snnrun.models.readout import firing_rate, stbp_loss
from snnrun.snn import LIFParams, LIFState, lif_step

RESULTS = Path(__file__).parent / "results" / "step.json"


class NaivePerStep(nn.Module):
    """Reference order of spec section 2: time outer, layers inner, x[t] indexing."""

    def __init__(self, linears: list[nn.Linear], lif: LIFParams) -> None:
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.lif = lif

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[1]
        states = [
            LIFState(
                x.new_zeros(batch, m.out_features), x.new_zeros(batch, m.out_features)
            )
            for m in self.linears
        ]
        out = []
        for t in range(x.shape[0]):
            h = x[t].flatten(1)
            for n, linear in enumerate(self.linears):
                h, states[n] = lif_step(linear(h), states[n], self.lif)
            out.append(h)
        return torch.stack(out)


def make_step(
    forward: Callable[[Tensor], Tensor],
    params: list[nn.Parameter],
    fused_adam: bool = False,
) -> Callable[[Tensor, Tensor], float]:
    optimiser = torch.optim.Adam(params, lr=1e-3, fused=fused_adam or None)

    def step(x: Tensor, labels: Tensor) -> float:
        optimiser.zero_grad(set_to_none=True)
        loss = stbp_loss(firing_rate(forward(x)), labels, "mean")
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def time_interleaved(
    variants: dict[str, Callable], batches: list, warmup: int, steps: int, rounds: int
) -> dict[str, list[float]]:
    """Warm every variant up, then time them in alternating rounds, so that a load
    change on a shared machine hits all variants alike."""
    for step in variants.values():
        for i in range(warmup):
            step(*batches[i % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, steps // rounds)
    for r in range(rounds):
        for name, step in variants.items():
            for i in range(per_round):
                batch = batches[(r * per_round + i) % len(batches)]
                start = time.perf_counter()
                step(*batch)
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lif = LIFParams(decay=0.2, threshold=0.5, reset_form="linear", spike_cmp="gt")
    cfg = mlp.MLPConfig(hidden=[800], init="default")
    layerwise = mlp.build(cfg, (784,), 10, lif)
    naive = NaivePerStep(copy.deepcopy(layerwise.weight_layers()), lif)
    gen = torch.Generator().manual_seed(1)
    pixel_p = torch.rand(8, args.batch, 784, generator=gen) * (
        torch.rand(8, args.batch, 784, generator=gen) < 0.2
    )
    batches = [
        (
            (torch.rand(args.time_steps, *p.shape, generator=gen) < p).float(),
            torch.randint(0, 10, (args.batch,), generator=gen),
        )
        for p in pixel_p
    ]
    with torch.no_grad():  # same semantics: same spikes (float32: rare flips allowed)
        x = batches[0][0]
        agree = (layerwise(x).spikes == naive(x)).float().mean().item()

    variants = {
        "naive per-step (x[t])": make_step(naive, list(naive.parameters())),
        "layerwise (SpikingNet)": make_step(
            lambda x: layerwise(x).spikes, list(layerwise.parameters())
        ),
    }
    fused_net = copy.deepcopy(layerwise)
    variants["layerwise + fused Adam"] = make_step(
        lambda x: fused_net(x).spikes, list(fused_net.parameters()), fused_adam=True
    )
    if args.compile:
        compiled_net = copy.deepcopy(layerwise)
        compiled = torch.compile(compiled_net)
        variants["layerwise + torch.compile"] = make_step(
            lambda x: compiled(x).spikes, list(compiled_net.parameters())
        )
    timings = time_interleaved(variants, batches, args.warmup, args.steps, args.rounds)
    rows = {}
    for name, times in timings.items():
        median = statistics.median(times)
        rows[name] = {
            "median_s": median,
            "min_s": min(times),
            "samples_per_s": args.batch / median,
        }
    base = rows["naive per-step (x[t])"]["median_s"]
    header = ("variant", "median ms", "min ms", "samples/s", "vs naive")
    print(
        f"{header[0]:28s} {header[1]:>10s} {header[2]:>8s} {header[3]:>10s} {header[4]:>9s}"
    )
    for name, row in rows.items():
        row["speedup_vs_naive"] = base / row["median_s"]
        print(
            f"{name:28s} {1e3 * row['median_s']:10.2f} {1e3 * row['min_s']:8.2f}"
            f" {row['samples_per_s']:10.0f} {row['speedup_vs_naive']:8.2f}x"
        )
    print(
        f"load average at the end: {os.getloadavg()[0]:.2f} (a shared machine skews all rows)"
    )
    print(f"output spikes agreeing (layerwise vs naive, batch 0): {agree:.6f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "forward+backward+Adam step, MLP 784-800-10, median over steps",
        "args": vars(args),
        "lif": lif._asdict(),
        "results": rows,
        "spike_agreement": agree,
        "load_average_1min_end": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
