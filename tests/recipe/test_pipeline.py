"""The resumable pipeline end to end on the tiny model: stages, skip, rerun on change, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behaviorlm.data.types import PreparedData
from behaviorlm.lm import tuning
from behaviorlm.recipe.pipeline import Pipeline


def done_stages(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]


def test_runs_skips_and_reruns_only_what_changed(tmp_path, tiny_backbone, tune_calls, small_config):
    root = tmp_path / "run"
    results = Pipeline(small_config(), root).execute()

    assert set(results) == {"zero-shot", "behaviorlm"}
    balanced = len(PreparedData(root / "data").split("balanced_test"))  # fewer than eval.per_behavior each
    for variant in results:
        metrics = json.loads((root / variant / "metrics.json").read_text())
        assert metrics["next_behavior"]["n"] == 6 and metrics["long_tail"]["n"] == balanced
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

    Pipeline(small_config(), root).execute()
    assert len(tune_calls) == 2, "an unchanged rerun must not tune again"
    assert done_stages(root) == stages

    Pipeline(small_config(**{"selection.per_behavior": 2}), root).execute()
    assert len(tune_calls) == 3, "only B-Tuning reruns when the selection changes"
    assert "tune-anchor+b-dds_cds" in tune_calls[-1].name
    after = done_stages(root)
    assert after["evaluate-zero-shot"] == stages["evaluate-zero-shot"]
    assert after["evaluate-behaviorlm"]["fingerprint"] != stages["evaluate-behaviorlm"]["fingerprint"]


def test_int8_evaluation_and_selection_rescore_without_redoing_a_tuning(tmp_path, tiny_backbone, tune_calls, small_config,
                                                                   monkeypatch):
    """``eval.int8``: selection and evaluation rank on a quantized copy of each model; turning it on reruns them (and
    B-Tuning, on what the new selection picked), not A-Tuning, and each evaluation's model.json says so."""
    import torch

    from behaviorlm.lm import loading

    quantized: list[bool] = []
    real = loading.for_inference

    def spying(model, int8=False):
        out = real(model, int8=int8)
        quantized.append(any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in out.modules()))
        return out

    monkeypatch.setattr(loading, "for_inference", spying)
    root = tmp_path / "run"
    Pipeline(small_config(), root).execute()
    before = done_stages(root)
    assert quantized and not any(quantized)
    quantized.clear()
    Pipeline(small_config(**{"eval.int8": True}), root).execute()
    after = done_stages(root)
    assert len(tune_calls) == 3 and "tune-anchor+b-" in tune_calls[-1].name, \
        "A-Tuning is kept; B-Tuning follows its selection, which the quantized model scored anew"
    assert quantized == [True] * len(quantized) and len(quantized) == 3  # selection scan, two evaluations
    assert len({name for name in after if name.startswith("select-")} - set(before)) == 1, "a new selection stage"
    for variant in ("zero-shot", "behaviorlm"):
        assert json.loads((root / variant / "model.json").read_text())["int8"] is True


def test_interrupted_stage_resumes_in_its_folder(tmp_path, tiny_backbone, monkeypatch, small_config):
    root = tmp_path / "run"
    config = small_config().model_copy(update={"variants": ["anchor-only"]})
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


@pytest.mark.parametrize("prompt_format", ["paper", "packed"])
def test_each_stage_trains_on_exactly_its_samples(tmp_path, tiny_backbone, small_config, prompt_format):
    """B-Tuning learns every selected sample (never capped again by train.max_train_samples); stage one learns
    exactly max_train_samples targets; the manifest reads the count back from the encoded training set."""
    root = tmp_path / "run"
    config = small_config(**{"selection.per_behavior": 2, "train.max_train_samples": 6,
                             "prompt.format": prompt_format})
    Pipeline(config.model_copy(update={"variants": ["ft", "behaviorlm"]}), root).execute()
    stages = done_stages(root)
    selected = next(s for n, s in stages.items() if n.startswith("select-"))["result"]["selected"]
    b_tuning = next(s for n, s in stages.items() if n.startswith("tune-anchor+b-"))["result"]
    a_tuning = next(s for n, s in stages.items() if n.startswith("tune-anchor-"))["result"]
    assert selected > 6, "the test needs a selection larger than max_train_samples"
    assert b_tuning["targets"] == b_tuning["behavior_samples"] == selected
    assert a_tuning["targets"] == a_tuning["behavior_samples"] == 6
    assert a_tuning["prompt_format"] == b_tuning["prompt_format"] == prompt_format
    assert a_tuning["answers_trained"] >= 6
    ft = next(s for n, s in stages.items() if n.startswith("tune-ft-"))["result"]
    assert ft["targets"] >= a_tuning["targets"] + b_tuning["targets"]  # a fair comparison in targets

    from behaviorlm.evaluation.report.artifacts import load_run
    from behaviorlm.evaluation.report.tables import training_table

    rows = {row[0]: row for row in training_table(load_run(root)).rows}
    assert rows["BehaviorLM"][1:4] == [prompt_format, f"6 + {selected}", f"{6 + selected}"]


def test_the_closing_table_prints_intervals_and_paired_differences(tmp_path, tiny_backbone, small_config, capsys):
    from behaviorlm.recipe.pipeline import print_differences, print_table

    root = tmp_path / "run"
    results = Pipeline(small_config().model_copy(update={"variants": ["ft", "behaviorlm"]}), root).execute()
    print_table(results)
    print_differences(root, list(results))
    out = capsys.readouterr().out
    ft_line = next(line for line in out.splitlines() if line.startswith("ft "))
    assert ft_line.count("[") == 6  # every metric with its interval
    assert "behaviorlm - ft: LT overall" in out and "NB rec_w" in out


def test_a_b_tuning_on_the_same_samples_as_another_is_not_trained_twice(tmp_path, tiny_backbone, tune_calls,
                                                                       small_config, monkeypatch):
    """When two selection rules pick the same samples (here CDS forced on for both), the second B-Tuning reuses the
    first's adapter; once that adapter is gone, it trains its own."""
    import shutil

    from behaviorlm.recipe import pipeline, selection

    def always_contrastive(samples, anchors, predict_top1, config, **kwargs):
        return selection.select_balanced(samples, anchors, predict_top1,
                                         config.model_copy(update={"contrastive": True}), **kwargs)

    monkeypatch.setattr(pipeline, "select_balanced", always_contrastive)
    root = tmp_path / "run"
    config = small_config().model_copy(update={"variants": ["behaviorlm", "no-cds"]})
    Pipeline(config, root).execute()
    assert len(tune_calls) == 2, "A-Tuning and one B-Tuning"
    stages = done_stages(root)
    ours = next(n for n in stages if n.startswith("tune-anchor+b-dds_cds-"))
    reuse = next(s for n, s in stages.items() if n.startswith("tune-anchor+b-dds-"))["result"]
    assert reuse["same_training_as"] == ours and reuse["selection"].startswith("select-anchor-dds-")
    adapters = {json.loads((root / v / "model.json").read_text())["adapter"] for v in ("behaviorlm", "no-cds")}
    assert adapters == {stages[ours]["result"]["adapter"]}
    ours_metrics, reuse_metrics = (json.loads((root / v / "metrics.json").read_text()) for v in ("behaviorlm", "no-cds"))
    for protocol, metric in (("long_tail", "overall"), ("next_behavior", "rec_w")):
        assert ours_metrics[protocol][metric] == reuse_metrics[protocol][metric]

    Pipeline(config, root).execute()
    assert len(tune_calls) == 2, "an unchanged rerun trains nothing"

    shutil.rmtree(root / "stages" / ours)
    Pipeline(config.model_copy(update={"variants": ["no-cds"]}), root).execute()
    assert len(tune_calls) == 3 and "tune-anchor+b-dds-" in tune_calls[-1].name
    retrained = next(s for n, s in done_stages(root).items() if n.startswith("tune-anchor+b-dds-"))["result"]
    assert "same_training_as" not in retrained and (root / retrained["adapter"]).is_dir()
