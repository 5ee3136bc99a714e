"""From canonical events to samples: vocabulary fold, behavior statistics, windows, user split, balanced test.

- **Vocabulary fold.** Datasets with hundreds of categories (LLMob has 527) keep their ``K`` most frequent
  behaviors and fold the rest into "Other <group>" (group from the ``behavior_group`` column, else "Other"),
  so the class count is near the paper's 24-37. ``vocab_top_k=None`` folds to 30 only when there are more
  than 40 behaviors; ``0`` never folds.
- **Statistics.** A behavior's share is its count over all events (after the fold) divided by all events;
  head: share > ``head_threshold``, medium: > ``medium_threshold``, else tail; anchor: > ``anchor_threshold``.
- **Windows.** Per user, in time order, every event with ``history_len`` events before it is a sample
  (last-L -> next). Only full histories are used, as in the paper's "(last-20 events, next event)" samples;
  users with at most L events yield none. ``max_samples_per_user`` keeps a seeded random subset per user.
- **Split.** Users (not samples) are split 8:1:1 with a seeded shuffle, so no test user is seen in training.
- **Balanced test** (the long-tail protocol): up to ``balanced_per_behavior`` samples of each behavior drawn
  (seeded) from the held-out test users' samples; a behavior with fewer samples there keeps all it has.
  It may share samples with ``test``; both protocols only read held-out users.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from behaviorlm.config import DataConfig
from behaviorlm.data.events import GROUP_COLUMN
from behaviorlm.data.types import BehaviorInfo, Sample, samples_from_frame

AUTO_FOLD_ABOVE = 40
AUTO_TOP_K = 30


def resolve_top_k(vocab_top_k: int | None, n_behaviors: int) -> int | None:
    """The K actually used: None = no fold."""
    if vocab_top_k is None:
        return AUTO_TOP_K if n_behaviors > AUTO_FOLD_ABOVE else None
    if vocab_top_k <= 0 or vocab_top_k >= n_behaviors:
        return None
    return vocab_top_k


def _ranked(counts: pd.Series) -> list[str]:
    """Behaviors by count, most frequent first; ties by name so the order never depends on input order."""
    return sorted(counts.index, key=lambda name: (-counts[name], name))


def fold_vocabulary(events: pd.DataFrame, top_k: int | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Keep the ``top_k`` most frequent behaviors; relabel the rest "Other <group>" (or "Other").

    Returns the relabelled events (without the group column) and {original behavior: folded label} for
    every behavior that was folded. A behavior's group is the group it carries most often.
    """
    kept_columns = [c for c in events.columns if c != GROUP_COLUMN]
    if top_k is None:
        return events[kept_columns], {}
    ranked = _ranked(events["behavior"].value_counts())
    folded = ranked[top_k:]
    if GROUP_COLUMN in events.columns:
        pairs = events.loc[events["behavior"].isin(folded), ["behavior", GROUP_COLUMN]]
        group_counts = pairs.value_counts().reset_index(name="n")
        group_counts = group_counts.sort_values(["behavior", "n", GROUP_COLUMN], ascending=[True, False, True])
        group_of = group_counts.drop_duplicates("behavior").set_index("behavior")[GROUP_COLUMN].to_dict()
    else:
        group_of = {}
    mapping = {b: f"Other {group_of[b]}" if group_of.get(b) else "Other" for b in folded}
    out = events[kept_columns].copy()
    out["behavior"] = out["behavior"].map(lambda b: mapping.get(b, b)).astype(str)
    return out, mapping


def behavior_stats(events: pd.DataFrame, config: DataConfig) -> list[BehaviorInfo]:
    """Count, share, group and anchor flag of every behavior, most frequent first."""
    counts = events["behavior"].value_counts()
    total = int(counts.sum())
    infos = []
    for name in _ranked(counts):
        share = int(counts[name]) / total
        group = "head" if share > config.head_threshold else "medium" if share > config.medium_threshold else "tail"
        infos.append(BehaviorInfo(name=name, count=int(counts[name]), share=share, group=group,
                                  anchor=share > config.anchor_threshold))
    return infos


def window_index(
    events: pd.DataFrame,
    history_len: int,
    *,
    max_samples_per_user: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Every (last-L -> next) sample as a row: ``sample_id``, ``user_id``, ``target`` (row of ``events``), ``label``.

    ``events`` must be the canonical table (sorted by user and time, index 0..n-1). Samples are kept as row
    numbers rather than objects so that hundreds of thousands of them can be split and written quickly
    (see :func:`sample_table`).
    """
    if history_len < 1:
        raise ValueError(f"history_len must be at least 1, got {history_len}")
    users = events["user_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    targets, ids = [], []
    spans = list(zip(bounds[:-1], bounds[1:]))
    for start, end in tqdm(spans, desc="windows", unit="user", disable=None if progress else True, leave=False):
        user = str(users[start])
        rows = np.arange(start + history_len, end)
        if max_samples_per_user is not None and len(rows) > max_samples_per_user:
            rows = np.sort(random.Random(f"{seed}:{user}").sample(list(rows), max_samples_per_user))
        targets.append(rows)
        ids.extend(f"{user}:{i}" for i in rows - start)  # user:position of the target in the user's log
    target = np.concatenate(targets).astype(np.int64) if targets else np.array([], dtype=np.int64)
    return pd.DataFrame({
        "sample_id": pd.array(ids, dtype=str),
        "user_id": pd.array(users[target], dtype=str),
        "target": target,
        "label": pd.array(events["behavior"].to_numpy()[target], dtype=str),
    })


SAMPLE_SCHEMA = pa.schema([
    ("sample_id", pa.large_string()),
    ("user_id", pa.large_string()),
    ("history", pa.list_(pa.struct([("time", pa.timestamp("us")), ("place", pa.string()),
                                    ("behavior", pa.string())]))),
    ("target_time", pa.timestamp("us")),
    ("target_place", pa.large_string()),
    ("target_behavior", pa.large_string()),
])
"""The Parquet schema of a split, the same as :func:`behaviorlm.data.types.write_samples` produces."""


def sample_table(events: pd.DataFrame, index: pd.DataFrame, history_len: int) -> pa.Table:
    """The samples of ``index`` as an Arrow table (one row per sample, history as a list of structs)."""
    target = index["target"].to_numpy(dtype=np.int64)
    rows = (target[:, None] + np.arange(-history_len, 0)[None, :]).reshape(-1)
    times = pa.array(events["timestamp"].to_numpy().astype("datetime64[us]"), type=pa.timestamp("us"))
    places = pa.array(events["location"].to_numpy(dtype=object), type=pa.string())
    behaviors = pa.array(events["behavior"].to_numpy(dtype=object), type=pa.string())
    take = pa.array(rows, type=pa.int64())
    history_events = pa.StructArray.from_arrays(
        [times.take(take), places.take(take), behaviors.take(take)], names=["time", "place", "behavior"])
    offsets = pa.array(np.arange(0, len(rows) + 1, history_len, dtype=np.int32))
    history = pa.ListArray.from_arrays(offsets, history_events, type=SAMPLE_SCHEMA.field("history").type)
    target_take = pa.array(target, type=pa.int64())
    return pa.Table.from_arrays([
        pa.array(index["sample_id"].to_numpy(dtype=object), type=pa.large_string()),
        pa.array(index["user_id"].to_numpy(dtype=object), type=pa.large_string()),
        history,
        times.take(target_take),
        places.take(target_take).cast(pa.large_string()),
        behaviors.take(target_take).cast(pa.large_string()),
    ], schema=SAMPLE_SCHEMA)


def make_samples(events: pd.DataFrame, history_len: int, **kwargs) -> list[Sample]:
    """All (last-L -> next) samples of ``events`` as :class:`Sample` objects (for small data and the API)."""
    index = window_index(events, history_len, progress=False, **kwargs)
    return samples_from_frame(sample_table(events, index, history_len).to_pandas())


def split_users(users: list[str], ratios: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Seeded shuffle of the users, cut by ``ratios`` (train, valid, test); valid/test get >= 1 user when >= 3."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    order = sorted(users)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    n_valid = round(n * ratios[1] / total)
    n_test = round(n * ratios[2] / total)
    if n >= 3:
        n_valid = max(n_valid, 1) if ratios[1] > 0 else 0
        n_test = max(n_test, 1) if ratios[2] > 0 else 0
    n_train = n - n_valid - n_test
    return {
        "train": sorted(order[:n_train]),
        "valid": sorted(order[n_train:n_train + n_valid]),
        "test": sorted(order[n_train + n_valid:]),
    }


def balanced_test(index: pd.DataFrame, behaviors: list[str], per_behavior: int, seed: int) -> pd.DataFrame:
    """Up to ``per_behavior`` samples of each behavior (seeded, independently per behavior), in ``behaviors`` order."""
    parts = []
    for name in behaviors:
        pool = index[index["label"] == name]
        if len(pool) > per_behavior:
            pool = pool.sample(n=per_behavior, random_state=np.random.default_rng([seed, zlib.crc32(name.encode())]))
        parts.append(pool.sort_values("target"))
    return pd.concat(parts, ignore_index=True) if parts else index.iloc[:0]


def build_splits(
    events: pd.DataFrame, config: DataConfig, behaviors: list[str], progress: bool = True
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Windows, user split and balanced test as sample indexes (see :func:`window_index`), plus facts for
    stats.json."""
    index = window_index(events, config.history_len, max_samples_per_user=config.max_samples_per_user,
                         seed=config.seed, progress=progress)
    with_samples = sorted(index["user_id"].unique().tolist())
    users = split_users(with_samples, config.split, config.seed)
    splits = {name: index[index["user_id"].isin(ids)].reset_index(drop=True) for name, ids in users.items()}
    splits["balanced_test"] = balanced_test(splits["test"], behaviors, config.balanced_per_behavior, config.seed)
    counts = splits["balanced_test"]["label"].value_counts()
    facts = {
        "users": {name: len(ids) for name, ids in users.items()},
        "users_without_samples": int(events["user_id"].nunique() - len(with_samples)),
        "balanced_test_counts": {b: int(counts.get(b, 0)) for b in behaviors},
    }
    return splits, facts
