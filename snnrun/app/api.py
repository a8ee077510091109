"""Use a trained network from Python: ``net, cfg = snnrun.load("best.pt")``.

No dataset, optimiser or tracking is built: the checkpoint carries the resolved
config and (since issue 13) the input shape, class count and encoding::

    import snnrun
    net, cfg = snnrun.load("outputs/train/<time>/checkpoints/best.pt")
    labels = net.predict(images)          # uint8 [B, 28, 28] or [B, 1, 28, 28]
    rates = net.rates(images, repeats=4)  # [B, C] spikes per step
    spikes = net.spikes(images)           # [T, B, C] output spikes

Static images are Bernoulli rate-encoded afresh at every step (spec section 6), so
results are stochastic; ``seed`` fixes the draws and ``repeats`` averages them.
Event data (``encoding="frames"``) take ready frames ``[B, T, *in_shape]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from snnrun.data.encoding import make_encoder
from snnrun.models import SpikingNet
from snnrun.models.readout import firing_rate, predict
from snnrun.snn.native import frozen_weights
from snnrun.train.checkpoint import load_checkpoint

__all__ = ["Network", "load"]


class Network:
    """A trained spiking network with its input encoding.

    Args:
        net: the SpikingNet (weights loaded).
        encoding: ``"rate"`` (uint8 images) or ``"frames"`` (event frames).
        time_steps: T.
    """

    def __init__(self, net: SpikingNet, encoding: str, time_steps: int) -> None:
        self.net = net.eval()
        self.encoding = encoding
        self.time_steps = int(time_steps)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample at one step, e.g. (1, 28, 28)."""
        return self.net.in_shape

    def to(self, device: str | torch.device) -> Network:
        """Move the network (``"cpu"``, ``"cuda"``); returns self."""
        self.net.to(device)
        return self

    @torch.no_grad()
    def encode(self, x: Tensor | np.ndarray, seed: int = 0) -> Tensor:
        """Input spikes [T, B, *in_shape] for uint8 images [B, *in_shape] (a missing
        channel axis of size 1 is added) or frames [B, T, *in_shape]."""
        x = torch.as_tensor(x, device=self.device)
        if self.encoding == "rate" and self._lacks_channel(x):
            x = x.unsqueeze(1)  # [B, H, W] → [B, 1, H, W]
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return make_encoder(self.encoding, self.time_steps, generator)(x)

    def _lacks_channel(self, x: Tensor) -> bool:
        """True for grey images [B, H, W] of a network that expects [B, 1, H, W]."""
        shape = self.in_shape
        return len(shape) == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]

    @torch.no_grad()
    def spikes(self, x: Tensor | np.ndarray, seed: int = 0) -> Tensor:
        """Output spikes {0., 1.}, [T, B, C], for one encoding drawn with ``seed``."""
        return self.net(self.encode(x, seed)).spikes

    @torch.no_grad()
    def rates(self, x: Tensor | np.ndarray, repeats: int = 1, seed: int = 0) -> Tensor:
        """Output firing rates [B, C] (spikes per step), averaged over ``repeats``
        encodings drawn with seeds ``seed``, ``seed + 1`` ..."""
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be >= 1")
        with frozen_weights():  # the weights are packed once for all repeats
            total = sum(firing_rate(self.spikes(x, seed + r)) for r in range(repeats))
        return total / repeats

    def predict(
        self, x: Tensor | np.ndarray, repeats: int = 1, seed: int = 0
    ) -> Tensor:
        """Class indices int64 [B]: argmax of :meth:`rates` (ties → lowest index)."""
        return predict(self.rates(x, repeats, seed))


def load(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Network, DictConfig]:
    """The network of a ``snnrun train`` checkpoint, and the run's resolved config.

    Args:
        path: a ``best.pt`` or ``last.pt``.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"auto"``).
    Raises: CheckpointError for a file that is not a snnrun checkpoint.
    """
    from snnrun.app.build import build_net, lif_params, resolve_device

    state = load_checkpoint(Path(path))
    cfg = OmegaConf.create(state["config"])
    facts = state.get("net") or _facts_from_data(cfg)
    net = build_net(
        cfg, tuple(facts["in_shape"]), int(facts["num_classes"]), lif_params(cfg.stbp)
    )
    net.load_state_dict(state["model"])
    target = resolve_device(str(device))
    return Network(net, facts["encoding"], cfg.stbp.time_steps).to(target), cfg


def _facts_from_data(cfg: DictConfig) -> dict[str, object]:
    """Older checkpoints lack ``net``: read the dataset's metadata (needs the data)."""
    from snnrun.app.build import build_data, net_facts

    return net_facts(build_data(cfg).meta)
