"""The MLflow store: where a tracking URI keeps its data, and whether it can be used.

:func:`check_store` runs before any training, so an unwritable folder, a locked
database or an unreachable server fails in seconds with the fix, not after hours;
:func:`retry_locked` rides out the short locks of a sqlite store that parallel sweep
jobs share.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

T = TypeVar("T")

_FIX = "set logger.tracking_uri=sqlite:///<writable folder>/mlflow.db or logger=none"
# A sqlite store answers "database is locked" (TEMPORARILY_UNAVAILABLE) while a
# parallel sweep job writes; a short back-off beats failing hours of training.
_LOCK_RETRIES = 4
_LOCK_BACKOFF_S = 0.5


class TrackingError(RuntimeError):
    """The MLflow store cannot be used; the message names the store and the fix."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """Absolute path of the database file of a ``sqlite:///`` URI.

    ``sqlite:////abs/mlflow.db`` → ``/abs/mlflow.db``; ``sqlite:///rel.db`` is taken
    relative to the working directory. Other stores and in-memory sqlite give None.
    """
    scheme, sep, rest = tracking_uri.partition("://")
    if not sep or scheme.split("+")[0] != "sqlite":
        return None
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:]).absolute()


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/<experiment>`` next
    to a sqlite database (``file://`` URI), or None to let MLflow decide."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / "mlartifacts" / experiment).as_uri()


def check_store(tracking_uri: str) -> None:
    """Fail fast, before any training, if the MLflow store cannot be written.

    Checks a sqlite store's folder, its artifact folder and the database lock, then
    opens the store (which creates or migrates its tables); probes an HTTP server's
    ``/health``. Raises:
        TrackingError: naming the store, the reason and the fix.
    """
    db = sqlite_path(tracking_uri)
    if db is not None:
        _check_sqlite(db)
        _open_store(tracking_uri)
    elif tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)


def _check_sqlite(db: Path) -> None:
    """Raise TrackingError unless ``db`` and its artifact folder are writable."""
    try:
        _probe_folder(db.parent)
        _probe_folder(db.parent / "mlartifacts")
        with closing(sqlite3.connect(db, timeout=5)) as connection:
            # A write lock proves the file is writable and not held by a stuck writer.
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
    except (OSError, sqlite3.Error) as exc:
        raise TrackingError(
            f"cannot write the MLflow store at {db}: {exc}; {_FIX}"
        ) from exc


def _probe_folder(folder: Path) -> None:
    """Create ``folder`` if missing and write a temporary file in it.

    Raises OSError; a real write, since root passes every permission check."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def _open_store(tracking_uri: str) -> None:
    """Open the store once, so schema or version errors surface before training."""
    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure here means "unusable store"; keep cause
        raise TrackingError(
            f"cannot open the MLflow store at {tracking_uri}: {exc}; {_FIX}"
        ) from exc


def _check_server(tracking_uri: str) -> None:
    """Raise TrackingError if the tracking server does not answer at all."""
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered: reachable (auth or routing is MLflow's to report)
    except (OSError, ValueError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow server at {tracking_uri}: {exc}; {_FIX}"
        ) from exc


def retry_locked(call: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call, retrying while a sqlite store reports itself locked."""
    for attempt in range(_LOCK_RETRIES):
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            last = attempt == _LOCK_RETRIES - 1
            if exc.error_code != "TEMPORARILY_UNAVAILABLE" or last:
                raise
            time.sleep(_LOCK_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")
