"""`behaviorlm compare`: metrics with intervals and paired differences, read from models' predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from tests.baselines.helpers import cyclic_splits, write_prepared

from behaviorlm.cli import main
from behaviorlm.data.types import PreparedData
from behaviorlm.evaluation.evaluate import write_predictions
from behaviorlm.evaluation.metrics import compute_metrics
from behaviorlm.evaluation.uncertainty import paired_difference


def write_model(folder, data: PreparedData, guess) -> None:
    rows = []
    for split in ("test", "balanced_test"):
        rows += [{"sample_id": s.sample_id, "user_id": s.user_id, "split": split, "label": s.label,
                  "pred": guess(s), "top": []} for s in data.split(split)]
    folder.mkdir(parents=True)
    write_predictions(rows, folder)


def test_compare_reports_each_model_and_its_paired_difference(tmp_path, capsys):
    run = tmp_path / "run"
    data = PreparedData(write_prepared(run / "data", cyclic_splits()))
    rng = np.random.default_rng(0)
    write_model(run / "a", data, lambda s: s.label if rng.random() < 0.7 else "Work")
    write_model(run / "b", data, lambda s: "Work")
    out = tmp_path / "compare.json"
    assert main(["compare", str(run / "a"), str(run / "b"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())["protocols"]

    groups = data.stats.groups
    test = sorted(data.split("balanced_test"), key=lambda s: s.sample_id)
    labels, users = [s.label for s in test], [s.user_id for s in test]
    frame = pd.read_parquet(run / "a" / "predictions.parquet").set_index("sample_id")
    a_pred = [frame.loc[s.sample_id, "pred"] for s in test]
    expected = compute_metrics(labels, a_pred, groups, users=users, by_behavior=True)
    mine = result["long_tail"][str(run / "a")]
    assert mine["overall"] == expected["overall"] and mine["ci95"]["overall"] == expected["ci95"]["overall"]
    diff = paired_difference(labels, ["Work"] * len(test), a_pred, users, groups, "tail", by_behavior=True)
    theirs = result["long_tail"][str(run / "b")]["minus_reference"]["tail"]
    assert theirs["value"] == diff.value and theirs["ci95"] == diff.ci95 and theirs["significant"] == diff.significant
    assert f"minus {run / 'a'}" in printed and str(run / "b") in printed


def test_compare_errors_are_one_line_with_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    data = PreparedData(write_prepared(run / "data", cyclic_splits()))
    write_model(run / "a", data, lambda s: s.label)
    (run / "empty").mkdir()
    assert main(["compare", str(run / "a"), str(run / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err and "no predictions.parquet" in err
    assert main(["compare", str(run / "a")]) == 2
    assert "at least two" in capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere" / "m"
    write_model(elsewhere, data, lambda s: s.label)
    assert main(["compare", str(elsewhere), str(run / "a")]) == 2
    assert "no data/stats.json above" in capsys.readouterr().err
