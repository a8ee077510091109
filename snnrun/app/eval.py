"""``snnrun eval CHECKPOINT | RUN_FOLDER``: accuracy of a saved network on its test
(or validation) split. A run folder stands for its ``checkpoints/best.pt`` (else
``checkpoints/last.pt``).

The checkpoint carries its resolved config, so the same data, encoding and model are
rebuilt without any override; only the device, batch size, split, sample limit and
number of passes may be changed. Static images are Bernoulli rate-encoded afresh at
every step, so an accuracy is one draw of a random variable: ``--repeats N`` runs N
independent passes and reports their mean, spread and range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from snnrun.app.build import Parts, autocast_dtype, build_parts
from snnrun.data.loader import BatchLoader
from snnrun.train.checkpoint import CheckpointError, load_checkpoint, load_weights
from snnrun.train.loop import LoopSettings, Trainer


class EvalError(ValueError):
    """A bad option for this checkpoint (e.g. ``--split val`` without a val split)."""


@dataclass(frozen=True)
class EvalReport:
    """What ``--json`` writes: one accuracy and loss per pass, and their summary."""

    checkpoint: str
    epoch: int
    dataset: str
    split: str
    samples: int
    encoding: str
    stochastic: bool
    repeats: int
    acc: list[float]
    loss: list[float]
    acc_mean: float
    acc_std: float

    def text(self) -> str:
        """The lines ``snnrun eval`` prints."""
        key, mean = f"{self.split}/acc", 100 * self.acc_mean
        lines = [
            f"checkpoint {self.checkpoint} (epoch {self.epoch})",
            f"dataset    {self.dataset}: {self.samples} {self.split} samples",
        ]
        if self.repeats == 1:
            lines.append(f"{key:<10} {mean:.2f}%")
        else:
            low, high = 100 * min(self.acc), 100 * max(self.acc)
            lines.append(
                f"{key:<10} {mean:.2f}% ± {100 * self.acc_std:.2f} (std over "
                f"{self.repeats} passes; min {low:.2f}%, max {high:.2f}%)"
            )
        lines.append(f"{self.split + '/loss':<10} {statistics.fmean(self.loss):.5f}")
        if self.stochastic:
            lines.append(
                "note       the rate encoding is stochastic (Bernoulli spikes drawn "
                "per step): "
                + (
                    "use --repeats N to see the spread"
                    if self.repeats == 1
                    else "the spread above is over independent encodings"
                )
            )
        return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun eval", description=__doc__)
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a best.pt or last.pt file, or a run folder (its best.pt, else last.pt)",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate the first N samples only"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="independent stochastic passes; prints mean ± std (default 1)",
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda (default: as trained)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--data-root", default=None, help="override paths.data_root")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    for name in ("limit", "repeats", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}={value} must be >= 1")
    return args


def main(argv: list[str]) -> int:
    """Evaluate; prints accuracy and loss. Exit 2 on a bad checkpoint or data."""
    args = parse(argv)
    try:
        report = evaluate(args)
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=1) + "\n")
    except (OSError, EvalError) as error:
        sys.stderr.write(f"snnrun eval: error: {error}\n")
        return 2
    except Exception as error:
        if not type(error).__module__.startswith("snnrun."):
            raise
        sys.stderr.write(f"snnrun eval: error: {error}\n")
        return 2
    sys.stdout.write(report.text())
    return 0


def checkpoint_file(target: Path) -> Path:
    """``target`` itself, or for a run folder its best.pt (else last.pt).

    Raises:
        CheckpointError: a folder without either checkpoint.
    """
    if not target.is_dir():
        return target
    for folder in (target / "checkpoints", target):
        for name in ("best.pt", "last.pt"):
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(
        f"{target} is a folder without checkpoints/best.pt or checkpoints/last.pt; "
        "pass a run folder of `snnrun train` (outputs/train/<time>) or a .pt file"
    )


def evaluate(args: argparse.Namespace) -> EvalReport:
    """Rebuild the run of ``args.checkpoint`` and run ``args.repeats`` passes."""
    args.checkpoint = checkpoint_file(args.checkpoint)
    state = load_checkpoint(args.checkpoint)
    cfg = _config(state, args)
    parts = build_parts(cfg)
    load_weights(parts.model, state["model"], args.checkpoint)
    loader = _loader(parts, cfg, args.split, args.limit)
    settings = LoopSettings(epochs=1, autocast=autocast_dtype(cfg))
    trainer = Trainer(parts.learner(), settings=settings)
    prefix = "test" if args.split == "test" else "val"
    passes = [trainer.evaluate(loader, prefix) for _ in range(args.repeats)]
    acc = [p[f"{prefix}/acc"] for p in passes]
    return EvalReport(
        checkpoint=str(args.checkpoint),
        epoch=int(state["epoch"]) - 1,
        dataset=parts.data.meta.name,
        split=args.split,
        samples=loader.num_samples,
        encoding=parts.data.meta.encoding,
        stochastic=parts.data.meta.encoding == "rate",
        repeats=args.repeats,
        acc=acc,
        loss=[p[f"{prefix}/loss"] for p in passes],
        acc_mean=statistics.fmean(acc),
        acc_std=statistics.stdev(acc) if len(acc) > 1 else 0.0,
    )


def _config(state: dict, args: argparse.Namespace) -> DictConfig:
    """The run's saved config with this command's device, batch and data root."""
    cfg = OmegaConf.create(state["config"])
    if args.device:
        cfg.device = args.device
    if args.batch_size:
        cfg.trainer.eval_batch_size = args.batch_size
    if args.data_root:
        cfg.paths.data_root = args.data_root
    cfg.trainer.max_eval_batches = None
    return cfg


def _loader(
    parts: Parts, cfg: DictConfig, split: str, limit: int | None
) -> BatchLoader:
    """Batches of the chosen split (first ``limit`` samples), in stored order."""
    data = parts.data.test if split == "test" else parts.data.val
    if data is None:
        raise EvalError(
            "--split val: this run has no validation split (dataset.val_size=0); "
            "use --split test"
        )
    return BatchLoader(
        data.subset(limit), cfg.trainer.eval_batch_size, shuffle=False, seed=cfg.seed
    )
