"""Windows, vocabulary fold, statistics, user split and the balanced test."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from behaviorlm.config import DataConfig
from behaviorlm.data.samples import (
    balanced_test,
    behavior_stats,
    build_splits,
    fold_vocabulary,
    make_samples,
    resolve_top_k,
    sample_table,
    split_users,
    window_index,
)
from behaviorlm.data.types import (BehaviorInfo, Event, PreparedData, Sample, Stats, read_samples, samples_to_frame,
                                   stretches)


def test_windows_use_full_histories_only(tiny_events):
    index = window_index(tiny_events, 4, progress=False)
    assert index.groupby("user_id").size().to_dict() == {"a": 8, "b": 4}  # "c" has 3 events <= L
    samples = make_samples(tiny_events, 4)
    first = samples[0]
    assert first.sample_id == "a:4" and first.user_id == "a"
    user_a = tiny_events[tiny_events["user_id"] == "a"].reset_index(drop=True)
    assert [e.behavior for e in first.history] == user_a["behavior"].iloc[:4].tolist()
    assert first.target.behavior == user_a["behavior"].iloc[4]
    assert first.target.time == user_a["timestamp"].iloc[4].to_pydatetime()
    assert first.history[0].place == "commute"
    for s in samples:  # each history is the L events right before the target, in order, same user
        times = [e.time for e in s.history] + [s.target.time]
        assert times == sorted(times) and len(s.history) == 4


def test_sample_table_matches_the_shared_writer(tmp_path, tiny_events):
    samples = make_samples(tiny_events, 3)
    index = window_index(tiny_events, 3, progress=False)
    pq.write_table(sample_table(tiny_events, index, 3), tmp_path / "fast.parquet")
    assert read_samples(tmp_path / "fast.parquet") == samples
    expected = samples_to_frame(samples)
    written = pd.read_parquet(tmp_path / "fast.parquet")
    assert list(written.columns) == list(expected.columns)


def test_max_samples_per_user_is_a_seeded_subset(tiny_events):
    full = window_index(tiny_events, 2, progress=False)
    capped = window_index(tiny_events, 2, max_samples_per_user=3, seed=1, progress=False)
    assert capped.groupby("user_id").size().max() == 3
    assert set(capped["sample_id"]) <= set(full["sample_id"])
    pd.testing.assert_frame_equal(capped, window_index(tiny_events, 2, max_samples_per_user=3, seed=1, progress=False))
    assert not capped.equals(window_index(tiny_events, 2, max_samples_per_user=3, seed=2, progress=False))


def test_resolve_top_k():
    assert resolve_top_k(None, 35) is None
    assert resolve_top_k(None, 527) == 30
    assert resolve_top_k(0, 527) is None
    assert resolve_top_k(10, 527) == 10
    assert resolve_top_k(50, 40) is None


def test_fold_keeps_top_k_and_names_other_by_group():
    rows = ([("A", "Food")] * 5 + [("B", "Shop")] * 4 + [("C", "Food")] * 2 + [("D", "Shop")] * 1
            + [("E", "Food")] * 1 + [("E", "Shop")] * 2)
    events = pd.DataFrame({"user_id": "u", "timestamp": pd.Timestamp("2024-01-01"), "location": "",
                           "behavior": [b for b, _ in rows], "behavior_group": [g for _, g in rows]})
    folded, mapping = fold_vocabulary(events, 2)
    assert mapping == {"C": "Other Food", "D": "Other Shop", "E": "Other Shop"}  # E is mostly "Shop"
    assert "behavior_group" not in folded.columns
    assert folded["behavior"].value_counts().to_dict() == {"A": 5, "B": 4, "Other Shop": 4, "Other Food": 2}
    no_groups, mapping = fold_vocabulary(events.drop(columns="behavior_group"), 3)
    assert mapping == {"C": "Other", "D": "Other"}  # no group column: plain "Other"
    assert no_groups["behavior"].nunique() == 4
    unchanged, mapping = fold_vocabulary(events, None)
    assert mapping == {} and unchanged["behavior"].equals(events["behavior"])


def test_stats_groups_and_anchors():
    counts = {"big": 900, "mid": 60, "small": 30, "tiny": 10}
    events = pd.DataFrame({"behavior": [b for b, n in counts.items() for _ in range(n)]})
    config = DataConfig(head_threshold=0.5, medium_threshold=0.02, anchor_threshold=0.05)
    infos = {b.name: b for b in behavior_stats(events, config)}
    assert [b.name for b in behavior_stats(events, config)] == ["big", "mid", "small", "tiny"]
    assert infos["big"].share == pytest.approx(0.9) and infos["big"].count == 900
    assert {n: b.group for n, b in infos.items()} == {"big": "head", "mid": "medium", "small": "medium",
                                                       "tiny": "tail"}
    assert {n for n, b in infos.items() if b.anchor} == {"big", "mid"}


def test_split_users_is_disjoint_seeded_and_8_1_1():
    users = [f"u{i:03d}" for i in range(100)]
    split = split_users(users, (0.8, 0.1, 0.1), seed=3)
    assert {k: len(v) for k, v in split.items()} == {"train": 80, "valid": 10, "test": 10}
    assert set(split["train"]) | set(split["valid"]) | set(split["test"]) == set(users)
    assert not set(split["train"]) & set(split["test"]) and not set(split["valid"]) & set(split["test"])
    assert split == split_users(list(reversed(users)), (0.8, 0.1, 0.1), seed=3)  # input order is irrelevant
    assert split != split_users(users, (0.8, 0.1, 0.1), seed=4)
    small = split_users(["a", "b", "c"], (0.8, 0.1, 0.1), seed=0)
    assert [len(v) for v in small.values()] == [1, 1, 1]


def test_balanced_test_caps_by_availability():
    index = pd.DataFrame({"sample_id": [f"s{i}" for i in range(30)], "user_id": "u", "target": range(30),
                          "label": ["A"] * 20 + ["B"] * 7 + ["C"] * 3})
    picked = balanced_test(index, ["A", "B", "C", "D"], per_behavior=5, seed=0)
    assert picked["label"].value_counts().to_dict() == {"A": 5, "B": 5, "C": 3}
    assert picked.equals(balanced_test(index, ["A", "B", "C", "D"], per_behavior=5, seed=0))
    assert not picked.equals(balanced_test(index, ["A", "B", "C", "D"], per_behavior=5, seed=1))


def test_build_splits_draws_balanced_test_from_test_users(tiny_events):
    events = pd.concat([tiny_events.assign(user_id=tiny_events["user_id"] + str(k)) for k in range(10)],
                       ignore_index=True).sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    config = DataConfig(history_len=3, balanced_per_behavior=2)
    behaviors = [b.name for b in behavior_stats(events, config)]
    splits, facts = build_splits(events, config, behaviors, progress=False)
    users = {name: set(frame["user_id"]) for name, frame in splits.items()}
    assert not users["train"] & users["test"] and not users["train"] & users["valid"]
    assert users["balanced_test"] <= users["test"]
    assert set(splits["balanced_test"]["sample_id"]) <= set(splits["test"]["sample_id"])
    assert max(facts["balanced_test_counts"].values()) <= 2
    assert facts["users_without_samples"] == 10  # every "c" user has 3 events = L
    assert sum(facts["users"].values()) == 20


def test_evaluation_samples_cap_the_balanced_set_per_behavior_and_the_test_split_by_limit(tmp_path):
    from datetime import datetime

    from behaviorlm.data.types import write_json_atomic, write_samples

    def make(prefix: str, counts: dict[str, int]) -> list[Sample]:
        event = Event(datetime(2024, 1, 1), "home", "A")
        return [Sample(f"{prefix}{b}{i}:{i}", f"{prefix}{b}{i}", (event,), Event(datetime(2024, 1, 2), "home", b))
                for b, n in counts.items() for i in range(n)]

    counts = {"A": 30, "B": 12, "C": 3}
    write_samples(make("bt", counts), tmp_path / "balanced_test.parquet")
    write_samples(make("te", {"A": 60, "B": 30, "C": 10}), tmp_path / "test.parquet")
    groups = ("head", "medium", "tail")
    behaviors = [BehaviorInfo(b, n, n / 45, g, g != "tail") for (b, n), g in zip(counts.items(), groups)]
    write_json_atomic(Stats(behaviors, {}, {}).to_json(), tmp_path / "stats.json")
    data = PreparedData(tmp_path)

    five = data.evaluation_samples("balanced_test", per_behavior=5)
    assert pd.Series([s.label for s in five]).value_counts().to_dict() == {"A": 5, "B": 5, "C": 3}  # tail kept whole
    assert [s.label for s in five[:6]] == ["A", "B", "C", "A", "B", "C"]  # behaviors in turn
    two = data.evaluation_samples("balanced_test", per_behavior=2)
    assert set(two) <= set(five)  # a larger cap keeps the smaller cap's samples
    assert data.evaluation_samples("balanced_test", limit=1, per_behavior=5) == five  # limit is the test split's
    assert data.evaluation_samples("balanced_test") == data.split("balanced_test")

    subset = data.evaluation_samples("test", limit=20)
    assert len(subset) == 20 and set(subset) <= set(data.split("test"))
    assert subset == data.evaluation_samples("test", limit=20, per_behavior=1)  # seeded; per_behavior: balanced only
    assert len({s.user_id for s in subset}) == 20

    event = Event(datetime(2024, 1, 1), "home", "A")
    logs = [Sample(f"{u}:{i}", u, (event,), event) for u, n in (("u1", 60), ("u2", 30), ("u3", 10)) for i in range(n)]
    picked = stretches(logs, 20, seed="test:20")
    by_user = {u: [int(s.sample_id.split(":")[1]) for s in picked if s.user_id == u] for u in ("u1", "u2", "u3")}
    assert [len(p) for p in by_user.values()] == [12, 6, 2]  # every user in proportion
    assert all(p == list(range(p[0], p[0] + len(p))) for p in by_user.values())  # consecutive samples
    assert data.evaluation_samples("test", limit=500) == data.evaluation_samples("test") == data.split("test")
