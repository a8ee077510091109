"""The dependency rules between snnrun's rooms, checked on the source with ``ast``.

Rooms: ``snn`` (spiking core: torch only) ← ``models`` ← ``train`` (the loop, events
out through hooks) ← ``track`` (MLflow, rich, log files) and ``app`` (Hydra, the CLI
verbs, wiring). ``data`` stands beside ``snn``. ``ROOT`` is the top-level modules
(``cli.py``, ``seeding.py`` ...): they must start fast and stay light. See
docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snnrun"
ROOT = "(root)"
UI = {"mlflow", "rich", "matplotlib"}
CONFIG = {"hydra", "omegaconf"}

# room → modules it must never import (snnrun rooms as "snnrun.<room>")
FORBIDDEN: dict[str, set[str]] = {
    "snn": {"numpy", *CONFIG, *UI}
    | {f"snnrun.{r}" for r in ("data", "models", "train", "track", "app")},
    "data": {*CONFIG, *UI}
    | {f"snnrun.{r}" for r in ("snn", "models", "train", "track", "app")},
    "models": {*CONFIG, *UI}
    | {f"snnrun.{r}" for r in ("data", "train", "track", "app")},
    "train": {*CONFIG, *UI}
    | {f"snnrun.{r}" for r in ("models", "track", "app", "data")},
    # track draws the spike diagnostics and compare plots: matplotlib lives here
    "track": set(CONFIG) | {f"snnrun.{r}" for r in ("app", "data", "models", "snn")},
    "export": {*CONFIG, *UI}
    | {f"snnrun.{r}" for r in ("app", "track", "train", "data")},
    # bench times snnrun's own step, its rate encoder (data.encoding) included
    "bench": {*CONFIG, *UI, "snnrun.track"},
    "app": set(UI),
    ROOT: {*CONFIG, *UI, "torch"},
}

# (file under snnrun/, imported module) pairs exempt from FORBIDDEN, each with its
# reason. Today's code needs these; the test below keeps the list from growing.
ALLOWED: dict[tuple[str, str], str] = {
    ("train/loop.py", "snnrun.models.synops"): (
        "the loop counts synaptic operations while it evaluates (one pass, no "
        "second forward); no architecture code"
    ),
    ("data/encoding.py", "snnrun.snn.native"): (
        "the rate encoder's C++ pass is built into the one native extension that "
        "snn/native.py compiles and caches (one build, one cache, one fallback); "
        "no neuron, layer or model code"
    ),
}
# Raise only with a reason: a new UI import in app/ belongs in track/.
MAX_ALLOWED = 2

ADVICE = {
    "train": "emit an event and handle it in track/",
    "snn": "keep the spiking core to torch and the standard library",
    "app": "put MLflow/rich/matplotlib code in track/ and call it",
    ROOT: "import heavy modules lazily, inside the verb that needs them",
}


def module_name(path: Path, package: Path) -> list[str]:
    """``snnrun/app/eval.py`` → ``["snnrun", "app", "eval"]`` (packages without
    ``__init__``)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module or "")
                continue
            here = module_name(path, package)
            is_package = path.name == "__init__.py"
            base = here[: len(here) - node.level + (1 if is_package else 0)]
            names.add(".".join([*base, *([node.module] if node.module else [])]))
    return names


def room_files(room: str, package: Path) -> list[Path]:
    if room == ROOT:
        return sorted(package.glob("*.py"))
    return sorted((package / room).rglob("*.py"))


def violations(
    room: str,
    package: Path = PACKAGE,
    forbidden: dict[str, set[str]] = FORBIDDEN,
    allowed: dict[tuple[str, str], str] = ALLOWED,
) -> list[str]:
    found = []
    for path in room_files(room, package):
        where = path.relative_to(package).as_posix()
        for name in sorted(imports(path, package)):
            if (where, name) in allowed:
                continue
            for banned in forbidden[room]:
                if name == banned or name.startswith(banned + "."):
                    found.append(
                        f"{where} imports {name}: {ADVICE.get(room, 'move it to app/')}"
                    )
    return found


def test_every_room_has_rules() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert rooms | {ROOT} == set(FORBIDDEN)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_only_what_it_may(room: str) -> None:
    assert violations(room) == []


def test_the_allow_list_does_not_grow_and_has_no_stale_entries() -> None:
    assert len(ALLOWED) <= MAX_ALLOWED
    for where, name in ALLOWED:
        assert name in imports(PACKAGE / where), (
            f"stale: {where} no longer imports {name}"
        )


def synthetic_package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "snnrun"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_rules_catch_violations_in_a_synthetic_package(tmp_path: Path) -> None:
    package = synthetic_package(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": "import torch\nfrom . import app\n",
            "train/__init__.py": "",
            "train/loop.py": (
                "import mlflow\n"
                "from snnrun.models.mlp import MLP\n"
                "from snnrun.models.readout import predict\n"
                "from ..app import schema\n"
                "from .hooks import Hook\n"
            ),
            "snn/lif.py": "import numpy as np\nfrom ..data import idx\n",
            "app/new.py": "from rich.console import Console\nimport mlflow\n",
            "app/resume.py": "import mlflow\n",
        },
    )
    assert violations("train", package) == [
        "train/loop.py imports mlflow: emit an event and handle it in track/",
        "train/loop.py imports snnrun.app: emit an event and handle it in track/",
        "train/loop.py imports snnrun.models.mlp: emit an event and handle it in track/",
        # the readout is injected (train.loop.Learner); importing it is a violation
        "train/loop.py imports snnrun.models.readout: "
        "emit an event and handle it in track/",
    ]
    assert [v.split(":")[0] for v in violations("snn", package)] == [
        "snn/lif.py imports numpy",
        "snn/lif.py imports snnrun.data",
    ]
    assert [v.split(":")[0] for v in violations("app", package)] == [
        "app/new.py imports mlflow",
        "app/new.py imports rich.console",
        "app/resume.py imports mlflow",  # no longer allowed: it asks track/query
    ]
    assert [v.split(":")[0] for v in violations(ROOT, package)] == [
        "cli.py imports torch"
    ]
    # without its allow-list entry, the real import of the synaptic-operation
    # meter is a violation
    assert violations("train", allowed={}) == [
        "train/loop.py imports snnrun.models.synops: "
        "emit an event and handle it in track/",
    ]
