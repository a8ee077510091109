"""Every config composes; typos, wrong types and out-of-range values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from snnrun.app.build import ConfigError, build_model, build_parts, lif_params
from snnrun.app.schema import config_dir
from snnrun.data import ArraySplit, DataBundle, DataMeta
from snnrun.data.registry import DATASETS
from snnrun.models import ARCHS

CONF = config_dir()


def options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def test_registries_match_config_files() -> None:
    assert options("dataset") == set(DATASETS)
    assert options("arch") == set(ARCHS)


def test_default_config_is_mnist_mlp(compose_cfg) -> None:
    cfg = compose_cfg()
    assert (cfg.dataset.name, cfg.arch.name, list(cfg.arch.hidden)) == (
        "mnist",
        "mlp",
        [800],
    )
    assert cfg.logger.name == "mlflow"
    assert cfg.logger.tracking_uri.startswith("sqlite:///")


@pytest.mark.parametrize("experiment", sorted(options("experiment")))
def test_every_experiment_composes_and_builds_its_model(
    compose_cfg, experiment
) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    assert cfg.trainer.epochs == 100 and list(cfg.optim.milestones) == [40, 80]
    lif = lif_params(cfg.stbp)
    meta = _meta_for(cfg.dataset.name)
    model = build_model(cfg, meta, lif)
    widths = [m.out_features for m in model.modules() if hasattr(m, "out_features")]
    assert widths[-1] == meta.meta.num_classes


def _meta_for(name: str) -> DataBundle:
    """A one-sample stand-in bundle: the model needs only the shapes."""
    shapes = {
        "mnist": ((1, 28, 28), 10),
        "nmnist": ((2, 34, 34), 10),
        "detection": ((1, 28, 28), 2),
    }
    shape, classes = shapes[name]
    split = ArraySplit(torch.zeros(1, *shape, dtype=torch.uint8), torch.zeros(1).long())
    return DataBundle(split, split, DataMeta(name, shape, classes, "rate"))


def test_paper_presets_have_the_spec_values(compose_cfg) -> None:
    mlp = compose_cfg("experiment=paper_mnist_mlp")
    assert (mlp.stbp.threshold, mlp.stbp.decay, mlp.stbp.time_steps) == (0.5, 0.1, 30)
    cnn = compose_cfg("experiment=paper_mnist_cnn")
    assert cnn.arch.spec == "15C5-P2-40C5-P2-300" and cnn.stbp.decay == 0.1
    code = compose_cfg("experiment=code_mnist_cnn")
    assert (
        code.arch.spec,
        code.stbp.time_steps,
        code.stbp.reset_form.value,
        code.stbp.loss_form.value,
        code.arch.init,
    ) == ("32C3-P2-32C3-P2-128", 20, "linear", "mean", "default")


def test_nmnist_gets_its_own_stbp_defaults(compose_cfg) -> None:
    cfg = compose_cfg("dataset=nmnist")
    assert (cfg.stbp.time_steps, cfg.stbp.threshold) == (30, 0.2)
    assert compose_cfg("dataset=nmnist", "stbp.time_steps=15").stbp.time_steps == 15


@pytest.mark.parametrize(
    ("override", "error", "needle"),
    [
        ("stbp.decy=0.3", ConfigCompositionException, "decy"),
        ("stbp.time_steps=ten", ConfigCompositionException, "time_steps"),
        ("stbp.surrogate=h9", ConfigCompositionException, "h9"),
        ("dataset=imagenet", ConfigCompositionException, "imagenet"),
        ("arch=transformer", ConfigCompositionException, "transformer"),
    ],
)
def test_typos_and_wrong_types_fail_in_composition(
    compose_cfg, override, error, needle
) -> None:
    with pytest.raises((error, ConfigKeyError, ValidationError)) as info:
        compose_cfg(override)
    assert needle in str(info.value) + str(info.value.__cause__)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("stbp.time_steps=0", "stbp.time_steps"),
        ("stbp.threshold=-1", "threshold"),
        ("stbp.decay=1.5", "decay"),
        ("stbp.surrogate_a=0", "surrogate_a"),
        ("arch.hidden=[]", "hidden"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("optim.lr=-0.1", "optim.lr"),
        ("arch=cnn", None),  # a valid control case: must build
    ],
)
def test_out_of_range_values_fail_before_training(
    compose_cfg, override, needle
) -> None:
    cfg = compose_cfg(
        "debug=fast", "dataset.train_limit=8", "dataset.test_limit=8", override
    )
    if needle is None:
        assert build_parts(cfg).model is not None
        return
    with pytest.raises(ConfigError) as info:
        build_parts(cfg)
    assert needle in str(info.value)


def test_config_dir_is_the_checkout_conf() -> None:
    assert Path(__file__).resolve().parents[2] / "conf" == CONF
    assert (CONF / "train.yaml").is_file()


def test_outputs_store_and_data_default_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from snnrun.app.schema import register_configs

    register_configs()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNNRUN_DATA", raising=False)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train")
    assert Path(cfg.paths.output_root) == tmp_path / "outputs"
    assert Path(cfg.paths.data_root) == tmp_path / "data"
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    from snnrun.app.compare import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == cfg.logger.tracking_uri  # compare reads it here
    monkeypatch.setenv("SNNRUN_DATA", "/somewhere/data")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train")
    assert cfg.paths.data_root == "/somewhere/data"


def test_stbp_schema_carries_every_neuron_parameter() -> None:
    """LIFParams is the one definition: the config group must offer each field."""
    from dataclasses import fields

    from snnrun.app.schema import STBPConfig
    from snnrun.snn import LIFParams

    assert set(LIFParams._fields) <= {f.name for f in fields(STBPConfig)}
    for name, default in LIFParams._field_defaults.items():
        value = getattr(STBPConfig(), name)
        assert getattr(value, "value", value) == default, name


def test_a_backend_that_disagrees_with_the_reference_stops_the_run(
    compose_cfg, monkeypatch
) -> None:
    import snnrun.snn.fused as fused

    monkeypatch.setattr(fused, "input_gradient", lambda u, g, p, fire, slope: g)
    with pytest.raises(ConfigError, match=r"stbp\.backend=fused fails its start-up"):
        build_parts(compose_cfg("debug=fast", "stbp.backend=fused"))
    build_parts(compose_cfg("debug=fast", "stbp.backend=reference"))


def test_a_run_that_would_not_fit_stops_with_the_batch_that_does(
    compose_cfg, monkeypatch
) -> None:
    from snnrun.app.build import check_memory
    from snnrun.train import memory_plan

    cfg = compose_cfg("debug=fast", "trainer.batch_size=32")
    parts = build_parts(cfg)
    estimate = check_memory(parts, cfg)  # fits on this machine
    assert estimate.activation_bytes > 0 and estimate.fits()
    # what the device has: room for the parameters and about 10 samples
    per_sample = memory_plan.BACKWARD_FACTOR * estimate.activation_bytes / 32
    free = estimate.fixed_bytes + int(10.5 * per_sample)
    monkeypatch.setattr(memory_plan, "available_bytes", lambda device: free)
    with pytest.raises(ConfigError, match=r"trainer\.batch_size=10 fits"):
        check_memory(parts, cfg)


def test_activation_bytes_grow_with_batch_and_time(compose_cfg) -> None:
    from snnrun.app.build import check_memory

    sizes = {}
    for batch, steps in ((16, 4), (32, 4), (32, 8), (32, 12)):
        cfg = compose_cfg(
            "debug=fast", f"trainer.batch_size={batch}", f"stbp.time_steps={steps}"
        )
        sizes[batch, steps] = check_memory(build_parts(cfg), cfg).activation_bytes
    assert sizes[32, 4] == pytest.approx(2 * sizes[16, 4], rel=0.05)
    # linear in T (the first step keeps less than the others: no reset yet)
    per_4_steps = sizes[32, 8] - sizes[32, 4]
    assert per_4_steps > 0.5 * sizes[32, 4]
    assert sizes[32, 12] - sizes[32, 8] == pytest.approx(per_4_steps, rel=0.05)
