"""Ends every run the same way, whatever stopped it.

Tracking runs get FINISHED / FAILED / KILLED, progress displays are closed, and a
user error (bad value, bad data, bad checkpoint, NaN loss, unreachable store) becomes
one clear line on stderr and a non-zero exit instead of a bare traceback (the full
traceback still goes to the run's ``train.log``).

Inside a sweep (``in_sweep``) a failed job must not end the process: the error is
logged the same way and then re-raised for Hydra, which records the job as failed and
goes on with the next one (``app/sweep.py`` sums up the sweep at its end).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from snnrun.train.hooks import run_status

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def is_user_error(error: BaseException) -> bool:
    """snnrun's own exceptions carry a message written for the user."""
    return type(error).__module__.startswith("snnrun.")


class RunGuard:
    """Context manager around one training job.

    Args:
        run_dir: the job's output folder, named in the closing messages.
        resume_hint: the command that continues this run after an interruption.
        in_sweep: a Hydra multirun job: re-raise errors instead of exiting (Ctrl-C
            still exits, and so stops the whole sweep).
    """

    def __init__(self, run_dir: Path, resume_hint: str, in_sweep: bool = False) -> None:
        self.run_dir = run_dir
        self.resume_hint = resume_hint
        self.in_sweep = in_sweep
        self.closers: list[Callable[[str], None]] = []
        self.stop: Callable[[], None] | None = None  # graceful stop, set by the app
        self._previous: dict[int, object] = {}

    def __enter__(self) -> RunGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            # ValueError off the main thread: leave signals alone there.
            with contextlib.suppress(ValueError):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # First signal: stop at the next batch boundary so the checkpoint matches its
        # position. A second one (or one before training starts) stops at once.
        if self.stop is not None:
            log.warning(
                "%s received: stopping after this batch (again to abort)",
                signal.Signals(signum).name,
            )
            self.stop()
            self.stop = None
            return
        raise KeyboardInterrupt

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        status = run_status(exc)
        for close in self.closers:
            try:
                close(status)
            except Exception:  # closing must not mask the original error
                log.exception("error while closing the run")
        if exc is None:
            log.info("run folder: %s", self.run_dir)
            return False
        if isinstance(exc, KeyboardInterrupt):
            _fail(self._interrupted_message(), EXIT_INTERRUPTED)
        if isinstance(exc, Exception) and is_user_error(exc):
            log.debug("details", exc_info=exc)
            message = f"{exc}\n(run folder: {self.run_dir})"
            if self.in_sweep:  # Hydra records the job as failed; the sweep goes on
                log.error("snnrun: error: %s", message)
                return False
            _fail(message, EXIT_USER_ERROR)
        log.error(
            "unexpected error; the traceback follows (run folder: %s)", self.run_dir
        )
        return False

    def _interrupted_message(self) -> str:
        """How to continue: resume when a checkpoint exists, else start again."""
        if (self.run_dir / "checkpoints" / "last.pt").is_file():
            return (
                f"interrupted; checkpoint and logs in {self.run_dir}. "
                f"Resume with: {self.resume_hint}"
            )
        return (
            "interrupted before the first checkpoint was written, so there is nothing "
            f"to resume; logs in {self.run_dir}. Start the run again with the same "
            "command"
        )


class OutputFolderCheck(Callback):
    """Hydra callback (``conf/train.yaml``): an unwritable ``paths.output_root`` is
    one clear error and exit 2, before Hydra creates the run folder in it (which
    would otherwise fail with Hydra's traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_root(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_root(config)


def check_output_root(config: DictConfig) -> None:
    """Create ``paths.output_root`` if needed and write a temporary file in it.

    A real write, since root passes every permission check; exits with
    :data:`EXIT_USER_ERROR` and a message naming the folder when that fails.
    """
    root = Path(str(OmegaConf.select(config, "paths.output_root"))).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        where = error.filename or root
        fail(
            f"cannot write the output folder paths.output_root={root} "
            f"({error.strerror or error}: {where}); set paths.output_root to a "
            "writable folder"
        )


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Report ``snnrun: error: <message>`` (console and log) and exit with ``code``."""
    _fail(message, code)
    raise AssertionError("unreachable")


def _fail(message: str, code: int) -> None:
    if logging.getLogger().handlers:  # under Hydra: console and the run's train.log
        log.error("snnrun: error: %s", message)
    else:
        sys.stderr.write(f"snnrun: error: {message}\n")
    raise SystemExit(code)
