"""Issue 13 acceptance: a real ``snnrun train`` run leaves spike diagnostics and
SynOps/energy metrics in MLflow, read back through the MLflow client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib import image
from mlflow import MlflowClient

from snnrun.models.synops import AC_PJ, MAC_PJ

from .conftest import tiny

PLOTS = {
    "raster_input.png",
    "raster_layer1.png",
    "raster_layer2.png",
    "trace.png",
    "rates.png",
    "confusion.png",
}


def _names(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


@pytest.mark.slow
def test_cli_run_logs_diagnostics_and_synops(run_cli, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(
        "train",
        *tiny("logger=mlflow", "trainer.epochs=2", "logger.plot_every=1"),
        f"logger.tracking_uri={store}",
        f"paths.output_root={tmp_path / 'out'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    run_id = run.info.run_id
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    lines = result.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("MLflow run "))
    assert f"MLflow run {run_id} FINISHED" in summary
    assert f"mlflow ui --backend-store-uri {store}" in summary
    assert f"/#/experiments/{run.info.experiment_id}/runs/{run_id}" in summary

    # every plot after epoch 1 (plot_every=1) and after the last epoch
    assert PLOTS | {"confusion.json"} <= _names(client, run_id, "diagnostics")
    assert _names(client, run_id, "diagnostics/epoch_001") >= PLOTS
    local = Path(client.download_artifacts(run_id, "diagnostics", str(tmp_path)))
    for name in PLOTS:
        pixels = image.imread(local / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        assert pixels.std() > 0, f"{name} is blank"
    counts = json.loads((local / "confusion.json").read_text())["counts"]
    assert len(counts) == 10 and all(len(row) == 10 for row in counts)
    # debug=fast tests 2 batches of 64 samples; the diagonal is test/acc
    assert sum(map(sum, counts)) == 128
    correct = sum(counts[i][i] for i in range(10))
    assert correct / 128 == pytest.approx(run.data.metrics["test/acc"])

    metrics = run.data.metrics
    for key in ("synops/layer1", "synops/layer2", "synops/total", "energy/snn_nj"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1, 2], key
    assert metrics["synops/layer1"] > 0
    assert metrics["synops/total"] == pytest.approx(
        metrics["synops/layer1"] + metrics["synops/layer2"]
    )
    assert metrics["synops/ann_macs"] == 784 * 800 + 800 * 10
    assert metrics["energy/snn_nj"] == pytest.approx(
        metrics["synops/total"] * AC_PJ / 1e3
    )
    assert metrics["energy/ann_nj"] == pytest.approx(
        metrics["synops/ann_macs"] * MAC_PJ / 1e3
    )
