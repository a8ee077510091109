"""Sum up the reproduction runs of ``benchmarks/gpu.sh`` (one row per run, then the
mean ± std per paper row) from each run's own ``checkpoints/last.pt``.

    python benchmarks/gpu_summary.py RUNS_ROOT OUT_PREFIX

``RUNS_ROOT/<row>-s<seed>/`` holds one ``snnrun train`` run (``train/<time>/``) and
``wall_s`` (seconds the run was given or took). Writes ``OUT_PREFIX.md`` and
``OUT_PREFIX.json``. The numbers are the runs' own: final test accuracy, test accuracy
at the best validation epoch, best validation accuracy, epochs reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from snnrun.app.rows import mean_std
from snnrun.train.checkpoint import load_checkpoint

KEYS = ("test/acc", "test/acc_at_best_val", "val/acc_best")


def run_row(folder: Path) -> dict:
    """One run: its row name, seed, epochs reached and final metrics (percent)."""
    row, _, seed = folder.name.rpartition("-s")
    found = sorted(folder.glob("train/*/checkpoints/last.pt"))
    wall = folder / "wall_s"
    result = {
        "row": row,
        "seed": int(seed),
        "wall_s": float(wall.read_text()) if wall.is_file() else None,
    }
    if not found:
        return {**result, "error": "no checkpoint (stopped before its first epoch)"}
    state = load_checkpoint(found[-1])
    config = OmegaConf.create(state["config"])
    done = state.get("epoch_metrics") or {}
    metrics = done.get("metrics", {})
    return {
        **result,
        "epochs": int(done.get("epoch", 0)),
        "epochs_planned": int(config.trainer.epochs),
        "device": str(config.device),
        "backend": str(config.stbp.backend),
        **{key: 100 * metrics[key] for key in KEYS if key in metrics},
    }


def markdown(runs: list[dict]) -> str:
    lines = [
        "| row | seed | epochs | final test % | test % at best val | best val % | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if "error" in run:
            lines.append(f"| {run['row']} | {run['seed']} | {run['error']} | | | | |")
            continue
        cells = [f"{run[k]:.2f}" if k in run else "–" for k in KEYS]
        wall = f"{run['wall_s']:.0f}" if run["wall_s"] is not None else "–"
        lines.append(
            f"| {run['row']} | {run['seed']} | {run['epochs']} / "
            f"{run['epochs_planned']} | {' | '.join(cells)} | {wall} |"
        )
    lines += [
        "",
        "| row | seeds | final test (mean ± std) | test at best val (mean ± std) |",
    ]
    lines.append("|---|---|---|---|")
    for row in sorted({run["row"] for run in runs}):
        ok = [r for r in runs if r["row"] == row and "error" not in r]
        final, at_best = ([r[k] for r in ok if k in r] for k in KEYS[:2])
        lines.append(f"| {row} | {len(ok)} | {mean_std(final)} | {mean_std(at_best)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    root, prefix = Path(argv[0]), Path(argv[1])
    runs = [run_row(folder) for folder in sorted(root.iterdir()) if folder.is_dir()]
    prefix.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")
    text = markdown(runs)
    prefix.with_suffix(".md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
