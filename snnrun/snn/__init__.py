"""Pure spiking core: the STBP LIF neuron, surrogate spike derivatives, layer shells.

Imports torch and the standard library only (design.md §3).
"""

from snnrun.snn.fused import fused_lif_sequence
from snnrun.snn.layers import LIF, FoldTime, init_stbp_
from snnrun.snn.lif import (
    Backend,
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
    "Backend",
    "FoldTime",
    "LIFParams",
    "LIFState",
    "ResetForm",
    "SpikeCmp",
    "Surrogate",
    "choice_name",
    "fused_lif_sequence",
    "init_stbp_",
    "lif_sequence",
    "lif_sequence_record",
    "lif_step",
    "spike",
]
