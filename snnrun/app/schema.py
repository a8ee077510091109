"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

Each group option's YAML (``conf/<group>/<option>.yaml``) starts from one of these
schemas, so a typo (``stbp.decy=0.3``) or a wrong type (``stbp.time_steps=ten``) fails
during composition, before any tensor exists. Closed choices are ``Enum``s (OmegaConf
2.3 rejects ``Literal``). Value *ranges* (``time_steps > 0``, ``decay`` in [0, 1)) are
checked by the objects that own them (``LIFParams.validate``, the dataset builders)
when ``app/build.py`` creates them — still before any training tensor is allocated.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from snnrun.data.registry import DATASETS
from snnrun.models import ARCHS
from snnrun.snn import lif, surrogate

# Optional[...] rather than `X | None`: OmegaConf reads the annotations at runtime.
# ruff: noqa: UP045


def work_dir() -> Path:
    """The folder relative defaults hang from: the current directory.

    ``paths.output_root`` (``./outputs``, with the MLflow store ``outputs/mlflow.db``)
    and the default data root (``./data``) live where the user runs ``snnrun``, never
    inside the installed package or the checkout it came from.
    """
    return Path.cwd()


# Kept for callers written when outputs lived in the checkout (``snnrun compare``'s
# default store): it now means the current directory, like ``paths.root``.
project_root = work_dir


def checkout_conf() -> Path | None:
    """``conf/`` of the source checkout this package was imported from, if any
    (``pip install -e .`` or ``PYTHONPATH=<checkout>``)."""
    checkout = Path(__file__).resolve().parents[2]
    conf = checkout / "conf"
    if (checkout / "setup.cfg").is_file() and (conf / "train.yaml").is_file():
        return conf
    return None


def _packaged_conf() -> Path:
    """``snnrun/conf`` inside an installed wheel (``setup.py`` maps ``conf/`` there)."""
    return Path(str(importlib.resources.files("snnrun") / "conf"))


def config_dir() -> Path:
    """Absolute path of the config folder; a clear error when the install lost it.

    A checkout's top-level ``conf/`` is the one source of truth and wins; an installed
    wheel carries a copy of it as package data in ``snnrun/conf``.
    """
    checkout = checkout_conf()
    if checkout is not None:
        return checkout
    packaged = _packaged_conf()
    if not (packaged / "train.yaml").is_file():
        raise FileNotFoundError(
            f"snnrun's config folder {packaged} is missing: this install of snnrun is "
            "incomplete; reinstall it (`pip install --force-reinstall snnrun`) or use "
            "a checkout with `pip install -e .`"
        )
    return packaged


def _choices(name: str, core: type[Enum]) -> type[Enum]:
    """A config enum whose member *names* are the values users type (OmegaConf matches
    names), built from the spiking core's own enum so the choices live in one place."""
    return Enum(name, {member.value: member.value for member in core}, type=str)


ResetForm = _choices("ResetForm", lif.ResetForm)
SpikeCmp = _choices("SpikeCmp", lif.SpikeCmp)
Surrogate = _choices("Surrogate", surrogate.Surrogate)
Backend = _choices("Backend", lif.Backend)


class LossForm(str, Enum):
    """``paper``: 1/(2S)·Σ‖y−r‖²; ``mean``: 1/(S·C)·Σ‖y−r‖² (torch MSELoss)."""

    paper = "paper"
    mean = "mean"


class OptimName(str, Enum):
    adam = "adam"
    sgd = "sgd"


class LoggerName(str, Enum):
    mlflow = "mlflow"
    none = "none"


class ProgressMode(str, Enum):
    """``auto``: bars on a terminal, log lines otherwise."""

    auto = "auto"
    rich = "rich"
    plain = "plain"
    off = "off"


@dataclass
class STBPConfig:
    """Neuron and gradient hyper-parameters (names as in ../shared/docs/stbp.md)."""

    threshold: float = 0.5
    decay: float = 0.2
    time_steps: int = 10
    reset_form: ResetForm = ResetForm.exp
    spike_cmp: SpikeCmp = SpikeCmp.ge
    surrogate: Surrogate = Surrogate.h1
    surrogate_a: float = 1.0
    detach_reset: bool = False
    td_grad: bool = True
    loss_form: LossForm = LossForm.paper
    backend: Backend = Backend.fused


@dataclass
class OptimConfig:
    """Optimiser and LR schedule (×gamma after each epoch in ``milestones``)."""

    name: OptimName = OptimName.adam
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class LoggerConfig:
    """Where runs are tracked. ``experiment`` None → the dataset's name."""

    name: LoggerName = LoggerName.mlflow
    tracking_uri: str = "sqlite:///${paths.output_root}/mlflow.db"
    experiment: Optional[str] = None
    run_name: Optional[str] = None
    log_checkpoints: bool = True


@dataclass
class TrainerConfig:
    """Loop settings. ``max_batches``/``max_eval_batches`` cap an epoch (debug runs).

    ``compile``: run the network's forward and backward through ``torch.compile``
    (inductor; needs a C++ compiler on the CPU, Triton on CUDA). Same math; float
    rounding may flip a spike where |u − V_th| ≈ 1e-5. Compiling happens in epoch 1
    (tens of seconds on a CPU, once per batch shape), so it pays on long runs only;
    measured gains in ``benchmarks/results/``. See ``snnrun/app/speed.py``.

    ``test_every``: evaluate the test split (``test/*``, reported, never selected on)
    every N epochs; 0: only after the last epoch and after each epoch whose
    validation accuracy is a new best (that gives ``test/acc_at_best_val``).
    """

    epochs: int = 5
    batch_size: int = 100
    eval_batch_size: int = 500
    max_batches: Optional[int] = None
    max_eval_batches: Optional[int] = None
    eval_repeats: int = 1
    test_every: int = 1
    checkpoint: bool = True
    progress: ProgressMode = ProgressMode.auto
    log_every: int = 100
    num_threads: Optional[int] = None
    detect_anomaly: bool = False
    compile: bool = False


@dataclass
class PathsConfig:
    """Folders, relative to the current directory unless set absolute.

    ``data_root`` follows ``SNNRUN_DATA`` when that is set.
    """

    root: str = "${snnrun_cwd:}"
    data_root: str = "${oc.env:SNNRUN_DATA,${paths.root}/data}"
    output_root: str = "${paths.root}/outputs"
    cache_root: str = "${paths.output_root}/cache"


@dataclass
class SweepConfig:
    """Multirun behaviour (``app/sweep.py``): ``force`` reruns a job even when a
    finished run in the same experiment has the identical config."""

    force: bool = False


@dataclass
class TrainConfig:
    """Root of ``snnrun train``: one field per config group plus run-wide keys."""

    dataset: Any = MISSING
    arch: Any = MISSING
    stbp: STBPConfig = field(default_factory=STBPConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0
    device: str = "auto"
    tags: dict[str, str] = field(default_factory=dict)
    # Continue an interrupted run: its folder, its MLflow run id, or "auto" (newest).
    resume: Optional[str] = None


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    # snnrun_project_root: the old name, still in configs saved by older checkpoints
    for resolver in ("snnrun_cwd", "snnrun_project_root"):
        if not OmegaConf.has_resolver(resolver):
            OmegaConf.register_new_resolver(resolver, lambda: str(work_dir()))
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, registry in (("dataset", DATASETS), ("arch", ARCHS)):
        for name, (schema, _build) in registry.items():
            cs.store(group=group, name=f"{name}_schema", node=schema)
    cs.store(group="stbp", name="stbp_schema", node=STBPConfig)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
