"""snnrun: train spiking neural networks with STBP (Wu et al. 2018).

``snnrun.load(checkpoint)`` returns a trained network for Python use (``app/api.py``);
it is imported on first use, so ``import snnrun`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Network"):
        from snnrun.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'snnrun' has no attribute {name!r}")
