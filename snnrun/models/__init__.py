"""Spiking networks built on snnrun.snn: one module per architecture.

Every ``build(cfg, in_shape, num_classes, lif) -> SpikingNet`` takes its config
dataclass, the sample shape per step, the class count and the neuron parameters.
"""

from snnrun.models import cnn, mlp
from snnrun.models.net import INITS, NetOutput, SpikingNet, apply_init

ARCHS = {
    "mlp": (mlp.MLPConfig, mlp.build),
    "cnn": (cnn.CNNConfig, cnn.build),
}

__all__ = ["ARCHS", "INITS", "NetOutput", "SpikingNet", "apply_init", "cnn", "mlp"]
