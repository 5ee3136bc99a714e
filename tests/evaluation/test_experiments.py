"""The experiment suite end to end on the tiny model: every experiment writes its table, and the
experiments share the tuning stages they have in common."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from behaviorlm.evaluation.evaluate import PROTOCOLS
from behaviorlm.evaluation.experiments import run_experiment
from behaviorlm.evaluation.uncertainty import scored


def test_experiment_suite_writes_every_table_and_reuses_stages(tmp_path, tiny_backbone, tune_calls, small_config):
    config = small_config(**{"eval.limit": 4})
    root = tmp_path / "run"

    ablations = run_experiment("ablations", config, root, seeds=[0], shots=[], fractions=[])
    assert [r["variant"] for r in ablations["rows"]] == ["no-aux", "no-dds", "no-cds", "no-a-tuning"]
    assert set(ablations["reference_absolute"]) == {"overall", "head", "medium", "tail"}
    for row in ablations["rows"]:  # the paired difference is the two models' accuracies apart, inside its interval
        for group, paired in row["difference"].items():
            if paired["value"] is None:
                continue
            assert paired["value"] == pytest.approx(row["absolute"][group] - ablations["reference_absolute"][group])
            low, high = paired["ci95"]
            assert low <= paired["value"] <= high and paired["significant"] == (low > 0 or high < 0)
    # stage one: anchor, anchor-noaux, ft; B-Tuning: behaviorlm, no-aux, no-dds, no-cds, no-a-tuning, less any
    # B-Tuning whose selection equals one already trained (no-cds, when CDS rejects nothing)
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    reused = sum("same_training_as" in (record.get("result") or {}) for record in stages.values())
    assert len(tune_calls) == 8 - reused

    few_shot = run_experiment("few-shot", config, root, seeds=[0], shots=[1, 2], fractions=[])
    assert [p["F"] for p in few_shot["points"]] == [1, 2]
    assert all(set(p["ci95"]) == {"overall", "head", "medium", "tail"} for p in few_shot["points"])
    assert len(tune_calls) == 9 - reused, "F=1 is the B-Tuning the ablations already ran; only F=2 is new"

    anchor_tail = run_experiment("anchor-tail", config, root, seeds=[0], shots=[], fractions=[])
    assert [r["model"] for r in anchor_tail["rows"]] == ["ft", "anchor-only", "tail-first", "behaviorlm"]
    assert len(tune_calls) == 11 - reused, "only tail-first and its B-Tuning are new"
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    copied = {name: record.get("copied_from") for name, record in stages.items()
              if name.startswith("evaluate-experiments/anchor_tail/")}
    assert copied == {"evaluate-experiments/anchor_tail/ft": None, "evaluate-experiments/anchor_tail/anchor-only": None,
                      "evaluate-experiments/anchor_tail/tail-first": None,
                      "evaluate-experiments/anchor_tail/behaviorlm": "experiments/ablations/behaviorlm"}
    assert (root / "experiments" / "anchor_tail" / "behaviorlm" / "metrics.json").is_file()

    efficiency = run_experiment("sample-efficiency", config, root, seeds=[0], shots=[], fractions=[0.5, 1.0])
    sasrec = [p for p in efficiency["points"] if p["model"] == "sasrec"]
    assert [p["fraction"] for p in sasrec] == [0.5, 1.0] and sasrec[0]["train_samples"] < sasrec[1]["train_samples"]
    assert efficiency["points"][0]["model"] == "behaviorlm" and efficiency["points"][0]["train_samples"] > 0

    comparison = run_experiment("comparison", config, root, seeds=[0, 1], shots=[], fractions=[])
    models = {r["model"] for r in comparison["rows"]}
    assert {"zero-shot", "ft", "llara", "anchor-only", "behaviorlm", "sasrec", "markov"} <= models
    row = next(r for r in comparison["rows"] if r["model"] == "behaviorlm")
    assert row["seeds"] == [0, 1] and set(row["long_tail"]["overall"]) == {"mean", "std", "ci95"}
    for model in ("behaviorlm", "sasrec"):  # the seeds' mean lies in the interval of the mean
        stat = next(r for r in comparison["rows"] if r["model"] == model)["next_behavior"]["rec_w"]
        assert stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1], model
    # Each model minus ft, seed by seed, from the predictions themselves (Rec_w is plain accuracy).
    def accuracy(model: str, seed: int) -> float:
        folder = root / "experiments" / "comparison" / f"seed-{seed}" / model
        frame = scored(pd.read_parquet(folder / "predictions.parquet"), PROTOCOLS["next_behavior"])
        return float((frame["label"] == frame["pred"]).mean())

    expected = [accuracy("behaviorlm", s) - accuracy("ft", s) for s in (0, 1)]
    versus = row["versus_ft"]["next_behavior"]["rec_w"]
    assert versus["per_seed"] == pytest.approx(expected) and versus["value"] == pytest.approx(sum(expected) / 2)
    assert versus["std"] == pytest.approx(abs(expected[0] - expected[1]) / 2)
    assert versus["ci95"][0] <= versus["value"] <= versus["ci95"][1]
    assert set(row["versus_ft"]) == {"next_behavior", "long_tail"}
    assert "versus_ft" not in next(r for r in comparison["rows"] if r["model"] == "ft")

    calls_before = len(tune_calls)
    sizes = run_experiment("model-size", config, root, seeds=[0], shots=[], fractions=[], models=["tiny", "tiny-2"])
    assert [(r["base_model"], r["model"]) for r in sizes["rows"]] == [
        (m, v) for m in ("tiny", "tiny-2") for v in ("zero-shot", "ft", "behaviorlm")]
    assert len(tune_calls) == calls_before + 3, "the run's own model reuses its stages; tiny-2 tunes ft, A and B"

    embedding = run_experiment("embedding-map", config, root, seeds=[0], shots=[], fractions=[])
    assert len(embedding["points"]) == len(json.loads((root / "data" / "stats.json").read_text())["behaviors"])
    for name in ("ablations", "few_shot", "anchor_tail", "sample_efficiency", "comparison", "model_size",
                 "embedding_map"):
        assert (root / "experiments" / f"{name}.json").is_file()
