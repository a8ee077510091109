"""The one derivation of every random stream of a run from its ``seed``.

Each consumer names its stream (``"init"``, ``"encode/train"``, ``"order/3"`` …) and
gets ``derive_seed(seed, stream)``: the first 63 bits of SHA-256 over both. Streams
are independent by construction: changing one consumer never shifts another's draws,
no two names share a seed (up to a 2^-63 hash collision), and a data-order seed of
epoch k can never equal an encoder's, as plain ``seed·stride + k`` arithmetic could.
"""

from __future__ import annotations

import hashlib

# The named streams of a training run (the data order adds ``order/<epoch>``).
DATA = "data"
INIT = "init"
TRAIN_ENCODING = "encode/train"
VAL_ENCODING = "encode/val"
TEST_ENCODING = "encode/test"
DIAGNOSTICS = "diagnostics"  # traced samples and their input spikes


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for ``stream`` of the run seeded ``seed`` (deterministic)."""
    digest = hashlib.sha256(f"snnrun:{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def order_stream(epoch: int) -> str:
    """The stream name of the training order of ``epoch`` (0-based)."""
    return f"order/{int(epoch)}"
