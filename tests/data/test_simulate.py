"""The simulator: deterministic, Table 3's long tail, and the context/habit/burst structure the method needs."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from behaviorlm.cli import main
from behaviorlm.config import DataConfig
from behaviorlm.data.importers import load_events
from behaviorlm.data.simulate import BEHAVIORS, PLACES, TABLE3, share_table, simulate


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


def test_shares_follow_table3(demo_log):
    events, _ = demo_log
    table = share_table(events)
    print("\n" + table.assign(ratio=table.simulated / table.table3).to_string(float_format="%.4f"))
    assert 0.36 < table.loc["Watching video clip", "simulated"] < 0.50
    anchors = table[table.table3 > 0.01]
    assert ((anchors.simulated / anchors.table3).between(0.6, 1.6)).all()
    assert 13 <= (table.simulated > 0.01).sum() <= 19
    tail = table[table.table3 < 0.01]
    assert tail.simulated.sum() < 0.06
    assert (table.events > 0).all()  # every one of the 35 behaviors occurs
    assert np.corrcoef(np.log(table.simulated), np.log(table.table3))[0, 1] > 0.95


def _next_within(events: pd.DataFrame, minutes: int = 20) -> pd.DataFrame:
    """Pairs (previous behavior, behavior) of consecutive events of a user less than ``minutes`` apart."""
    prev = events.shift()
    close = (prev["user_id"] == events["user_id"]) & (events["timestamp"] - prev["timestamp"]
                                                      < pd.Timedelta(minutes=minutes))
    return pd.DataFrame({"prev": prev.loc[close, "behavior"], "behavior": events.loc[close, "behavior"]})


@pytest.mark.parametrize("tail, anchor", [
    ("Hailing taxi", "Taking subway"), ("Watching Match", "Watching video"), ("Cycling", "Exercising"),
    ("Picking up the express delivery", "Shopping online"), ("Taking notes", "Studying for course"),
])
def test_tail_behaviors_follow_their_related_anchor(demo_log, tail, anchor):
    events, _ = demo_log
    pairs = _next_within(events)
    base = (events["behavior"] == tail).mean()
    after = (pairs.loc[pairs["prev"] == anchor, "behavior"] == tail).mean()
    assert after > 2 * base, (tail, anchor, after, base)


def test_places_and_hours_shape_behaviors(demo_log):
    events, _ = demo_log
    share = lambda mask, b: (events.loc[mask, "behavior"] == b).mean()  # noqa: E731
    everywhere = np.ones(len(events), dtype=bool)
    assert share(events["location"] == "commute", "Taking subway") > 5 * share(everywhere, "Taking subway")
    assert share(events["location"] == "gym", "Exercising") > 20 * share(everywhere, "Exercising")
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
    assert users_doing < 0.5 * events["user_id"].nunique()  # rare behaviors appeal to few users


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
