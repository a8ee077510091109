"""``snnrun compare [SWEEP_ID | EXPERIMENT]``: the runs of a sweep side by side.

The params that vary between the runs become the columns; runs that differ only in
``seed`` share a row with mean ± std; derived ``data.*`` params are not columns.
Measures: best and final ``val/acc``, test accuracy, the mean firing rate
(``rate/layer*``), SynOps and SNN energy per sample, wall time, samples/s and peak
memory; a terminal narrower than the table loses the least important ones first. Default target:
the newest sweep. ``--csv`` / ``--md`` write the table, ``--plot`` draws accuracy
against a swept param (matplotlib) and logs the PNG on the sweep's parent run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from snnrun.app.schema import project_root
from snnrun.track.comparison import (
    Comparison,
    markdown,
    plot,
    print_table,
    write_csv,
)
from snnrun.track.query import QueryError, RunStore


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the store ``snnrun train`` writes by default."""
    store = project_root() / "outputs" / "mlflow.db"
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store}"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun compare", description=__doc__)
    parser.add_argument(
        "target",
        nargs="?",
        default=None,
        help="a sweep id, a sweep's parent run id or an experiment name "
        "(default: the newest sweep)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default: %(default)s)",
    )
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--md", type=Path, help="also write the table as Markdown")
    parser.add_argument(
        "--plot",
        type=Path,
        help="PNG of accuracy vs a swept param (logged on the sweep)",
    )
    parser.add_argument("--x", help="the param on the plot's x axis (default: first)")
    return parser.parse_args(argv)


# --- the command ----------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Print the comparison; write the requested files. Exit 2 if nothing matches."""
    args = parse(argv)
    try:
        store = RunStore(args.tracking_uri)
        comparison = Comparison.of(store.resolve(args.target))
        print_table(comparison)
        _report_stale(args.tracking_uri)
        _export(comparison, args, store)
    except QueryError as error:
        sys.stderr.write(f"snnrun compare: error: {error}\n")
        return 2
    return 0


def _report_stale(tracking_uri: str) -> None:
    """Name the runs left RUNNING by a process that is gone (``snnrun runs``)."""
    from snnrun.track.stale import describe, stale_runs

    try:
        runs = stale_runs(tracking_uri)
    except Exception:  # a note only; the comparison is already printed
        return
    if runs:
        sys.stderr.write(
            f"note: {len(runs)} run(s) are marked RUNNING but their process on this "
            f"host is gone: {', '.join(describe(r) for r in runs)}; mark them KILLED "
            f"with: snnrun runs --clean --tracking-uri {tracking_uri}\n"
        )


def _export(comparison: Comparison, args: argparse.Namespace, store: RunStore) -> None:
    if args.csv:
        write_csv(comparison, args.csv)
    if args.md:
        args.md.write_text(markdown(comparison), encoding="utf-8")
    if args.plot:
        plot(comparison, args.plot, args.x)
        parent = comparison.target.parent_run_id
        if parent is not None:
            store.client.log_artifact(parent, str(args.plot), "compare")
