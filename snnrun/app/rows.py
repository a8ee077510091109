"""Reproduction rows as data: ``conf/reproduce/<row>.yaml`` → :class:`Row`.

Light on purpose (OmegaConf only, no MLflow or torch): ``snnrun reproduce`` judges a
row with it, and the GPU scripts (``benchmarks/gpu.sh``, ``gpu_summary.py``) read the
same rows where MLflow is not installed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from snnrun.app.schema import config_dir


class ReproduceError(RuntimeError):
    """A bad row name or argument, or runs that cannot be found; the message says why."""


@dataclass(frozen=True)
class Row:
    """One reproduction row (``conf/reproduce/<name>.yaml``), quick or full."""

    name: str
    title: str
    experiment: str
    paper_acc: float
    evidence: str
    band: tuple[float, float]
    seeds: list[int]
    data: str
    overrides: list[str] = field(default_factory=list)
    quick: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (quick)" if self.quick else self.name


def rows_dir() -> Path:
    """The folder of the rows (``conf/reproduce`` of the checkout or the wheel)."""
    return config_dir() / "reproduce"


def row_names() -> list[str]:
    """The rows' names, sorted (``mnist-mlp``, …)."""
    return sorted(path.stem for path in rows_dir().glob("*.yaml"))


def load_row(name: str, quick: bool) -> Row:
    """The row ``name``; ``quick`` takes its ``quick`` seeds, band, data and overrides."""
    path = rows_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ReproduceError(
            f"no reproduction row '{name}'; choose one of {', '.join(row_names())}"
        )
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if quick:
        data.update(data.pop("quick"))
    else:
        data.pop("quick", None)
    band = tuple(float(v) for v in data.pop("band"))
    return Row(name=name, band=band, quick=quick, **data)


def mean_std(values: list[float]) -> str:
    """Accuracies in percent → ``"98.71 ± 0.05% (n=3)"`` (std 0 for one value)."""
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}% (n={len(values)})"
