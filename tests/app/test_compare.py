"""The comparison table, its CSV / Markdown exports and the plot (no MLflow needed:
the rows are built by hand; tests/track/test_query.py reads real ones)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from snnrun.track.comparison import Comparison, markdown, plot, write_csv
from snnrun.track.query import QueryError, RunRow, Target


def run(decay: str, seed: str, best: float, status: str = "FINISHED") -> RunRow:
    return RunRow(
        run_id=f"id-{decay}-{seed}",
        name=f"stbp.decay={decay} seed={seed}",
        status=status,
        params={"stbp.decay": decay, "seed": seed, "optim.lr": "0.001"},
        metrics={
            "val/acc_best": best,
            "val/acc": best - 0.1,
            "rate/layer1": 0.02,
            "perf/samples_per_s": 1000.0,
            "perf/peak_rss_mb": 700.0,
        },
        tags={},
        wall_s=2.0,
    )


@pytest.fixture
def comparison() -> Comparison:
    rows = [
        run("0.2", "0", 0.80),
        run("0.1", "0", 0.50),
        run("0.1", "1", 0.70),
        run("0.2", "1", 0.90),
        run("0.3", "0", 0.0, status="FAILED"),
    ]
    return Comparison.of(Target("sweep", "abcd1234", rows, "parent-id"))


def test_varied_params_are_columns_and_seeds_share_a_row(comparison) -> None:
    assert comparison.header == [
        "stbp.decay",
        "runs",
        "seeds",
        "best val/acc",
        "final val/acc",
        "firing rate",
        "wall s",
        "samples/s",
        "peak MB",
    ]
    same = ["0.0200 ± 0.0000", "2.0 ± 0.0", "1,000 ± 0", "700 ± 0"]
    assert comparison.text_rows() == [
        ["0.1", "2", "0,1", "60.00 ± 14.14%", "50.00 ± 14.14%", *same],
        ["0.2", "2", "0,1", "85.00 ± 7.07%", "75.00 ± 7.07%", *same],
    ]
    assert comparison.note() == "not finished, left out: stbp.decay=0.3 seed=0 (FAILED)"


def test_csv_has_a_mean_and_a_std_column_per_measure(comparison, tmp_path) -> None:
    path = tmp_path / "table.csv"
    write_csv(comparison, path)
    with path.open() as file:
        rows = list(csv.DictReader(file))
    assert [r["stbp.decay"] for r in rows] == ["0.1", "0.2"]
    assert float(rows[0]["best val/acc mean"]) == pytest.approx(0.6)
    assert float(rows[1]["best val/acc std"]) == pytest.approx(0.0707, abs=1e-4)
    assert rows[0]["seeds"] == "0 1"


def test_markdown_is_a_table_with_title_and_note(comparison) -> None:
    lines = markdown(comparison).splitlines()
    assert lines[0].startswith("**sweep abcd1234: 4 finished runs, 2 rows")
    assert lines[2].startswith("| stbp.decay | runs | seeds | best val/acc |")
    assert lines[3] == "| " + " | ".join(["---"] * 9) + " |"
    assert lines[4].startswith("| 0.1 | 2 | 0,1 | 60.00 ± 14.14% |")
    assert lines[-1].startswith("not finished, left out:")


def test_plot_writes_a_png(comparison, tmp_path: Path) -> None:
    path = tmp_path / "acc.png"
    plot(comparison, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_needs_a_varied_param(tmp_path: Path) -> None:
    only_seeds = Comparison.of(
        Target("sweep", "s", [run("0.1", "0", 0.5), run("0.1", "1", 0.6)])
    )
    with pytest.raises(QueryError, match="nothing varies"):
        plot(only_seeds, tmp_path / "x.png")


def test_derived_data_params_are_no_columns_and_the_table_fits(tmp_path) -> None:
    """``data.*`` params vary with the data, not the config: no columns. At 120
    characters the least important measures go, and the caption says so."""
    from rich.console import Console

    from snnrun.track.comparison import rich_table

    rows = [run(d, s, 0.5 + 0.1 * int(s)) for d in ("0.1", "0.2") for s in ("0", "1")]
    for row in rows:
        row.params["data.files_sha256"] = "hash-" + row.params["stbp.decay"]
        row.metrics.update({"synops/total": 123456.0, "energy/snn_nj": 111.1})
        row.metrics.update({"test/acc": 0.5, "test/acc_at_best_val": 0.5})
    comparison = Comparison.of(Target("sweep", "s", rows))
    assert comparison.keys == ["stbp.decay"]
    assert {"SynOps", "energy nJ"} <= set(comparison.header)
    console = Console(width=120, record=True, file=(tmp_path / "out.txt").open("w"))
    console.print(rich_table(comparison, 120))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 120
    assert "SynOps" in text and "123,456" in text
    assert "not shown at this width (see --csv/--md): peak MB" in text
    wide = Console(width=250, record=True, file=(tmp_path / "wide.txt").open("w"))
    wide.print(rich_table(comparison, 250))
    assert "not shown" not in wide.export_text()
