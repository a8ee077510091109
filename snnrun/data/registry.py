"""Name a user types (``dataset=mnist``) → (config dataclass, builder).

Kept apart from ``snnrun/data/__init__.py`` so dataset modules can import the shared
types there without a cycle. ``tests/test_config.py`` checks this table against
``conf/dataset/*.yaml``.
"""

from __future__ import annotations

from snnrun.data import detection, mnist, nmnist

DATASETS = {
    "mnist": (mnist.MNISTConfig, mnist.build),
    "nmnist": (nmnist.NMNISTConfig, nmnist.build),
    "detection": (detection.DetectionConfig, detection.build),
}
