"""`evaluate_model` / `behaviorlm evaluate`: both protocols, the metrics.json schema, predictions, model.json."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.cli import main
from behaviorlm.config import EvalConfig, PromptConfig
from behaviorlm.data.types import BehaviorInfo, Event, PreparedData, Sample, Stats, write_samples

BEHAVIORS = ["Eat breakfast", "Sleep", "Work", "Workout"]
GROUPS = {"Work": "head", "Sleep": "head", "Workout": "medium", "Eat breakfast": "tail"}
SIX = ("prec_w", "rec_w", "overall", "head", "medium", "tail")


def samples(n: int, prefix: str) -> list[Sample]:
    start = datetime(2024, 5, 6, 7)
    return [Sample(f"{prefix}{i}", f"u{i}", tuple(Event(start + timedelta(hours=h), "home", BEHAVIORS[(i + h) % 4])
                                                  for h in range(3)),
                   Event(start + timedelta(hours=3), "office", BEHAVIORS[i % 4])) for i in range(n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    stats = Stats([BehaviorInfo(b, 10, 0.25, GROUPS[b], GROUPS[b] != "tail") for b in BEHAVIORS],
                  {"train": 4, "valid": 4, "test": 6, "balanced_test": 8}, {"history_len": 3})
    (root / "stats.json").write_text(json.dumps(stats.to_json()))
    for split, n in stats.samples.items():
        write_samples(samples(n, f"{split}-"), root / f"{split}.parquet")
    return root


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from behaviorlm.lm.loading import tiny_model

    model, tokenizer = tiny_model(seed=0)
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_metrics_predictions_and_model_info(dataset, tiny_dir, tmp_path):
    from behaviorlm.evaluation.evaluate import evaluate_model
    from behaviorlm.lm.loading import load_model

    model, tokenizer = load_model(str(tiny_dir), device="cpu")
    info = {"base_model": "tiny", "adapter": None, "prompt_seed": 0}
    metrics = evaluate_model(model, tokenizer, PreparedData(dataset), tmp_path, "zero-shot", EvalConfig(),
                             model_info=info, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["model"] == "zero-shot" and metrics["seconds"] > 0 and metrics["samples_per_second"] > 0
    for protocol, n in (("next_behavior", 6), ("long_tail", 8)):
        m = metrics[protocol]
        assert m["n"] == n and all(key in m for key in SIX) and m["hit@1"] == pytest.approx(m["rec_w"])
        assert m["hit@1"] <= m["hit@3"] <= m["hit@5"] == 1.0  # 4 candidates: the truth is always in the top 5
        for key in (*SIX, "hit@1", "hit@5"):  # every sample is its own user here: the point lies in its interval
            lo, hi = m["ci95"][key]
            assert 0.0 <= lo <= m[key] + 1e-12 and m[key] - 1e-12 <= hi <= 1.0, (protocol, key)
        assert m["bootstrap"]["resamples"] >= 1000 and m["bootstrap"]["unit"] == "user"
        assert sum(m["n_by_group"].values()) == n
    assert metrics["long_tail"]["bootstrap"]["stratified_by"] == "behavior"
    assert metrics["next_behavior"]["bootstrap"]["stratified_by"] is None
    assert metrics["long_tail"]["n_by_group"] == {"head": 4, "medium": 2, "tail": 2}
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(predictions) == 14 and set(predictions["split"]) == {"test", "balanced_test"}
    assert predictions["user_id"].tolist()[:6] == [f"u{i}" for i in range(6)]
    first = predictions.iloc[0]
    assert len(first["top"]) == 4 and first["top"][0]["behavior"] == first["pred"]
    assert sum(t["probability"] for t in first["top"]) == pytest.approx(1.0)
    test_rows = predictions[predictions["split"] == "test"]
    assert (test_rows["pred"] == test_rows["label"]).mean() == pytest.approx(metrics["next_behavior"]["rec_w"])
    assert json.loads((tmp_path / "model.json").read_text()) == {**info, "prompt": PromptConfig().model_dump()}


def test_cli_limit_generate_mode_and_adapter(dataset, tiny_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    from behaviorlm.lm.loading import load_model

    base, _ = load_model(str(tiny_dir), device="cpu")
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    out = tmp_path / "tuned"
    code = main(["evaluate", "--data", str(dataset), "--out", str(out), "--model", str(tiny_dir),
                 "--adapter", str(adapter), "--limit", "3", "--per-behavior", "1", "--mode", "generate"])
    assert code == 0 and "long_tail" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tuned" and metrics["mode"] == "generate"
    assert metrics["limit"] == 3 and metrics["per_behavior"] == 1
    assert metrics["next_behavior"]["n"] == 3
    assert metrics["long_tail"]["n"] == 4 and set(metrics["long_tail"]["per_behavior"]) == set(BEHAVIORS)
    assert "unmatched" in metrics["next_behavior"]  # a random model's text rarely names a candidate: wrong answers
    assert json.loads((out / "model.json").read_text())["adapter"] == str(adapter.resolve())


def test_cli_errors_are_one_line(dataset, tiny_dir, tmp_path, capsys):
    assert main(["evaluate", "--data", str(dataset), "--out", str(tmp_path / "o"), "--model", str(tiny_dir),
                 "--adapter", str(tmp_path)]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--out", str(tmp_path / "o"), "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--out", str(tmp_path / "o"), "--per-behavior", "0"]) == 2
    assert "--per-behavior must be at least 1" in capsys.readouterr().err


def test_the_packed_format_scores_the_same_samples_and_is_recorded(dataset, tiny_dir, tmp_path):
    from behaviorlm.errors import InputError
    from behaviorlm.evaluation.evaluate import evaluate_model
    from behaviorlm.lm.loading import load_model

    model, tokenizer = load_model(str(tiny_dir), device="cpu")
    packed = PromptConfig(format="packed")
    metrics = evaluate_model(model, tokenizer, PreparedData(dataset), tmp_path, "ft", EvalConfig(), progress=False,
                             prompt=packed)
    assert metrics["next_behavior"]["n"] == 6 and metrics["long_tail"]["n"] == 8
    assert metrics["prompt_format"] == "packed"
    assert json.loads((tmp_path / "model.json").read_text())["prompt"]["format"] == "packed"
    with pytest.raises(InputError, match="generate"):
        evaluate_model(model, tokenizer, PreparedData(dataset), tmp_path, "ft", EvalConfig(mode="generate"),
                       progress=False, prompt=packed)
