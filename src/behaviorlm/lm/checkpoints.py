"""Which of a tuning stage's checkpoints to resume from.

Hugging Face Trainer writes a ``checkpoint-N`` folder file by file (``trainer_state.json`` last), so a kill can leave
one empty or with a truncated file, and Trainer then fails on every rerun. Before resuming, each checkpoint is read
back, newest first; a damaged one is removed with a warning and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
_STEP = re.compile(r"^checkpoint-(\d+)$")


def last_valid_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint in ``folder`` that reads back whole; damaged newer ones are removed (by the main process
    when a launcher runs several: the others make the same choice)."""
    if not folder.is_dir():
        return None
    found = [(int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if os.environ.get("RANK", "0") == "0":
            log.warning("%s: damaged (%s); removed, resuming from the checkpoint before it", path, problem)
            shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder cannot be resumed from, or None."""
    try:
        names = {p.name for p in path.iterdir() if p.is_file()}
    except FileNotFoundError:  # removed by another process meanwhile
        return "removed"
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        return f"no {missing[0]}"
    if not names & set(WEIGHTS):
        return "no model weights"
    for name in sorted(names):
        problem = _file_problem(path / name)
        if problem:
            return f"{name}: {problem}"
    return None


def _file_problem(path: Path) -> str | None:
    try:
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path))  # reads every tensor, so a truncated file fails here
        elif path.suffix in (".pt", ".pth", ".bin"):  # torch.save writes a zip archive: check every member's CRC
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"corrupt member {bad}"
    except Exception as exc:  # each reader raises its own types for a damaged file
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return None
