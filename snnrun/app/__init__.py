"""The app layer: the only package that imports Hydra/OmegaConf (wiring, CLI apps)."""
