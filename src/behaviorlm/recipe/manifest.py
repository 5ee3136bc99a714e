"""The run folder's manifest (``RUN/manifest.json``) and what keeps it honest.

A finished stage records the SHA-256 of every file it wrote (``outputs``; hidden files and ``checkpoints/`` are not
outputs). Before a stage is skipped as done they are checked: a missing or changed file reruns the stage. Each
stage's record is also kept in its own folder (``.stage.json``), so a damaged manifest is rebuilt from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from behaviorlm.errors import InputError
from behaviorlm.files import write_json_atomic

log = logging.getLogger(__name__)

RECORD = ".stage.json"
NOT_OUTPUTS = ("checkpoints",)
"""Top-level sub-folders of a stage folder that are work in progress, not results."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every output file in a stage folder."""
    out = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and relative.parts[0] not in NOT_OUTPUTS and not any(p.startswith(".") for p in relative.parts):
            out[relative.as_posix()] = file_sha256(path)
    return out


def changed_output(folder: Path, hashes: dict[str, str] | None) -> str | None:
    """What differs from the recorded outputs (a missing or changed file), or None. Files added later do not count;
    a record without hashes (a run made before they were kept) is trusted."""
    for relative, digest in (hashes or {}).items():
        path = folder / relative
        if not path.is_file():
            return f"{relative} is missing"
        if file_sha256(path) != digest:
            return f"{relative} changed"
    return None


def write_record(folder: Path, name: str, record: dict) -> None:
    write_json_atomic({"stage": name, "record": record}, folder / RECORD)


def load_manifest(root: Path) -> dict:
    """``RUN/manifest.json``; missing or damaged, it is rebuilt from the stage folders' records. Damaged with no
    record to rebuild it from (a run folder written before stage records were kept): an InputError."""
    path = root / "manifest.json"
    problem = None
    if path.exists():
        try:
            manifest = json.loads(path.read_bytes())
            problem = _shape_problem(manifest)
        except (OSError, ValueError) as exc:
            problem = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        if problem is None:
            return manifest
    stages = _records(root)
    if problem is None:
        return {"stages": stages}
    if not stages:
        raise InputError(f"damaged ({problem}) and no stage folder records its stage to rebuild it from; delete it "
                         "to run every stage again", file=str(path))
    log.warning("%s: damaged (%s); rebuilt from the records of %d stage folders", path, problem, len(stages))
    return {"stages": stages}


def _shape_problem(manifest) -> str | None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
        return "no stages"
    for name, record in manifest["stages"].items():
        if not isinstance(record, dict) or not {"fingerprint", "status"} <= record.keys():
            return f"stage {name} incomplete"
    return None


def _records(root: Path) -> dict[str, dict]:
    stages = {}
    for path in sorted(root.rglob(RECORD)):
        try:
            raw = json.loads(path.read_bytes())
            stages[raw["stage"]] = raw["record"]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable stage record, ignored", path)
    return {name: record for name, record in stages.items() if _shape_problem({"stages": {name: record}}) is None}
