"""``docs/config.md``: every config key, its default and a one-line description.

The descriptions come from the ``Attributes:`` sections of the schema dataclasses
(``app/schema.py``) and of the dataset and architecture configs (``data/*.py``,
``models/*.py``), so they live beside the fields they describe. A test regenerates the
page and compares it with the checked-in file, and fails when a key has no description.

Regenerate: ``python -m snnrun.app.config_docs > docs/config.md``.

The config-group table of ``docs/architecture.md`` (between the ``GROUPS_BEGIN`` and
``GROUPS_END`` markers) is generated from ``conf/`` the same way:
``python -m snnrun.app.config_docs --architecture`` rewrites it in place.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from snnrun.app.schema import TrainConfig, config_dir
from snnrun.data.registry import DATASETS
from snnrun.models import ARCHS

TITLE = """# Config keys

Generated from the schema dataclasses by `python -m snnrun.app.config_docs >
docs/config.md`; `tests/app/test_help.py` fails when this page is stale. Set any key on
the command line (`snnrun train stbp.decay=0.3`); `snnrun train --help` lists the groups
and their options, `snnrun train --cfg job` prints the composed config.
"""
_ENTRY = re.compile(r"^(\w+): (.*)$")
GROUPS_BEGIN = "<!-- GROUPS_BEGIN: generated from conf/ by config_docs.py -->"
GROUPS_END = "<!-- GROUPS_END -->"


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name → its description, one line, from the class's ``Attributes:``."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    docs: dict[str, str] = {}
    current = None
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the section ended
        entry = _ENTRY.match(line.strip()) if line.startswith("    ") else None
        if entry and not line.startswith("     "):
            current = entry[1]
            docs[current] = entry[2]
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def notes(cls: type) -> list[str]:
    """The paragraphs after the class's ``Attributes:`` section (what its "see below"
    points to), one line each, with Markdown's single backticks."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    if "Attributes:" not in [line.strip() for line in lines]:
        return []
    start = [line.strip() for line in lines].index("Attributes:") + 1
    while start < len(lines) and (not lines[start] or lines[start].startswith(" ")):
        start += 1
    paragraphs = " ".join(
        line.strip() if line.strip() else "\n" for line in lines[start:]
    ).split("\n")
    return [" ".join(p.split()).replace("``", "`") for p in paragraphs if p.strip()]


def _default(field: dataclasses.Field) -> str:
    if field.default_factory is not dataclasses.MISSING:
        value: Any = field.default_factory()
    elif field.default is dataclasses.MISSING or field.default == "???":
        return "(group)"
    else:
        value = field.default
    if isinstance(value, Enum):
        value = value.value
    if dataclasses.is_dataclass(value):
        return "(group)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, description)`` for every field, nested dataclasses expanded."""
    docs = attribute_docs(cls)
    out = []
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        out.append((key, _default(field), docs.get(field.name, "")))
    return out


def _cell(text: str) -> str:
    """Markdown table cell: no column breaks, no stray HTML tags."""
    return text.replace("|", "\\|").replace("<", "\\<")


def _table(title: str, cls: type, prefix: str) -> list[str]:
    lines = [f"## {title}", "", "| key | default | description |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {_cell(text)} |" for k, d, text in rows(cls, prefix)]
    lines.append("")
    for paragraph in notes(cls):
        lines += [paragraph, ""]
    return lines


def sections() -> list[tuple[str, type, str]]:
    """``(title, dataclass, key prefix)`` for every table on the page."""
    out: list[tuple[str, type, str]] = [("Run-wide keys", TrainConfig, "")]
    for field in dataclasses.fields(TrainConfig):
        factory = field.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            out.append((f"`{field.name}`", factory, f"{field.name}."))
    for group, registry in (("dataset", DATASETS), ("arch", ARCHS)):
        for name, (schema, _build) in sorted(registry.items()):
            out.append((f"`{group}={name}`", schema, f"{group}."))
    return out


def undocumented() -> list[str]:
    """Keys whose dataclass has no description for them."""
    return [
        key
        for _title, cls, prefix in sections()
        for key, _default, text in rows(cls, prefix)
        if not text
    ]


def render() -> str:
    """The whole page."""
    lines = [TITLE]
    for title, cls, prefix in sections():
        lines += _table(title, cls, prefix)
    return "\n".join(lines).rstrip("\n") + "\n"


def conf_groups(conf: Path | None = None) -> dict[str, list[str]]:
    """Every folder under ``conf/`` holding YAML files (``hydra/launcher`` too) →
    its option names."""
    root = config_dir() if conf is None else conf
    groups = {
        folder.relative_to(root).as_posix(): sorted(
            p.stem for p in folder.glob("*.yaml")
        )
        for folder in root.rglob("*")
        if folder.is_dir()
    }
    return {group: names for group, names in sorted(groups.items()) if names}


def groups_block(conf: Path | None = None) -> str:
    """The generated table of config groups, markers included."""
    lines = [GROUPS_BEGIN, "", "| group (`conf/<group>/`) | options |", "|---|---|"]
    for group, names in conf_groups(conf).items():
        lines.append(f"| `{group}` | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join([*lines, "", GROUPS_END])


def with_groups_block(page: str, conf: Path | None = None) -> str:
    """``page`` with its generated block replaced by the current one."""
    start, end = page.index(GROUPS_BEGIN), page.index(GROUPS_END) + len(GROUPS_END)
    return page[:start] + groups_block(conf) + page[end:]


def main(argv: list[str]) -> None:
    if argv == ["--architecture"]:
        page = Path("docs/architecture.md")
        page.write_text(with_groups_block(page.read_text()))
    else:
        sys.stdout.write(render())


if __name__ == "__main__":
    main(sys.argv[1:])
