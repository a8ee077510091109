"""Training-step throughput of snnrun against a naive per-step loop, in one process.

For every config, four variants train from the same weights on the same MNIST images
and the same Bernoulli spike draws, timed in alternating rounds in one process (so a
load change on a shared machine hits every variant alike):

    naive per-step       the whole network per time step, x[t] indexing (the official
                         STBP code's pattern), torch's default Adam: the baseline
    snnrun eager         the model snnrun builds (app/build.py: layerwise, FoldTime +
                         LIF over unbind), torch's default Adam (snnrun before fusing)
    snnrun + fused Adam  what `snnrun train` builds now (train/speed.py: Adam fused=True)
    snnrun + compile     `trainer.compile=true` (nn.Module.compile) + fused Adam

One step = what Trainer._step does: encode the uint8 batch (Bernoulli, T draws),
forward, firing rate, STBP loss, zero_grad, backward, optimiser step, loss.item().
Configs (batch 100, 2 threads; stbp=code with spike_cmp=gt, the peer harness's math):

    mlp-T10, mlp-T30     784-800-10 (arch=mlp)
    cnn-T10              32C3-P2-32C3-P2-128-10 (experiment=code_mnist_cnn)
    cnn-peer-T10         32C5-P2-64C5-P2-1024-10, the CNN of ../shared/bench/peers.py
                         (not in the default list: --configs cnn-peer-T10)

The process applies the glibc malloc tuning of snnrun/app/runtime.py first, as
`snnrun train` does. Each variant is warmed up (the compiled one compiles during its
first call, reported as "compile s"), then timed for --rounds rounds of the same
number of steps; the table gives the median over rounds of samples/s and the range.

    SNNRUN_DATA=/work/shared/data .venv/bin/python benchmarks/bench_step.py
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) ...    (cold compile times in "first step")
    .venv/bin/python benchmarks/bench_step.py --configs cnn-peer-T10 --out step_cnn_peer

Writes benchmarks/results/<out>.json and <out>.md (default out: step). Not a test.
"""

from __future__ import annotations

import argparse

from snnrun.app.runtime import tune_allocator

MALLOC_TUNED = tune_allocator()  # before torch allocates anything big, as the CLI does

import datetime  # noqa: E402  (after the allocator tuning, on purpose)
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from snnrun import seeding  # noqa: E402
from snnrun.app.build import (  # noqa: E402
    build_data,
    build_model,
    build_optimizer,
    lif_params,
    resolve_device,
    seeded_generator,
)
from snnrun.app.schema import config_dir, register_configs  # noqa: E402
from snnrun.data import DataBundle  # noqa: E402
from snnrun.data.encoding import make_encoder  # noqa: E402
from snnrun.models import SpikingNet  # noqa: E402
from snnrun.models.readout import firing_rate, stbp_loss  # noqa: E402
from snnrun.snn import LIFParams, LIFState, lif_step  # noqa: E402
from snnrun.train.speed import compile_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MATH = ("stbp=code", "stbp.spike_cmp=gt", "optim=adam")
CONFIGS = {
    "mlp-T10": ("arch=mlp", "arch.hidden=[800]", "stbp.time_steps=10"),
    "mlp-T30": ("arch=mlp", "arch.hidden=[800]", "stbp.time_steps=30"),
    "cnn-T10": ("experiment=code_mnist_cnn", "stbp.time_steps=10"),
    "cnn-peer-T10": (
        "experiment=code_mnist_cnn",
        "arch.spec=32C5-P2-64C5-P2-1024",
        "stbp.time_steps=10",
    ),
}
DEFAULT_CONFIGS = ("mlp-T10", "mlp-T30", "cnn-T10")
BASELINE, EAGER = "naive per-step", "snnrun eager"
VARIANTS = (BASELINE, EAGER, "snnrun + fused Adam", "snnrun + compile")


class NaivePerStep(nn.Module):
    """Time outer, layers inner, ``x[t]`` indexing: the official STBP code's loop,
    on the layers of a built SpikingNet (shared, not copied)."""

    def __init__(self, net: SpikingNet, lif: LIFParams) -> None:
        super().__init__()
        self.layers = nn.ModuleList(stage.pre.module for stage in net.stages)
        self.lif = lif

    def forward(self, x: Tensor) -> Tensor:
        """x: [T, B, ...] → output spikes [T, B, C]."""
        states: list[LIFState | None] = [None] * len(self.layers)
        out = []
        for t in range(x.shape[0]):
            h = x[t]
            for n, layer in enumerate(self.layers):
                i = layer(h)
                state = states[n] or LIFState(torch.zeros_like(i), torch.zeros_like(i))
                h, states[n] = lif_step(i, state, self.lif)
            out.append(h)
        return torch.stack(out)


@dataclass
class Variant:
    """One way to train: a forward to spikes and its optimiser, plus what it measured."""

    name: str
    forward: Callable[[Tensor], Tensor]
    optimizer: torch.optim.Optimizer
    encoder: Callable[[Tensor], Tensor]
    first_spikes: Tensor | None = None
    warmup_s: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)


def compose_config(name: str, args: argparse.Namespace) -> DictConfig:
    """The real ``snnrun train`` config of ``name`` (Hydra compose, as the CLI)."""
    overrides = [
        *MATH,
        *CONFIGS[name],
        f"trainer.batch_size={args.batch}",
        f"dataset.train_limit={args.images}",
        "dataset.test_limit=100",
        f"device={args.device}",
        f"seed={args.seed}",
        "logger=none",
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def make_variants(cfg: DictConfig, data: DataBundle, device: torch.device) -> list:
    """The four variants; build_model's seeded init gives each the same weights."""
    lif = lif_params(cfg.stbp)

    def model() -> SpikingNet:
        return build_model(cfg, data, lif).to(device)

    def encoder() -> Callable[[Tensor], Tensor]:  # same seed: same draws per step
        generator = seeded_generator(cfg.seed, seeding.TRAIN_ENCODING, device)
        return make_encoder(data.meta.encoding, cfg.stbp.time_steps, generator)

    def default_adam(net: nn.Module) -> torch.optim.Optimizer:
        o = cfg.optim  # torch's default kernel: for-loop on CPU, foreach on CUDA
        return torch.optim.Adam(
            net.parameters(),
            lr=o.lr,
            betas=tuple(o.betas),
            eps=o.eps,
            weight_decay=o.weight_decay,
        )

    naive = NaivePerStep(model(), lif)
    eager, fused, compiled = model(), model(), model()
    compile_model(compiled, device)  # what build_parts does for trainer.compile=true
    return [
        Variant(BASELINE, naive, default_adam(naive), encoder()),
        Variant(EAGER, lambda x: eager(x).spikes, default_adam(eager), encoder()),
        Variant(
            VARIANTS[2],
            lambda x: fused(x).spikes,
            build_optimizer(cfg.optim, fused)[0],
            encoder(),
        ),
        Variant(
            VARIANTS[3],
            lambda x: compiled(x).spikes,
            build_optimizer(cfg.optim, compiled)[0],
            encoder(),
        ),
    ]


def train_step(variant: Variant, x: Tensor, y: Tensor, form: str) -> Tensor:
    """Trainer._step: encode, forward, loss, backward, step; returns the spikes."""
    spikes = variant.forward(variant.encoder(x))
    loss = stbp_loss(firing_rate(spikes), y, form)
    variant.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    variant.optimizer.step()
    loss.item()  # a sync (CUDA), as the Trainer's metrics make one
    return spikes


def bench_config(name: str, args: argparse.Namespace) -> dict:
    """Warm every variant up, then time them in alternating rounds."""
    cfg = compose_config(name, args)
    device = resolve_device(cfg.device)
    data = build_data(cfg)
    form = str(getattr(cfg.stbp.loss_form, "value", cfg.stbp.loss_form))
    batches = [
        (data.train.x[i : i + args.batch].to(device), data.train.y[i : i + args.batch])
        for i in range(0, len(data.train) - args.batch + 1, args.batch)
    ]
    batches = [(x, y.to(device)) for x, y in batches]
    variants = make_variants(cfg, data, device)
    counters.clear()  # count this config's graphs only
    load_start = os.getloadavg()
    for variant in variants:  # the compiled variant compiles during its first call
        for i in range(args.warmup):
            start = time.perf_counter()
            spikes = train_step(variant, *batches[i % len(batches)], form)
            variant.warmup_s.append(time.perf_counter() - start)
            if i == 0:
                variant.first_spikes = spikes.detach()
    # rounds of about --block-s seconds of the slowest variant (the baseline)
    per_round = max(2, math.ceil(args.block_s / min(variants[0].warmup_s)))
    for r in range(args.rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            start = time.perf_counter()
            for i in range(per_round):
                x, y = batches[(args.warmup + r * per_round + i) % len(batches)]
                train_step(variant, x, y, form)
            elapsed = time.perf_counter() - start
            variant.samples_per_s.append(per_round * args.batch / elapsed)
    return summarise(name, cfg, variants, per_round, load_start)


def summarise(
    name: str, cfg: DictConfig, variants: list, per_round: int, load_start: tuple
) -> dict:
    """Medians, ranges and ratios of one config, plus the checks that make them fair."""
    base = statistics.median(variants[0].samples_per_s)
    eager = statistics.median(variants[1].samples_per_s)
    reference = variants[0].first_spikes
    rows = {}
    for v in variants:
        median = statistics.median(v.samples_per_s)
        rows[v.name] = {
            "samples_per_s": median,
            "samples_per_s_min": min(v.samples_per_s),
            "samples_per_s_max": max(v.samples_per_s),
            "ms_per_step": 1e3 * cfg.trainer.batch_size / median,
            "vs_naive": median / base,
            "vs_snnrun_eager": median / eager,
            "first_call_s": v.warmup_s[0],
            "rounds_samples_per_s": v.samples_per_s,
            # first step, same weights and draws: the same spikes as the baseline
            "spikes_equal_to_naive": (v.first_spikes == reference)
            .float()
            .mean()
            .item(),
        }
    return {
        "config": name,
        "overrides": [*MATH, *CONFIGS[name]],
        "time_steps": cfg.stbp.time_steps,
        "arch": cfg.arch.name,
        "spec": cfg.arch.get("spec") or f"784-{cfg.arch.hidden[0]}-10",
        "steps_per_round": per_round,
        "compiled_graphs": counters["stats"]["unique_graphs"],
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "variants": rows,
    }


def markdown(record: dict) -> str:
    """The results as a markdown page: a header, then one table per config."""
    a = record["args"]
    lines = [
        "# Training-step throughput: snnrun vs a naive per-step loop",
        "",
        f"`{record['command']}`",
        "",
        f"{record['date']}; torch {record['torch']}, {record['cpu']} "
        f"({record['cpu_count']} cores), {a['threads']} threads, batch {a['batch']}, "
        f"device {record['device']}; malloc tuning: {record['malloc']}. "
        f"Median over {a['rounds']} alternating rounds (range: slowest–fastest "
        "round); one step = encode + forward + loss + backward + optimiser step. "
        "Ratios are against the naive per-step loop and snnrun eager of the same "
        "run. The compiled variant's "
        "first step includes compiling; inductor's on-disk cache "
        f"(TORCHINDUCTOR_CACHE_DIR: {record['inductor_cache']}) shortens it when it "
        "already holds the graphs (a fresh folder gives cold-compile times).",
        "",
    ]
    return "\n".join(lines + [table(c) for c in record["configs"]])


def table(c: dict) -> str:
    """One config's table, with the load average around it."""
    load = c["load_average_start"][0], c["load_average_end"][0]
    lines = [
        f"## {c['config']}: {c['spec']}, T={c['time_steps']}",
        "",
        f"1-min load average {load[0]:.2f} at the start, {load[1]:.2f} at the end; "
        f"{c['steps_per_round']} steps per round per variant; compiled graphs: "
        f"{c['compiled_graphs']}.",
        "",
        "| variant | samples/s | range | ms/step | × naive | × snnrun eager "
        "| first step s (compile) | spikes = naive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in c["variants"].items():
        lines.append(
            f"| {name} | {r['samples_per_s']:.0f} | {r['samples_per_s_min']:.0f}–"
            f"{r['samples_per_s_max']:.0f} | {r['ms_per_step']:.1f} | "
            f"{r['vs_naive']:.2f} | {r['vs_snnrun_eager']:.2f} | "
            f"{r['first_call_s']:.2f} | {r['spikes_equal_to_naive']:.6f} |"
        )
    return "\n".join([*lines, ""])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {list(CONFIGS)}"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps each")
    parser.add_argument(
        "--block-s", type=float, default=1.0, help="seconds of baseline per round"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--images", type=int, default=2000, help="MNIST images used")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="step", help="results/<out>.json and .md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_configs()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    configs = []
    for name in names:
        configs.append(bench_config(name, args))
        print(table(configs[-1]), flush=True)
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    record = {
        "what": "training-step throughput (encode+forward+loss+backward+step)",
        "command": "python benchmarks/bench_step.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "args": vars(args),
        "configs": configs,
        "device": str(resolve_device(args.device)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default"),
        "malloc": "mallopt (snnrun.app.runtime.tune_allocator)"
        if MALLOC_TUNED
        else f"environment {env}"
        if env
        else "none (glibc defaults)",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(record) + "\n")
    print(f"wrote {RESULTS / args.out}.json and .md")


if __name__ == "__main__":
    main()
