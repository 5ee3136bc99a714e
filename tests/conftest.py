"""Shared fixtures: a hand-written event table and a small prepared dataset built from the simulator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def tiny_events() -> pd.DataFrame:
    """A canonical event table: user "a" 12 events, "b" 8, "c" 3, cycling through five behaviors, hourly."""
    behaviors = ["Taking subway", "Watching video clip", "Payment", "Watching video clip", "Hailing taxi"]
    places = ["commute", "home", "mall", "home", "outdoors"]
    rows = []
    for user, n in (("a", 12), ("b", 8), ("c", 3)):
        for i in range(n):
            rows.append({
                "user_id": user,
                "timestamp": pd.Timestamp("2024-03-04 07:00") + pd.Timedelta(hours=i),
                "location": places[i % 5],
                "behavior": behaviors[i % 5],
            })
    frame = pd.DataFrame(rows)
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    return frame


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A prepared dataset (simulator: 40 users x 7 days, seed 0; history_len 10, balanced_per_behavior 20).

    Read-only for tests: copy it before changing anything. Load with ``PreparedData(prepared_dir)``.
    """
    from behaviorlm.config import DataConfig, SimulatorConfig
    from behaviorlm.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "data"
    config = DataConfig(history_len=10, balanced_per_behavior=20)
    prepare_dataset(config, out, simulator=SimulatorConfig(users=40, days=7, seed=0), progress=False)
    return out
