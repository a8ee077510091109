"""A real wheel, installed non-editable, used from an empty folder.

What the slow test does, honestly: it copies the checkout's files (tracked and
untracked-but-not-ignored) to a temporary folder and builds a wheel there with
``pip wheel --no-deps --no-build-isolation`` (the running interpreter's setuptools;
nothing is written into the checkout). It creates a fresh venv without pip and installs
only that wheel into it (``--no-deps``), then adds one ``.pth`` file that appends the
running environment's site-packages for the heavy dependencies (torch, Hydra, MLflow):
installing those from the registry takes many minutes on the project machine. Path lines
in a ``.pth`` file are appended after the venv's own site-packages and their ``.pth``
files (such as an editable install's finder) are not processed, so ``import snnrun``
resolves to the installed wheel — the test checks that, and runs without ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = (sys.executable, "-m", "pip")
USER_EXPERIMENT = """\
# @package _global_
stbp:
  decay: 0.37
trainer:
  epochs: 3
"""


def checkout_files() -> list[str]:
    """Files a build sees: tracked plus untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


def build_wheel(tmp: Path) -> Path:
    """Copy the sources to ``tmp/src`` and build the wheel into ``tmp/dist``."""
    source = tmp / "src"
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
    subprocess.run(
        [
            *PIP,
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("snnrun-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding only the wheel, plus the running env's site-packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    heavy = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "zz_snnrun_test_deps.pth").write_text(heavy + "\n")
    return venv / "bin"


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder`` (the checkout's outputs/ and data/)."""
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_wheel_recipe_ships_every_config() -> None:
    """setup.py maps conf/ into snnrun/conf with globs that must cover every file."""
    from setuptools import find_packages

    setup_py = (REPO / "setup.py").read_text()
    assert '"snnrun.conf": "conf"' in setup_py
    assert '"snnrun.conf"' in setup_py and "**/*.yaml" in setup_py
    assert "snnrun" in find_packages(str(REPO), include=["snnrun", "snnrun.*"])
    assert {p.suffix for p in (REPO / "conf").rglob("*") if p.is_file()} == {".yaml"}


@pytest.mark.slow
def test_installed_wheel_trains_and_evaluates_from_an_empty_folder(
    tmp_path: Path, shared_data: Path
) -> None:
    wheel = build_wheel(tmp_path / "build")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("snnrun/conf/")}
    expected = {
        f"snnrun/conf/{p.relative_to(REPO / 'conf')}"
        for p in (REPO / "conf").rglob("*.yaml")
    }
    assert shipped == expected

    bin_dir = install(wheel, tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"SNNRUN_DATA": str(shared_data), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    before = snapshot(REPO / "outputs"), snapshot(REPO / "data")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    where = run(
        str(bin_dir / "python"),
        "-c",
        "import snnrun; from snnrun.app.schema import config_dir;"
        "print(snnrun.__file__); print(config_dir())",
    )
    module, conf = where.stdout.split()
    assert module.startswith(str(tmp_path / "venv")), where.stdout
    assert conf.startswith(str(tmp_path / "venv")) and conf.endswith("snnrun/conf")

    helped = run(str(bin_dir / "snnrun"), "train", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "  dataset: detection, mnist, nmnist" in helped.stdout
    assert "hydra/launcher: " in helped.stdout and "_schema" not in helped.stdout
    rows = run(str(bin_dir / "snnrun"), "reproduce", "nosuch")
    assert rows.returncode != 0 and "mnist-mlp" in rows.stderr  # packaged rows

    user = work / "myconf" / "experiment"
    user.mkdir(parents=True)
    (user / "my.yaml").write_text(USER_EXPERIMENT)
    shown = run(
        str(bin_dir / "snnrun"),
        "train",
        "--config-dir",
        "myconf",
        "experiment=my",
        "--cfg",
        "job",
    )
    assert shown.returncode == 0, shown.stderr
    assert "decay: 0.37" in shown.stdout and "epochs: 3" in shown.stdout

    trained = run(str(bin_dir / "snnrun"), "train", "debug=fast", "logger=mlflow")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "Traceback" not in trained.stderr
    assert (work / "outputs" / "mlflow.db").is_file()
    (best,) = (work / "outputs" / "train").glob("*/checkpoints/best.pt")
    assert list((work / "outputs" / "mlartifacts").iterdir())

    evaluated = run(str(bin_dir / "snnrun"), "eval", str(best.relative_to(work)))
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "test/acc" in evaluated.stdout

    assert (snapshot(REPO / "outputs"), snapshot(REPO / "data")) == before
    assert sorted(p.name for p in work.iterdir()) == ["myconf", "outputs"]
