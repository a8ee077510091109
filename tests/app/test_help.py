"""`snnrun train --help` and docs/config.md: real choices only, every key described."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from snnrun.app import config_docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def group_line(text: str, group: str) -> list[str]:
    match = re.search(rf"^  {re.escape(group)}: (.*)$", text, re.M)
    assert match, f"no line for {group} in:\n{text}"
    return match[1].split(", ")


def test_help_lists_real_choices_launchers_and_sweepers(run_cli) -> None:
    done = run_cli("train", "--help")
    assert done.returncode == 0, done.stderr
    groups = done.stdout.split("Default config")[0]
    assert "_schema" not in groups and "schema:" not in groups
    assert group_line(groups, "dataset") == ["detection", "mnist", "nmnist"]
    assert group_line(groups, "stbp") == [
        "code",
        "default",
        "paper_detection",
        "paper_mnist",
        "paper_nmnist",
    ]
    launchers = group_line(groups, "hydra/launcher")
    assert {"basic", "local_pool", "slurm", "joblib", "submitit_local"} <= set(
        launchers
    )
    assert {"basic", "optuna"} <= set(group_line(groups, "hydra/sweeper"))
    assert "\n  reproduce:" not in groups  # rows of `snnrun reproduce`, not a group
    assert "docs/config.md" in done.stdout


def test_an_unknown_option_lists_only_real_choices(run_cli) -> None:
    done = run_cli("train", "dataset=mnsit", "--cfg", "job")
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "mnist" in text and "nmnist" in text
    assert "_schema" not in text
    assert "Traceback" not in text


def test_the_config_page_is_current_and_describes_every_key() -> None:
    assert config_docs.undocumented() == []
    on_disk = (DOCS / "config.md").read_text()
    assert on_disk == config_docs.render(), (
        "docs/config.md is stale: python -m snnrun.app.config_docs > docs/config.md"
    )
    for key in ("stbp.decay", "paths.output_root", "dataset.bin_ms", "arch.spec"):
        assert f"| `{key}` |" in on_disk


def test_attribute_docs_reads_multi_line_entries_and_stops_at_the_section_end() -> None:
    @dataclass
    class Example:
        """Title.

        Attributes:
            alpha: first line
                continues here.
            beta: one line.

        Note:
            gamma: not an attribute.
        """

        alpha: int = 1
        beta: int = 2
        gamma: int = 3

    assert config_docs.attribute_docs(Example) == {
        "alpha": "first line continues here.",
        "beta": "one line.",
    }
    assert [k for k, _d, text in config_docs.rows(Example) if not text] == ["gamma"]


def test_every_see_below_has_its_note_on_the_page() -> None:
    """A key whose description says "see below" has a paragraph on the page that
    starts with its name (the notes after the dataclass's ``Attributes:``)."""
    page = (DOCS / "config.md").read_text()
    pointed = 0
    for _title, cls, prefix in config_docs.sections():
        notes = config_docs.notes(cls)
        for key, _default, text in config_docs.rows(cls, prefix):
            if "see below" not in text:
                continue
            pointed += 1
            name = key.removeprefix(prefix)
            found = [n for n in notes if n.startswith(f"`{name}")]
            assert found, f"{key} says 'see below' but no note follows its table"
            assert found[0] in page
    assert pointed >= 4  # trainer.compile, precision, event_products, test_every, ...
