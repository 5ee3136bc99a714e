"""The llara variant in ``behaviorlm run``: SASRec, hybrid tuning on ft's samples, evaluation on everyone's samples."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from behaviorlm.config import PromptConfig, load_config
from behaviorlm.data.types import PreparedData
from behaviorlm.errors import InputError
from behaviorlm.recipe import stages
from behaviorlm.recipe.pipeline import Pipeline


def test_a_run_tunes_and_scores_llara(tmp_path, tiny_backbone, tune_calls, small_config):
    root = tmp_path / "run"
    config = small_config(**{"prompt.format": "packed"}).model_copy(update={
        "variants": ["llara"], "baseline_params": {"epochs": 2, "hidden": 16}})
    results = Pipeline(config, root).execute()
    assert set(results) == {"llara"}
    manifest = json.loads((root / "manifest.json").read_text())["stages"]
    [(name, record)] = [(n, s) for n, s in manifest.items() if n.startswith("tune-llara-")]
    result = record["result"]
    ft_samples = stages.stage_one_samples("ft", PreparedData(root / "data"), config)
    assert stages.stage_one_samples("llara", PreparedData(root / "data"), config) == ft_samples
    assert result["targets"] == result["behavior_samples"] == len(ft_samples)  # ft's samples, the fair comparison
    assert result["sasrec"]["hparams"]["hidden"] == 16 and result["sasrec"]["best_epoch"] in (1, 2)
    adapter = root / result["adapter"]
    hybrid = json.loads((adapter / "hybrid.json").read_text())
    assert hybrid["behaviors"] == PreparedData(root / "data").candidates and hybrid["item_dim"] == 16
    assert (root / "stages" / name / "sasrec" / "items.safetensors").is_file()

    model = json.loads((root / "llara" / "model.json").read_text())
    assert model["adapter"] == result["adapter"] and model["prompt"]["behavior_tokens"] is True
    data = PreparedData(root / "data")
    scored = pd.read_parquet(root / "llara" / "predictions.parquet")["sample_id"].tolist()
    assert scored == [s.sample_id for s in data.evaluation_samples("test", config.eval.limit)
                      + data.evaluation_samples("balanced_test", per_behavior=config.eval.per_behavior)]
    assert results["llara"]["long_tail"]["ci95"]["overall"] is not None

    from behaviorlm.evaluation.report.artifacts import display, load_run
    from behaviorlm.evaluation.report.tables import training_table

    row = next(r for r in training_table(load_run(root)).rows if r[0] == display("llara"))
    assert row[1:4] == ["packed", f"{len(ft_samples)}", f"{len(ft_samples)}"]

    calls = len(tune_calls)
    Pipeline(config, root).execute()
    assert len(tune_calls) == calls, "an unchanged rerun must not tune llara again"


def test_behavior_tokens_cannot_be_set_by_hand(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("prompt:\n  behavior_tokens: true\n")
    with pytest.raises(InputError, match="prompt: behavior_tokens is set by the llara variant"):
        load_config(path)
    assert "behavior_tokens" not in PromptConfig().model_dump(), "other stages' fingerprints must not change"
