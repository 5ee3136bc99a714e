"""Crash-safe writes: every file and folder the project writes goes through ``atomic_path``.

The content is built under a temporary name beside its destination (``.NAME.tmp-PID-N``), flushed to disk and
renamed into place, so a kill leaves either the old content or the new, never part of one. A folder that
replaces another moves the old one aside first (``.NAME.old-PID-N``), since a rename cannot replace a non-empty
folder. ``remove_stale`` cleans up after processes that were killed before they could.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-\d+$")
_serial = itertools.count()


def temporary(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{next(_serial)}")


@contextmanager
def atomic_path(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temporary path beside ``target`` to write a file to, or to create and fill a folder in; when the block
    ends without an exception it replaces ``target``, else it is removed. ``replace=False``: a ``target`` that
    exists by then (another process wrote the same content first) is kept and the new copy dropped."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(target)
    try:
        yield tmp
        commit(tmp, target, replace)
    finally:
        _remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(obj, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def copy_tree_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copytree(source, tmp)


def remove_stale(folder: str | Path, *, only: str | None = None, recursive: bool = False) -> list[Path]:
    """Delete the temporaries in ``folder`` whose process has ended; a folder moved aside whose replacement never
    arrived is put back instead. ``only``: just those of the destination with this name; ``recursive``: in every
    sub-folder too. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for parent, dirs, files in os.walk(folder) if recursive else [(str(folder), *_listing(folder))]:
        for entry in sorted(dirs + files):
            match = _TEMPORARY.match(entry)
            if not match or (only is not None and match["name"] != only) or _alive(int(match["pid"])):
                continue
            path = Path(parent) / entry
            original = path.with_name(match["name"])
            if match["kind"] == "old" and not original.exists():
                try:
                    path.rename(original)
                except OSError:  # another process put it back first
                    pass
                continue
            _remove(path)
            removed.append(path)
        dirs[:] = [d for d in dirs if (Path(parent) / d).exists() and not _TEMPORARY.match(d)]
    return removed


def _listing(folder: Path) -> tuple[list[str], list[str]]:
    entries = list(folder.iterdir())
    return [e.name for e in entries if e.is_dir()], [e.name for e in entries if not e.is_dir()]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def commit(tmp: Path, target: Path, replace: bool = True) -> None:
    """Flush ``tmp`` to disk and rename it to ``target`` (for writers that cannot use ``atomic_path``'s block)."""
    _sync(tmp)
    if not replace:
        if target.exists():
            return
        try:
            tmp.rename(target)
        except OSError:  # a folder that another process renamed into place since
            if not target.exists():
                raise
    elif tmp.is_dir() and target.exists():
        old = temporary(target, "old")
        target.rename(old)
        tmp.rename(target)
        _remove(old)
    else:
        os.replace(tmp, target)
    _sync_folder(target.parent)


def _sync(path: Path) -> None:
    """Flush a file, or a folder with everything in it, to disk."""
    if path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            _sync_folder(child) if child.is_dir() else _sync_file(child)
        _sync_folder(path)
    else:
        _sync_file(path)


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(path: Path) -> None:
    if os.name == "nt":  # folders cannot be opened for fsync there; NTFS journals the rename itself
        return
    _sync_file(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
