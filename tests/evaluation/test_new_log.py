"""`evaluate --run RUN --events NEW` and `prepare --like RUN`: a run's models scored on users it never saw, through
the run's own vocabulary, fold map, groups and candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.cli import main
from behaviorlm.data.simulate import simulate
from behaviorlm.data.types import PreparedData
from behaviorlm.recipe.pipeline import Pipeline

SIX = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
LLMOB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llmob_tokyo_checkins" / "events.csv"


def grouped_log(seed: int, users: int, prefix: str) -> pd.DataFrame:
    events = simulate(users=users, days=4, seed=seed)
    events["user_id"] = prefix + events["user_id"]
    events["behavior_group"] = "G" + (events["behavior"].str.len() % 3).astype(str)
    return events


def run_on(tmp_path: Path, small_config, events: Path | None, variants: list[str], **changes) -> Path:
    config = small_config(**{"eval.per_behavior": 1, **changes}).model_copy(update={"variants": variants})
    if events is not None:
        config.data.events = str(events)
    root = tmp_path / "run"
    Pipeline(config, root).execute()
    return root


def test_new_users_scored_with_the_runs_folded_vocabulary(tmp_path, tiny_backbone, small_config, capsys):
    train_log = tmp_path / "train.csv"
    grouped_log(0, 12, "old-").to_csv(train_log, index=False)
    root = run_on(tmp_path, small_config, train_log, ["zero-shot", "ft"],
                  **{"data.vocab_top_k": 20, "prompt.format": "packed"})
    run_data = PreparedData(root / "data")
    fold_map = run_data.stats.settings["vocabulary"]["fold_map"]
    assert fold_map and len(run_data.candidates) == 20 + len(set(fold_map.values()))

    new = grouped_log(1, 6, "new-")
    other = sorted(set(fold_map.values()))[0]  # "Other G<k>": a group the run folded
    template = new.iloc[:3].copy()
    unseen = pd.concat([template.assign(behavior="Skydiving", behavior_group=other.removeprefix("Other ")),
                        template.assign(behavior="Zorbing", behavior_group="Nowhere")])
    new = pd.concat([new, unseen]).sort_values(["user_id", "timestamp"], kind="stable")
    new_log = tmp_path / "new.csv"
    new.to_csv(new_log, index=False)

    out = tmp_path / "scored"
    assert main(["evaluate", "--run", str(root), "--events", str(new_log), "--out", str(out)]) == 0
    data = PreparedData(out / "data")
    assert data.candidates == run_data.candidates  # the run's 20 + 'Other' classes, not the new log's own
    assert data.stats.groups == run_data.stats.groups and data.stats.anchors == run_data.stats.anchors
    assert data.stats.settings["vocabulary"]["fold_map"] == fold_map
    new_log_report = data.stats.settings["new_log"]
    assert new_log_report["unseen_mapped"] == {"Skydiving": other}
    assert new_log_report["unseen_left_out"] == {"Zorbing": 3} and new_log_report["events_left_out"] == 3
    assert sum(new_log_report["class_counts"].values()) == len(new) - 3
    assert data.stats.samples["train"] == data.stats.samples["valid"] == 0
    assert {s.user_id for s in data.split("test")} == set(new["user_id"])  # every new user is a test user
    assert {s.user_id for s in data.split("balanced_test")} <= set(new["user_id"])
    assert "Zorbing" not in {e.behavior for s in data.split("test") for e in (*s.history, s.target)}

    for model in ("zero-shot", "ft"):
        metrics = json.loads((out / model / "metrics.json").read_text())
        assert metrics["prompt_format"] == "packed" and metrics["candidates"] == len(run_data.candidates)
        for protocol in ("next_behavior", "long_tail"):
            m = metrics[protocol]
            assert m["n"] > 0 and all(k in m for k in SIX)
            assert all(m["ci95"][k] for k in SIX if m[k] is not None)
    assert json.loads((out / "ft" / "model.json").read_text())["adapter"].startswith("stages/")
    printed = capsys.readouterr().out
    assert "1 unseen behaviors mapped to 'Other', 1 left out (3 events)" in printed

    # a prepared dataset of the same log, scored through --data, and --model picks one of the run's models
    like = tmp_path / "like"
    assert main(["prepare", "--like", str(root), "--events", str(new_log), "--out", str(like)]) == 0
    assert PreparedData(like).split("test") == data.split("test")
    again = tmp_path / "again"
    assert main(["evaluate", "--run", str(root), "--data", str(like), "--out", str(again), "--model", "zero-shot"]) == 0
    assert sorted(p.name for p in again.iterdir()) == ["zero-shot"]
    first = json.loads((out / "zero-shot" / "metrics.json").read_text())
    second = json.loads((again / "zero-shot" / "metrics.json").read_text())
    assert second["next_behavior"]["rec_w"] == first["next_behavior"]["rec_w"]


def test_unfolded_run_leaves_unseen_behaviors_out_and_refuses_foreign_data(tmp_path, tiny_backbone, small_config,
                                                                         prepared_dir, capsys):
    root = run_on(tmp_path, small_config, None, ["zero-shot"])
    run_data = PreparedData(root / "data")
    assert not run_data.stats.settings["vocabulary"]["fold_map"]
    new = simulate(users=4, days=4, seed=3)
    new["user_id"] = "new-" + new["user_id"]
    new.loc[new.index[::7], "behavior"] = "Zorbing"
    new_log = tmp_path / "new.csv"
    new.to_csv(new_log, index=False)
    unknown_before = set(new["behavior"]) - set(run_data.candidates)

    out = tmp_path / "scored"
    assert main(["evaluate", "--run", str(root), "--events", str(new_log), "--out", str(out), "--limit", "all"]) == 0
    report = PreparedData(out / "data").stats.settings["new_log"]
    assert set(report["unseen_left_out"]) == unknown_before and report["unseen_mapped"] == {}
    assert report["events_left_out"] == int(new["behavior"].isin(unknown_before).sum())
    metrics = json.loads((out / "zero-shot" / "metrics.json").read_text())
    assert metrics["next_behavior"]["n"] == PreparedData(out / "data").stats.samples["test"]
    assert "left out" in capsys.readouterr().err

    capsys.readouterr()
    code = main(["evaluate", "--run", str(root), "--data", str(prepared_dir), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not prepared like the run" in err


@pytest.mark.parametrize("extra, message", [
    ([], "--run needs one of --events"),
    (["--events", "new.csv", "--format", "packed"], "the prompt format is the run's"),
    (["--events", "new.csv", "--adapter", "x"], "--adapter: with --run"),
    (["--events", "new.csv", "--model", "nope"], "no model 'nope'"),
])
def test_bad_run_options_are_one_line_errors(tmp_path, extra, message, capsys):
    root = tmp_path / "run"
    (root / "data").mkdir(parents=True)
    (root / "data" / "stats.json").write_text(json.dumps({"behaviors": [
        {"name": "Work", "count": 1, "share": 1.0, "group": "head", "anchor": True}], "samples": {}, "settings": {}}))
    (tmp_path / "new.csv").write_text("user_id,timestamp,behavior\nu,2024-01-01 08:00,Work\n")
    code = main(["evaluate", "--run", str(root), "--out", str(tmp_path / "out"),
                 *[str(tmp_path / a) if a == "new.csv" else a for a in extra]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_prepare_like_refuses_vocabulary_options(prepared_dir, tmp_path, capsys):
    code = main(["prepare", "--like", str(prepared_dir), "--events", "x.csv", "--vocab-top-k", "5",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "--vocab-top-k: with --like" in capsys.readouterr().err


@pytest.mark.skipif(not LLMOB.is_file(), reason="the LLMob check-ins are not present")
def test_llmob_users_held_out_of_a_run(tmp_path, tiny_backbone, small_config):
    raw = pd.read_csv(LLMOB, dtype=str)
    users = sorted(raw["user_id"].unique(), key=int)
    held = set(users[-20:])
    raw[~raw["user_id"].isin(held)].to_csv(tmp_path / "train.csv", index=False)
    raw[raw["user_id"].isin(held)].to_csv(tmp_path / "new.csv", index=False)
    root = run_on(tmp_path, small_config, tmp_path / "train.csv", ["zero-shot"], **{
        "data.format": "llmob", "data.history_len": 20, "data.balanced_per_behavior": 1, "eval.limit": 4})
    run_data = PreparedData(root / "data")

    out = tmp_path / "scored"
    assert main(["evaluate", "--run", str(root), "--events", str(tmp_path / "new.csv"), "--out", str(out)]) == 0
    data = PreparedData(out / "data")
    assert data.candidates == run_data.candidates and data.stats.groups == run_data.stats.groups
    assert data.stats.settings["vocabulary"] == run_data.stats.settings["vocabulary"]
    assert data.stats.settings["users"] == {"train": 0, "valid": 0, "test": 20}
    assert {s.user_id for s in data.split("test")} == held
    report = data.stats.settings["new_log"]
    assert report["events_left_out"] == 0 and report["classes"] == len(run_data.candidates)
    metrics = json.loads((out / "zero-shot" / "metrics.json").read_text())
    assert metrics["candidates"] == len(run_data.candidates) and metrics["next_behavior"]["n"] == 4


@pytest.mark.parametrize("extra", [["--min-events", "3"], ["--events", "x.csv"], ["--format", "llmob"]])
def test_log_options_need_run(prepared_dir, tmp_path, extra, capsys):
    code = main(["evaluate", "--data", str(prepared_dir), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--run" in err, err
