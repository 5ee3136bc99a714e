"""The resumable pipeline end to end on the tiny model: stages, skip, rerun on change, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behaviorlm.config import RunConfig
from behaviorlm.lm import loading, tuning
from behaviorlm.recipe.pipeline import Pipeline

TINY_TARGETS = ["q_proj", "v_proj", "lm_head"]


@pytest.fixture
def tiny_backbone(monkeypatch):
    """Every model the pipeline loads is the tiny random model (plus the adapter it asks for)."""

    def load_tiny(name, device="auto", dtype="auto", adapter=None, trust_remote_code=False, trainable_adapter=False):
        model, tokenizer = loading.tiny_model(seed=0)
        if adapter is not None:
            model = loading.attach_adapter(model, adapter, trainable=trainable_adapter)
        return model, tokenizer

    monkeypatch.setattr(loading, "load_model", load_tiny)


@pytest.fixture
def tune_calls(monkeypatch):
    calls: list[Path] = []
    real_tune = tuning.tune

    def counting_tune(*args, **kwargs):
        calls.append(Path(args[3]))
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(tuning, "tune", counting_tune)
    return calls


def small_config(tmp_path: Path, **changes) -> RunConfig:
    conversations = tmp_path / "conversations.jsonl"
    conversations.write_text("\n".join(json.dumps({"conversations": [
        {"from": "human", "value": f"What is a good name for a cat number {i}?"},
        {"from": "gpt", "value": f"How about Whiskers {i}?"}]}) for i in range(6)))
    raw = {
        "data": {"history_len": 4, "balanced_per_behavior": 2},
        "simulator": {"users": 12, "days": 4, "seed": 0},
        "model": {"name": "tiny"},
        "lora": {"r": 4, "alpha": 8, "target_modules": TINY_TARGETS},
        "train": {"epochs": 1, "batch_size": 4, "max_train_samples": 8, "eval_samples": 0, "save_every": 1,
                  "learning_rate": 1e-3},
        "aux": {"ratio": 0.25, "source": str(conversations)},
        "selection": {"per_behavior": 1, "max_scan_per_behavior": 2},
        "eval": {"limit": 6, "batch_size": 8},
        "variants": ["zero-shot", "behaviorlm"],
    }
    for key, value in changes.items():
        section, field = key.split(".")
        raw[section][field] = value
    return RunConfig.model_validate(raw)


def done_stages(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]


def test_runs_skips_and_reruns_only_what_changed(tmp_path, tiny_backbone, tune_calls):
    root = tmp_path / "run"
    results = Pipeline(small_config(tmp_path), root).execute()

    assert set(results) == {"zero-shot", "behaviorlm"}
    for variant in results:
        metrics = json.loads((root / variant / "metrics.json").read_text())
        assert metrics["next_behavior"]["n"] == 6 and metrics["long_tail"]["n"] == 6
    behaviorlm_model = json.loads((root / "behaviorlm" / "model.json").read_text())
    assert behaviorlm_model["adapter"].startswith("stages/tune-anchor+b-dds_cds-")
    assert (root / behaviorlm_model["adapter"] / "adapter_config.json").is_file()
    stages = done_stages(root)
    assert all(s["status"] == "done" for s in stages.values())
    a_tuning = next(s for name, s in stages.items() if name.startswith("tune-anchor-"))
    assert a_tuning["result"]["aux_conversations"] == 2  # epsilon 0.25 x 8 anchor samples
    selection = next(s for name, s in stages.items() if name.startswith("select-anchor-dds_cds-"))
    assert selection["result"]["selected"] >= 1
    assert len(tune_calls) == 2  # A-Tuning, then B-Tuning

    Pipeline(small_config(tmp_path), root).execute()
    assert len(tune_calls) == 2, "an unchanged rerun must not tune again"
    assert done_stages(root) == stages

    Pipeline(small_config(tmp_path, **{"selection.per_behavior": 2}), root).execute()
    assert len(tune_calls) == 3, "only B-Tuning reruns when the selection changes"
    assert "tune-anchor+b-dds_cds" in tune_calls[-1].name
    after = done_stages(root)
    assert after["evaluate-zero-shot"] == stages["evaluate-zero-shot"]
    assert after["evaluate-behaviorlm"]["fingerprint"] != stages["evaluate-behaviorlm"]["fingerprint"]


def test_interrupted_stage_resumes_in_its_folder(tmp_path, tiny_backbone, monkeypatch):
    root = tmp_path / "run"
    config = small_config(tmp_path).model_copy(update={"variants": ["anchor-only"]})
    real_tune = tuning.tune
    state = {"interrupted": False}

    def interrupted_once(*args, **kwargs):
        out = Path(args[3])
        if not state["interrupted"]:
            state["interrupted"] = True
            out.mkdir(parents=True, exist_ok=True)
            (out / "partial-work").write_text("checkpoint would be here")
            raise KeyboardInterrupt
        assert (out / "partial-work").exists(), "the interrupted stage's folder must be kept for resuming"
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(tuning, "tune", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(config, root).execute()
    running = [name for name, s in done_stages(root).items() if s["status"] == "running"]
    assert len(running) == 1 and running[0].startswith("tune-anchor-")

    Pipeline(config, root).execute()
    stage = done_stages(root)[running[0]]
    assert stage["status"] == "done" and stage["resumed"] is True
    assert (root / "anchor-only" / "metrics.json").is_file()
