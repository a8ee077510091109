"""The MLflow store: where a tracking URI keeps its data, and whether it can be used.

:func:`check_store` runs before any training, so an unwritable folder, a locked
or read-only database, a half-created store, an unreachable server or a server that is
not MLflow fails in seconds with the fix, not after hours; :func:`retry_locked` rides
out the short locks of a sqlite store that parallel sweep jobs share.

Creating (or migrating) a sqlite store is serialised between processes by an
exclusive ``fcntl.flock`` on ``<db>.lock`` beside it: two first runs started together
on an empty ``outputs/`` would otherwise both create the tables ("table
alembic_version already exists") and could leave a half-made store.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
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
# How long a run waits for another process to finish creating the store.
CREATE_LOCK_TIMEOUT_S = 300.0
# Store URI schemes MLflow can track to (a "+driver" suffix is allowed: postgresql+psycopg2).
KNOWN_SCHEMES = (
    "sqlite",
    "http",
    "https",
    "file",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
)
# The core tables of a complete MLflow store.
_CORE_TABLES = ("experiments", "runs", "metrics", "params", "tags")


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
    _check_scheme(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None:
        _check_sqlite(db)
        with store_lock(db):
            _check_complete(db)
            _open_store(tracking_uri)
    elif tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)


def _check_scheme(tracking_uri: str) -> None:
    """Raise TrackingError for a URI scheme MLflow cannot track to (``htp://``)."""
    scheme, sep, _rest = tracking_uri.partition("://")
    if not sep:
        return  # a plain local path: MLflow's file store
    if scheme.split("+")[0].lower() not in KNOWN_SCHEMES:
        raise TrackingError(
            f"logger.tracking_uri={tracking_uri} has an unknown scheme '{scheme}://' "
            f"(known: {', '.join(KNOWN_SCHEMES)}); did you mean http://? Use "
            "logger.tracking_uri=http://<host>:<port> for a server, "
            "sqlite:///<folder>/mlflow.db for a local store, or logger=none"
        )


@contextmanager
def store_lock(db: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``<db>.lock`` (``fcntl.flock``).

    Waits up to ``timeout_s`` (default :data:`CREATE_LOCK_TIMEOUT_S`) for another
    process that is creating or migrating the store; the lock is released when the
    holder exits, even after a crash. A no-op where ``fcntl`` is missing (Windows).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; creation races stay possible there
        yield
        return
    limit = CREATE_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    lock_path = db.with_name(db.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise TrackingError(
            f"cannot create the lock file {lock_path} of the MLflow store: "
            f"{exc.strerror or exc}; {_FIX}"
        ) from exc
    try:
        _acquire(fcntl, fd, lock_path, limit)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fcntl: object, fd: int, lock_path: Path, limit: float) -> None:
    """Poll for the exclusive lock on ``fd`` for at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[attr-defined]
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() > deadline:
            raise TrackingError(
                f"another process has held {lock_path} for over {limit:.0f} s while "
                "creating the MLflow store; wait for it to finish, or stop it and "
                f"run again; {_FIX}"
            )
        time.sleep(0.05)


def _check_complete(db: Path) -> None:
    """Raise TrackingError for a store whose creation stopped half-way.

    An empty or missing file is fine (MLflow creates the tables); a file with some
    tables but not MLflow's core ones or no schema version was left half-made (two
    runs creating it at once, or one killed while creating it).
    """
    if not db.is_file() or db.stat().st_size == 0:
        return
    with closing(sqlite3.connect(db, timeout=5)) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        version = None
        if "alembic_version" in tables:
            row = connection.execute(
                "SELECT version_num FROM alembic_version"
            ).fetchone()
            version = row[0] if row else None
    if not tables:
        return
    missing = [t for t in _CORE_TABLES if t not in tables]
    if missing or version is None:
        what = (
            f"tables {', '.join(missing)} are missing"
            if missing
            else "it records no schema version (alembic_version is empty or absent)"
        )
        raise TrackingError(
            f"the MLflow store at {db} is half-created: {what}. It was probably left "
            "by two runs creating it at once or by a run killed while creating it. "
            f"If it holds no runs you need, delete {db} (and {db.parent / 'mlartifacts'}) "
            f"and run again; otherwise set logger.tracking_uri to another store, e.g. "
            "logger.tracking_uri=sqlite:///<folder>/mlflow.db"
        )


def _check_sqlite(db: Path) -> None:
    """Raise TrackingError unless ``db`` and its artifact folder are writable."""
    try:
        _probe_folder(db.parent)
        _probe_folder(db.parent / "mlartifacts")
        _probe_file(db)
        with closing(sqlite3.connect(db, timeout=5)) as connection:
            # A write lock proves the file is writable and not held by a stuck writer.
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
    except (OSError, sqlite3.Error) as exc:
        raise TrackingError(
            f"cannot write the MLflow store at {db}: {exc}; {_FIX}"
        ) from exc


def _probe_file(db: Path) -> None:
    """Open an existing database file for writing (nothing is written).

    sqlite silently opens a read-only file read-only, and its ``BEGIN IMMEDIATE``
    then succeeds; the first real write would fail hours later. Raises TrackingError.
    """
    if not db.exists():
        return
    try:
        with open(db, "r+b"):
            pass
    except OSError as exc:
        raise TrackingError(
            f"the MLflow store {db} is read-only ({exc.strerror or exc}); make it "
            f"writable (chmod u+w {db}, or chattr -i), or {_FIX}"
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
    """Raise TrackingError unless an MLflow server answers at ``tracking_uri``.

    Its ``/health`` must answer ``OK``; 401/403 (a server behind authentication) is
    left to MLflow to report with its own message. Anything else that speaks HTTP is
    not an MLflow tracking server (a web page, another service on that port).
    """
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return
        raise _not_mlflow(tracking_uri, f"HTTP {exc.code} {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow server at {tracking_uri}: {exc}; {_FIX}"
        ) from exc
    if body.strip() != b"OK":
        raise _not_mlflow(tracking_uri, f"HTTP 200 with {body[:30]!r}, not 'OK'")


def _not_mlflow(tracking_uri: str, answer: str) -> TrackingError:
    """The message for an HTTP service that is not an MLflow tracking server."""
    return TrackingError(
        f"{tracking_uri} answers HTTP but is not an MLflow tracking server (its "
        f"/health gave {answer}); check the host and port in logger.tracking_uri "
        "(start a server with `mlflow server --host 127.0.0.1 --port 5000`), or "
        f"{_FIX}"
    )


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
