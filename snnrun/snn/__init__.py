"""Pure spiking core: the STBP LIF neuron, surrogate spike derivatives, layer shells.

Imports torch and the standard library only (design.md §3).
"""

from snnrun.snn.layers import LIF, FoldTime, init_stbp_
from snnrun.snn.lif import (
    LIFParams,
    LIFState,
    ResetForm,
    SpikeCmp,
    lif_sequence,
    lif_sequence_record,
    lif_step,
)
from snnrun.snn.surrogate import SURROGATES, Surrogate, choice_name, spike

__all__ = [
    "LIF",
    "SURROGATES",
    "FoldTime",
    "LIFParams",
    "LIFState",
    "ResetForm",
    "SpikeCmp",
    "Surrogate",
    "choice_name",
    "init_stbp_",
    "lif_sequence",
    "lif_sequence_record",
    "lif_step",
    "spike",
]
