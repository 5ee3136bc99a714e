"""`behaviorlm export`: a run's tuned model as a standalone Hugging Face folder that scores like the adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.lm.conftest import write_minimal_run

from behaviorlm.cli import main
from behaviorlm.lm.loading import tiny_model
from behaviorlm.recipe.pipeline import Pipeline


@pytest.fixture
def tuned_run(tmp_path, small_config) -> Path:
    """A run whose base model is a tiny random Llama saved inside the run folder (so nothing is patched)."""
    root = tmp_path / "run"
    base = root / "base"
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    config = small_config(**{"model.name": str(base), "train.learning_rate": 5e-2, "eval.per_behavior": 1})
    Pipeline(config.model_copy(update={"variants": ["ft"]}), root).execute()
    return root


def scores(folder: Path) -> pd.DataFrame:
    """Each scored sample's top-5 probabilities, one column per behavior (NaN outside the sample's top 5)."""
    rows = pd.read_parquet(folder / "predictions.parquet")
    probabilities = rows["top"].map(lambda top: {t["behavior"]: t["probability"] for t in top})
    return pd.DataFrame(list(probabilities), index=rows["sample_id"] + "/" + rows["split"])


def max_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The largest probability difference; the same top 5 behaviors required of every sample."""
    a, b = a.align(b)
    assert a.isna().equals(b.isna()), "the two models rank different top-5 behaviors"
    return float(np.nanmax((a - b).abs().to_numpy()))


def test_export_round_trips(tuned_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "exported"
    assert main(["export", "--run", str(tuned_run), "--model", "ft", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "behaviorlm.json"} <= names
    assert "adapter_config.json" not in names
    record = json.loads((out / "behaviorlm.json").read_text())
    assert record["model"] == "ft" and record["prompt"]["format"] == "paper" and record["dtype"] == "float32"
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert type(loaded).__name__ == "LlamaForCausalLM" and not hasattr(loaded, "peft_config")

    adapter = tuned_run / json.loads((tuned_run / "ft" / "model.json").read_text())["adapter"]
    common = ["--data", str(tuned_run / "data"), "--limit", "6", "--per-behavior", "1"]
    assert main(["evaluate", *common, "--model", str(out), "--out", str(tmp_path / "merged")]) == 0
    assert main(["evaluate", *common, "--model", str(tuned_run / "base"), "--adapter", str(adapter),
                 "--out", str(tmp_path / "adapter")]) == 0
    assert main(["evaluate", *common, "--model", str(tuned_run / "base"), "--out", str(tmp_path / "base")]) == 0
    merged, with_adapter, base = (scores(tmp_path / n) for n in ("merged", "adapter", "base"))
    run_own = scores(tuned_run / "ft")
    difference = max_difference(merged, with_adapter)
    print(f"export round trip: max probability difference {difference:.2e} over {merged.notna().sum().sum()} scores")
    assert difference <= 1e-4
    assert max_difference(merged, run_own.loc[merged.index]) <= 1e-4  # as the run itself scored the adapter
    base, with_adapter = base.align(with_adapter)
    assert np.nanmax((base - with_adapter).abs().to_numpy()) > 1e-3  # the adapter changed something to merge

    # a second export replaces the first; a folder that is not an export is never overwritten
    assert main(["export", "--run", str(tuned_run), "--model", "ft", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", "--run", str(tuned_run), "--model", "ft", "--out", str(tuned_run / "data")]) == 2
    assert "is not an exported model" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--model", "nope"], "no model 'nope'"),
    (["--dtype", "int3"], "unknown dtype"),
])
def test_export_bad_input(tmp_path, extra, message, capsys):
    root = write_minimal_run(tmp_path / "run")
    (root / "ft" / "adapter").mkdir()
    code = main(["export", "--run", str(root), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
