"""The simulator: deterministic, Table 3's long tail, and the context/trigger/habit/burst structure the method needs."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from behaviorlm.cli import main
from behaviorlm.config import DataConfig
from behaviorlm.data.importers import load_events
from behaviorlm.bench import benchmarks_module
from behaviorlm.data.simulate import (BEHAVIORS, PLACES, TABLE3, TAIL_FLOOR, TRIGGER_MINUTES, TRIGGERS, share_table,
                                      simulate, target_shares)


@pytest.fixture(scope="module")
def demo_log() -> tuple[pd.DataFrame, float]:
    """The demo's default size (200 users x 14 days) and how long it took."""
    started = time.perf_counter()
    events = simulate(200, 14, seed=0)
    return events, time.perf_counter() - started


def test_deterministic_and_user_independent():
    a = simulate(6, 3, seed=1)
    pd.testing.assert_frame_equal(a, simulate(6, 3, seed=1))
    assert not a.equals(simulate(6, 3, seed=2))
    bigger = simulate(9, 3, seed=1)
    pd.testing.assert_frame_equal(a, bigger[bigger["user_id"].isin(a["user_id"].unique())].reset_index(drop=True))


def test_canonical_shape(demo_log):
    events, seconds = demo_log
    assert list(events.columns) == ["user_id", "timestamp", "location", "behavior"]
    assert events["timestamp"].dtype == "datetime64[ns]"
    assert events.equals(events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True))
    assert not events.duplicated(["user_id", "timestamp"]).any()
    assert set(events["behavior"]) <= set(BEHAVIORS) and set(events["location"]) <= set(PLACES)
    assert events["user_id"].nunique() == 200
    assert events["timestamp"].min() >= pd.Timestamp("2024-03-04")
    assert events["timestamp"].max() < pd.Timestamp("2024-03-19")
    assert 10 < len(events) / 200 / 14 < 25
    assert seconds < 30  # a few seconds on one core; generous for a loaded machine


def test_shares_follow_table3_with_a_tail_floor(demo_log):
    events, _ = demo_log
    table = share_table(events)
    print("\n" + table.assign(ratio=table.simulated / table.target).to_string(float_format="%.4f"))
    anchors, tail = table[table.table3 > 0.01], table[table.table3 <= 0.01]
    # The targets: Table 3's shares, the tail raised to the floor, the difference taken from the top behavior.
    assert np.isclose(table.target.sum(), 1.0)
    assert np.allclose(anchors.target.iloc[1:], anchors.table3.iloc[1:])
    assert np.allclose(tail.target, np.maximum(tail.table3, TAIL_FLOOR)) and (tail.target < 0.01).all()
    assert 0.30 < table.loc["Watching video clip", "simulated"] < 0.42
    assert (anchors.simulated / anchors.table3).between(0.6, 1.6).all()
    assert (tail.simulated / tail.target).between(0.6, 1.5).all()
    # Table 3's grouping holds: the same 4 head (> 5 %), 12 medium (1-5 %) and 19 tail (< 1 %) behaviors.
    group = lambda share: np.digitize(share, [0.01, 0.05])  # noqa: E731
    assert (group(table.simulated) == group(table.table3)).all()
    assert (table.events > 0).all()
    assert np.corrcoef(np.log(table.simulated), np.log(table.target))[0, 1] > 0.95


def _next_within(events: pd.DataFrame, minutes: int = 20) -> pd.DataFrame:
    """Pairs (previous behavior, behavior) of consecutive events of a user less than ``minutes`` apart."""
    prev = events.shift()
    close = (prev["user_id"] == events["user_id"]) & (events["timestamp"] - prev["timestamp"]
                                                      < pd.Timedelta(minutes=minutes))
    return pd.DataFrame({"prev": prev.loc[close, "behavior"], "behavior": events.loc[close, "behavior"]})


def test_triggers_are_distinct_and_hang_on_anchors():
    shares = dict(zip(BEHAVIORS, target_shares()))
    assert set(TRIGGERS) == {b for b, share in shares.items() if share < 0.01}  # every tail behavior has one
    gates: dict[str, list[set]] = {}
    for tail, triggers in TRIGGERS.items():
        for anchor, places, hours, day_types in triggers:
            assert 0.01 < shares[anchor] < 0.05, anchor  # medium behaviors: a head behavior keeps its contexts
            assert set(places) <= set(PLACES) and set(hours) <= set(range(24))
            gates.setdefault(anchor, []).append({(d, h, p) for d in day_types for h in hours for p in places})
    for anchor, cells in gates.items():  # one anchor, one context: at most one trigger applies
        assert sum(len(c) for c in cells) == len(set().union(*cells)), anchor


def _after_trigger(events: pd.DataFrame, tail: str) -> pd.Series:
    """Events whose event just before (same user, within TRIGGER_MINUTES) is an anchor of ``tail`` at one of its
    trigger's places and hours (day types aside: a calendar weekend is not every user's day off)."""
    prev = events.shift()
    just = (prev["user_id"] == events["user_id"]) & (
        events["timestamp"] - prev["timestamp"] <= pd.Timedelta(minutes=TRIGGER_MINUTES))
    hour = events["timestamp"].dt.hour
    inside = pd.Series(False, index=events.index)
    for anchor, places, hours, _ in TRIGGERS[tail]:
        inside |= just & (prev["behavior"] == anchor) & events["location"].isin(places) & hour.isin(hours)
    return inside


@pytest.mark.parametrize("tail", list(TRIGGERS))
def test_tail_behaviors_follow_their_triggers(demo_log, tail):
    """Likely after its anchor in its context, not certain; and that is where most of it happens."""
    events, _ = demo_log
    inside, is_tail = _after_trigger(events, tail), events["behavior"] == tail
    base, after = is_tail.mean(), is_tail[inside].mean()
    assert 10 * base < after < 0.95, (after, base)
    assert (inside & is_tail).sum() > 0.25 * is_tail.sum()


def test_places_and_hours_shape_behaviors(demo_log):
    events, _ = demo_log
    share = lambda mask, b: (events.loc[mask, "behavior"] == b).mean()  # noqa: E731
    everywhere = np.ones(len(events), dtype=bool)
    assert share(events["location"] == "commute", "Taking subway") > 5 * share(everywhere, "Taking subway")
    assert share(events["location"] == "gym", "Exercising") > 10 * share(everywhere, "Exercising")
    hour = events["timestamp"].dt.hour
    morning_work = (events["location"] == "workplace") & hour.between(7, 10)
    assert share(morning_work, "Drinking coffee") > 5 * share(everywhere, "Drinking coffee")
    assert share(hour.between(6, 9), "Checking Weather") > 1.5 * share(~hour.between(6, 9), "Checking Weather")
    weekend = events["timestamp"].dt.day_of_week >= 5
    at_work = events["location"] == "workplace"
    assert at_work[weekend].mean() < at_work[~weekend].mean()


def test_users_have_personal_habits(demo_log):
    events, _ = demo_log
    per_user = events.groupby("user_id")["behavior"].agg(lambda s: (s == "Gaming").mean())
    sizes = events.groupby("user_id").size()
    p = (events["behavior"] == "Gaming").mean()
    binomial_sd = np.sqrt(p * (1 - p) / sizes).mean()
    assert per_user.std() > 2 * binomial_sd  # far more spread than if everyone shared one distribution
    users_doing = events.loc[events["behavior"] == "Watching animation", "user_id"].nunique()
    assert users_doing < 0.7 * events["user_id"].nunique()  # rare behaviors appeal to fewer users


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_simulate_cli_writes_each_format(tmp_path, capsys, suffix):
    out = tmp_path / f"sim{suffix}"
    assert main(["simulate", "--users", "3", "--days", "2", "--seed", "5", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    events, _ = load_events(DataConfig(events=str(out), min_events_per_user=1))
    pd.testing.assert_frame_equal(events, simulate(3, 2, seed=5), check_dtype=False)


def test_simulate_cli_rejects_bad_sizes(tmp_path, capsys):
    assert main(["simulate", "--users", "0", "--out", str(tmp_path / "x.csv")]) == 2
    assert "at least 1 user" in capsys.readouterr().err
    assert main(["simulate", "--users", "2", "--days", "1", "--out", str(tmp_path / "x.xls")]) == 2
    assert "unsupported output type" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_table3_has_35_behaviors_with_16_anchors():
    assert len(TABLE3) == 35 and sum(v > 0.01 for v in TABLE3.values()) == 16


def test_a_users_history_predicts_their_next_behavior(demo_log):
    """A non-top target occurs in the user's own last 20 events far more often than in another user's."""
    events, _ = demo_log
    own, other = [], []
    rng = np.random.default_rng(0)
    users = {u: g["behavior"].tolist() for u, g in events.groupby("user_id")}
    names = list(users)
    for user, seq in users.items():
        stranger = users[names[rng.integers(len(names))]]
        for i in range(20, min(len(seq), len(stranger))):
            if seq[i] != "Watching video clip":
                own.append(seq[i] in seq[i - 20:i])
                other.append(seq[i] in stranger[i - 20:i])
    assert np.mean(own) > np.mean(other) + 0.1, (np.mean(own), np.mean(other))


def test_context_predicts_tail_and_head_behaviors_at_the_demo_size(demo_log):
    """The demo's data (200 users x 14 days, history 10) carries the paper's setting: a class-weighted logistic
    regression on hour, weekend, place and the last three behaviors recalls >= 30 % of tail and of head behaviors
    on the balanced test set, and every behavior has >= 40 training (2F, F = 20) and >= 10 balanced-test samples.
    ``python -m benchmarks.simulator_signal`` prints the full figures."""
    events, _ = demo_log
    signal = benchmarks_module("simulator_signal")
    report = signal.measure(200, 14, seed=0, history_len=10, events=events, models=("weighted",))
    print("\n" + signal.render(report))
    recall = report.recall["weighted"]
    assert recall["tail"] >= 0.30 and recall["head"] >= 0.30, recall
    assert report.min_train >= 40 and report.min_balanced >= 10, (report.min_train, report.min_balanced)
