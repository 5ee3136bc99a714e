"""Samples with a known answer, built in code."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

from behaviorlm.data.types import BehaviorInfo, Event, Sample, Stats, write_samples

CYCLE = ("Commute", "Work", "Lunch", "Gym", "Dinner", "Sleep")


def user_events(rng: random.Random, n: int, behavior) -> list[Event]:
    """Random gaps and places, so the context carries no information about the behavior."""
    time, events = datetime(2024, 1, 1) + timedelta(minutes=rng.randrange(10_000)), []
    for i in range(n):
        time += timedelta(minutes=rng.randrange(20, 600))
        events.append(Event(time, f"place{rng.randrange(5)}", behavior(i)))
    return events


def cyclic_samples(users: int, per_user: int, history: int = 6, prefix: str = "u", cycle=CYCLE, seed: int = 0) -> list[Sample]:
    """Each user walks the cycle from a different phase: the next behavior is always the successor of the last."""
    rng, out = random.Random(f"{seed}:{prefix}"), []
    for u in range(users):
        events = user_events(rng, per_user + history, lambda i: cycle[(u + i) % len(cycle)])
        for i in range(per_user):
            out.append(Sample(f"{prefix}{u}-{i}", f"{prefix}{u}", tuple(events[i:i + history]), events[i + history]))
    return out


def random_samples(users: int, per_user: int, history: int = 6, prefix: str = "r", cycle=CYCLE, seed: int = 0) -> list[Sample]:
    """Behaviors drawn independently: nothing can be predicted, so ~1/len(cycle) accuracy is the ceiling."""
    rng, out = random.Random(f"{seed}:{prefix}"), []
    for u in range(users):
        events = user_events(rng, per_user + history, lambda i: rng.choice(cycle))
        for i in range(per_user):
            out.append(Sample(f"{prefix}{u}-{i}", f"{prefix}{u}", tuple(events[i:i + history]), events[i + history]))
    return out


def stats_for(samples_by_split: dict[str, list[Sample]], candidates=CYCLE) -> Stats:
    counts = {c: sum(s.label == c for s in samples_by_split["train"]) for c in candidates}
    total = sum(counts.values()) or 1
    ordered = sorted(candidates, key=lambda c: -counts[c])
    groups = {c: ("head" if i < 2 else "medium" if i < 4 else "tail") for i, c in enumerate(ordered)}
    behaviors = [BehaviorInfo(c, counts[c], counts[c] / total, groups[c], groups[c] == "head") for c in candidates]
    return Stats(behaviors, {k: len(v) for k, v in samples_by_split.items()}, {"history_len": 6})


def write_prepared(root: Path, splits: dict[str, list[Sample]], candidates=CYCLE) -> Path:
    """A prepared dataset folder: stats.json + the four split parquet files."""
    root.mkdir(parents=True, exist_ok=True)
    for name, samples in splits.items():
        write_samples(samples, root / f"{name}.parquet")
    (root / "stats.json").write_text(json.dumps(stats_for(splits, candidates).to_json()))
    return root


def cyclic_splits() -> dict[str, list[Sample]]:
    return {
        "train": cyclic_samples(8, 30, prefix="tr"),
        "valid": cyclic_samples(2, 15, prefix="va"),
        "test": cyclic_samples(2, 15, prefix="te"),
        "balanced_test": cyclic_samples(6, 3, prefix="ba"),
    }
