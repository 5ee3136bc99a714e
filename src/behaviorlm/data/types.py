"""The shapes every stage agrees on: events, samples, behavior statistics, a prepared dataset.

A prepared dataset is a folder::

    DIR/stats.json             behaviors (name, count, share, group, anchor), sample counts, settings
    DIR/train.parquet          one row per sample (see SAMPLE_COLUMNS)
    DIR/valid.parquet
    DIR/test.parquet           next-behavior protocol: held-out users, natural distribution
    DIR/balanced_test.parquet  long-tail protocol: N samples per behavior from held-out users
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from behaviorlm.errors import InputError
from behaviorlm.files import atomic_path
from behaviorlm.files import write_json_atomic as write_json_atomic  # where most modules import it from

_EPOCH = datetime(1970, 1, 1)
SPLITS = ("train", "valid", "test", "balanced_test")
EVENT_COLUMNS = ("user_id", "timestamp", "location", "behavior")
"""The canonical event table: user_id (str), timestamp (naive local datetime64), location (str, "" if
unknown), behavior (str). Sorted by (user_id, timestamp)."""


@dataclass(frozen=True)
class Event:
    time: datetime
    place: str
    behavior: str


@dataclass(frozen=True)
class Sample:
    """(last-L events -> next event) for one user. ``target.behavior`` is the label."""

    sample_id: str
    user_id: str
    history: tuple[Event, ...]
    target: Event

    @property
    def label(self) -> str:
        return self.target.behavior


@dataclass(frozen=True)
class BehaviorInfo:
    name: str
    count: int
    share: float
    group: str  # "head" | "medium" | "tail"
    anchor: bool


@dataclass
class Stats:
    behaviors: list[BehaviorInfo]
    samples: dict[str, int]
    settings: dict

    @cached_property
    def by_name(self) -> dict[str, BehaviorInfo]:
        return {b.name: b for b in self.behaviors}

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.behaviors]

    @property
    def groups(self) -> dict[str, str]:
        return {b.name: b.group for b in self.behaviors}

    @property
    def anchors(self) -> set[str]:
        return {b.name for b in self.behaviors if b.anchor}

    def to_json(self) -> dict:
        return {"behaviors": [asdict(b) for b in self.behaviors], "samples": self.samples, "settings": self.settings}

    @classmethod
    def from_json(cls, raw: dict) -> Stats:
        return cls([BehaviorInfo(**b) for b in raw["behaviors"]], dict(raw["samples"]), dict(raw.get("settings", {})))


def samples_to_frame(samples: list[Sample]) -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": [s.sample_id for s in samples],
        "user_id": [s.user_id for s in samples],
        "history": [[{"time": e.time, "place": e.place, "behavior": e.behavior} for e in s.history] for s in samples],
        "target_time": [s.target.time for s in samples],
        "target_place": [s.target.place for s in samples],
        "target_behavior": [s.target.behavior for s in samples],
    })


def samples_from_frame(frame: pd.DataFrame) -> list[Sample]:
    return samples_from_table(pa.Table.from_pandas(frame, preserve_index=False))


def samples_from_table(table: pa.Table) -> list[Sample]:
    """Vectorised: the windows of one user overlap, so each distinct event becomes one shared Event object."""
    history = table.column("history").combine_chunks()
    offsets = history.offsets.to_numpy()
    flat = history.flatten()
    interned: dict[tuple, Event] = {}

    def events(times: pa.Array, places: pa.Array, behaviors: pa.Array) -> list[Event]:
        micros = times.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        place_codes = places.dictionary_encode()
        behavior_codes = behaviors.dictionary_encode()
        place_names = place_codes.dictionary.to_pylist()
        behavior_names = behavior_codes.dictionary.to_pylist()
        keys = zip(micros.tolist(), place_codes.indices.to_numpy(zero_copy_only=False).tolist(),
                   behavior_codes.indices.to_numpy(zero_copy_only=False).tolist())
        out = []
        for t, p, b in keys:
            key = (t, place_names[p], behavior_names[b])
            event = interned.get(key)
            if event is None:
                event = interned[key] = Event(_EPOCH + timedelta(microseconds=t), key[1], key[2])
            out.append(event)
        return out

    past = events(flat.field("time"), flat.field("place"), flat.field("behavior"))
    targets = events(table.column("target_time").combine_chunks(), table.column("target_place").combine_chunks(),
                     table.column("target_behavior").combine_chunks())
    ids = table.column("sample_id").to_pylist()
    users = table.column("user_id").to_pylist()
    return [
        Sample(str(ids[i]), str(users[i]), tuple(past[offsets[i]:offsets[i + 1]]), targets[i])
        for i in range(table.num_rows)
    ]


def write_samples(samples: list[Sample], path: Path) -> None:
    with atomic_path(path) as tmp:
        samples_to_frame(samples).to_parquet(tmp, index=False)


def read_samples(path: Path) -> list[Sample]:
    return samples_from_table(pq.read_table(path))


class PreparedData:
    """A prepared dataset folder (see module docstring)."""

    def __init__(self, root: str | Path):
        """Reads stats.json and checks the footer of every split file present, so a damaged dataset fails here,
        before any model is loaded (a missing split fails when it is read)."""
        self.root = Path(root)
        if not (self.root / "stats.json").is_file():
            raise InputError("not a prepared dataset (no stats.json); run `behaviorlm prepare` first", file=str(self.root))
        self.stats = read_stats(self.root / "stats.json")
        for name in SPLITS:
            path = self.root / f"{name}.parquet"
            if path.is_file():
                try:
                    pq.read_metadata(path)
                except Exception as exc:  # pyarrow raises several types for damaged files
                    raise _damaged(path, exc) from None
        self._cache: dict[str, list[Sample]] = {}

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        if name not in self._cache:
            path = self.root / f"{name}.parquet"
            if not path.is_file():
                raise InputError("split missing from the prepared dataset; run `behaviorlm prepare` again",
                                 file=str(path))
            try:
                self._cache[name] = read_samples(path)
            except Exception as exc:
                raise _damaged(path, exc) from None
        return self._cache[name]

    def evaluation_samples(self, name: str, limit: int | None = None, per_behavior: int | None = None) -> list[Sample]:
        """The samples an evaluation scores; every model sees the same ones.

        The balanced test set (long-tail protocol) takes ``per_behavior``: at most that many samples of every
        behavior, tail behaviors included, each behavior's chosen by its own seed (so a larger cap keeps the smaller
        cap's samples), listed behaviors in turn (round robin). Other splits take ``limit`` samples as stretches
        (``stretches``): the natural distribution over every user, cheap to score in the packed format.
        None = all samples.
        """
        samples = self.split(name)
        if name == "balanced_test":
            return samples if per_behavior is None else balanced(samples, per_behavior, seed=name)
        if limit is None or limit >= len(samples):
            return samples
        return stretches(samples, limit, seed=f"{name}:{limit}")

    @property
    def candidates(self) -> list[str]:
        """The candidate set shown in every prompt: all behaviors, in a fixed order."""
        return sorted(self.stats.names)


def balanced(samples: list[Sample], per_behavior: int, seed: str) -> list[Sample]:
    """At most ``per_behavior`` samples of every behavior, each behavior's drawn by its own seed (so a larger cap
    keeps the smaller cap's samples), listed behaviors in turn (round robin)."""
    by_behavior: dict[str, list[Sample]] = {}
    for sample in samples:
        by_behavior.setdefault(sample.label, []).append(sample)
    queues = [random.Random(f"{seed}:{label}").sample(q, len(q))[:per_behavior] for label, q in by_behavior.items()]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def stretches(samples: list[Sample], limit: int, seed: str) -> list[Sample]:
    """``limit`` samples: of each user, one stretch of consecutive samples (in split order) at a seeded random
    offset, as long as the user's share of ``samples`` allows (largest remainders, ties in seeded random order).

    Every user keeps its weight, so the subset keeps the natural distribution, and a stretch of one user's
    consecutive samples is one packed segment instead of many."""
    by_user: dict[str, list[Sample]] = {}
    for sample in samples:
        by_user.setdefault(sample.user_id, []).append(sample)
    rng = random.Random(seed)
    users = sorted(by_user)
    rng.shuffle(users)
    exact = {u: limit * len(by_user[u]) / len(samples) for u in users}
    quota = {u: int(exact[u]) for u in users}
    for u in sorted(users, key=lambda u: exact[u] - quota[u], reverse=True)[: limit - sum(quota.values())]:
        quota[u] += 1
    out: list[Sample] = []
    for u in sorted(users):
        start = rng.randrange(len(by_user[u]) - quota[u] + 1)
        out += by_user[u][start: start + quota[u]]
    return out


def _damaged(path: Path, exc: Exception) -> InputError:
    reason = (str(exc).strip().splitlines() or [""])[0][:120] or type(exc).__name__
    return InputError(f"not a readable sample file ({reason}); run `behaviorlm prepare` again", file=str(path))


def read_stats(path: Path) -> Stats:
    """A prepared dataset's stats.json; a damaged or foreign file is an InputError naming it."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid JSON (not UTF-8 at byte {exc.start}); run `behaviorlm prepare` again",
                         file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); run `behaviorlm "
                         "prepare` again", file=str(path)) from None
    try:
        stats = Stats.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"not a prepared dataset's statistics ({type(exc).__name__}: {str(exc)[:80]}); "
                         "run `behaviorlm prepare` again", file=str(path)) from None
    if not stats.behaviors or not all(isinstance(b.name, str) and b.name for b in stats.behaviors):
        raise InputError("lists no behaviors, or one without a name; run `behaviorlm prepare` again", file=str(path))
    return stats
