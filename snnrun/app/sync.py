"""``snnrun sync RUN_FOLDER``: send what a run kept on disk while MLflow was away.

When the tracking store stops answering mid-run, training goes on and the run
folder's ``mlflow-pending.jsonl`` collects the metrics, checkpoint uploads and final
status (``snnrun/track/spool.py``). This verb replays them into the run's MLflow run
once the store is back (resuming the run does the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snnrun.app.guard import EXIT_USER_ERROR


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun sync", description=__doc__)
    parser.add_argument(
        "run_dir", type=Path, help="the run folder (outputs/train/<time>)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="send to this store instead of the one the records name",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Replay the pending records; exit 2 (records kept) if the store is away."""
    args = parse(argv)
    if not args.run_dir.is_dir():
        sys.stderr.write(
            f"snnrun sync: error: {args.run_dir} is not a folder; pass a run folder "
            "of `snnrun train` (outputs/train/<time>)\n"
        )
        return EXIT_USER_ERROR
    from snnrun.track.spool import SpoolError, replay, spool_path

    path = spool_path(args.run_dir)
    if not path.is_file():
        sys.stdout.write(f"nothing to sync: {args.run_dir} has no {path.name}\n")
        return 0
    _bound_calls()
    try:
        result = replay(path, args.tracking_uri)
    except SpoolError as error:
        sys.stderr.write(f"snnrun sync: error: {error}\n")
        return EXIT_USER_ERROR
    sys.stdout.write(
        f"synced run {', '.join(result.run_ids)}: {result.steps} epochs of metrics, "
        f"{result.artifacts} checkpoints, status {result.status or 'unchanged'}\n"
    )
    return 0


def _bound_calls() -> None:
    """The same short HTTP limits as a training run (``logger.http_*`` defaults)."""
    from omegaconf import OmegaConf

    from snnrun.app.schema import LoggerConfig
    from snnrun.app.tracking import bound_http_calls

    bound_http_calls(OmegaConf.structured(LoggerConfig))
