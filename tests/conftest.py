"""Fixtures shared by the whole test suite.

``shared_data``: the real data root (``SNNRUN_DATA`` if set, else ``../shared/data``
beside the repository). Tests that need it fail, never skip, when it is missing: a
silently skipped data test would hide a broken setup.

``http_server``: a real HTTP server on 127.0.0.1 serving a temporary folder, so
download code runs end to end without the internet.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data root holding ``mnist/``, ``nmnist-sample/`` ..."""
    env = os.environ.get("SNNRUN_DATA")
    root = Path(env).expanduser() if env else DEFAULT_DATA
    if not root.is_dir():
        source = "SNNRUN_DATA" if env else "the default ../shared/data"
        pytest.fail(
            f"real data not found: {root} (from {source}) is not a folder. Set "
            "SNNRUN_DATA=/path/to/data to a folder holding mnist/ and nmnist-sample/",
            pytrace=False,
        )
    return root


@dataclass(frozen=True)
class HTTPServerInfo:
    """A running local server: files under ``root`` are served at ``url + name``."""

    root: Path
    url: str


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep request lines out of the test output."""


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HTTPServerInfo]:
    """Serve ``tmp_path / "served"`` on an ephemeral 127.0.0.1 port."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield HTTPServerInfo(root, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def cli_checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """``best.pt`` of a real ``python -m snnrun train`` run (subprocess): a small CNN
    (conv, pool, flatten, fully connected) with ``stbp.reset_form=linear`` so NIR can
    express it exactly; shared by the export and Python-API tests."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("cli-run")
    command = [
        sys.executable,
        "-m",
        "snnrun",
        "train",
        "debug=fast",
        "dataset.train_limit=128",
        "dataset.test_limit=128",
        "arch=cnn",
        "arch.spec=6C5-P2-8C3-P2-32",
        "stbp.reset_form=linear",
        "stbp.threshold=0.2",
        "stbp.decay=0.5",
        "stbp.time_steps=8",
        f"paths.output_root={out}",
        f"paths.data_root={shared_data}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = out.glob("train/*/checkpoints/best.pt")
    return best


@pytest.fixture
def one_pass_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every call of ``native.event_linear_lif`` (the one-pass evaluation of a Linear
    stage) while the test runs: True where it ran, False where it declined."""
    from snnrun.snn import native

    calls: list[bool] = []
    real = native.event_linear_lif

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(native, "event_linear_lif", spy)
    return calls
