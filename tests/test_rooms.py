"""The dependency rules of design.md §3, checked on the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snnrun"

# room → top-level modules it must never import (snnrun rooms as "snnrun.<room>")
FORBIDDEN = {
    "snn": {
        "numpy",
        "hydra",
        "omegaconf",
        "mlflow",
        "rich",
        "snnrun.data",
        "snnrun.models",
        "snnrun.train",
        "snnrun.track",
        "snnrun.app",
    },
    "data": {
        "hydra",
        "omegaconf",
        "mlflow",
        "rich",
        "snnrun.models",
        "snnrun.train",
        "snnrun.track",
        "snnrun.app",
    },
    "models": {
        "hydra",
        "omegaconf",
        "mlflow",
        "rich",
        "snnrun.data",
        "snnrun.train",
        "snnrun.track",
        "snnrun.app",
    },
    "train": {
        "hydra",
        "omegaconf",
        "mlflow",
        "rich",
        "snnrun.track",
        "snnrun.app",
        "snnrun.data",
    },
    "track": {"hydra", "omegaconf", "snnrun.app"},
    "export": {
        "hydra",
        "omegaconf",
        "mlflow",
        "rich",
        "snnrun.app",
        "snnrun.track",
        "snnrun.train",
        "snnrun.data",
    },
}
ADVICE = {
    "train": "emit an event and handle it in track/",
    "snn": "keep the spiking core to torch and the standard library",
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(room: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for name in imports(path):
            for banned in FORBIDDEN[room]:
                if name == banned or name.startswith(banned + "."):
                    found.append(
                        f"{path.relative_to(PACKAGE)} imports {name}: "
                        f"{ADVICE.get(room, 'move it to app/')}"
                    )
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_only_what_it_may(room: str) -> None:
    assert violations(room) == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom rich.console import Console\n")
    assert {"mlflow", "rich.console"} <= imports(bad)
