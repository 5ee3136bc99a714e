"""Fixtures for the language-model tests: one tiny random model per session, small synthetic datasets."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from behaviorlm.data.types import BehaviorInfo, Event, Sample, Stats, write_samples

PLACE_TO_BEHAVIOR = {"office": "Work", "home": "Sleep", "gym": "Workout", "cafe": "Eat breakfast"}
"""The label follows from the next event's place, so a tiny model can learn it in a few steps."""
BEHAVIORS = sorted(PLACE_TO_BEHAVIOR.values())
TINY_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
"""A random tiny model can only become confident with LoRA on its output layer too."""




def make_samples(n: int, prefix: str = "s", history_len: int = 3, seed: int = 0) -> list[Sample]:
    import random

    rng = random.Random(seed)
    places = list(PLACE_TO_BEHAVIOR)
    start = datetime(2024, 5, 6, 7)
    out = []
    for i in range(n):
        history = tuple(
            Event(start + timedelta(hours=h), p, PLACE_TO_BEHAVIOR[p])
            for h, p in enumerate(rng.choice(places) for _ in range(history_len))
        )
        place = places[i % len(places)]
        target = Event(start + timedelta(hours=history_len), place, PLACE_TO_BEHAVIOR[place])
        out.append(Sample(f"{prefix}{i}", f"u{i % 5}", history, target))
    return out


def write_dataset(root: Path, n_train: int = 24, n_eval: int = 8) -> Path:
    """A prepared-dataset folder (stats.json + the four splits) with the place -> behavior rule."""
    root.mkdir(parents=True, exist_ok=True)
    groups = {"Work": "head", "Sleep": "head", "Workout": "medium", "Eat breakfast": "tail"}
    stats = Stats([BehaviorInfo(b, 10, 0.25, groups[b], groups[b] != "tail") for b in BEHAVIORS],
                  {"train": n_train, "valid": n_eval, "test": n_eval, "balanced_test": n_eval}, {"history_len": 3})
    (root / "stats.json").write_text(json.dumps(stats.to_json()))
    for seed, (split, n) in enumerate({"train": n_train, "valid": n_eval, "test": n_eval,
                                       "balanced_test": n_eval}.items()):
        write_samples(make_samples(n, prefix=f"{split}-", seed=seed), root / f"{split}.parquet")
    return root


def write_minimal_run(root: Path) -> Path:
    """A run folder with one behavior and an `ft` model whose adapter lives in RUN/ft/adapter (not written here)."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "stats.json").write_text(json.dumps({"behaviors": [
        {"name": "Work", "count": 1, "share": 1.0, "group": "head", "anchor": True}], "samples": {}, "settings": {}}))
    (root / "ft").mkdir()
    (root / "ft" / "model.json").write_text(json.dumps({"base_model": "smollm2-135m", "adapter": "ft/adapter"}))
    return root


@pytest.fixture(scope="session")
def tiny():
    from behaviorlm.lm.loading import tiny_model

    return tiny_model(seed=0)


@pytest.fixture
def fresh_tiny():
    """A tiny model the test may change (LoRA layers are injected in place by tuning)."""
    from behaviorlm.lm.loading import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny):
    """The tiny model saved as an ordinary model folder, for code that loads a model by name."""
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model LoRA-tuned for a few epochs on the synthetic samples: (TuneResult, tokenizer)."""
    from behaviorlm.config import LoraConfig, TrainConfig
    from behaviorlm.lm.loading import tiny_model
    from behaviorlm.lm.tuning import behavior_examples, tune

    model, tokenizer = tiny_model(seed=0)
    examples = behavior_examples(make_samples(32), BEHAVIORS)
    result = tune(model, tokenizer, examples, tmp_path_factory.mktemp("trained"),
                  LoraConfig(r=16, alpha=32, dropout=0.0, target_modules=TINY_TARGETS),
                  TrainConfig(batch_size=8, epochs=20, learning_rate=1e-2, save_every=1000), progress=False)
    return result, tokenizer
