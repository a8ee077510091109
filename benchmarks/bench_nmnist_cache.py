"""N-MNIST build time: read the sample, cold vs warm (cached) build (not a test).

On the real 1,000/100 sample (``$SNNRUN_DATA/nmnist-sample``, default
``../shared/data``) with the spec's defaults (bin 10 ms, T = 30, binary, split):

- read: ``np.fromfile`` + decode + validate of all 1,100 ``.bin`` files;
- cold: ``nmnist.build`` with an empty cache (list, read, bin, write the cache);
- nocache: ``nmnist.build`` with ``dataset.cache=false`` (list, read, bin);
- warm: ``nmnist.build`` again on the filled cache (list, hash, ``torch.load``).

Both with the defaults and with ``denoise_ms`` set (tonic's per-event Python filter:
where the cache matters most).

Each figure is the median over ``--repeats`` runs, each cold run in a fresh cache
folder. The OS page cache holds the 22 MB of ``.bin`` files after the first read,
as it does for any second run.

    PYTHONPATH=. python benchmarks/bench_nmnist_cache.py [--repeats 5] [--denoise-ms 5]

Prints a summary and writes benchmarks/results/nmnist_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from snnrun.data import BuildContext
from snnrun.data.nmnist import NMNISTConfig, build, list_recordings, read_recording

RESULTS = Path(__file__).parent / "results" / "nmnist_cache.json"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def timed(fn: Callable[..., object], *args: object) -> float:
    """Seconds one call of ``fn(*args)`` takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def read_all(sample: Path) -> int:
    """Decode every recording; returns the number of events."""
    recordings = list_recordings(sample, "train") + list_recordings(sample, "test")
    return sum(len(read_recording(r.path)) for r in recordings)


def measure(
    data_root: Path, cfg: NMNISTConfig, repeats: int, time_steps: int
) -> dict[str, list[float]]:
    """Times (s) of each phase for one configuration, ``repeats`` each."""
    times: dict[str, list[float]] = {"read": [], "cold": [], "nocache": [], "warm": []}
    sample = data_root / "nmnist-sample"
    read_all(sample)  # warm the OS page cache: every phase then reads from memory
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache_root:
            ctx = BuildContext(
                data_root, Path(cache_root), time_steps, torch.Generator()
            )
            times["read"].append(timed(read_all, sample))
            times["cold"].append(timed(build, cfg, ctx))
            times["nocache"].append(timed(build, replace(cfg, cache=False), ctx))
            times["warm"].append(timed(build, cfg, ctx))
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, object]:
    medians = {phase: statistics.median(values) for phase, values in times.items()}
    return {
        "median_s": medians,
        "all_s": times,
        "warm_speedup_vs_cold": medians["cold"] / medians["warm"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-steps", type=int, default=30)
    parser.add_argument("--denoise-ms", type=float, default=5.0)
    args = parser.parse_args()
    data_root = Path(os.environ.get("SNNRUN_DATA", DEFAULT_DATA))
    configs = {
        "defaults": NMNISTConfig(),
        f"denoise_ms={args.denoise_ms}": NMNISTConfig(denoise_ms=args.denoise_ms),
    }
    result = {
        "what": "nmnist.build on the 1,000/100 sample: cold vs warm cache, median",
        "args": vars(args),
        "configs": {
            label: summarise(measure(data_root, cfg, args.repeats, args.time_steps))
            for label, cfg in configs.items()
        },
        "cache_bytes": args.time_steps * 2 * 34 * 34 * 1100,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for label, summary in result["configs"].items():
        phases = ", ".join(f"{k} {v:.3f} s" for k, v in summary["median_s"].items())
        speedup = summary["warm_speedup_vs_cold"]
        print(f"{label}: {phases}; warm {speedup:.1f}x faster than cold")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
