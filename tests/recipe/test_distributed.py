"""Tuning stages in 2 CPU processes (gloo, the tiny model): the same losses and adapter as 1 process with twice the
per-process batch, and one uncorrupted manifest written by the process that runs the pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from behaviorlm.config import RunConfig
from behaviorlm.lm.loading import tiny_model
from behaviorlm.recipe.pipeline import Pipeline

SRC = Path(__file__).resolve().parents[2] / "src"


def config(root: Path, **train) -> RunConfig:
    """A one-variant (ft) run on the tiny model saved under ``root``; six steps, logged every two."""
    base = root / "tiny"
    if not base.is_dir():
        model, tokenizer = tiny_model(seed=0)
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
    return RunConfig.model_validate({
        "data": {"history_len": 4, "balanced_per_behavior": 2},
        "simulator": {"users": 12, "days": 4, "seed": 0},
        "model": {"name": str(base)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "lm_head"]},
        "train": {"epochs": 1, "max_steps": 6, "max_train_samples": 8, "eval_samples": 0, "save_every": 2,
                  "learning_rate": 1e-2, **train},
        "eval": {"limit": 4, "per_behavior": 1, "batch_size": 8},
        "variants": ["ft"],
    })


def tuned(run: Path) -> tuple[dict, dict, dict]:
    """(the tuning stage's manifest result, its tune.json, its adapter weights); the manifest must be one whole file
    and every stage in it done."""
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    name = next(n for n in manifest["stages"] if n.startswith("tune-ft-"))
    stage = run / "stages" / name
    return (manifest["stages"][name]["result"], json.loads((stage / "tune.json").read_text()),
            load_file(str(stage / "adapter" / "adapter_model.safetensors")))


def losses(tune_json: dict) -> list[float]:
    return [h["loss"] for h in tune_json["history"] if "loss" in h]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    started = time.perf_counter()
    Pipeline(config(root, batch_size=4), root / "run").execute()
    return root, time.perf_counter() - started, tuned(root / "run")


def assert_same_training(reference, other) -> None:
    (result_1, tune_1, adapter_1), (result_2, tune_2, adapter_2) = reference, other
    for key in ("steps", "tokens", "answers_trained", "targets"):
        assert result_2[key] == result_1[key], key
    assert len(losses(tune_2)) == len(losses(tune_1)) == 3
    assert losses(tune_2) == pytest.approx(losses(tune_1), rel=1e-5)
    assert max(float((adapter_1[k] - adapter_2[k]).abs().max()) for k in adapter_1) < 1e-5


def test_num_processes_two_trains_as_one_process_with_twice_the_batch(one_process, tmp_path):
    root, one_seconds, reference = one_process
    started = time.perf_counter()
    Pipeline(config(root, batch_size=2, num_processes=2), tmp_path / "run").execute()
    seconds = time.perf_counter() - started
    two = tuned(tmp_path / "run")
    print(f"\n1 process, batch 4: losses {losses(reference[1])}, {one_seconds:.1f} s"
          f"\n2 processes, batch 2: losses {losses(two[1])}, {seconds:.1f} s")
    assert_same_training(reference, two)
    stage = next((tmp_path / "run" / "stages").glob("tune-ft-*"))
    assert json.loads((stage / "job.json").read_text())["sample_ids"]  # the job the workers ran


def test_a_launcher_runs_the_pipeline_on_rank_0_and_tuning_on_both(one_process, tmp_path):
    root, _, reference = one_process
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config(root, batch_size=2).model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "behaviorlm.cli", "run", "--config", str(config_file), "--out", str(tmp_path / "run")]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\ntorchrun, 2 ranks, batch 2: {seconds:.1f} s")
    assert done.stdout.count("run folder:") == 1  # rank 0 alone ran the pipeline and reports
    assert_same_training(reference, tuned(tmp_path / "run"))
