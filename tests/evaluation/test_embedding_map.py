"""Behavior-name embeddings from the base model, reduced to 2-D, ready for the report's Figure 1b."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.data.types import BehaviorInfo, Stats
from behaviorlm.errors import InputError
from behaviorlm.evaluation.embedding_map import behavior_embedding_map, embed_names
from behaviorlm.evaluation.report.figures import embedding_map_figure

BEHAVIORS = [("Convenience Store", 0.4, "head", True), ("Train Station", 0.3, "head", True),
             ("Coffee Shop", 0.2, "medium", True), ("Museum", 0.06, "tail", False),
             ("Zoo", 0.03, "tail", False), ("Planetarium", 0.01, "tail", False)]


@pytest.fixture(scope="module")
def tiny():
    from behaviorlm.lm.loading import tiny_model

    return tiny_model(seed=0)


def make_stats(rows=BEHAVIORS) -> Stats:
    return Stats([BehaviorInfo(n, int(s * 1000), s, g, a) for n, s, g, a in rows], {"train": 10}, {})


def test_map_has_one_point_per_behavior_with_its_facts(tiny):
    model, tokenizer = tiny
    result = behavior_embedding_map(model, tokenizer, make_stats())
    points = result["points"]
    assert [p["behavior"] for p in points] == [b[0] for b in BEHAVIORS]
    assert [p["anchor"] for p in points] == [b[3] for b in BEHAVIORS]
    assert [p["share"] for p in points] == [b[1] for b in BEHAVIORS]
    xy = np.array([[p["x"], p["y"]] for p in points])
    assert np.isfinite(xy).all()
    assert np.allclose(xy.mean(axis=0), 0, atol=1e-4)  # PCA coordinates are centered
    assert xy[:, 0].var() >= xy[:, 1].var() > 0  # first component carries the most variance
    ev = result["explained_variance"]
    assert len(ev) == 2 and 1 >= ev[0] >= ev[1] > 0
    assert result["dimensions"] == model.config.hidden_size
    # Deterministic: the same model gives the same map.
    assert behavior_embedding_map(model, tokenizer, make_stats())["points"] == points


def test_embedding_is_mean_last_hidden_state_over_name_tokens(tiny):
    model, tokenizer = tiny
    vectors = embed_names(model, tokenizer, ["Coffee Shop", "Zoo"])
    ids = tokenizer("Coffee Shop", add_special_tokens=False, return_tensors="pt").input_ids
    assert ids.shape[1] > 1  # a multi-token name, so the mean matters
    with torch.no_grad():
        expected = model.model(input_ids=ids).last_hidden_state[0].mean(dim=0).numpy()
    assert vectors.shape == (2, model.config.hidden_size)
    assert np.allclose(vectors[0], expected, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_training_mode_is_restored_and_no_gradients_kept(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        behavior_embedding_map(model, tokenizer, make_stats())
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_map_renders_in_the_report(tiny):
    model, tokenizer = tiny
    result = {"model": "tiny", **behavior_embedding_map(model, tokenizer, make_stats())}
    figure = embedding_map_figure(result)
    assert figure.png[:4] == b"\x89PNG" and len(figure.png) > 5000


def test_needs_two_behaviors(tiny):
    model, tokenizer = tiny
    with pytest.raises(InputError, match="at least 2 behaviors"):
        behavior_embedding_map(model, tokenizer, make_stats(BEHAVIORS[:1]))
