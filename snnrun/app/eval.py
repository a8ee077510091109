"""``snnrun eval CHECKPOINT | RUN_FOLDER``: test-set accuracy of a saved network.

A run folder stands for its ``checkpoints/best.pt`` (else ``checkpoints/last.pt``).

The checkpoint carries its resolved config, so the same data, encoding and model are
rebuilt without any override; only the device, batch size and number of stochastic
passes may be changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from snnrun.app.build import build_parts
from snnrun.train.checkpoint import CheckpointError, load_checkpoint, load_weights
from snnrun.train.loop import LoopSettings, Trainer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun eval", description=__doc__)
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a best.pt or last.pt file, or a run folder (its best.pt, else last.pt)",
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda (default: as trained)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="stochastic passes averaged per sample (default 1)",
    )
    parser.add_argument("--data-root", default=None, help="override paths.data_root")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Evaluate; prints accuracy and loss. Exit 2 on a bad checkpoint or data."""
    args = parse(argv)
    try:
        args.checkpoint = checkpoint_file(args.checkpoint)
        state = load_checkpoint(args.checkpoint)
        cfg = OmegaConf.create(state["config"])
        if args.device:
            cfg.device = args.device
        if args.batch_size:
            cfg.trainer.eval_batch_size = args.batch_size
        if args.data_root:
            cfg.paths.data_root = args.data_root
        cfg.trainer.max_eval_batches = None
        parts = build_parts(cfg)
        trainer = Trainer(
            parts.model,
            parts.optimizer,
            parts.scheduler,
            parts.loss_fn,
            parts.encoders,
            parts.device,
            settings=LoopSettings(epochs=1, eval_repeats=args.repeats),
        )
        load_weights(parts.model, state["model"], args.checkpoint)
        metrics = trainer.evaluate(parts.loaders.test, "test")
    except Exception as error:
        if not type(error).__module__.startswith("snnrun."):
            raise
        sys.stderr.write(f"snnrun eval: error: {error}\n")
        return 2
    sys.stdout.write(
        f"checkpoint {args.checkpoint} (epoch {int(state['epoch']) - 1})\n"
        f"dataset    {parts.data.meta.name}: {len(parts.data.test)} test samples\n"
        f"test/acc   {100 * metrics['test/acc']:.2f}%\n"
        f"test/loss  {metrics['test/loss']:.5f}\n"
    )
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
