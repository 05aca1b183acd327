"""Log files of a run and of each cell: a handler on the root logger for the duration of a block."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from ..io import is_disk_full

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LogFile(logging.FileHandler):
    """A file handler that drops records quietly while the disk is full (the run itself stops at its next write,
    with one line naming the path) instead of printing a traceback per record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if err is None or not is_disk_full(err):
            super().handleError(record)


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Log INFO and above into ``path`` for the duration of the block (the handler is removed afterwards, so the
    benchmarks of a multi-document file, and the cells of a run, each keep their own log)."""
    root = logging.getLogger()
    handler = _LogFile(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    previous = root.level
    root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)
