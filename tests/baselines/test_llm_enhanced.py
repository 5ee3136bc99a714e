"""LLM-ESR and AlphaFuse on the tiny language model: they learn, keep their language view frozen (AlphaFuse's ID
part stays in the null space), embed the names once, and run from the pipeline into the report."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from behaviorlm.baselines import language
from behaviorlm.baselines.alphafuse import AlphaFuse
from behaviorlm.baselines.llm_esr import LLMESR
from behaviorlm.errors import InputError
from behaviorlm.lm import loading

from .helpers import CYCLE, cyclic_splits

FAST = {"hidden": 16, "lr": 3e-2, "batch_size": 16, "progress": False}


@pytest.fixture
def loads(monkeypatch, tiny_backbone):
    """Names of the models loaded (each load is the tiny random model)."""
    calls: list[str] = []
    tiny = loading.load_model

    def counting(name, *args, **kwargs):
        calls.append(name)
        return tiny(name, *args, **kwargs)

    monkeypatch.setattr(loading, "load_model", counting)
    return calls


def accuracy(model, samples) -> float:
    proba = model.predict_proba(samples)
    assert proba.shape == (len(samples), len(CYCLE)) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    return float(np.mean([model.candidates[i] == s.label for i, s in zip(proba.argmax(1), samples)]))


@pytest.mark.parametrize("cls", [LLMESR, AlphaFuse])
def test_learns_the_cycle_and_embeds_the_names_once(cls, loads, tmp_path):
    splits = cyclic_splits()
    options = {**FAST, "language_model": "tiny", "embedding_cache": tmp_path, "epochs": 30, "patience": 4}
    model = cls(list(CYCLE), **options).fit(splits["train"], splits["valid"])
    assert accuracy(model, splits["test"]) >= 0.9
    assert loads == ["tiny"] and len(list(tmp_path.glob("*.npy"))) == 1
    assert model.hparams()["language_model"] == "tiny" and model.hparams()["language_dims"] == 64

    again = cls(list(CYCLE), **{**options, "epochs": 1}).fit(splits["train"], splits["valid"])
    first = cls(list(CYCLE), **{**options, "epochs": 1, "embedding_cache": tmp_path / "other"})
    first.fit(splits["train"], splits["valid"])
    assert loads == ["tiny", "tiny"], "the second model read the cache"
    # A cache hit and a fresh computation train the same model.
    np.testing.assert_array_equal(again.predict_proba(splits["test"]), first.predict_proba(splits["test"]))


def test_alphafuse_learns_ids_only_in_the_null_space(loads, tmp_path):
    splits = cyclic_splits()
    model = AlphaFuse(list(CYCLE), **FAST, null_dim=8, language_model="tiny", embedding_cache=tmp_path, epochs=3)
    model.fit(splits["train"], splits["valid"])
    table = model.model.encoder.behavior
    semantic, ids = table.in_language_space()
    k = model.semantic_dims
    assert k == 5 == model.hparams()["semantic_dims"]  # 6 names span 5 directions once centered
    assert ids.abs().max() > 0.01, "the ID part trained"
    directions = table.directions
    torch.testing.assert_close(directions @ directions.T, torch.eye(16), atol=1e-5, rtol=0)
    assert (ids @ directions[:k].T).abs().max() < 1e-5, "the ID part has no component in the semantic subspace"
    centered = torch.from_numpy(model.language - model.language.mean(0)).float()
    assert (ids @ centered.T).abs().max() < 1e-4 * ids.norm() * centered.norm(), "... nor along any name's embedding"
    fresh = AlphaFuse(list(CYCLE), **FAST, null_dim=8, language_model="tiny", embedding_cache=tmp_path, epochs=1)
    fresh.fit(splits["train"], [])
    torch.testing.assert_close(fresh.model.encoder.behavior.semantic, table.semantic, atol=0, rtol=0)


def test_llm_esr_trains_the_adapter_not_the_language_view(loads, tmp_path):
    splits = cyclic_splits()
    model = LLMESR(list(CYCLE), **FAST, language_model="tiny", embedding_cache=tmp_path, neighbours=3, epochs=3)
    initial: dict[str, torch.Tensor] = {}

    def build():
        net = LLMESR.build(model)
        initial.update({k: v.clone() for k, v in net.state_dict().items()})
        return net

    model.build = build
    trained = model.fit(splits["train"], []).model.state_dict()
    assert not model.model.language.weight.requires_grad
    torch.testing.assert_close(trained["language.weight"], initial["language.weight"], atol=0, rtol=0)
    for key in ("adapter.0.weight", "adapter.1.weight", "encoder.behavior.weight"):
        assert (trained[key] - initial[key]).abs().max() > 1e-3, key
    assert model._neighbours.shape == (8, 3)  # 8 training users, 3 neighbours each, never themselves
    assert not (model._neighbours == torch.arange(8)[:, None]).any()
    assert model._teacher is not None and model._teacher.shape == (8, 32)


@pytest.mark.parametrize("cls, options, message", [
    (AlphaFuse, {"null_dim": 16}, "null_dim must be between 1 and hidden - 1 = 15, got 16"),
    (AlphaFuse, {"hidden": 128, "heads": 2}, "alphafuse: hidden size 128 exceeds the language model's 64 dimensions"),
    (LLMESR, {"alpha": -1}, "alpha must be at least 0"),
])
def test_bad_options_are_one_line(cls, options, message, loads, tmp_path):
    splits = cyclic_splits()
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        cls(list(CYCLE), **{**FAST, **options}, language_model="tiny", embedding_cache=tmp_path).fit(
            splits["train"], [])


def test_pipeline_scores_them_on_the_same_samples_and_reports_them(tmp_path, loads, small_config):
    from behaviorlm.evaluation.report.artifacts import load_run
    from behaviorlm.evaluation.report.tables import overall_table
    from behaviorlm.recipe.pipeline import Pipeline

    root = tmp_path / "run"
    config = small_config().model_copy(update={"variants": [], "baselines": ["sasrec", "llm-esr", "alphafuse"],
                                               "baseline_params": {"epochs": 2, "hidden": 16}})
    results = Pipeline(config, root).execute()
    assert set(results) == {"sasrec", "llm-esr", "alphafuse"}
    assert loads == ["tiny"] and len(list((root / "embeddings").glob("*.npy"))) == 1
    predictions = {name: pd.read_parquet(root / "baselines" / name / "predictions.parquet") for name in results}
    for name in ("llm-esr", "alphafuse"):
        metrics = json.loads((root / "baselines" / name / "metrics.json").read_text())
        assert metrics["hparams"]["language_model"] == "tiny" and metrics["hparams"]["epochs"] == 2
        assert predictions[name]["sample_id"].tolist() == predictions["sasrec"]["sample_id"].tolist()
        assert results[name]["long_tail"]["ci95"]["overall"] is not None

    Pipeline(config, root).execute()
    assert loads == ["tiny"], "a rerun skips the finished baselines"

    rows = {row[1]: row[0] for row in overall_table(load_run(root)).rows}
    assert rows == {"SASRec": "Traditional", "LLM-ESR": "LLM-enhanced", "AlphaFuse": "LLM-enhanced"}


def test_cli(tmp_path, loads, monkeypatch, capsys):
    from behaviorlm.cli import main

    from .helpers import write_prepared

    monkeypatch.setattr(language, "default_cache", lambda: tmp_path / "cache")
    data = write_prepared(tmp_path / "data", cyclic_splits())
    assert main(["baseline", "alphafuse", "--data", str(data), "--out", str(tmp_path / "out"), "--model", "tiny",
                 "--epochs", "1", "--hidden", "16", "--quiet"]) == 0
    assert "alphafuse next_behavior" in capsys.readouterr().out
    assert loads == ["tiny"] and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert main(["baseline", "sasrec", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "tiny"]) == 2
    assert "--model: only for llm-esr, alphafuse, not sasrec" in capsys.readouterr().err
