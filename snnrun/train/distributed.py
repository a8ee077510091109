"""Data-parallel training under ``torchrun``: process group, rank info, run-folder pin.

``torchrun --nproc_per_node=N -m snnrun train ...`` starts N copies of ``snnrun
train``; each finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment
(:func:`from_env`), so there is no config key for the number of processes: torchrun
decides it, and a plain ``snnrun train`` stays one process. The backend is gloo for CPU
tensors and, where CUDA and NCCL exist, NCCL for CUDA tensors (one group,
``"cpu:gloo,cuda:nccl"``); each rank uses ``cuda:LOCAL_RANK`` (``device=auto|cuda``).

**One run folder.** Hydra names it with ``${now:...}``, which each process reads from
its own clock. So rank 0 alone composes first; from inside its Hydra job it sends its
run folder (:func:`publish_run_dir`) to the other ranks, which wait for it *before*
Hydra starts (:func:`receive_run_dir`) and then compose with
:func:`follower_overrides`: the same folder, no second ``.hydra/``, and their own log
file ``train_rank<r>.log`` beside rank 0's ``train.log``. Anything that overrides
``hydra.run.dir`` keeps working: rank 0's resolved folder is what travels.

**Random streams.** Weights start equal on every rank (same seed; DDP also broadcasts
rank 0's parameters). Data order is BatchLoader's ``(seed, epoch)`` permutation,
sharded by rank. Encoder generators are reseeded per rank (:func:`split_streams`), so
each rank draws its own Bernoulli noise: a DDP run therefore equals a one-process run
on the same global batch only up to that noise (exactly, up to float summation order,
for frame data such as N-MNIST).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from snnrun.seeding import derive_seed

log = logging.getLogger(__name__)


# Hydra flags that print something and exit without running a job: under torchrun
# every rank just runs them alone (no process group, nothing to pin).
EXITS_BEFORE_JOB = frozenset(
    {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}
    | {"--shell-completion", "-sc"}
)
MULTIRUN_FLAGS = frozenset({"--multirun", "-m"})


class LaunchError(RuntimeError):
    """A torchrun launch snnrun cannot run; the message says what to do instead."""


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in a data-parallel job.

    Attributes:
        rank: global index of this process, in ``[0, world_size)``.
        world_size: number of processes training together (1: no DDP).
        local_rank: index on this machine; picks ``cuda:<local_rank>``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, tracks and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process trains together."""
        return self.world_size > 1


def from_env(environ: Mapping[str, str] | None = None) -> RankInfo:
    """The rank torchrun gave this process (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).

    Without those variables (a plain ``snnrun train``): rank 0 of 1.
    """
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise LaunchError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({error}); launch with "
            "torchrun --nproc_per_node=N -m snnrun train ..."
        ) from error
    if world_size < 1 or not 0 <= rank < world_size:
        raise LaunchError(
            f"RANK={rank}, WORLD_SIZE={world_size}: need 0 <= RANK < WORLD_SIZE"
        )
    return RankInfo(rank, world_size, local_rank)


def current() -> RankInfo:
    """The rank of the initialised process group, else rank 0 of 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return RankInfo()
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return RankInfo(rank, dist.get_world_size(), local_rank)


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that logs and saves."""
    return current().is_main


def backend() -> str:
    """``gloo`` for CPU tensors, plus ``nccl`` for CUDA tensors where both exist."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def check_launch(args: Sequence[str]) -> None:
    """Refuse what a torchrun launch cannot do: a Hydra multirun (``-m``).

    Raises:
        LaunchError: naming the alternative.
    """
    if MULTIRUN_FLAGS & set(args) or "hydra.mode=MULTIRUN" in args:
        raise LaunchError(
            "a sweep (-m) cannot run under torchrun: run one torchrun per job, e.g. "
            "`for d in 0.1 0.2; do torchrun ... -m snnrun train stbp.decay=$d; done`"
        )
    if not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        raise LaunchError(
            "WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set: launch with "
            "torchrun --nproc_per_node=N -m snnrun train ..."
        )


def exits_before_job(args: Sequence[str]) -> bool:
    """Hydra only prints (``--cfg job``, ``--help`` ...): no training, no group."""
    return bool(EXITS_BEFORE_JOB & set(args))


def init(info: RankInfo) -> None:
    """Join the process group torchrun set up (``env://``); pin this rank's GPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend(), rank=info.rank, world_size=info.world_size, init_method="env://"
    )
    log.debug("rank %d of %d joined (%s)", info.rank, info.world_size, backend())


def teardown() -> None:
    """Leave the process group (idempotent, also after a failure)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- the run folder -----------------------------------------------------------------

_published = False


def publish_run_dir(run_dir: Path | None) -> None:
    """Rank 0 sends its run folder to the waiting ranks; once, else a no-op.

    ``None`` tells them rank 0 stopped before its job began (a config error), so they
    exit instead of waiting. Does nothing outside a process group or on other ranks.
    """
    global _published
    info = current()
    if _published or not info.is_distributed or not info.is_main:
        return
    _published = True
    dist.broadcast_object_list([None if run_dir is None else str(run_dir)], src=0)


def receive_run_dir() -> Path | None:
    """Ranks > 0: wait for rank 0's run folder (None: rank 0 failed to start)."""
    box: list[str | None] = [None]
    dist.broadcast_object_list(box, src=0)
    return None if box[0] is None else Path(box[0])


def follower_overrides(run_dir: Path, rank: int) -> list[str]:
    """Hydra overrides for rank > 0: rank 0's folder, no ``.hydra/``, own log file.

    Appended after the user's overrides, so they win over a user's ``hydra.run.dir``
    (Hydra keeps the last value of a key); rank 0's folder already reflects that.
    """
    quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")
    return [
        f"hydra.run.dir='{quoted}'",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_rank{rank}",
    ]


def quiet_console() -> None:
    """Ranks > 0: console shows warnings and errors only (their log file keeps all)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


# --- training helpers ---------------------------------------------------------------


def wrap_model(model: nn.Module, info: RankInfo) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when several ranks train, else as is.

    DDP broadcasts rank 0's parameters and averages the gradients of every backward
    over the ranks, so B/N samples per rank step like one process with B samples.
    """
    if not info.is_distributed:
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all ranks (a new tensor; same shape).

    Used for metric totals ``[loss·n, correct, n]`` (float64, on the compute device).
    Outside a process group: ``tensor`` itself.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def split_streams(generators: Iterable[torch.Generator | None], rank: int) -> None:
    """Give rank ``r`` > 0 its own random streams: ``derive_seed(initial, "rank/r")``.

    Rank 0 keeps the one-process streams. Call after a checkpoint is loaded too: the
    loaded state is rank 0's, whose ``initial_seed`` is the base again.
    """
    if rank == 0:
        return
    for generator in generators:
        if generator is not None:
            generator.manual_seed(derive_seed(generator.initial_seed(), f"rank/{rank}"))
