"""Nothing lost, nothing silently wrong: a run gives the same adapters, selection, predictions and metrics whether it
ran straight through, was run twice, or was killed anywhere and rerun; damaged files are detected and redone.

Kills are injected failures (KeyboardInterrupt at a chosen point), not timing. Every comparison is bitwise (CPU)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from behaviorlm.cli import main
from behaviorlm.config import dump_config
from behaviorlm.evaluation import evaluate
from behaviorlm.lm import tuning
from behaviorlm.recipe import pipeline
from behaviorlm.recipe.pipeline import Pipeline

CHANGES = {"train.epochs": 2, "train.eval_samples": 4, "eval.limit": 4, "eval.per_behavior": 1, "data.vocab_top_k": 6}
"""Two epochs (3 steps each for A-Tuning), so a kill can land in the second; validation keeps the best adapter; a few
behaviors (the rest folded), so selection and B-Tuning stay small."""
VARIANTS = ["anchor-only", "behaviorlm"]
"""A-Tuning, its evaluation, then selection and B-Tuning: a rerun after a kill in the evaluation skips A-Tuning."""
TIMINGS = {"seconds", "samples_per_second", "seconds_per_scored_sample"}


def run_config(factory):
    return factory(**CHANGES).model_copy(update={"variants": VARIANTS})


@pytest.fixture(scope="module")
def reference(tmp_path_factory, module_tiny_backbone, module_small_config):
    """(run folder, config) of a run that was never interrupted."""
    config = run_config(module_small_config)
    root = tmp_path_factory.mktemp("reference") / "run"
    Pipeline(config, root).execute()
    return root, config


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def results(root: Path) -> dict:
    """What a run produced, keyed by stage kind (a stage folder's name without its fingerprint)."""
    out = {}
    for stage in sorted((root / "stages").iterdir()):
        kind = stage.name.rsplit("-", 1)[0]
        if (stage / "adapter").is_dir():
            for name, tensor in load_file(stage / "adapter" / "adapter_model.safetensors").items():
                out[f"{kind}/{name}"] = tensor.numpy()
        if (stage / "selected.parquet").is_file():
            out[f"{kind}/selected"] = pd.read_parquet(stage / "selected.parquet")["sample_id"].tolist()
    for variant in VARIANTS:
        out[f"{variant}/metrics"] = without_timings(json.loads((root / variant / "metrics.json").read_text()))
        predictions = pd.read_parquet(root / variant / "predictions.parquet")
        out[f"{variant}/pred"] = predictions["pred"].tolist()
        out[f"{variant}/top"] = np.array([[t["probability"] for t in top] for top in predictions["top"]])
    return out


def max_difference(a: dict, b: dict) -> float:
    """The largest |difference| of any array; every other value must be equal."""
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if isinstance(a[key], np.ndarray):
            worst = max(worst, float(np.abs(a[key] - b[key]).max()))
        else:
            assert a[key] == b[key], key
    return worst


def stage_records(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]


def scramble_global_generators() -> None:
    """What earlier work in a process, or a fresh process, leaves the global generators in."""
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    torch.rand(7)


def copy_of(reference_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(reference_root, root)
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_two_clean_runs_agree_bitwise(tmp_path, reference, tiny_backbone):
    root, config = reference
    scramble_global_generators()
    Pipeline(config, tmp_path / "run").execute()
    assert max_difference(results(root), results(tmp_path / "run")) == 0.0


def kill_mid_checkpoint_write(patch) -> None:
    """A-Tuning is killed while writing its fifth checkpoint (second epoch): the weights are written, the optimizer
    state half, the scheduler and trainer state not at all."""
    real = tuning.AnswerOnlyTrainer._save_optimizer_and_scheduler
    written = []

    def killed_while_writing(self, output_dir):
        written.append(output_dir)
        if len(written) == 5:
            real(self, output_dir)
            truncate(Path(output_dir) / "optimizer.pt")
            (Path(output_dir) / "scheduler.pt").unlink()
            raise KeyboardInterrupt
        real(self, output_dir)

    patch.setattr(tuning.AnswerOnlyTrainer, "_save_optimizer_and_scheduler", killed_while_writing)


def kill_mid_evaluation(patch) -> None:
    """The anchor-only evaluation is killed after its predictions are written, before its metrics."""
    real = evaluate.write_predictions

    def killed_after(rows, out_dir):
        real(rows, out_dir)
        raise KeyboardInterrupt

    patch.setattr(evaluate, "write_predictions", killed_after)


def kill_mid_selection(patch) -> None:
    """The selection is killed while the A-tuned model scores its third chunk of candidates."""
    real = pipeline.select_balanced

    def select_then_killed(train, anchors, predict_top1, config, chunk_size=8):
        chunks = []

        def predict(samples):
            chunks.append(samples)
            if len(chunks) == 3:
                raise KeyboardInterrupt
            return predict_top1(samples)

        return real(train, anchors, predict, config, chunk_size=chunk_size)

    patch.setattr(pipeline, "select_balanced", select_then_killed)


@pytest.mark.parametrize(("kill", "stage"), [(kill_mid_checkpoint_write, "tune-anchor-"),
                                             (kill_mid_evaluation, "evaluate-anchor-only"),
                                             (kill_mid_selection, "select-anchor-dds_cds-")],
                         ids=["checkpoint-write", "evaluation", "selection"])
def test_a_run_killed_anywhere_and_rerun_equals_an_uninterrupted_one(tmp_path, reference, tiny_backbone, monkeypatch,
                                                                      caplog, kill, stage):
    reference_root, config = reference
    root = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill(patch)
        with pytest.raises(KeyboardInterrupt):
            Pipeline(config, root).execute()
    running = [name for name, record in stage_records(root).items() if record["status"] == "running"]
    assert len(running) == 1 and running[0].startswith(stage)

    scramble_global_generators()
    Pipeline(config, root).execute()
    records = stage_records(root)
    assert records[running[0]]["status"] == "done" and records[running[0]]["resumed"] is True
    if kill is kill_mid_checkpoint_write:
        assert "checkpoint-5: damaged (no trainer_state.json); removed" in caplog.text
    assert max_difference(results(reference_root), results(root)) == 0.0


def test_a_damaged_output_of_a_finished_stage_reruns_that_stage_alone(tmp_path, reference, tiny_backbone,
                                                                      tune_calls, caplog):
    reference_root, config = reference
    root = copy_of(reference_root, tmp_path)
    [adapter] = root.glob("stages/tune-anchor-*/adapter/adapter_model.safetensors")
    truncate(adapter)
    Pipeline(config, root).execute()
    assert [call.name for call in tune_calls] == [adapter.parent.parent.name]
    assert "adapter/adapter_model.safetensors changed since the stage finished; running it again" in caplog.text
    assert max_difference(results(reference_root), results(root)) == 0.0


def test_a_damaged_manifest_is_rebuilt_from_the_stage_folders(tmp_path, reference, tiny_backbone, tune_calls,
                                                               caplog):
    reference_root, config = reference
    root = copy_of(reference_root, tmp_path)
    truncate(root / "manifest.json")
    Pipeline(config, root).execute()
    assert "manifest.json: damaged" in caplog.text and "rebuilt from the records of" in caplog.text
    assert tune_calls == []
    assert stage_records(root) == stage_records(reference_root)


def test_a_damaged_manifest_with_nothing_to_rebuild_it_from_is_refused(tmp_path, reference, capsys):
    _, config = reference
    root = tmp_path / "run"
    root.mkdir()
    (root / "manifest.json").write_text('{"stages": {"data": {"fingerp')
    (tmp_path / "run.yaml").write_text(dump_config(config))
    assert main(["run", "--config", str(tmp_path / "run.yaml"), "--out", str(root)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"behaviorlm run: error: {root / 'manifest.json'}: damaged (")


def test_the_run_log_is_written_to_the_run_folder(reference):
    root, _ = reference
    log = (root / "log.txt").read_text()
    assert "INFO behaviorlm.recipe.pipeline: data: running" in log
    assert "tune-anchor+b-dds_cds-" in log and "evaluate-behaviorlm: done in" in log
