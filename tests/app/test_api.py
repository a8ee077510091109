"""``snnrun.load`` in a fresh interpreter, on a checkpoint of a real CLI run: the
README's example is run as written (only the checkpoint path filled in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import snnrun
from snnrun.train.checkpoint import load_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- readme-example: python-api -->"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(MARK) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md lost its Python API example ({MARK})"
    return match.group(1)


@pytest.mark.slow
def test_readme_example_runs_in_a_fresh_interpreter(
    cli_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    code = readme_example()
    placeholder = "outputs/train/<date_time>/checkpoints/best.pt"
    assert placeholder in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(placeholder, str(cli_checkpoint)))
    env = {**os.environ, "SNNRUN_DATA": str(shared_data)}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"cnn: \d+\.\d% of 200 test images", result.stdout), result.stdout
    assert "rates (8, 10) spikes (8, 8, 10)" in result.stdout  # T=8 for this run


@pytest.mark.slow
def test_load_rebuilds_from_the_checkpoint_alone(cli_checkpoint: Path) -> None:
    """The checkpoint's own facts (``net``) rebuild the network without the dataset;
    predictions are the argmax of rates, seeds fix the encoding."""
    assert load_checkpoint(cli_checkpoint)["net"] == {
        "in_shape": [1, 28, 28],
        "num_classes": 10,
        "encoding": "rate",
    }
    net, cfg = snnrun.load(cli_checkpoint)
    assert cfg.arch.spec == "6C5-P2-8C3-P2-32"
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    rates = net.rates(images, repeats=3, seed=7)
    assert rates.shape == (5, 10) and torch.all((rates >= 0) & (rates <= 1))
    assert torch.equal(net.predict(images, repeats=3, seed=7), rates.argmax(1))
    assert torch.equal(net.spikes(images, seed=1), net.spikes(images[:, None], seed=1))
    assert not torch.equal(net.spikes(images, seed=1), net.spikes(images, seed=2))
