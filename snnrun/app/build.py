"""The one place that turns a composed config into objects.

Every range check happens here, before the first training tensor is allocated and
before a tracking run is opened, so bad values cost nothing and leave no stray run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from snnrun import seeding
from snnrun.data import ArraySplit, BuildContext, DataBundle, DataMeta
from snnrun.data.encoding import make_encoder
from snnrun.data.loader import BatchLoader
from snnrun.data.registry import DATASETS
from snnrun.models import ARCHS, SpikingNet
from snnrun.models.readout import RateReadout
from snnrun.seeding import derive_seed
from snnrun.snn.backends import resolve
from snnrun.snn.fused import disagreement
from snnrun.snn.layers import set_event_products
from snnrun.snn.lif import LIFParams
from snnrun.train import memory_plan
from snnrun.train.loop import Learner
from snnrun.train.memory_plan import MemoryPlan
from snnrun.train.speed import (
    CompileUnavailableError,
    check_compile_backend,
    compile_model,
    make_adam,
)

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and a valid value."""


class Loaders(NamedTuple):
    """Batches of the three splits; ``val`` is None when ``dataset.val_size=0``."""

    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader


@dataclass
class Parts:
    """Everything a training run needs, built from one config."""

    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    readout: RateReadout
    encoders: tuple
    loaders: Loaders
    device: torch.device

    def learner(self, model: nn.Module | None = None) -> Learner:
        """What the training loop takes of these parts; ``model``: a wrapper of
        :attr:`model` to train through instead (DistributedDataParallel)."""
        return Learner(
            self.model if model is None else model,
            self.optimizer,
            self.scheduler,
            self.readout,
            self.encoders,
            self.device,
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(
            f"device={name} is not a device: use auto, cpu or cuda"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available: use device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device={name} but MPS (Apple-silicon GPU) is not available on this "
            "machine: use device=cpu or device=auto"
        )
    return device


def seeded_generator(seed: int, stream: str, device: torch.device) -> torch.Generator:
    """A generator on ``device`` for one named random stream of this run
    (``snnrun/seeding.py``)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, stream))
    return generator


def lif_params(stbp: DictConfig) -> LIFParams:
    """The neuron parameters of the ``stbp`` group, range-checked."""
    if stbp.time_steps <= 0:
        raise ConfigError(
            f"stbp.time_steps={stbp.time_steps}: the number of time steps must be > 0"
        )
    # every field of the core's own definition, read from the group by name; a key
    # missing from an older saved config takes the core's default (e.g. backend)
    params = LIFParams(
        **{
            name: stbp.get(name, default)
            for name, default in LIFParams._field_defaults.items()
        }
    )
    try:
        return params.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from error


def check_backend(
    lif: LIFParams, device: torch.device, compiling: bool = False
) -> None:
    """The chosen ``stbp.backend`` must match the reference on this device, now."""
    if lif.backend == "auto":
        runs = resolve(lif.backend, device)
        note = (
            " (a registered operator inside trainer.compile's graph)"
            if (compiling and runs == "native")
            else ""
        )
        log.info("stbp.backend=auto runs as %s on %s%s", runs, device, note)
    problem = disagreement(lif, device, torch.float32)
    if problem is not None:
        raise ConfigError(
            f"stbp.backend={lif.backend} fails its start-up check on {device}: "
            f"{problem}. Train with stbp.backend=reference (same math, slower) and "
            "report this"
        )


def check_compile(device: torch.device) -> None:
    """``trainer.compile=true`` needs inductor's tool chain for ``device``."""
    try:
        check_compile_backend(device)
    except CompileUnavailableError as error:
        raise ConfigError(str(error)) from error


def check_threads(cfg: DictConfig) -> None:
    """``trainer.num_threads``: null (torch's default) or a positive count."""
    threads = cfg.trainer.num_threads
    if threads is not None and threads < 1:
        raise ConfigError(
            f"trainer.num_threads={threads} must be a positive number of CPU threads, "
            "or null for torch's default (one per core)"
        )


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def autocast_dtype(cfg: DictConfig) -> torch.dtype | None:
    """``trainer.precision`` as the loop's autocast dtype (None: float32 throughout;
    configs saved before the key existed are fp32)."""
    name = cfg.trainer.get("precision", "fp32")
    return PRECISIONS[str(getattr(name, "value", name))]


def check_trainer(cfg: DictConfig) -> None:
    """Ranges of the loop and optimiser settings."""
    check_threads(cfg)
    positive = {
        "trainer.epochs": cfg.trainer.epochs,
        "trainer.batch_size": cfg.trainer.batch_size,
        "trainer.eval_batch_size": cfg.trainer.eval_batch_size,
        "trainer.eval_repeats": cfg.trainer.eval_repeats,
        "optim.lr": cfg.optim.lr,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}={value} must be > 0")
    # nan passes "> 0" checks and inf passes torch's: both train silently into NaN.
    for key in ("lr", "gamma", "eps", "weight_decay", "momentum"):
        value = cfg.optim[key]
        if not math.isfinite(value):
            raise ConfigError(f"optim.{key}={value} must be a finite number")
    if cfg.optim.gamma <= 0:
        raise ConfigError(
            f"optim.gamma={cfg.optim.gamma} must be > 0: the learning rate is "
            "multiplied by it at each of optim.milestones; try 0.1"
        )
    if cfg.trainer.get("test_every", 1) < 0:
        raise ConfigError(
            f"trainer.test_every={cfg.trainer.test_every} must be >= 0 (0: test only "
            "after the last epoch and after each new best validation accuracy)"
        )
    plot_every = cfg.logger.get("plot_every", 0)
    if plot_every is not None and plot_every < 0:
        raise ConfigError(
            f"logger.plot_every={plot_every} must be >= 0 (0: plots after the last "
            "epoch only) or null (no plots)"
        )
    for key in ("max_batches", "max_eval_batches"):
        value = cfg.trainer[key]
        if value is not None and value <= 0:
            raise ConfigError(f"trainer.{key}={value} must be > 0 (or null for all)")


def build_data(cfg: DictConfig) -> DataBundle:
    """Load the dataset named by ``dataset.name`` (reads, verifies, maybe downloads)."""
    schema, build = DATASETS[cfg.dataset.name]
    context = BuildContext(
        data_root=Path(cfg.paths.data_root).expanduser().resolve(),
        cache_root=Path(cfg.paths.cache_root).expanduser().resolve(),
        time_steps=cfg.stbp.time_steps,
        generator=seeded_generator(cfg.seed, seeding.DATA, torch.device("cpu")),
    )
    return build(_to_dataclass(cfg.dataset, schema), context)


def build_model(cfg: DictConfig, data: DataBundle, lif: LIFParams) -> nn.Module:
    """The spiking network of ``arch``, sized by the data; init seeded by ``seed``."""
    return build_net(cfg, data.meta.in_shape, data.meta.num_classes, lif)


def build_net(
    cfg: DictConfig, in_shape: tuple[int, ...], num_classes: int, lif: LIFParams
) -> SpikingNet:
    """The network of ``arch`` for samples ``in_shape`` (one step) and C classes;
    the init is seeded by ``seed`` (a checkpoint's weights replace it)."""
    schema, build = ARCHS[cfg.arch.name]
    # Layer init draws from torch's global RNG; fork it so the run's seed fixes the
    # weights without leaving the global state changed for anyone else.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, seeding.INIT))
        try:
            net = build(
                _to_dataclass(cfg.arch, schema),
                in_shape=tuple(in_shape),
                num_classes=num_classes,
                lif=lif,
            )
        except ValueError as error:
            raise ConfigError(str(error)) from error
    # .get: configs saved before the key existed take the default
    set_event_products(net, bool(cfg.trainer.get("event_products", True)))
    return net


def net_facts(meta: DataMeta) -> dict[str, object]:
    """What a checkpoint keeps to rebuild its network without the dataset:
    ``in_shape`` (one step), ``num_classes`` and the input ``encoding``."""
    return {
        "in_shape": list(meta.in_shape),
        "num_classes": int(meta.num_classes),
        "encoding": str(meta.encoding),
    }


def build_optimizer(
    optim: DictConfig, model: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Adam or SGD plus the step schedule (×gamma after each milestone epoch)."""
    try:
        optimizer = _make_optimizer(optim, model)
    except ValueError as error:  # torch's own range checks (betas, eps, momentum ...)
        raise ConfigError(
            f"optim: {error} (torch rejects it; check optim.betas, optim.eps, "
            "optim.momentum and optim.weight_decay)"
        ) from error
    if not optim.milestones:
        return optimizer, None
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(optim.milestones), gamma=optim.gamma
    )
    return optimizer, scheduler


def _make_optimizer(optim: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (fused kernel where supported) or ``SGD``."""
    params = model.parameters()
    if optim.name == "adam":
        return make_adam(
            params,
            lr=optim.lr,
            betas=tuple(optim.betas),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
    return torch.optim.SGD(
        params,
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
    )


def build_parts(cfg: DictConfig, rank: int = 0, world_size: int = 1) -> Parts:
    """Config → data, model, optimiser, loss, encoders, loaders on the chosen device."""
    check_trainer(cfg)
    lif = lif_params(cfg.stbp)
    device = resolve_device(cfg.device)
    # .get: configs saved in checkpoints before the key existed lack it
    compile_net = bool(cfg.trainer.get("compile", False))
    if compile_net:
        check_compile(device)
    # data, architecture and optimiser first: their errors come out in seconds, not
    # after the first run's C++ build that checking the backend may start (~1 min)
    data = build_data(cfg)
    model = build_model(cfg, data, lif).to(device)
    optimizer, scheduler = build_optimizer(cfg.optim, model)
    check_backend(lif, device, compiling=compile_net)
    if compile_net:
        compile_model(model, device)
    readout = RateReadout(str(getattr(cfg.stbp.loss_form, "value", cfg.stbp.loss_form)))

    encoders = tuple(
        make_encoder(
            data.meta.encoding,
            cfg.stbp.time_steps,
            seeded_generator(cfg.seed, stream, device),
        )
        for stream in (
            seeding.TRAIN_ENCODING,
            seeding.VAL_ENCODING,
            seeding.TEST_ENCODING,
        )
    )
    loaders = _make_loaders(cfg, data, rank, world_size)
    return Parts(data, model, optimizer, scheduler, readout, encoders, loaders, device)


def check_memory(parts: Parts, cfg: DictConfig) -> MemoryPlan:
    """Profile one forward of the first training batch; stop before training when
    the estimated peak does not fit the device, naming the largest batch that does.

    Uses its own encoder stream, so the run's random draws are untouched."""
    x, _ = next(iter(parts.loaders.train.iter_from(0)))
    generator = seeded_generator(cfg.seed, "probe/memory", parts.device)
    encoder = make_encoder(parts.data.meta.encoding, cfg.stbp.time_steps, generator)
    estimate = memory_plan.plan(parts.model, encoder(x.to(parts.device)), parts.device)
    if not estimate.fits():
        largest = estimate.largest_batch()
        advice = (
            f"trainer.batch_size={largest} fits (or lower stbp.time_steps)"
            if largest > 0
            else "no batch size fits: lower stbp.time_steps or use a smaller network"
        )
        raise ConfigError(
            f"this run needs about {estimate.peak() / memory_plan.GIB:.2f} GiB on "
            f"{parts.device} (batch {estimate.batch}: "
            f"{estimate.activation_bytes / memory_plan.GIB:.2f} GiB kept for backward, "
            f"{estimate.fixed_bytes / memory_plan.GIB:.2f} GiB of parameters and "
            f"optimiser state) but only "
            f"{estimate.available_bytes / memory_plan.GIB:.2f} GiB is free: {advice}; "
            "trainer.memory_check=false skips this check"
        )
    return estimate


def _make_loaders(
    cfg: DictConfig, data: DataBundle, rank: int, world_size: int
) -> Loaders:
    """Shuffled training batches; validation and test in their stored order."""

    def loader(split: ArraySplit, batch_size: int, shuffle: bool) -> BatchLoader:
        return BatchLoader(
            split,
            batch_size,
            shuffle=shuffle,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
        )

    eval_size = cfg.trainer.eval_batch_size
    return Loaders(
        loader(data.train, cfg.trainer.batch_size, True),
        None if data.val is None else loader(data.val, eval_size, False),
        loader(data.test, eval_size, False),
    )


def _to_dataclass(node: DictConfig, schema: type) -> object:
    """A typed config node as its dataclass (the group's schema)."""
    obj = OmegaConf.to_object(node)
    return obj if isinstance(obj, schema) else schema(**obj)
