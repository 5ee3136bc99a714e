"""Shared fixtures: one tiny random model per test session (building it and importing torch is the slow part)."""

from __future__ import annotations

import pytest

from serving_helpers import HISTORY_LEN, make_stats


@pytest.fixture(scope="session")
def tiny():
    from behaviorlm.lm.loading import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def predictor(tiny):
    from behaviorlm.serving.api import Predictor

    model, tokenizer = tiny
    return Predictor(model, tokenizer, make_stats(), history_len=HISTORY_LEN, name="tiny")


@pytest.fixture
def fake_load_model(monkeypatch, tiny):
    """Replace the real model loader with the tiny model and record what was asked for."""
    calls = []

    def load_model(name="smollm2-135m", device="auto", dtype="auto", adapter=None, trust_remote_code=False, **_):
        calls.append({"name": name, "device": device, "dtype": dtype, "adapter": adapter,
                      "trust_remote_code": trust_remote_code})
        return tiny

    monkeypatch.setattr("behaviorlm.lm.loading.load_model", load_model)
    return calls
