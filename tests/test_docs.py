"""The docs that are generated or link-checked: they cannot go stale silently."""

from __future__ import annotations

import re
from pathlib import Path

from snnrun.app import config_docs

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("snn", "data", "models", "train", "track", "app", "export", "bench")


def test_architecture_lists_the_config_groups_of_conf() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    assert config_docs.with_groups_block(page) == page, (
        "docs/architecture.md is stale: python -m snnrun.app.config_docs --architecture"
    )
    for group in ("dataset", "arch", "stbp", "hydra/launcher", "experiment"):
        assert f"| `{group}` |" in page


def test_the_groups_block_follows_conf(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "dataset" / "mnist.yaml").write_text("name: mnist\n")
    (conf / "hydra" / "sweeper").mkdir(parents=True)
    (conf / "hydra" / "sweeper" / "mine.yaml").write_text("{}\n")
    (conf / "empty").mkdir()
    assert config_docs.conf_groups(conf) == {
        "dataset": ["mnist"],
        "hydra/sweeper": ["mine"],
    }
    page = f"a\n{config_docs.GROUPS_BEGIN}\nold\n{config_docs.GROUPS_END}\nb\n"
    fresh = config_docs.with_groups_block(page, conf)
    assert "old" not in fresh and "| `hydra/sweeper` | `mine` |" in fresh
    assert fresh.startswith("a\n") and fresh.endswith("\nb\n")


def test_architecture_names_every_room_and_extension_point() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    packages = {
        p.name for p in (REPO / "snnrun").iterdir() if (p / "__init__.py").exists()
    }
    assert packages == set(ROOMS)
    for room in ROOMS:
        assert f"`snnrun/{room}/`" in page
    for anchor in ("BACKENDS", "backends.py", "fused.py", "DATASETS", "ARCHS", "Hook"):
        assert anchor in page


def test_user_docs_link_only_inside_the_repository() -> None:
    """A clone has no ../shared: links must resolve inside the repository."""
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        assert "shared/docs" not in text, page
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}"
    readme = (REPO / "README.md").read_text()
    assert "(docs/model.md)" in readme and "(docs/architecture.md)" in readme
    model = (REPO / "docs" / "model.md").read_text()
    for needle in ("h1(u)", "h4(u)", "u[t,n] = f(o[t-1,n])", "98.89%", "[U]", "[3P]"):
        assert needle in model
