"""``snnrun bench``: snnrun's backends against the peers, one subprocess each.

Every implementation trains the same networks with the same math
(``snnrun/bench/nets.py``) in its own fresh process, one after another, in
alternating rounds; the table gives the median samples/s of training and
evaluation, the ratio to each peer measured in the same run, the share of the exact
fp32 roofline (``snnrun/bench/flops.py``: FLOPs per sample at the GEMM rate measured
in the same worker), the activation memory kept for backward and the peak RSS.
Writes ``<out>/bench.md`` and ``<out>/bench.json``. Peers that do not import are
listed as missing (install: ``make peers``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from snnrun.bench import flops, nets

CONFIGS = {"mlp10": ("mlp", 10), "mlp30": ("mlp", 30), "cnn10": ("cnn", 10)}
ALL_IMPLS = (
    *nets.SNNRUN_IMPLS,
    *nets.PEER_IMPLS,
    *nets.TUNED_PEERS,
    *nets.BASELINE_IMPLS,
)
PEERS = (*nets.PEER_IMPLS, *nets.TUNED_PEERS, "torch-compiled")  # the ratio columns


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun bench", description=__doc__)
    parser.add_argument("--configs", default="mlp10,mlp30,cnn10")
    parser.add_argument("--impls", default=",".join(ALL_IMPLS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed per run")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda[:N]; implementations that cannot run there are left out",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--data",
        default=os.environ.get("SNNRUN_DATA", "data"),
        help="folder with mnist/ (IDX .gz): its first training images are the "
        "input ($SNNRUN_DATA, else ./data); without it, uniform random intensities",
    )
    return parser.parse_args(argv)


def available(impl: str) -> bool:
    if impl.startswith("snnrun") or impl in nets.BASELINE_IMPLS:
        return True
    module = {
        "spikingjelly": "spikingjelly",
        "snntorch": "snntorch",
        "norse": "norse",
    }
    code = f"import {module[nets.base(impl)]}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=False
    )
    return done.returncode == 0


def run_worker(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run(
        [sys.executable, "-m", "snnrun.bench.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        return {**spec, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse(argv)
    configs = [c for c in args.configs.split(",") if c]
    impls = [i for i in args.impls.split(",") if i]
    unknown = [c for c in configs if c not in CONFIGS] + [
        i for i in impls if i not in ALL_IMPLS
    ]
    if unknown or args.rounds < 1:
        sys.stderr.write(
            f"snnrun bench: error: unknown {unknown} (configs: {', '.join(CONFIGS)}; "
            f"impls: {', '.join(ALL_IMPLS)}), or --rounds < 1\n"
        )
        return 2
    impls = [i for i in impls if nets.runs_on(i, args.device)]
    missing = [i for i in impls if not available(i)]
    impls = [i for i in impls if i not in missing]
    raw = []
    for round_ in range(args.rounds):
        order = impls if round_ % 2 == 0 else impls[::-1]
        for config in configs:
            net, steps = CONFIGS[config]
            for impl in order:
                spec = dict(
                    impl=impl,
                    net=net,
                    T=steps,
                    batch=args.batch,
                    threads=args.threads,
                    seconds=args.seconds,
                    device=args.device,
                    data=args.data,
                )
                result = run_worker(spec)
                result.update(config=config, round=round_)
                raw.append(result)
                sys.stdout.write(_progress(result))
                sys.stdout.flush()
    table = summarise(raw, configs, impls)
    meta = _meta(args, missing)
    meta["input"] = next((r["input"] for r in raw if "input" in r), "none")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(
        json.dumps({"meta": meta, "summary": table, "raw": raw}, indent=2) + "\n"
    )
    text = markdown(table, configs, impls, meta)
    (args.out / "bench.md").write_text(text)
    sys.stdout.write("\n" + text)
    return 0


def _progress(result: dict) -> str:
    if "error" in result:
        return f"  {result['config']:6} {result['impl']:17} ERROR {result['error']}\n"
    return (
        f"  {result['config']:6} {result['impl']:17} "
        f"{result['train_samples_per_s']:9,.0f} train/s "
        f"{result['eval_samples_per_s']:9,.0f} eval/s "
        f"{result['activation_mb']:8.1f} MB\n"
    )


def summarise(raw: list[dict], configs: list[str], impls: list[str]) -> dict:
    """Medians per (config, impl), ratios to every peer, roofline share."""
    table: dict = {}
    for config in configs:
        net, steps = CONFIGS[config]
        rows = {}
        # one GEMM rate per configuration, the median over all its workers: one
        # worker's short measurement moves by ±20%
        gemm = statistics.median(
            r["gemm_flops_per_s"]
            for r in raw
            if r["config"] == config and "error" not in r
        )
        for impl in impls:
            runs = [r for r in raw if r["config"] == config and r["impl"] == impl]
            ok = [r for r in runs if "error" not in r]
            if not ok:
                rows[impl] = {"error": runs[0].get("error") if runs else "not run"}
                continue
            med = {
                k: statistics.median(r[k] for r in ok)
                for k in (
                    "train_samples_per_s",
                    "eval_samples_per_s",
                    "activation_mb",
                    "peak_rss_mb",
                    "gemm_flops_per_s",
                )
            }
            if ok[0].get("peak_device_mb") is not None:
                med["peak_device_mb"] = statistics.median(
                    r["peak_device_mb"] for r in ok
                )
            if ok[0].get("peer_kernel"):
                med["peer_kernel"] = ok[0]["peer_kernel"]
            bound = gemm / flops.train_flops(net, steps)
            med["roofline_samples_per_s"] = bound
            med["roofline_share"] = med["train_samples_per_s"] / bound
            rows[impl] = med
        for row in rows.values():
            if "error" in row:
                continue
            row["ratio"] = {
                peer: row["train_samples_per_s"] / rows[peer]["train_samples_per_s"]
                for peer in PEERS
                if peer in rows and "error" not in rows[peer]
            }
        table[config] = rows
    return table


def markdown(table: dict, configs: list[str], impls: list[str], meta: dict) -> str:
    lines = [
        "# snnrun bench",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}; batch {meta['batch']}, "
        f"{meta['threads']} threads; medians of {meta['rounds']} alternating rounds.  ",
        f"Input: {meta.get('input', 'n/a')}, Bernoulli rate-coded anew every step "
        "(the input's density sets the cost of event-driven products).",
        "",
    ]
    cuda = meta.get("device", "cpu").startswith("cuda")
    memory = "peak GPU MB" if cuda else "peak RSS MB"
    peers = [p for p in PEERS if p in impls]
    for config in configs:
        net, steps = CONFIGS[config]
        lines += [
            f"## {config}: {net.upper()} T={steps} "
            f"({flops.train_flops(net, steps) / 1e6:,.1f} MFLOP per training sample)",
            "",
            "| implementation | train samples/s | "
            + "".join(f"vs {p} | " for p in peers)
            + "% of fp32 roofline | eval samples/s | eval/train | "
            f"activation MB | {memory} |",
            "| --- | ---: |" + " ---: |" * (len(peers) + 5),
        ]
        for impl in impls:
            row = table[config].get(impl, {})
            if "error" in row or not row:
                lines.append(
                    f"| {impl} | error: {row.get('error')} |" + " |" * (len(peers) + 5)
                )
                continue
            ratio = row["ratio"]
            cells = [
                impl,
                f"{row['train_samples_per_s']:,.0f}",
                *(f"{ratio[p]:.2f}×" if p in ratio else "n/a" for p in peers),
                f"{100 * row['roofline_share']:.0f}%",
                f"{row['eval_samples_per_s']:,.0f}",
                f"{row['eval_samples_per_s'] / row['train_samples_per_s']:.1f}×",
                f"{row['activation_mb']:.1f}",
                f"{row['peak_device_mb' if cuda else 'peak_rss_mb']:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        first = next(r for r in table[config].values() if "error" not in r)
        bound = first["roofline_samples_per_s"]
        gemm = bound * flops.train_flops(net, steps)
        lines += [
            "",
            f"fp32 GEMM rate, median over this configuration's workers: "
            f"{gemm / 1e9:.0f} GFLOP/s; roofline {bound:,.0f} training samples/s.",
            "",
        ]
    lines += [
        "Every snnrun worker runs as `snnrun train` does: glibc allocator tuning "
        "(`app/runtime.py`) and snnrun's Adam (`train/speed.py`: torch's fused kernel"
        " where the parameters allow); the peers run with torch's default Adam and "
        "no tuning, as their users get them, and `+malloc` marks a peer run with "
        "the same allocator tuning. Same update rule everywhere (Adam, lr 1e-3).",
        "",
        "Implementations:",
    ]
    lines += [f"- `{impl}`: {nets.NOTES[impl]}{_kernel(table, impl)}" for impl in impls]
    if meta["missing"]:
        lines.append(f"- not importable here (skipped): {', '.join(meta['missing'])}")
    return "\n".join(lines) + "\n"


def _kernel(table: dict, impl: str) -> str:
    """'; its LIF ran as `triton`' where a worker reported the peer's CUDA kernel."""
    kernels = {r.get("peer_kernel") for r in (t.get(impl, {}) for t in table.values())}
    kernels.discard(None)
    return (
        f"; on this GPU its LIF ran as `{', '.join(sorted(kernels))}`"
        if kernels
        else ""
    )


def _meta(args: argparse.Namespace, missing: list[str]) -> dict:
    import torch

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.device.startswith("cuda"):
        machine = f"{torch.cuda.get_device_name(torch.device(args.device))}; {machine}"
    return {
        "command": "snnrun bench " + " ".join(sys.argv[2:]),
        "device": args.device,
        "machine": machine,
        "torch": torch.__version__,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "missing": missing,
    }
