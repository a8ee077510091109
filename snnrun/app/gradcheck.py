"""``snnrun gradcheck [overrides]``: is the configured network's STBP gradient sane?

Composes the same config as ``snnrun train`` (same overrides), builds the network
and a few real training samples, then reports, in float64:

- per LIF layer, where the forward fires and where the surrogate window is centred
  (both must sit on ``stbp.threshold``; checked through the layer's real code);
- per weight layer, the cosine similarity and norm ratio of STBP's gradient against
  the exact gradient of the same network with the soft step H (H' = h) as its spike.

Exit status: 0 when every window is centred on the threshold, 1 when one is not,
2 on a bad config. The cosines are reported, not judged: they depend on the
surrogate, the width and the data (typically 0.7–0.9 for h1 on MNIST).
"""

from __future__ import annotations

import argparse
import sys

import torch

from snnrun import seeding
from snnrun.app.build import (
    ConfigError,
    build_data,
    build_model,
    lif_params,
    seeded_generator,
)
from snnrun.data.encoding import make_encoder
from snnrun.models.gradcheck import compare_gradients, probe_window


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snnrun gradcheck", description=__doc__)
    parser.add_argument("--batch", type=int, default=8, help="samples (default 8)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    """Print the report; see the module docstring for the exit status."""
    args = parse(argv)
    try:
        if args.batch < 1:
            raise ConfigError(f"--batch {args.batch}: must be at least 1")
        cfg = _compose(args.overrides)
        lif = lif_params(cfg.stbp)
        data = build_data(cfg)
        net = build_model(cfg, data, lif)
    except Exception as error:
        if not _is_user_error(error):
            raise
        sys.stderr.write(f"snnrun gradcheck: error: {error}\n")
        return 2
    x, labels = _inputs(cfg, data, args.batch)
    windows = [probe_window(stage.lif) for stage in net.stages]
    layers = compare_gradients(net, x, labels, str(cfg.stbp.loss_form.value))
    sys.stdout.write(_report(cfg, windows, layers, x.shape))
    return 0 if all(w.ok for w in windows) else 1


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from snnrun.app.schema import config_dir, register_configs

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def _inputs(cfg, data, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch`` training samples, encoded as in training: ``[T, B, ...]``."""
    split = data.train.subset(batch)
    generator = seeded_generator(cfg.seed, seeding.TRAIN_ENCODING, torch.device("cpu"))
    encode = make_encoder(data.meta.encoding, cfg.stbp.time_steps, generator)
    return encode(split.x), split.y


def _report(cfg, windows, layers, shape) -> str:
    s = cfg.stbp
    lines = [
        f"gradcheck: {cfg.dataset.name} {cfg.arch.name}, input {list(shape)} "
        f"[T, B, ...], float64; surrogate {s.surrogate.value} (a={s.surrogate_a}), "
        f"reset {s.reset_form.value}, td_grad={s.td_grad}, "
        f"detach_reset={s.detach_reset}, backend {s.backend.value}",
        "window: where each LIF layer fires and where its surrogate is centred",
    ]
    for index, w in enumerate(windows, start=1):
        verdict = "ok" if w.ok else "OFF THE THRESHOLD"
        lines.append(
            f"  lif{index}: threshold {w.threshold:g}, fires at {w.fires_at:.4f}, "
            f"surrogate centred at {w.centre:.4f}  {verdict}"
        )
    lines.append("gradient: STBP vs the exact gradient with the soft spike H (H' = h)")
    for row in layers:
        lines.append(
            f"  {row.name}: cosine {row.cosine:+.3f}, norm ratio {row.norm_ratio:.3f}"
        )
    ok = all(w.ok for w in windows)
    lines.append(
        "PASS: every surrogate window is centred on the threshold"
        if ok
        else "FAIL: a surrogate window is not centred on the firing threshold"
    )
    return "\n".join(lines) + "\n"


def _is_user_error(error: Exception) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from snnrun.data import DataError

    return isinstance(
        error, (ConfigError, DataError, HydraException, OmegaConfBaseException)
    )
