"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class InputError(Exception):
    """Bad input: a file, row and field that the user can correct.

    The message is the whole story, e.g. ``events.csv: row 17: timestamp: cannot parse 'yesterday'``.
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        parts = [str(p) for p in (file, f"row {row}" if row is not None else None, field) if p]
        super().__init__(": ".join(parts + [message]))


def check_destination(path: str | Path, option: str = "--out", *, directory: bool = False) -> Path:
    """Fail before any work if ``path`` cannot be written: a file in the way, or a folder that refuses writes.

    Nothing is created: the nearest existing folder above ``path`` is probed with a temporary file that is
    removed at once (permission bits alone do not tell, e.g. for root or on read-only mounts).
    """
    path = Path(path)
    if path.exists() and (path.is_dir() != directory):
        kind = "a folder" if path.is_dir() else "a file"
        raise InputError(f"{option}: is {kind}; expected {'a folder' if directory else 'a file name'}", file=str(path))
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{option}: cannot be created, because {parent} is a file", file=str(path))
    probe_dir = path if directory and path.is_dir() else parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".behaviorlm-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{option}: cannot write in {probe_dir} ({exc.strerror or type(exc).__name__})",
                         file=str(path)) from None
    return path
