"""Keep ``train.log`` complete without printing lines twice on a terminal.

On a terminal the progress hook shows each epoch line with rich, above its bars, and
also logs it with ``extra=FILE_ONLY`` so that Hydra's ``train.log`` keeps the history.
While the bars are up, :func:`mute_file_only_on_terminals` makes the stream handlers
that write to a terminal drop those records: file handlers (and log capture in tests)
still receive them, the terminal shows the line once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import IO

FILE_ONLY_ATTR = "snnrun_file_only"
FILE_ONLY = {FILE_ONLY_ATTR: True}
"""``extra=`` for a record meant for log files only (the terminal shows it already)."""


class FileOnlyFilter(logging.Filter):
    """Drop records logged with ``extra=FILE_ONLY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY_ATTR, False)


def terminal_handlers(logger: logging.Logger) -> list[logging.StreamHandler[IO[str]]]:
    """Stream handlers (not file handlers) writing to a terminal, that records of
    ``logger`` reach: its own and its ancestors' while ``propagate`` holds."""
    found: list[logging.StreamHandler[IO[str]]] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if _writes_to_terminal(h)]
        current = current.parent if current.propagate else None
    return found


def mute_file_only_on_terminals(logger: logging.Logger) -> Callable[[], None]:
    """Filter ``FILE_ONLY`` records out of ``logger``'s terminal handlers.

    Returns: a function that removes the filter again (call it when the bars close).
    """
    only_files = FileOnlyFilter()
    handlers = terminal_handlers(logger)
    for handler in handlers:
        handler.addFilter(only_files)

    def unmute() -> None:
        for handler in handlers:
            handler.removeFilter(only_files)

    return unmute


def _writes_to_terminal(handler: logging.Handler) -> bool:
    if not isinstance(handler, logging.StreamHandler) or isinstance(
        handler, logging.FileHandler
    ):
        return False
    isatty = getattr(handler.stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (OSError, ValueError):  # a closed stream
        return False
