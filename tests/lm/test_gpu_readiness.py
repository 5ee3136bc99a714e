"""GPU readiness checked on a CPU machine (a dry run): each process's device and dtype, --int8 refused off the CPU
before a model is loaded, merging where the model is loaded, one GPU per worker, no CPU thread settings on GPU
hosts, and the GPU configuration's launch command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from tests.lm.conftest import write_minimal_run

from behaviorlm import cli
from behaviorlm.cli import main
from behaviorlm.config import load_config
from behaviorlm.errors import InputError
from behaviorlm.lm import loading
from behaviorlm.recipe import launch

GPU_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "llama-8b-gpu.yaml"


@pytest.fixture
def cuda(monkeypatch):
    """torch believes it has 2 GPUs with bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)


def test_each_process_takes_the_gpu_of_its_local_rank_in_bf16(cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.pick_device() == torch.device("cuda", 1)
    assert loading.pick_dtype("auto", torch.device("cuda", 1)) == torch.bfloat16
    assert loading.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert loading.pick_device("cpu") == torch.device("cpu")


def test_int8_is_refused_off_the_cpu_before_loading(cuda, monkeypatch, prepared_dir, tmp_path, capsys):
    loads = []
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: loads.append(args))
    code = main(["evaluate", "--data", str(prepared_dir), "--out", str(tmp_path / "out"), "--int8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith(loading.INT8_CPU_ONLY) and len(err.splitlines()) == 1 and not loads

    model, _ = loading.tiny_model()
    with pytest.raises(InputError, match="CPU only"):  # a model already elsewhere (meta stands in for a GPU)
        loading.for_inference(model.to("meta"), int8=True)


def test_export_merges_on_the_device_the_model_is_loaded_on(monkeypatch, tmp_path):
    from peft import LoraConfig, get_peft_model

    root = write_minimal_run(tmp_path / "run")
    model, _ = loading.tiny_model()
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(root / "ft" / "adapter")
    asked = []

    def load(name, device="auto", dtype="auto", adapter=None, trust_remote_code=False, trainable_adapter=False):
        asked.append((device, dtype))
        base, tokenizer = loading.tiny_model()
        return loading.attach_adapter(base, adapter), tokenizer

    monkeypatch.setattr(loading, "load_model", load)
    assert main(["export", "--run", str(root), "--out", str(tmp_path / "a")]) == 0
    assert main(["export", "--run", str(root), "--out", str(tmp_path / "b"), "--device", "cuda:1",
                 "--dtype", "bfloat16"]) == 0
    assert asked == [("auto", "auto"), ("cuda:1", "bfloat16")]  # a GPU when there is one; never forced to the CPU


def test_one_gpu_per_worker(cuda):
    launch.check_processes(2)
    with pytest.raises(InputError, match="2 GPUs"):
        launch.check_processes(3)


def test_cpu_threads_are_set_on_cpu_hosts_only(monkeypatch, tmp_path):
    for gpu, expected in ((True, None), (False, "PASSIVE")):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(cli, "gpu_host", lambda: gpu)
        cli.configure_process()
        assert os.environ.get("OMP_WAIT_POLICY") == expected

    seen = []

    def fake_torchrun(command, env):
        seen.append(env.get("OMP_NUM_THREADS"))
        (tmp_path / "job_result.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launch.subprocess, "run", fake_torchrun)
    job = launch.TuneJob(config={}, data="data", out=str(tmp_path), sample_ids=[])
    for gpu in (True, False):
        monkeypatch.setattr(launch, "_gpu_host", lambda: gpu)
        assert launch.spawn(job, 2) == {}
    assert seen == [None, str(max(1, (os.cpu_count() or 1) // 2))]


def test_gpu_config_carries_its_launch_command():
    header = "\n".join(line for line in GPU_CONFIG.read_text().splitlines() if line.startswith("#"))
    assert "accelerate launch --multi_gpu --num_processes 4 -m behaviorlm.cli run --config configs/llama-8b-gpu.yaml" \
        in header and "--set train.batch_size=2" in header and "train.num_processes=4" in header
    config = load_config(GPU_CONFIG)
    assert config.model.dtype == "bfloat16" and config.train.bf16 == "auto" and config.train.num_processes == 1
