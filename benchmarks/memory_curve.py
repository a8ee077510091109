"""Activation memory against T and batch: snnrun's backends against the peers.

Activation memory = the bytes autograd keeps for backward in one training forward
(unique storages, parameters excluded), counted by the same function the run's
memory check and ``snnrun bench`` use (``train/memory_plan.saved_activation_bytes``);
snnrun's backends pack spikes as the training step does, the peers run as they are.
It is a count, not a timing: it does not depend on the machine's load.

Networks and math: ``snnrun/bench/nets.py`` (the peer harness's MLP 784-800-10 and
CNN 32C5-P2-64C5-P2-1024-10). Sweeps: T ∈ {4, 8, 15, 30, 60} at batch 100, and
batch ∈ {25, 50, 100, 200, 400} at T = 30 (MLP), T ∈ {4, 8, 15, 30} at batch 100
(CNN). Peers that do not import are left out (``make peers`` installs them).

    .venv/bin/python benchmarks/memory_curve.py [--out memory]

Writes ``benchmarks/results/<out>.json``, ``<out>.md`` and ``docs/images/<out>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from snnrun.app.bench import available
from snnrun.bench import nets
from snnrun.train.memory_plan import saved_activation_bytes

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("snnrun-reference", "snnrun-fused", *nets.PEER_IMPLS)
SWEEPS = (  # (net, what varies, values, the other one fixed)
    ("mlp", "T", (4, 8, 15, 30, 60), 100),
    ("mlp", "batch", (25, 50, 100, 200, 400), 30),
    ("cnn", "T", (4, 8, 15, 30), 100),
)


def activation_mb(impl: str, net: str, steps: int, batch: int) -> float:
    """MiB kept for backward by one forward of ``impl`` on ``net`` at (T, batch)."""
    torch.manual_seed(0)
    model, forward = nets.build(impl, net)
    images = torch.rand(batch, 1, 28, 28)
    spikes = (torch.rand(steps, *images.shape) < images).float()
    packed = impl.startswith("snnrun")
    return saved_activation_bytes(forward, spikes, model.parameters(), packed) / 2**20


def measure() -> list[dict]:
    rows = []
    impls = [impl for impl in IMPLS if available(impl)]
    for net, varies, values, fixed in SWEEPS:
        for value in values:
            steps, batch = (value, fixed) if varies == "T" else (fixed, value)
            for impl in impls:
                mb = activation_mb(impl, net, steps, batch)
                rows.append(
                    {"net": net, "varies": varies, "T": steps, "batch": batch,
                     "impl": impl, "activation_mb": mb}
                )  # fmt: skip
                print(f"{net} T={steps} B={batch} {impl}: {mb:.1f} MiB", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "Activation memory kept for backward (MiB) in one training forward; ratio to "
        "SpikingJelly in brackets. Command: `.venv/bin/python "
        "benchmarks/memory_curve.py`.",
        "",
    ]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    for net, varies, values, fixed in SWEEPS:
        other = "batch" if varies == "T" else "T"
        lines += [f"**{net.upper()}, {other} = {fixed}**", ""]
        lines.append(f"| {varies} | " + " | ".join(impls) + " |")
        lines.append("|---|" + "---|" * len(impls))
        for value in values:
            cells = {
                r["impl"]: r["activation_mb"]
                for r in rows
                if r["net"] == net and r["varies"] == varies and r[varies] == value
            }
            base = cells.get("spikingjelly")
            row = []
            for impl in impls:
                ratio = f" ({cells[impl] / base:.2f}×)" if base else ""
                row.append(f"{cells[impl]:.1f}{ratio}")
            lines.append(f"| {value} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SWEEPS), figsize=(5 * len(SWEEPS), 4))
    for ax, (net, varies, _values, fixed) in zip(axes, SWEEPS, strict=True):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            points = [
                (r[varies], r["activation_mb"])
                for r in rows
                if r["net"] == net and r["varies"] == varies and r["impl"] == impl
            ]
            ax.plot(*zip(*points, strict=True), marker="o", label=impl)
        other = "batch" if varies == "T" else "T"
        ax.set(xlabel=varies, ylabel="activation MiB", title=f"{net}, {other}={fixed}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="memory")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = measure()
    results = ROOT / "benchmarks" / "results"
    (results / f"{args.out}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (results / f"{args.out}.md").write_text(markdown(rows))
    plot(rows, ROOT / "docs" / "images" / f"{args.out}.png")


if __name__ == "__main__":
    main()
