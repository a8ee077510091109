"""``snnrun train --help``: config groups, presets and the default config.

Hydra's own help also lists the dataclass schemas registered in each group
(``mnist_schema`` ...), which are not choices a user should type; this page lists
only the YAML options under ``conf/``.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from snnrun.app.schema import config_dir, register_configs

HEADER = """usage: snnrun train [-m] [group=option ...] [key=value ...]

Train a spiking network with STBP. Examples:
  snnrun train                                   MNIST MLP, tracked in MLflow
  snnrun train dataset=nmnist arch=cnn stbp.decay=0.3
  snnrun train experiment=paper_mnist_mlp        a paper preset (100 epochs)
  snnrun train debug=fast                        a seconds-long dry run
  snnrun train -m stbp.decay=0.1,0.2,0.3 seed=0,1   a sweep (one job per combination)
  snnrun train resume=outputs/train/<time>       continue an interrupted run

Config groups (group=option):
"""

FOOTER = """
dataset_arch is picked automatically as <dataset>_<arch> when that file exists.
Hydra flags: --cfg job (print the composed config), --info, -m/--multirun,
--hydra-help. Docs: README.md, docs/datasets.md.
"""


def group_options() -> dict[str, list[str]]:
    """Group folder name → its YAML options, from ``conf/``."""
    root = config_dir()
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir() and any(folder.glob("*.yaml"))
    }


def train_help() -> str:
    """The full help page text."""
    register_configs()
    lines = [
        f"  {group}: {', '.join(names)}" for group, names in group_options().items()
    ]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        default = compose("train")
    config = OmegaConf.to_yaml(default)
    return (
        HEADER + "\n".join(lines) + "\n\nDefault config (override any key, "
        "e.g. stbp.decay=0.3):\n\n" + config + FOOTER
    )
