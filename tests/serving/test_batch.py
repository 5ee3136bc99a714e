"""``behaviorlm predict`` end to end on a small events file (tiny model in place of the real one)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from behaviorlm.cli import main
from serving_helpers import BEHAVIORS, HISTORY_LEN, write_dataset


def write_events(path, rows):
    pd.DataFrame(rows, columns=["user_id", "timestamp", "location", "behavior"]).to_csv(path, index=False)
    return path


def sample_rows():
    rows = []
    for u, n in (("alice", 7), ("bob", 2), ("carol", 4)):
        for i in range(n):
            rows.append((u, f"2024-05-06 {8 + i:02d}:30:00", "home" if i % 2 else "work", BEHAVIORS[(i + len(u)) % len(BEHAVIORS)]))
    return rows[::-1]  # unsorted on purpose: the importer sorts


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data")


def run_predict(*args):
    return main(["predict", *map(str, args)])


def test_predict_writes_top_k_per_user_as_jsonl(tmp_path, dataset, fake_load_model, predictor):
    events = write_events(tmp_path / "events.csv", sample_rows())
    out = tmp_path / "out" / "pred.jsonl"
    assert run_predict("--run", dataset, "--events", events, "--out", out, "--k", 3, "--chunk-users", 2) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["user_id"], r["rank"]) for r in rows] == [(u, k) for u in ("alice", "bob", "carol") for k in (1, 2, 3)]
    assert all(r["behavior"] in BEHAVIORS for r in rows)
    alice = [r for r in rows if r["user_id"] == "alice"]
    assert [r["probability"] for r in alice] == sorted((r["probability"] for r in alice), reverse=True)
    # the same as the Python API on alice's latest events
    frame = pd.DataFrame(sample_rows(), columns=["user_id", "timestamp", "location", "behavior"])
    latest = frame[frame.user_id == "alice"].sort_values("timestamp").tail(HISTORY_LEN)
    expected = predictor.predict(
        [{"time": t.replace(" ", "T"), "place": p, "behavior": b} for t, p, b in zip(latest.timestamp, latest.location, latest.behavior)], k=3)
    assert [r["behavior"] for r in alice] == [e["behavior"] for e in expected]
    assert [r["probability"] for r in alice] == pytest.approx([e["probability"] for e in expected], abs=1e-4)
    assert not list(out.parent.glob(".*tmp"))


def test_predict_writes_csv_and_honours_at(tmp_path, dataset, fake_load_model):
    events = write_events(tmp_path / "events.csv", sample_rows())
    out = tmp_path / "pred.csv"
    assert run_predict("--run", dataset, "--events", events, "--out", out, "--k", 2, "--at", "2024-05-11T20:00") == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["user_id", "rank", "behavior", "probability"]
    assert len(rows) == 6 and {r["rank"] for r in rows} == {"1", "2"}
    assert all(0 < float(r["probability"]) <= 1 for r in rows)


def test_unknown_behavior_names_file_row_and_field(tmp_path, dataset, fake_load_model, capsys):
    rows = sample_rows()
    rows[4] = (*rows[4][:3], "Skydiving")
    events = write_events(tmp_path / "events.csv", rows)
    out = tmp_path / "pred.jsonl"
    assert run_predict("--run", dataset, "--events", events, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"behaviorlm predict: error: {events}: row 5: behavior: unknown behavior 'Skydiving'; "
                       f"the model knows {len(BEHAVIORS)} behaviors (its run's data/stats.json)")
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "pred.txt"], "unsupported output type '.txt'"),
        (["--k", "0"], "--k must be at least 1"),
        (["--k", "99"], "--k must be at most the number of behaviors"),
        (["--at", "tomorrow"], "--at: cannot parse 'tomorrow'"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, dataset, fake_load_model, capsys, extra, message):
    events = write_events(tmp_path / "events.csv", sample_rows())
    args = ["--run", dataset, "--events", events, "--out", tmp_path / "pred.jsonl", *extra]
    if extra[0] == "--out":
        args = ["--run", dataset, "--events", events, "--out", tmp_path / extra[1]]
    assert run_predict(*args) == 2
    assert message in capsys.readouterr().err


def test_bad_events_file_is_reported_by_the_importer(tmp_path, dataset, fake_load_model, capsys):
    rows = sample_rows()
    rows[2] = (rows[2][0], "not a time", *rows[2][2:])
    events = write_events(tmp_path / "events.csv", rows)
    assert run_predict("--run", dataset, "--events", events, "--out", tmp_path / "p.jsonl") == 2
    assert "row 3: timestamp: cannot parse timestamp 'not a time'" in capsys.readouterr().err
    assert fake_load_model == []  # the input is checked before the model is loaded
