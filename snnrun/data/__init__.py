"""Datasets as in-memory tensors plus the metadata the model builder needs.

Every dataset module exposes ``<Name>Config`` (a plain dataclass, no Hydra) and
``build(cfg, ctx: BuildContext) -> DataBundle``; each carves its validation split from
its training set with ``snnrun.data.split.plan_train_val``. The registry ``DATASETS`` maps the
name a user types (``dataset=mnist``) to that pair; ``tests/`` checks it against
``conf/dataset/*.yaml`` so a forgotten piece fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

SHORT_HASH = 16
"""Hex digits of a hash kept in a dataset's provenance."""


class DataError(RuntimeError):
    """Bad or missing data. The message says what was wrong and how to fix it."""


def check_limits(cfg: object, unit: str) -> None:
    """Raise ``DataError`` unless ``cfg.train_limit`` and ``cfg.test_limit`` are each
    None (all) or a positive number of ``unit`` (``"images"``, ``"recordings"``)."""
    for key in ("train_limit", "test_limit"):
        limit = getattr(cfg, key)
        if limit is not None and limit < 1:
            raise DataError(
                f"dataset.{key}={limit}: must be a positive number of {unit}, or null "
                "for all of them"
            )


@dataclass(frozen=True)
class BuildContext:
    """What every dataset builder gets besides its own config.

    Attributes:
        data_root: folder holding one sub-folder per dataset (``mnist/``,
            ``nmnist-sample/`` ...); may be read-only. Set by ``paths.data_root`` or
            the environment variable ``SNNRUN_DATA``.
        cache_root: writable folder for derived files (binned frames, synthetic sets).
        time_steps: T, the number of simulation steps (frames for event data).
        generator: seeded CPU generator for anything random while building.
    """

    data_root: Path
    cache_root: Path
    time_steps: int
    generator: torch.Generator


@dataclass(frozen=True)
class DataMeta:
    """What the model and the trackers need to know about a dataset.

    Attributes:
        name: human label, e.g. ``"mnist"`` or ``"detection (synthetic substitute)"``.
        in_shape: shape of one sample at one time step, e.g. ``(1, 28, 28)`` or
            ``(2, 34, 34)``.
        num_classes: number of output classes C.
        encoding: ``"rate"``: ``x`` holds intensities (uint8, 0..255), Bernoulli-encoded
            every step; ``"frames"``: ``x`` holds ready frames ``[N, T, *in_shape]``.
        provenance: flat str → str facts logged to MLflow (source, sample counts,
            file-list hash, checksums, transform parameters).
        tags: MLflow tags (e.g. ``{"substitute": "true"}``).
    """

    name: str
    in_shape: tuple[int, ...]
    num_classes: int
    encoding: str
    provenance: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ArraySplit:
    """One split held in memory.

    Attributes:
        x: ``[N, *in_shape]`` uint8 (rate encoding) or ``[N, T, *in_shape]`` (frames).
        y: ``[N]`` int64 class labels in ``[0, num_classes)``.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"{self.x.shape[0]} samples but {self.y.shape[0]} labels: the data "
                "files do not belong together; re-download or rebuild them"
            )
        if self.x.shape[0] == 0:
            raise DataError("empty split: no samples were found")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, indices: Tensor) -> ArraySplit:
        """The samples at ``indices`` (int64 ``[K]``), in that order."""
        return ArraySplit(
            self.x.index_select(0, indices), self.y.index_select(0, indices)
        )

    def subset(self, limit: int | None) -> ArraySplit:
        """First ``limit`` samples (all when ``limit`` is None)."""
        if limit is None or limit >= len(self):
            return self
        return ArraySplit(self.x[:limit], self.y[:limit])


@dataclass(frozen=True)
class DataBundle:
    """Train, validation and test splits with their metadata.

    ``val`` is carved from the training set (``snnrun/data/split.py``) and is the only
    split model selection may read; None when ``dataset.val_size=0``.
    """

    train: ArraySplit
    test: ArraySplit
    meta: DataMeta
    val: ArraySplit | None = None
