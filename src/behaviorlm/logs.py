"""One logging channel: the package's messages go to the ``behaviorlm`` logger (``logging.getLogger(__name__)`` in
every module). The command line shows them on stderr as ``[behaviorlm] message`` (``show_on_stderr``); a run also
appends them, with time and level, to ``RUN/log.txt`` (``run_log``). Used as a library, nothing is configured:
warnings reach Python's last-resort handler, the rest stays quiet unless the application configures logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = "behaviorlm"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (tests and tools replace it)."""

    def __init__(self, fmt: str = "[behaviorlm] %(message)s", level: int = logging.NOTSET):
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))
        self.setLevel(level)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def show_on_stderr() -> None:
    """The command line's setting: the package's messages from INFO up on stderr, once per process."""
    logger = logging.getLogger(PACKAGE)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append the package's messages from INFO up to ``path`` while the block runs (in the main process only, when
    several share the run)."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    logger = logging.getLogger(PACKAGE)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    handlers = [handler]
    if not _configured(logger):  # the file handler would silence Python's last resort: keep warnings on stderr
        handlers.append(_Stderr("%(message)s", logging.WARNING))
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    for h in handlers:
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
        handler.close()
        logger.setLevel(level)


def _configured(logger: logging.Logger) -> bool:
    """Whether a message of ``logger`` reaches a handler (else Python's last resort prints warnings)."""
    while logger is not None:
        if logger.handlers:
            return True
        logger = logger.parent if logger.propagate else None
    return False
