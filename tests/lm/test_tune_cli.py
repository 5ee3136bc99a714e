"""`behaviorlm tune`: subsets, adapters, resumable output, one-line errors."""

from __future__ import annotations

import json

import pytest
from tests.lm.conftest import BEHAVIORS

from behaviorlm.cli import main
from behaviorlm.data.types import PreparedData
from behaviorlm.errors import InputError
from behaviorlm.lm.tune_cli import choose_subset


def tune_args(dataset, out, tiny_dir, *extra):
    return ["tune", "--data", str(dataset), "--out", str(out), "--set", f"model.name={tiny_dir}",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "train.eval_samples=4",
            "--set", "lora.r=2", *extra]


def test_tune_writes_an_adapter_and_validates(dataset, tiny_dir, tmp_path, capsys):
    out = tmp_path / "stage"
    assert main(tune_args(dataset, out, tiny_dir, "--subset", "anchors")) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    result = json.loads((out / "tune.json").read_text())
    assert result["steps"] == 2 and 0.0 <= result["best_metric"] <= 1.0
    assert "best validation accuracy" in capsys.readouterr().out


def test_init_adapter_and_sample_id_file(dataset, tiny_dir, tmp_path):
    first = tmp_path / "a"
    assert main(tune_args(dataset, first, tiny_dir, "--no-validate")) == 0
    ids = tmp_path / "ids.txt"
    ids.write_text("train-0\ntrain-3\n")
    second = tmp_path / "b"
    assert main(tune_args(dataset, second, tiny_dir, "--subset", str(ids), "--no-validate",
                          "--init-adapter", str(first / "adapter"))) == 0
    assert (second / "adapter" / "adapter_config.json").is_file()
    spec = json.loads((second / "tune_spec.json").read_text())
    assert spec["examples"] == 2 and spec["init_adapter"] == str(first / "adapter")


def test_subsets(dataset):
    data = PreparedData(dataset)
    anchors = choose_subset(data, "anchors")
    tail = choose_subset(data, "tail")
    assert anchors and tail and len(anchors) + len(tail) == len(choose_subset(data, "all"))
    assert {s.label for s in tail} == {"Eat breakfast"} and "Eat breakfast" in BEHAVIORS


def test_bad_inputs_are_one_line_errors(dataset, tiny_dir, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("train-0\nnot-a-sample\n")
    assert main(tune_args(dataset, tmp_path / "x", tiny_dir, "--subset", str(ids))) == 2
    assert "1 sample ids are not in the train split (first: 'not-a-sample')" in capsys.readouterr().err
    assert main(tune_args(dataset, tmp_path / "x", tiny_dir, "--subset", "tial")) == 2
    assert "expected all, anchors, tail or a file" in capsys.readouterr().err
    assert main(tune_args(tmp_path, tmp_path / "x", tiny_dir)) == 2
    assert "no stats.json" in capsys.readouterr().err
    with pytest.raises(InputError):
        choose_subset(PreparedData(dataset), str(tmp_path / "missing.txt"))
