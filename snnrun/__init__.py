"""snnrun: train spiking neural networks with STBP (Wu et al. 2018)."""

__version__ = "0.1.0"
