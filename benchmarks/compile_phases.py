"""Where a training step's time goes, eager default against ``trainer.compile``.

    python benchmarks/compile_phases.py snnrun-compiled mlp 10 [--graph-breaks]
    python benchmarks/compile_phases.py snnrun-native mlp 10

One process per line of the table (run them one after another, nothing else
running). The step is the bench worker's (``snnrun bench``): snnrun's encoder on
MNIST train[:100] from ``$SNNRUN_DATA``, forward, the paper loss, backward, snnrun's
Adam; medians over 50 steps after 10 of warm-up, in ms. ``--graph-breaks`` runs the
event-driven products eagerly between compiled pieces (``torch.compiler.disable``)
instead of as registered operators inside one graph: an experiment, not a setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from snnrun.app.runtime import tune_allocator
from snnrun.bench import nets
from snnrun.bench.worker import input_batch
from snnrun.data.encoding import bernoulli_spikes
from snnrun.snn import native
from snnrun.snn.memory import compact_spikes, mark_binary
from snnrun.train.speed import make_adam

PHASES = ("encode", "forward", "loss", "backward", "step", "total")


def _break_graphs_at_event_products() -> None:
    eager = native.event_linear
    disabled = torch.compiler.disable(eager)

    def event_linear(x, weight, bias, steps=1):  # type: ignore[no-untyped-def]
        if torch.compiler.is_compiling():
            return disabled(x, weight, bias, steps)
        return eager(x, weight, bias, steps)

    native.event_linear = event_linear


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=("snnrun-native", "snnrun-compiled"))
    parser.add_argument("net", choices=("mlp", "cnn"))
    parser.add_argument("steps", type=int)
    parser.add_argument("--graph-breaks", action="store_true")
    args = parser.parse_args()
    if args.graph_breaks:
        _break_graphs_at_event_products()
    tune_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, forward = nets.build(args.impl, args.net, torch.device("cpu"))
    optimizer = make_adam(model.parameters(), 1e-3, (0.9, 0.999), 1e-8, 0.0)
    k, labels, _ = input_batch(os.environ.get("SNNRUN_DATA"), 100)
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    generator = torch.Generator().manual_seed(1)
    warmup, measured = (10, 50) if args.net == "mlp" else (3, 9)
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    for i in range(warmup + measured):
        marks = [time.perf_counter()]
        x = bernoulli_spikes(k, args.steps, generator)
        marks.append(time.perf_counter())
        with compact_spikes():
            rates = forward(mark_binary(x))
        marks.append(time.perf_counter())
        loss = (rates - one_hot).square().sum() / (2 * len(labels))
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if i >= warmup:
            for phase, a, b in zip(PHASES[:-1], marks[:-1], marks[1:], strict=True):
                times[phase].append((b - a) * 1e3)
            times["total"].append((marks[-1] - marks[0]) * 1e3)
    label = args.impl + (" --graph-breaks" if args.graph_breaks else "")
    cells = "  ".join(f"{p} {statistics.median(times[p]):.2f}" for p in PHASES)
    print(f"{label} {args.net} T={args.steps}: {cells} ms")


if __name__ == "__main__":
    main()
