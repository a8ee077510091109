"""``snnrun runs [--clean]``: runs left RUNNING by a process that is gone.

A run killed with SIGKILL (or by the OOM killer, or a power loss) cannot close its
MLflow run, which then stays RUNNING for ever. Runs carry their host and pid as tags;
this lists the RUNNING ones whose process on this host is gone, and ``--clean``
marks them KILLED.
"""

from __future__ import annotations

import argparse
import sys

from snnrun.app.compare import default_tracking_uri
from snnrun.app.guard import EXIT_USER_ERROR


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun runs", description=__doc__)
    parser.add_argument(
        "--clean", action="store_true", help="mark the stale runs KILLED"
    )
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """List (and with ``--clean`` close) the stale runs; exit 2 on a bad store."""
    args = parse(argv)
    from snnrun.track.stale import describe, mark_killed, stale_runs
    from snnrun.track.store import TrackingError, check_store, sqlite_path

    db = sqlite_path(args.tracking_uri)
    if db is not None and not db.is_file():  # do not create an empty store
        sys.stderr.write(
            f"snnrun runs: error: there is no MLflow store at {db}; pass the store "
            "of your runs with --tracking-uri sqlite:///<outputs>/mlflow.db\n"
        )
        return EXIT_USER_ERROR
    try:
        check_store(args.tracking_uri)
        runs = stale_runs(args.tracking_uri)
    except TrackingError as error:
        sys.stderr.write(f"snnrun runs: error: {error}\n")
        return EXIT_USER_ERROR
    if not runs:
        sys.stdout.write("no stale runs: every RUNNING run's process is alive\n")
        return 0
    for run in runs:
        sys.stdout.write(f"stale: {describe(run)}\n")
    if args.clean:
        mark_killed(args.tracking_uri, runs)
        sys.stdout.write(f"marked {len(runs)} run(s) KILLED\n")
    else:
        sys.stdout.write("run `snnrun runs --clean` to mark them KILLED\n")
    return 0
