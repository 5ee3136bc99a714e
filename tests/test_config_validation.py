"""The typed configuration refuses what would waste or corrupt a run, before any work, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from behaviorlm.config import DataConfig, ModelConfig, RunConfig, allowed_remote_code, load_config
from behaviorlm.errors import InputError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_are_valid(config):
    load_config(CONFIGS / config)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.learning_rate=-1e-4", "train.learning_rate"),
        ("train.min_learning_rate=-1", "train.min_learning_rate"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ("train.max_steps=-2", "train.max_steps"),
        ("train.max_train_samples=0", "train.max_train_samples"),
        ("train.eval_samples=-1", "train.eval_samples"),
        ("train.save_every=0", "train.save_every"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio"),
        ("train.max_length=0", "train.max_length"),
        ("b_train={learning_rate: -1}", "b_train.learning_rate"),
        ("lora.r=0", "lora.r"),
        ("lora.alpha=0", "lora.alpha"),
        ("lora.dropout=1", "lora.dropout"),
        ("lora.target_modules=[]", "lora.target_modules"),
        ("lora.last_n_layers=0", "lora.last_n_layers"),
        ("selection.per_behavior=0", "selection.per_behavior"),
        ("selection.max_scan_per_behavior=0", "selection.max_scan_per_behavior"),
        ("aux.ratio=-0.1", "aux.ratio"),
        ("aux.max_tokens=0", "aux.max_tokens"),
        ("aux.max_rounds=0", "aux.max_rounds"),
        ("simulator.users=0", "simulator.users"),
        ("simulator.days=-3", "simulator.days"),
        ("simulator.events_per_day=0", "simulator.events_per_day"),
        ("data.history_len=0", "data.history_len"),
        ("data.min_events_per_user=0", "data.min_events_per_user"),
        ("data.balanced_per_behavior=-1", "data.balanced_per_behavior"),
        ("data.max_samples_per_user=0", "data.max_samples_per_user"),
        ("data.vocab_top_k=-1", "data.vocab_top_k"),
        ("data.anchor_threshold=2", "data.anchor_threshold"),
        ("data.split=[0.8, -0.1, 0.3]", "data.split.1"),
        ("data.dayfirst=sometimes", "data.dayfirst"),
    ],
)
def test_non_positive_sizes_and_rates_are_refused(override, key):
    with pytest.raises(InputError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"config: {key}: "), str(info.value)


def test_the_limits_still_allow_what_the_recipe_uses():
    config = load_config(None, ["train.max_steps=-1", "train.eval_samples=0", "train.eval_every=0", "aux.ratio=0",
                                "data.balanced_per_behavior=0", "data.vocab_top_k=0", "train.warmup_ratio=0",
                                "data.dayfirst=true"])
    assert config.train.max_steps == -1 and config.data.dayfirst is True
    assert DataConfig().dayfirst is None and "dayfirst" in DataConfig().model_dump()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=[1", "--set 'train.epochs=[1': the value is not valid YAML"),
        ("train.epochs", "--set 'train.epochs': expected KEY=VALUE"),
        ("train..epochs=1", "is not a dotted key"),
        ("=1", "is not a dotted key"),
    ],
)
def test_malformed_overrides(override, message):
    with pytest.raises(InputError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_config_files_that_cannot_be_read(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "latin.yaml").write_bytes(b"model:\n  name: caf\xe9\n")
    (tmp_path / "list.yaml").write_text("- train\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 2\n")
    for name, message in [("dir.yaml", "is a directory"), ("latin.yaml", "not valid UTF-8 (byte 0xe9 at offset 18)"),
                          ("list.yaml", "expected a mapping of sections"), ("nope.yaml", "config file not found")]:
        with pytest.raises(InputError) as info:
            load_config(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: " + str(info.value).split(": ", 1)[1]
        assert message in str(info.value)
    assert load_config(tmp_path / "empty.yaml") == RunConfig()
    assert load_config(tmp_path / "bom.yaml").train.epochs == 2


def test_remote_code_needs_the_command_line():
    assert allowed_remote_code(ModelConfig(), False, "c.yaml") is False
    assert allowed_remote_code(ModelConfig(), True, "c.yaml") is True
    assert allowed_remote_code(ModelConfig(trust_remote_code=True), True, "c.yaml") is True
    with pytest.raises(InputError, match="c.yaml: model.trust_remote_code is true.*--trust-remote-code"):
        allowed_remote_code(ModelConfig(trust_remote_code=True), False, "c.yaml")
