"""The comparison table of ``snnrun compare``: rows, rich/Markdown/CSV output, plot.

Finished runs of a target (a sweep or an experiment) grouped by the params that vary;
runs that differ only in ``seed`` share a row with mean ± std. The terminal table
drops the least important measures first when it is too wide; CSV and Markdown keep
every column. matplotlib is imported only by :func:`plot`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from snnrun.track.query import (
    MEASURES,
    Group,
    QueryError,
    RunRow,
    Stat,
    Target,
    group_by_seed,
    varied_params,
)

PERCENT = ("best val/acc", "final val/acc", "final test/acc", "test@best val")
DIGITS = {
    "firing rate": ".4f",
    "SynOps": ",.0f",
    "energy nJ": ",.1f",
    "wall s": ".1f",
    "samples/s": ",.0f",
    "peak MB": ",.0f",
}
PLOTTED = ("best val/acc", "final test/acc")
WIDE = 120  # columns when stdout is not a terminal
# Measures the terminal table leaves out first when it is too wide (CSV/Markdown keep
# every column); a caption names them.
DROP_FIRST = ("peak MB", "samples/s", "final val/acc", "wall s", "energy nJ")


# --- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Finished runs of a target grouped by the params that vary (``keys``)."""

    target: Target
    keys: list[str]
    groups: list[Group]
    left_out: list[RunRow]
    measures: list[str]  # the MEASURES some run logged (older runs lack test/*)

    @classmethod
    def of(cls, target: Target) -> Comparison:
        finished = [row for row in target.runs if row.status == "FINISHED"]
        left_out = [row for row in target.runs if row.status != "FINISHED"]
        keys = [key for key in varied_params(finished) if key != "seed"]
        groups = group_by_seed(finished, keys)
        measures = [
            name for name in MEASURES if any(g.stat(name) is not None for g in groups)
        ]
        return cls(target, keys, groups, left_out, measures)

    @property
    def header(self) -> list[str]:
        return [*self.keys, "runs", "seeds", *self.measures]

    def text_rows(self) -> list[list[str]]:
        """Cells as shown: ``97.12 ± 0.30%``; ``-`` where nothing was logged."""
        return [
            [
                *group.values.values(),
                str(len(group.runs)),
                ",".join(group.seeds),
                *(_cell(name, group.stat(name)) for name in self.measures),
            ]
            for group in self.groups
        ]

    def number_rows(self) -> list[list[object]]:
        """Cells for CSV: a mean and a std column per measure, raw numbers."""
        rows: list[list[object]] = []
        for group in self.groups:
            row: list[object] = [*group.values.values(), len(group.runs)]
            row.append(" ".join(group.seeds))
            for name in self.measures:
                stat = group.stat(name)
                row += [stat.mean, stat.std] if stat else ["", ""]
            rows.append(row)
        return rows

    @property
    def number_header(self) -> list[str]:
        stats = [f"{name} {part}" for name in self.measures for part in ("mean", "std")]
        return [*self.keys, "runs", "seeds", *stats]

    def title(self) -> str:
        runs = sum(len(group.runs) for group in self.groups)
        return (
            f"{self.target.kind} {self.target.label}: {runs} finished runs, "
            f"{len(self.groups)} rows (runs differing only in seed: mean ± std)"
        )

    def note(self) -> str:
        if not self.left_out:
            return ""
        names = ", ".join(f"{r.name} ({r.status})" for r in self.left_out)
        return f"not finished, left out: {names}"


def _cell(name: str, stat: Stat | None) -> str:
    if stat is None:
        return "-"
    if name in PERCENT:
        mean, std, unit, digits = 100 * stat.mean, 100 * stat.std, "%", ".2f"
    else:
        mean, std, unit, digits = stat.mean, stat.std, "", DIGITS[name]
    if stat.n == 1:
        return f"{mean:{digits}}{unit}"
    return f"{mean:{digits}} ± {std:{digits}}{unit}"


def rich_table(comparison: Comparison, width: int | None = None) -> Table:
    """The table; with ``width``, the ``DROP_FIRST`` measures are left out (in that
    order) until every row fits, and the caption says which."""
    header, rows = comparison.header, comparison.text_rows()
    hidden: list[str] = []
    for name in DROP_FIRST:
        if width is None or _table_width(header, rows) <= width:
            break
        if name in header:
            keep = [i for i, h in enumerate(header) if h != name]
            header = [header[i] for i in keep]
            rows = [[row[i] for i in keep] for row in rows]
            hidden.append(name)
    notes = [comparison.note()] if comparison.note() else []
    if hidden:
        notes.append(f"not shown at this width (see --csv/--md): {', '.join(hidden)}")
    table = Table(title=comparison.title(), caption="\n".join(notes) or None)
    for name in header:
        numeric = name not in comparison.keys
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def _table_width(header: list[str], rows: list[list[str]]) -> int:
    """Characters per line of a rich table with these cells (padding 1, borders)."""
    widths = [
        max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]
    return sum(widths) + 3 * len(widths) + 1


def write_csv(comparison: Comparison, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(comparison.number_header)
        writer.writerows(comparison.number_rows())


def markdown(comparison: Comparison) -> str:
    """The table as GitHub Markdown, title above and note below."""
    lines = [f"**{comparison.title()}**", ""]
    for cells in (comparison.header, ["---"] * len(comparison.header)):
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in comparison.text_rows()]
    if comparison.note():
        lines += ["", comparison.note()]
    return "\n".join(lines) + "\n"


# --- the plot -------------------------------------------------------------------------


def plot(comparison: Comparison, path: Path, x: str | None = None) -> None:
    """Accuracy (mean ± std over seeds) against param ``x``: one line per value of
    the other varied params. matplotlib is imported only here (Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    x = x or _first_key(comparison.keys)
    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    for label, groups in _lines(comparison, x).items():
        for measure, style in zip(PLOTTED, ("o-", "s--"), strict=True):
            points = [
                (_number(group.values[x]), stat)
                for group in groups
                if (stat := group.stat(measure)) is not None
            ]
            if points:
                axes.errorbar(
                    [at for at, _ in points],
                    [100 * stat.mean for _, stat in points],
                    yerr=[100 * stat.std for _, stat in points],
                    fmt=style,
                    capsize=3,
                    label=f"{measure} {label}".strip(),
                )
    axes.set_xlabel(x)
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{comparison.target.kind} {comparison.target.label}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def _first_key(keys: Sequence[str]) -> str:
    if not keys:
        raise QueryError("nothing varies between these runs but the seed: no plot")
    return keys[0]


def _lines(comparison: Comparison, x: str) -> dict[str, list[Group]]:
    """Groups by the values of the varied params other than ``x``."""
    if x not in comparison.keys:
        raise QueryError(f"--x {x}: not a varied param; these vary: {comparison.keys}")
    lines: dict[str, list[Group]] = {}
    for group in comparison.groups:
        others = " ".join(f"{k}={v}" for k, v in group.values.items() if k != x)
        lines.setdefault(others, []).append(group)
    return lines


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def print_table(comparison: Comparison) -> None:
    """The table on stdout: the terminal's width, or WIDE columns when piped."""
    console = Console(width=None if sys.stdout.isatty() else WIDE)
    console.print(rich_table(comparison, console.width))
