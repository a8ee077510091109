"""``snnrun reproduce ROW``: run a paper row over its seeds and judge it PASS / FAIL.

A row is data (``conf/reproduce/<row>.yaml``): the experiment preset, the paper's
figure and its evidence, the acceptance band, the seeds, the data it runs on, and a
``quick`` variant (its own seeds, band and overrides) small enough for CI.

The seeds run as one Hydra sweep (``snnrun train -m experiment=… seed=0,1,2``, in a
subprocess, so any launcher works: pass ``hydra/launcher=…``). Then the sweep's runs
are read back from MLflow and summarised: the mean ± std of the final test accuracy
(and of the test accuracy at the best-validation epoch), wall time, and the verdict
against the band. The summary is printed, written as a Markdown row
(``<sweep dir>/reproduce.md``, and appended to ``--md FILE``) and logged on the
sweep's parent run. Model selection never reads the test set (``docs/results.md``).

Exit status: 0 PASS, 1 FAIL (or a job failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from snnrun.app.rows import ReproduceError, Row, load_row, mean_std, row_names
from snnrun.app.schema import config_dir
from snnrun.track.reproduce import Outcome, collect, record

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def verdict(row: Row, outcome: Outcome) -> str:
    """PASS when every seed finished and the mean final test accuracy is in the band."""
    return outcome.verdict(row.band, len(row.seeds))


def summary_lines(row: Row, outcome: Outcome) -> list[str]:
    low, high = row.band
    judged = verdict(row, outcome)
    lines = [
        f"reproduce {row.label}: {row.title}",
        f"  data          {row.data}",
        f"  paper         {row.paper_acc:.2f}%  ({row.evidence})",
        f"  final test    {mean_std(outcome.final)}",
        f"  test@best val {mean_std(outcome.at_best)}",
        f"  epochs        {', '.join(map(str, outcome.epochs)) or 'none'}",
        f"  wall time     {outcome.wall_s:.0f} s for {len(row.seeds)} seeds",
        f"  sweep         {outcome.sweep_dir} (MLflow parent run "
        f"{outcome.parent_run_id or 'none'})",
    ]
    if outcome.failed:
        lines.append(f"  failed jobs   {', '.join(outcome.failed)}")
    lines.append(f"{judged}: mean final test accuracy vs band [{low}, {high}]%")
    return lines


def markdown_row(row: Row, outcome: Outcome) -> str:
    cells = [
        row.label,
        row.data,
        f"{row.paper_acc:.2f}%",
        mean_std(outcome.final),
        mean_std(outcome.at_best),
        ", ".join(map(str, outcome.epochs)),
        f"{outcome.wall_s / 60:.1f} min",
        f"[{row.band[0]}, {row.band[1]}]%",
        f"**{verdict(row, outcome)}**",
        f"`{outcome.parent_run_id or 'untracked'}`",
    ]
    return "| " + " | ".join(cells) + " |"


MARKDOWN_HEADER = (
    "| row | data | paper | final test (mean ± std) | test at best val | epochs | "
    "wall | band | verdict | MLflow parent run |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="snnrun reproduce",
        description="Run a paper row over its seeds; print PASS/FAIL against its band.",
        epilog=f"rows: {', '.join(row_names())}. Extra arguments are Hydra overrides "
        "passed to every job (e.g. paths.output_root=..., hydra/launcher=local_pool).",
    )
    parser.add_argument("row", help="the row to reproduce")
    parser.add_argument(
        "--quick", action="store_true", help="the row's small CI-sized setting"
    )
    parser.add_argument("--seeds", default=None, help="e.g. 0,1,2 (default: the row's)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--md", type=Path, default=None, help="append the row here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job")
    return parser.parse_intermixed_args(argv)


def sweep_command(row: Row, sweep_dir: Path, extra: list[str]) -> list[str]:
    """The ``snnrun train -m`` command line of the row's seeds."""
    return [
        sys.executable,
        "-m",
        "snnrun",
        "train",
        "-m",
        f"experiment={row.experiment}",
        f"seed={','.join(map(str, row.seeds))}",
        *row.overrides,
        *extra,
        f"hydra.sweep.dir={sweep_dir}",
        f"+tags.reproduce={row.name}{'-quick' if row.quick else ''}",
    ]


def locate(row: Row, extra: list[str]) -> tuple[Path, str]:
    """Where the sweep goes and the tracking URI, from the composed config."""
    from hydra import compose, initialize_config_dir

    from snnrun.app.schema import register_configs

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={row.experiment}", *row.overrides, *extra],
        )
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
    folder = Path(cfg.paths.output_root) / "reproduce" / f"{row.name}_{stamp}"
    return folder, str(cfg.logger.tracking_uri)


def main(argv: list[str]) -> int:
    """Run the row, print the verdict; see the module docstring for exit codes."""
    args = parse(argv)
    try:
        row = load_row(args.row, args.quick)
        row = _with_args(row, args)
        sweep_dir, tracking_uri = locate(row, args.overrides)
    except Exception as error:  # a bad row, seeds or override: one message
        if not _is_user_error(error):
            raise
        sys.stderr.write(f"snnrun reproduce: error: {error}\n")
        return EXIT_USAGE
    sys.stdout.write(f"reproduce {row.label}: {row.data}\n")
    started = time.perf_counter()
    done = subprocess.run(sweep_command(row, sweep_dir, args.overrides), check=False)
    wall = time.perf_counter() - started
    try:
        outcome = collect(row.seeds, sweep_dir, tracking_uri, wall)
    except LookupError as error:
        sys.stderr.write(
            f"snnrun reproduce: error: the sweep left no runs to judge ({error}); "
            f"its output is above (exit status {done.returncode})\n"
        )
        return EXIT_FAIL
    lines = summary_lines(row, outcome)
    sys.stdout.write("\n".join(lines) + "\n")
    md = f"{MARKDOWN_HEADER}\n{markdown_row(row, outcome)}\n"
    (sweep_dir / "reproduce.md").write_text(md, encoding="utf-8")
    if args.md is not None:
        _append(args.md, markdown_row(row, outcome))
    record(outcome, row.label, verdict(row, outcome), tracking_uri, md)
    return EXIT_PASS if verdict(row, outcome) == "PASS" else EXIT_FAIL


def _with_args(row: Row, args: argparse.Namespace) -> Row:
    seeds, overrides = row.seeds, list(row.overrides)
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError as error:
            raise ReproduceError(
                f"--seeds {args.seeds}: give whole numbers separated by commas, "
                "e.g. --seeds 0,1,2"
            ) from error
        if not seeds:
            raise ReproduceError("--seeds is empty; e.g. --seeds 0,1,2")
    if args.epochs is not None:
        if args.epochs < 1:
            raise ReproduceError(f"--epochs {args.epochs}: must be at least 1")
        overrides = [o for o in overrides if not o.startswith("trainer.epochs=")]
        overrides.append(f"trainer.epochs={args.epochs}")
    return Row(**{**row.__dict__, "seeds": seeds, "overrides": overrides})


def _append(path: Path, line: str) -> None:
    new = not path.is_file() or not path.read_text(encoding="utf-8").strip()
    with path.open("a", encoding="utf-8") as file:
        if new:
            file.write(MARKDOWN_HEADER + "\n")
        file.write(line + "\n")


def _is_user_error(error: Exception) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(
        error, (ReproduceError, HydraException, OmegaConfBaseException, ValueError)
    )
