"""compute_metrics checked against scikit-learn's own implementations on random predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

from behaviorlm.evaluation.metrics import compute_metrics, per_class_recall

CLASSES = [f"b{i:02d}" for i in range(12)]
GROUPS = {c: ("head" if i < 3 else "medium" if i < 7 else "tail") for i, c in enumerate(CLASSES)}


def random_case(seed: int, n: int = 400, missing: tuple[str, ...] = ()):
    """Skewed labels (like behavior logs), noisy predictions, and a score matrix for ranking."""
    rng = np.random.default_rng(seed)
    present = [c for c in CLASSES if c not in missing]
    weights = np.geomspace(1.0, 0.02, len(present))
    y_true = rng.choice(present, size=n, p=weights / weights.sum())
    scores = rng.random((n, len(CLASSES)))
    # Make the truth likelier to rank high, so hit rates are neither 0 nor 1.
    scores[np.arange(n), [CLASSES.index(t) for t in y_true]] += rng.random(n) * 0.8
    ranked = [[CLASSES[j] for j in np.argsort(-row)] for row in scores]
    y_pred = [r[0] for r in ranked]
    return list(y_true), y_pred, ranked, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_precision_and_recall_match_sklearn(seed):
    y_true, y_pred, ranked, _ = random_case(seed)
    out = compute_metrics(y_true, y_pred, GROUPS, ranked)
    # sklearn's default label set is the union of truth and predictions; predicted-only classes carry weight 0.
    assert out["prec_w"] == pytest.approx(precision_score(y_true, y_pred, average="weighted", zero_division=0))
    assert out["rec_w"] == pytest.approx(recall_score(y_true, y_pred, average="weighted", zero_division=0))
    assert out["rec_w"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert out["prec_w"] != pytest.approx(out["rec_w"])  # the two differ on skewed data, as in the paper
    assert out["n"] == len(y_true)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_per_class_recall_and_overall_match_sklearn(seed):
    y_true, y_pred, ranked, _ = random_case(seed, missing=("b05", "b10"))
    out = compute_metrics(y_true, y_pred, GROUPS, ranked)
    labels = sorted(set(y_true))
    expected = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    assert list(out["per_behavior"]) == labels  # classes absent from the truth are not scored
    assert [out["per_behavior"][c] for c in labels] == pytest.approx(list(expected))
    assert out["overall"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert per_class_recall(y_true, y_pred) == out["per_behavior"]


@pytest.mark.parametrize("seed", [0, 4])
def test_group_averages_match_sklearn_macro_recall_over_the_group(seed):
    y_true, y_pred, ranked, _ = random_case(seed, missing=("b04",))
    out = compute_metrics(y_true, y_pred, GROUPS, ranked)
    for group in ("head", "medium", "tail"):
        labels = sorted({c for c in y_true if GROUPS[c] == group})
        expected = recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        assert out[group] == pytest.approx(expected), group


def test_group_without_evaluated_class_is_none():
    y_true = ["b00", "b01", "b00", "b05"]
    y_pred = ["b00", "b00", "b01", "b05"]
    out = compute_metrics(y_true, y_pred, GROUPS)
    assert out["tail"] is None
    assert out["head"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["medium"] == pytest.approx(1.0)
    assert "hit@1" not in out  # no ranking given, no hit rates


@pytest.mark.parametrize("k", [1, 3, 5])
def test_hit_at_k_matches_sklearn_top_k_accuracy(k):
    y_true, y_pred, ranked, scores = random_case(5)
    out = compute_metrics(y_true, y_pred, GROUPS, ranked)
    expected = top_k_accuracy_score(y_true, scores, k=k, labels=CLASSES)
    assert out[f"hit@{k}"] == pytest.approx(expected)
    assert 0.0 < out[f"hit@{k}"] < 1.0


def test_hit_rates_are_monotone_and_hit1_equals_accuracy():
    y_true, y_pred, ranked, _ = random_case(6)
    out = compute_metrics(y_true, y_pred, GROUPS, ranked)
    assert out["hit@1"] == pytest.approx(out["rec_w"])
    assert out["hit@1"] <= out["hit@3"] <= out["hit@5"]


def test_unknown_predictions_count_as_wrong():
    y_true = ["b00", "b00", "b07", "b07"]
    y_pred = ["b00", "not a behavior", "b07", "???"]
    out = compute_metrics(y_true, y_pred, GROUPS)
    assert out["rec_w"] == pytest.approx(0.5)
    assert out["per_behavior"] == {"b00": 0.5, "b07": 0.5}
    assert out["prec_w"] == pytest.approx(precision_score(y_true, y_pred, average="weighted", zero_division=0))


def test_accepts_numpy_and_pandas_inputs():
    y_true, y_pred, ranked, _ = random_case(7, n=50)
    expected = compute_metrics(y_true, y_pred, GROUPS, ranked)
    assert compute_metrics(np.array(y_true), np.array(y_pred), GROUPS, ranked) == expected
    assert compute_metrics(pd.Series(y_true), pd.Series(y_pred), GROUPS, ranked) == expected


def test_empty_and_mismatched_inputs():
    assert compute_metrics([], [], GROUPS) == {"n": 0}
    with pytest.raises(ValueError):
        compute_metrics(["b00", "b01"], ["b00"], GROUPS)
    with pytest.raises(ValueError):
        compute_metrics(["b00", "b01"], ["b00", "b01"], GROUPS, ranked=[["b00"]])


def test_samples_per_group_are_counted():
    y_true, y_pred, _, _ = random_case(8, missing=("b09",))
    out = compute_metrics(y_true, y_pred, GROUPS)
    assert out["n_by_group"] == {g: sum(GROUPS[t] == g for t in y_true) for g in ("head", "medium", "tail")}
    assert sum(out["n_by_group"].values()) == out["n"]


def test_users_add_bootstrap_intervals_and_their_record():
    from behaviorlm.evaluation.uncertainty import intervals

    y_true, y_pred, ranked, _ = random_case(9, n=200)
    users = [f"u{i % 17}" for i in range(len(y_true))]
    assert "ci95" not in compute_metrics(y_true, y_pred, GROUPS, ranked)
    out = compute_metrics(y_true, y_pred, GROUPS, ranked, users=users, by_behavior=True, resamples=1200, seed=3)
    assert out["ci95"] == intervals(y_true, y_pred, users, GROUPS, ranked, by_behavior=True, resamples=1200, seed=3)
    assert out["bootstrap"] == {"resamples": 1200, "unit": "user", "users": 17, "stratified_by": "behavior",
                                "seed": 3, "level": 0.95}
    for key in ("prec_w", "rec_w", "overall", "head", "medium", "tail", "hit@3"):
        assert out["ci95"][key][0] <= out[key] <= out["ci95"][key][1], key
