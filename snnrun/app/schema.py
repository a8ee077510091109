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
from omegaconf import MISSING, DictConfig, OmegaConf

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


class Precision(str, Enum):
    """``fp32``: everything in float32; ``bf16``: matrix products in bfloat16."""

    fp32 = "fp32"
    bf16 = "bf16"


class ProgressMode(str, Enum):
    """``auto``: bars on a terminal, log lines otherwise."""

    auto = "auto"
    rich = "rich"
    plain = "plain"
    off = "off"


@dataclass
class STBPConfig:
    """Neuron and gradient hyper-parameters (names as in docs/model.md).

    Attributes:
        threshold: V_th, the firing threshold, in units of u, > 0.
        decay: τ, the membrane leak factor per time step, in [0, 1) (> 0 for exp).
        time_steps: T, simulation steps per sample, > 0.
        reset_form: leak/reset f(o) of the previous spike: exp, τ·exp(−o/τ) (paper),
            or linear, τ·(1 − o) (the official code).
        spike_cmp: the threshold comparison of g: ge (u ≥ V_th) or gt (u > V_th).
        surrogate: surrogate derivative of the spike, h1 (rectangle) … h4 (see
            docs/model.md).
        surrogate_a: surrogate width a, > 0.
        detach_reset: drop the gradient through the reset term (the TD-reset path).
        td_grad: keep the temporal gradient paths; false = spatial-only ablation.
        loss_form: paper: 1/(2S)·Σ‖y−r‖²; mean: torch MSELoss, 1/(S·C)·Σ‖y−r‖².
        backend: auto (default: native on a CPU where the C++ kernel builds, also
            under trainer.compile=true, else reference), reference (autograd
            per step), fused (one autograd node per layer: less than half the
            activation memory), native (the fused loop in C++, CPU, built on first
            use, about a minute once) or triton (Triton kernels, CUDA); changes
            speed and memory, not the result.
    """

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
    backend: Backend = Backend.auto  # reference; fused; native (C++, CPU); triton


@dataclass
class OptimConfig:
    """Optimiser and LR schedule (×gamma after each epoch in ``milestones``).

    Attributes:
        name: adam or sgd.
        lr: learning rate.
        betas: Adam's (β1, β2).
        eps: Adam's ε.
        momentum: SGD momentum.
        weight_decay: L2 penalty added by the optimiser.
        milestones: epochs after which the learning rate is multiplied by gamma.
        gamma: the factor applied at each milestone.
    """

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
    """Where runs are tracked.

    Attributes:
        name: mlflow, or none (no tracking).
        tracking_uri: the MLflow store: sqlite:///<file> or an http(s) server.
        experiment: MLflow experiment; null: the dataset's name.
        run_name: MLflow run name; null: the overrides, else <dataset>-<arch>.
        log_checkpoints: upload the checkpoints as run artifacts.
        http_timeout_s: seconds one call to a tracking server may take (MLflow's
            MLFLOW_HTTP_REQUEST_TIMEOUT, set for the process): a server that
            disappears costs seconds, and the run goes on with its records kept in
            the run folder (snnrun sync).
        http_retries: retries of a failed call to a tracking server.
        http_backoff: backoff factor between those retries, seconds.
        plot_every: upload spike diagnostics (rasters, potential traces, firing-rate
            histograms, test confusion matrix) every N epochs and after the last
            one; 0: after the last epoch only; null: never.
    """

    name: LoggerName = LoggerName.mlflow
    tracking_uri: str = "sqlite:///${paths.output_root}/mlflow.db"
    experiment: Optional[str] = None
    run_name: Optional[str] = None
    log_checkpoints: bool = True
    http_timeout_s: int = 10
    http_retries: int = 2
    http_backoff: int = 1
    plot_every: Optional[int] = 0


@dataclass
class TrainerConfig:
    """Loop settings. ``max_batches``/``max_eval_batches`` cap an epoch (debug runs).

    Attributes:
        epochs: number of training epochs.
        batch_size: training samples per batch (per rank under torchrun).
        eval_batch_size: samples per batch when evaluating validation and test.
        max_batches: stop each training epoch after N batches; null: all.
        max_eval_batches: evaluate at most N batches; null: all.
        eval_repeats: evaluate each split N times (fresh encoding noise) and average.
        test_every: evaluate the test split every N epochs (see below).
        memory_check: estimate the peak memory before training; stop if it does not
            fit (see below).
        checkpoint: write checkpoints/last.pt and best.pt in the run folder.
        progress: auto (bars on a terminal, log lines otherwise), rich, plain or off.
        log_every: a progress log line every N batches (plain mode).
        num_threads: torch CPU threads; null: torch's default.
        detect_anomaly: autograd anomaly detection (slow; finds NaN sources).
        compile: run forward and backward through torch.compile (see below).
        precision: fp32, or bf16: the matrix products (Linear, Conv2d) in bfloat16
            under torch.autocast, membrane potentials and spikes in float32 (see
            below).
        event_products: Linear layers whose input is spikes sum only the weights of
            the nonzero inputs (CPU, C++; see below); false: dense products.

    ``compile``: run the network's forward and backward through ``torch.compile``
    (inductor; needs a C++ compiler on the CPU, Triton on CUDA). Same math; float
    rounding may flip a spike where |u − V_th| ≈ 1e-5. The C++ kernels (LIF loop,
    event products, pooling) are registered operators that the compiled graph
    calls. Compiling happens in epoch 1 (tens of seconds on a CPU, once per batch
    shape); on the CPU, training measured slower than the eager default on the MLP
    (which already runs the C++ kernels) and evaluation runs the eager one-pass path
    (the same spikes, no graph), so it is for CUDA and for experiments; measured in
    ``docs/performance.md``. See ``snnrun/train/speed.py``.

    ``precision=bf16``: opt-in mixed precision for GPUs with bfloat16 tensor cores
    (and CPUs with AMX/AVX512-BF16; elsewhere it is slower). The weights, the
    optimiser, the LIF recurrence (u, the threshold comparison, the surrogate) and
    the loss stay float32; only the synaptic input W·x + b is computed and rounded
    in bfloat16, so a spike can flip where |u − V_th| is within bf16's rounding.
    Accuracy against fp32: ``docs/performance.md``.

    ``event_products``: a Linear layer fed spikes (the rate-coded input, a hidden
    spike layer) on the CPU computes x·Wᵀ + b and its weight gradient over the
    nonzero entries of x only, in C++ (``snn/native_linear.cpp``), while at most 25%
    of x is nonzero (rate-coded MNIST: 13%; under compile as a registered
    operator); otherwise, on CUDA, under bf16, or without a C++ compiler, the dense
    product. For 0/1 spikes over T > 1 steps, the sums run over temporal deltas
    where that is shorter: each sample's majority pattern once, then per step only
    the inputs that differ from it (rate-coded MNIST: ~1/5 of the nonzeros, in the
    weight gradient too). Same math; the sums run in
    another order, so float rounding may flip a spike where |u − V_th| ≈ 1e-6, as
    with compile. Measured gains in ``docs/performance.md``.

    ``test_every``: evaluate the test split (``test/*``, reported, never selected on)
    every N epochs; 0: only after the last epoch and after each epoch whose
    validation accuracy is a new best (that gives ``test/acc_at_best_val``).

    ``memory_check``: before training, estimate the peak memory from one profiled
    forward and stop with the largest batch that fits if it does not
    (``snnrun/train/memory_plan.py``).
    """

    epochs: int = 5
    batch_size: int = 100
    eval_batch_size: int = 500
    max_batches: Optional[int] = None
    max_eval_batches: Optional[int] = None
    eval_repeats: int = 1
    test_every: int = 1
    memory_check: bool = True
    checkpoint: bool = True
    progress: ProgressMode = ProgressMode.auto
    log_every: int = 100
    num_threads: Optional[int] = None
    detect_anomaly: bool = False
    compile: bool = False
    precision: Precision = Precision.fp32
    event_products: bool = True


@dataclass
class PathsConfig:
    """Folders, relative to the current directory unless set absolute.

    Attributes:
        root: the folder the defaults below hang from: the current directory.
        data_root: datasets, one sub-folder each; $SNNRUN_DATA when set, else ./data.
        output_root: run folders and the MLflow store; ./outputs.
        cache_root: derived data (binned N-MNIST frames); <output_root>/cache.
    """

    root: str = "${snnrun_cwd:}"
    data_root: str = "${oc.env:SNNRUN_DATA,${paths.root}/data}"
    output_root: str = "${paths.root}/outputs"
    cache_root: str = "${paths.output_root}/cache"


@dataclass
class SweepConfig:
    """Multirun behaviour (``app/sweep.py``).

    Attributes:
        force: rerun a job even when a finished run in the same experiment has the
            identical config.
    """

    force: bool = False


@dataclass
class TrainConfig:
    """Root of ``snnrun train``: one field per config group plus run-wide keys.

    Attributes:
        dataset: the dataset group (dataset=mnist|nmnist|detection).
        arch: the architecture group (arch=mlp|cnn).
        stbp: neuron and gradient settings.
        optim: optimiser and schedule.
        logger: run tracking.
        trainer: loop settings.
        paths: folders.
        sweep: multirun behaviour.
        seed: seeds every random stream of the run (weights, encoding, order).
        device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 or mps.
        tags: extra MLflow tags, e.g. +tags.note=baseline.
        resume: continue an interrupted run: its folder, its MLflow run id, or auto
            (the newest).
    """

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


def todays_schema(saved: DictConfig) -> DictConfig:
    """The root schema with today's defaults, its dataset and arch nodes those of the
    options ``saved`` names (``arch: cnn`` gets the CNN schema): what a config saved
    by an older snnrun is completed with on resume."""
    schema = OmegaConf.structured(TrainConfig)
    for group, registry in (("dataset", DATASETS), ("arch", ARCHS)):
        name = OmegaConf.select(saved, f"{group}.name")
        if name in registry:
            schema[group] = OmegaConf.structured(registry[name][0])
    return schema


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    # snnrun_project_root: the old name, still in configs saved by older checkpoints
    for resolver in ("snnrun_cwd", "snnrun_project_root"):
        if not OmegaConf.has_resolver(resolver):
            OmegaConf.register_new_resolver(resolver, lambda: str(work_dir()))
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    # Schemas live in their own group, schema/<group>/<name>, so that they never show
    # up as choices of the group a user picks from (``dataset=``, ``arch=`` ...).
    # Group files extend them with ``- /schema/<group>/<name>@_here_``.
    for group, registry in (("dataset", DATASETS), ("arch", ARCHS)):
        for name, (schema, _build) in registry.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)
    cs.store(group="schema/stbp", name="stbp", node=STBPConfig)
    cs.store(group="schema/optim", name="optim", node=OptimConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
