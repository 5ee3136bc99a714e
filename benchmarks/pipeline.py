"""Pipeline benchmark: wall time and peak RSS of each stage of ``behaviorlm run``.

Stage wall times come from ``RUN/manifest.json`` (the pipeline records each stage's seconds). Peak RSS needs
the run to be watched: ``run_pipeline`` starts ``behaviorlm run`` in a child process, samples the resident set
of the child (and its own children) every ``interval`` seconds from ``/proc`` and charges each sample to the
stage the manifest marks as running; the run's overall peak is the child's ``getrusage`` maxrss (``os.wait4``),
which sampling cannot miss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def stage_timings(run: str | Path) -> dict:
    """Per stage: wall seconds and status, from a run folder's manifest."""
    path = Path(run) / "manifest.json"
    if not path.is_file():
        from behaviorlm.errors import InputError

        raise InputError("not a run folder (no manifest.json)", file=str(run))
    manifest = json.loads(path.read_text())
    stages = [{"stage": name, "seconds": record.get("seconds"), "status": record.get("status"),
               "resumed": record.get("resumed", False)} for name, record in manifest.get("stages", {}).items()]
    return {"run": str(run), "stages": stages, "last_run_seconds": manifest.get("last_run_seconds"),
            "stage_seconds_total": sum(s["seconds"] or 0 for s in stages)}


def _tree_rss_bytes(pid: int) -> int:
    """Resident set of ``pid`` and its descendants, from /proc (0 where /proc is unavailable)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
        except (OSError, ValueError):
            continue
    return total


def _running_stage(manifest: Path) -> str | None:
    try:
        stages = json.loads(manifest.read_text()).get("stages", {})
    except (OSError, ValueError):
        return None
    running = [name for name, record in stages.items() if record.get("status") == "running"]
    return running[-1] if running else None


def watch(command: list[str], manifest: Path, interval: float = 0.5) -> dict:
    """Run ``command``; its wall time, its peak RSS, and the peak RSS seen while each manifest stage ran."""
    started = time.perf_counter()
    child = subprocess.Popen(command)
    per_stage: dict[str, int] = {}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        stage = _running_stage(manifest) or "(between stages)"
        per_stage[stage] = max(per_stage.get(stage, 0), _tree_rss_bytes(child.pid))
        time.sleep(interval)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; keep Popen from waiting again
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return {"command": " ".join(command), "exit_status": child.returncode,
            "wall_seconds": time.perf_counter() - started,
            "peak_rss_bytes": peak, "stage_peak_rss_bytes": per_stage, "rss_sample_interval_s": interval}


def run_pipeline(config: str | Path, out: str | Path, overrides: list[str] = (), interval: float = 0.5) -> dict:
    """Run ``behaviorlm run --config CONFIG --out OUT`` and measure wall time and peak RSS, overall and per stage."""
    out = Path(out)
    command = [sys.executable, "-m", "behaviorlm.cli", "run", "--config", str(config), "--out", str(out)]
    for item in overrides:
        command += ["--set", item]
    watched = watch(command, out / "manifest.json", interval)
    if watched["exit_status"] != 0:
        raise RuntimeError(f"`{watched['command']}` failed with exit status {watched['exit_status']}")
    timings = stage_timings(out)
    for entry in timings["stages"]:
        entry["peak_rss_bytes"] = watched["stage_peak_rss_bytes"].get(entry["stage"])
    return {**timings, **watched}
