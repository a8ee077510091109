"""``snnrun train --help``: config groups, presets, launchers, sweepers, defaults.

The options come from Hydra's own config repository, so the launchers and sweepers
that installed plugins register (``hydra/launcher=joblib``, ``hydra/sweeper=optuna``)
are listed beside snnrun's YAML presets. The schema dataclasses live in the hidden
group ``schema/`` and never show up as choices.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
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
Launchers and sweepers apply to -m runs (hydra/launcher=local_pool, or
hparams_search=optuna_mnist for an Optuna study).
Your own presets: --config-dir DIR (or hydra.searchpath=[file://DIR]) with files laid
out like conf/, e.g. DIR/experiment/my.yaml, then experiment=my.
Hydra flags: --cfg job (print the composed config), --info, -m/--multirun,
--hydra-help. Every key with a description: docs/config.md. Docs: README.md.
"""
# Hydra's own groups a user picks from; the rest of hydra/* is plumbing.
HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")
# schema/: the dataclasses behind the YAML files; reproduce/: rows of `snnrun reproduce`
HIDDEN = ("hydra", "schema", "reproduce")


def _is_choice(name: str) -> bool:
    return not name.endswith("_schema")


def group_options() -> dict[str, list[str]]:
    """Group → its options (snnrun's YAML files, then launchers and sweepers).

    Needs an initialized Hydra (``initialize_config_dir``).
    """
    loader = GlobalHydra.instance().config_loader()
    groups = sorted(
        name
        for name in loader.get_group_options("", ObjectType.GROUP)
        if name not in HIDDEN
    )
    return {
        group: [o for o in loader.get_group_options(group) if _is_choice(o)]
        for group in [*groups, *HYDRA_GROUPS]
    }


def train_help() -> str:
    """The full help page text."""
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        options = group_options()
        default = compose("train")
    lines = [f"  {group}: {', '.join(names)}" for group, names in options.items()]
    config = OmegaConf.to_yaml(default)
    return (
        HEADER + "\n".join(lines) + "\n\nDefault config (override any key, "
        "e.g. stbp.decay=0.3):\n\n" + config + FOOTER
    )
