"""Shared fixtures: a hand-written event table and a small prepared dataset built from the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from behaviorlm.config import RunConfig
from behaviorlm.lm import loading, tuning

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny test model is overhead-bound: a second thread buys nothing and stalls when other processes share
    the cores. Restored after each module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_events() -> pd.DataFrame:
    """A canonical event table: user "a" 12 events, "b" 8, "c" 3, cycling through five behaviors, hourly."""
    behaviors = ["Taking subway", "Watching video clip", "Payment", "Watching video clip", "Hailing taxi"]
    places = ["commute", "home", "mall", "home", "outdoors"]
    rows = []
    for user, n in (("a", 12), ("b", 8), ("c", 3)):
        for i in range(n):
            rows.append({
                "user_id": user,
                "timestamp": pd.Timestamp("2024-03-04 07:00") + pd.Timedelta(hours=i),
                "location": places[i % 5],
                "behavior": behaviors[i % 5],
            })
    frame = pd.DataFrame(rows)
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    return frame


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A prepared dataset (simulator: 40 users x 7 days, seed 0; history_len 10, balanced_per_behavior 20).

    Read-only for tests: copy it before changing anything. Load with ``PreparedData(prepared_dir)``.
    """
    from behaviorlm.config import DataConfig, SimulatorConfig
    from behaviorlm.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "data"
    config = DataConfig(history_len=10, balanced_per_behavior=20)
    prepare_dataset(config, out, simulator=SimulatorConfig(users=40, days=7, seed=0), progress=False)
    return out


# -- end-to-end runs on the tiny model (recipe and experiment tests) ----------------------------------

TINY_TARGETS = ["q_proj", "v_proj", "lm_head"]


def _load_tiny(name, device="auto", dtype="auto", adapter=None, trust_remote_code=False, trainable_adapter=False):
    model, tokenizer = loading.tiny_model(seed=0)
    if adapter is not None:
        model = loading.attach_adapter(model, adapter, trainable=trainable_adapter, tokenizer=tokenizer)
    return model, tokenizer


@pytest.fixture
def tiny_backbone(monkeypatch):
    """Every model the pipeline loads is the tiny random model (plus the adapter it asks for)."""
    monkeypatch.setattr(loading, "load_model", _load_tiny)


@pytest.fixture(scope="module")
def module_tiny_backbone():
    """``tiny_backbone`` for a module-scoped fixture (a run several tests compare with)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_model", _load_tiny)
        yield


@pytest.fixture
def tune_calls(monkeypatch):
    calls: list[Path] = []
    real_tune = tuning.tune

    def counting_tune(*args, **kwargs):
        calls.append(Path(args[3]))
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(tuning, "tune", counting_tune)
    return calls


def _small_config(tmp_path: Path, **changes) -> RunConfig:
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
        "prompt": {"format": "paper", "segment_targets": 4},
    }
    for key, value in changes.items():
        section, field = key.split(".")
        raw[section][field] = value
    return RunConfig.model_validate(raw)




@pytest.fixture
def small_config(tmp_path):
    """A factory of tiny end-to-end run configurations: ``small_config(**{"selection.per_behavior": 2})``."""
    return lambda **changes: _small_config(tmp_path, **changes)


@pytest.fixture(scope="module")
def module_small_config(tmp_path_factory):
    """``small_config`` for a module-scoped fixture; the configurations it makes stay valid for the whole module."""
    folder = tmp_path_factory.mktemp("config")
    return lambda **changes: _small_config(folder, **changes)
