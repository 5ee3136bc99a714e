"""``prepare``: the prepared dataset folder, its stats, atomic writes, and the real LLMob data when present."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import behaviorlm.data.prepare as prepare_module
from behaviorlm.cli import main
from behaviorlm.config import DataConfig, SimulatorConfig
from behaviorlm.data.prepare import prepare_dataset
from behaviorlm.data.types import SPLITS, PreparedData
from behaviorlm.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_prepared_dir_layout_and_stats(prepared_dir):
    assert sorted(p.name for p in prepared_dir.iterdir()) == sorted(["stats.json"] + [f"{s}.parquet" for s in SPLITS])
    raw = json.loads((prepared_dir / "stats.json").read_text())
    data = PreparedData(prepared_dir)
    assert set(raw["behaviors"][0]) == {"name", "count", "share", "group", "anchor"}
    assert sum(b.share for b in data.stats.behaviors) == pytest.approx(1.0)
    assert {b.group for b in data.stats.behaviors} == {"head", "medium", "tail"}
    assert len(data.stats.behaviors) == len(data.candidates) <= 35
    settings = data.stats.settings
    assert set(DataConfig.model_fields) <= set(settings)
    assert settings["history_len"] == 10 and settings["simulator"]["users"] == 40
    assert settings["import"]["users"] == 40 and settings["import"]["duplicates"] == 0
    for name in SPLITS:
        samples = data.split(name)
        assert data.stats.samples[name] == len(samples) > 0
        assert all(len(s.history) == 10 for s in samples[:50])
    users = {name: {s.user_id for s in data.split(name)} for name in SPLITS}
    assert not users["train"] & users["valid"] and not users["train"] & users["test"]
    assert not users["valid"] & users["test"]
    assert users["balanced_test"] <= users["test"]
    counts = pd.Series([s.label for s in data.split("balanced_test")]).value_counts()
    assert counts.max() <= 20 and counts.to_dict() == {k: v for k, v in settings["balanced_test_counts"].items() if v}


def test_prepare_from_frame_and_deterministic(tmp_path, tiny_events):
    config = DataConfig(history_len=3, min_events_per_user=1)
    first = prepare_dataset(config, tmp_path / "one", events=tiny_events, progress=False)
    second = prepare_dataset(config, tmp_path / "two", events=tiny_events, progress=False)
    for name in SPLITS:
        assert first.split(name) == second.split(name)
    assert first.stats.settings["import"]["file"] == "<events>"


def test_prepare_replaces_a_dataset_but_not_other_folders(tmp_path, tiny_events):
    config = DataConfig(history_len=3)
    out = tmp_path / "data"
    prepare_dataset(config, out, events=tiny_events, progress=False)
    prepare_dataset(config.model_copy(update={"history_len": 2}), out, events=tiny_events, progress=False)
    assert PreparedData(out).stats.settings["history_len"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary or old folders left
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a prepared dataset"):
        prepare_dataset(config, precious, events=tiny_events, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_failure_while_writing_leaves_nothing_half_written(tmp_path, tiny_events, monkeypatch):
    config = DataConfig(history_len=3)
    out = tmp_path / "data"
    prepare_dataset(config, out, events=tiny_events, progress=False)
    before = PreparedData(out).split("train")
    calls = []

    def exploding(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = prepare_module.sample_table
    monkeypatch.setattr(prepare_module, "sample_table", exploding)
    with pytest.raises(OSError):
        prepare_dataset(config.model_copy(update={"history_len": 2}), out, events=tiny_events, progress=False)
    assert PreparedData(out).split("train") == before  # the old dataset is intact
    calls.clear()
    with pytest.raises(OSError):
        prepare_dataset(config, tmp_path / "fresh", events=tiny_events, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_history_longer_than_every_user_is_an_input_error(tmp_path, tiny_events):
    with pytest.raises(InputError, match="no samples"):
        prepare_dataset(DataConfig(history_len=50), tmp_path / "out", events=tiny_events, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_simulated(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(["prepare", "--out", str(out), "--users", "12", "--days", "3", "--history-len", "5",
                 "--balanced-per-behavior", "3", "--seed", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "head" in printed and "samples: train" in printed
    data = PreparedData(out)
    assert data.stats.settings["simulator"] == SimulatorConfig(users=12, days=3).model_dump()
    assert data.stats.settings["seed"] == 1 and data.stats.settings["balanced_per_behavior"] == 3


def test_cli_prepare_tsinghua_fixture(tmp_path, capsys):
    out = tmp_path / "app"
    code = main(["prepare", "--events", str(FIXTURES / "tsinghua" / "App_usage_trace.txt"), "--format", "tsinghua",
                 "--base-poi", str(FIXTURES / "tsinghua" / "base_poi.txt"), "--min-events", "3", "--history-len", "2",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = PreparedData(out)
    assert "Social Networking" in data.candidates
    assert data.stats.settings["import"]["repeats_collapsed"] == 3


def test_cli_rejects_bad_option_values(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["prepare", "--out", str(out), "--history-len", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "history_len: Input should be greater than or equal to 1" in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        main(["prepare", "--out", str(out), "--history-len", "abc"])
    assert exc.value.code == 2
    assert not out.exists()


@pytest.mark.skipif(not (SHARED / "llmob_tokyo_checkins").is_dir(), reason="shared LLMob data absent")
def test_prepare_real_llmob_folds_to_40_classes(tmp_path):
    config = DataConfig(events=str(SHARED / "llmob_tokyo_checkins" / "events.csv"), format="llmob",
                        max_samples_per_user=30, balanced_per_behavior=10)
    data = prepare_dataset(config, tmp_path / "llmob", progress=False)
    groups = pd.Series([b.group for b in data.stats.behaviors]).value_counts().to_dict()
    assert len(data.stats.behaviors) == 40
    assert all(groups.get(g, 0) > 0 for g in ("head", "medium", "tail")), groups
    assert any(name.startswith("Other ") for name in data.candidates)
    assert sum(data.stats.samples[s] for s in ("train", "valid", "test")) == 94 * 30
    assert all(s.target.place == "" for s in data.split("test")[:20])  # no place leaks the behavior
    assert data.stats.settings["vocabulary"]["behaviors_in_log"] == 527
