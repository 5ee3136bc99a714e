"""Bootstrap intervals: the vectorised resampling against a slow, direct bootstrap over compute_metrics, paired
differences, and why users (not samples) are the unit."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from behaviorlm.evaluation.metrics import compute_metrics
from behaviorlm.evaluation.uncertainty import (
    Bootstrap,
    intervals,
    mean_intervals,
    paired_difference,
    paired_mean_differences,
    scored,
)

CLASSES = [f"b{i:02d}" for i in range(10)]
GROUPS = {c: ("head" if i < 2 else "medium" if i < 5 else "tail") for i, c in enumerate(CLASSES)}
KEYS = ("prec_w", "rec_w", "overall", "head", "medium", "tail", "hit@1", "hit@3", "hit@5")


def correlated_case(seed: int, users: int = 20, per_user: int = 10):
    """Skewed labels; each user is either easy (mostly right) or hard (mostly wrong), so a user's samples move
    together. Returns labels, predictions of two models, rankings of the first, and each sample's user."""
    rng = np.random.default_rng(seed)
    weights = np.geomspace(1.0, 0.05, len(CLASSES))
    user = np.repeat([f"u{u:02d}" for u in range(users)], per_user)
    labels = rng.choice(CLASSES, size=len(user), p=weights / weights.sum())
    skill = np.repeat(rng.choice([0.1, 0.9], size=users), per_user)
    right = rng.random(len(user)) < skill
    pred_a = np.where(right, labels, rng.choice(CLASSES, size=len(user)))
    # B: A with a further quarter of A's mistakes fixed, so the two are strongly paired.
    pred_b = np.where(~right & (rng.random(len(user)) < 0.25), labels, pred_a)
    ranked = [[p] + [c for c in rng.permutation(CLASSES) if c != p] for p in pred_a]
    return list(labels), list(pred_a), list(pred_b), ranked, list(user)


def direct_bootstrap(labels, predictions, users, by_behavior, resamples, seed, ranked=None) -> list[dict]:
    """The documented draw, one resample at a time: rebuild the resampled sample list, score it with
    compute_metrics. Returns one metrics dict per resample for each entry of ``predictions``."""
    key = [(b, u) if by_behavior else u for b, u in zip(labels, users)]
    clusters = sorted(set(key))
    stratum = [c[0] if by_behavior else None for c in clusters]
    pool = {s: [c for c, t in zip(clusters, stratum) if t == s] for s in stratum}
    members = {c: [i for i, k in enumerate(key) if k == c] for c in clusters}
    u = np.random.default_rng(seed).random((resamples, len(clusters)))
    out = []
    for b in range(resamples):
        idx = []
        for k in range(len(clusters)):
            candidates = pool[stratum[k]]
            idx += members[candidates[int(u[b, k] * len(candidates))]]
        out.append([compute_metrics([labels[i] for i in idx], [pred[i] for i in idx], GROUPS,
                                    ranked=None if ranked is None else [ranked[i] for i in idx])
                    for pred in predictions])
    return out


def percentile_interval(values) -> list[float] | None:
    values = [v for v in values if v is not None]
    return [float(x) for x in np.percentile(values, [2.5, 97.5])] if values else None


@pytest.mark.parametrize("by_behavior", [False, True])
def test_intervals_match_a_direct_bootstrap(by_behavior):
    labels, pred, _, ranked, users = correlated_case(0)
    resamples = 300
    fast = intervals(labels, pred, users, GROUPS, ranked, by_behavior=by_behavior, resamples=resamples, seed=7)
    slow = direct_bootstrap(labels, [pred], users, by_behavior, resamples, seed=7, ranked=ranked)
    assert set(fast) == set(KEYS)
    for key in KEYS:
        expected = percentile_interval([r[0][key] for r in slow])
        assert fast[key] == pytest.approx(expected, abs=1e-12), key
    point = compute_metrics(labels, pred, GROUPS, ranked)
    for key in ("rec_w", "overall"):
        assert fast[key][0] < point[key] < fast[key][1]


def test_stratified_resampling_keeps_every_behavior_and_draws_its_users():
    labels, _, _, _, users = correlated_case(1)
    boot = Bootstrap(labels, users, GROUPS, by_behavior=True, resamples=200, seed=0)
    assert ((boot.weights @ boot.truth) > 0).all()  # no behavior ever drops out of the balanced design
    cluster_label = {int(k): labels[i] for i, k in enumerate(boot.cluster_of)}
    for c in boot.classes:
        columns = [k for k, b in cluster_label.items() if b == c]
        n_users = len({u for u, b in zip(users, labels) if b == c})
        assert len(columns) == n_users
        assert (boot.weights[:, columns].sum(axis=1) == n_users).all()  # as many users drawn as the behavior has
        assert boot.weights[:, columns].std(axis=0).max() > 0 if n_users > 1 else True


def test_point_values_equal_compute_metrics():
    labels, pred, _, ranked, users = correlated_case(2)
    point = Bootstrap(labels, users, GROUPS).point(pred, ranked)
    expected = compute_metrics(labels, pred, GROUPS, ranked)
    for key in KEYS:
        assert point[key] == pytest.approx(expected[key], abs=1e-12), key


def test_unknown_answers_are_wrong_and_missing_groups_have_no_interval():
    labels = ["b00", "b00", "b03", "b03"]  # a head and a medium behavior; no tail one
    pred = ["b00", "not a behavior", "b03", "<unmatched>"]
    users = ["a", "b", "c", "d"]
    ci = intervals(labels, pred, users, GROUPS, resamples=200)
    assert ci["tail"] is None and ci["head"] is not None
    assert Bootstrap(labels, users, GROUPS).point(pred)["rec_w"] == 0.5
    anchors = Bootstrap(labels, users, {"b00": "anchor", "b03": "other"}).point(pred)
    assert anchors["anchor"] == 0.5 and anchors["other"] == 0.5 and anchors["head"] is None


def balanced_case(seed: int, users_per_behavior: int = 4, per_user: int = 5):
    """A balanced set as the long-tail protocol has it: each behavior's samples come from a few users, and a
    user is either easy or hard."""
    rng = np.random.default_rng(seed)
    labels, pred, users = [], [], []
    for c in CLASSES:
        for u in rng.choice(40, size=users_per_behavior, replace=False):
            skill = rng.choice([0.1, 0.9])
            for _ in range(per_user):
                labels.append(c)
                users.append(f"u{u:02d}")
                pred.append(c if rng.random() < skill else str(rng.choice(CLASSES)))
    return labels, pred, users


def test_user_resampling_is_wider_than_sample_resampling_on_correlated_data():
    natural, balanced = correlated_case(3, users=40, per_user=25), balanced_case(3)
    for (labels, pred, users), by_behavior, key in (((natural[0], natural[1], natural[4]), False, "rec_w"),
                                                    (balanced, True, "overall")):
        sample_ids = [str(i) for i in range(len(labels))]
        by_user = intervals(labels, pred, users, GROUPS, by_behavior=by_behavior)[key]
        by_sample = intervals(labels, pred, sample_ids, GROUPS, by_behavior=by_behavior)[key]
        assert by_user[1] - by_user[0] > 1.5 * (by_sample[1] - by_sample[0]), (by_behavior, by_user, by_sample)


@pytest.mark.parametrize("by_behavior", [False, True])
def test_paired_difference_matches_a_direct_paired_bootstrap(by_behavior):
    labels, pred_a, pred_b, _, users = correlated_case(4)
    slow = direct_bootstrap(labels, [pred_b, pred_a], users, by_behavior, 300, seed=0)
    for key in ("rec_w", "prec_w", "overall", "tail"):
        diff = paired_difference(labels, pred_b, pred_a, users, GROUPS, key, by_behavior=by_behavior,
                                 resamples=300, seed=0)
        point = compute_metrics(labels, pred_b, GROUPS)[key] - compute_metrics(labels, pred_a, GROUPS)[key]
        assert diff.value == pytest.approx(point, abs=1e-12)
        expected = percentile_interval([r[0][key] - r[1][key] for r in slow])
        assert diff.ci95 == pytest.approx(expected, abs=1e-12), key


def test_paired_difference_detects_a_consistent_improvement_and_not_an_identical_model():
    labels, pred_a, pred_b, _, users = correlated_case(5, users=40, per_user=20)
    better = paired_difference(labels, pred_b, pred_a, users, GROUPS, "rec_w")
    assert better.value > 0 and better.significant and better.ci95[0] > 0
    # Unpaired, the two models' own intervals overlap: the pairing is what makes the difference visible.
    ci_a, ci_b = (intervals(labels, p, users, GROUPS)["rec_w"] for p in (pred_a, pred_b))
    assert ci_b[0] < ci_a[1]
    same = paired_difference(labels, pred_a, list(pred_a), users, GROUPS, "overall", by_behavior=True)
    assert same.value == 0 and same.ci95 == [0.0, 0.0] and not same.significant
    assert paired_difference(labels, pred_a, pred_b, users, {}, "tail") == (None, None)


@pytest.mark.parametrize("by_behavior", [False, True])
def test_paired_mean_difference_over_seeds_matches_a_direct_paired_bootstrap(by_behavior):
    labels, pred_a, pred_b, _, users = correlated_case(7)
    # Two "seeds" of each variant: A's second model is B with a few answers changed, B's second is A's first.
    rng = np.random.default_rng(7)
    pred_c = [rng.choice(CLASSES) if rng.random() < 0.2 else p for p in pred_b]
    ours, theirs = [pred_b, pred_c], [pred_a, pred_a]
    slow = direct_bootstrap(labels, [*ours, *theirs], users, by_behavior, 300, seed=0)
    diffs = paired_mean_differences(labels, ours, theirs, users, GROUPS, ["rec_w", "overall", "tail"],
                                    by_behavior=by_behavior, resamples=300, seed=0)
    for key, diff in diffs.items():
        points = [compute_metrics(labels, p, GROUPS)[key] for p in (*ours, *theirs)]
        assert diff.value == pytest.approx((points[0] + points[1]) / 2 - (points[2] + points[3]) / 2, abs=1e-12)
        expected = percentile_interval([(r[0][key] + r[1][key]) / 2 - (r[2][key] + r[3][key]) / 2 for r in slow])
        assert diff.ci95 == pytest.approx(expected, abs=1e-12), key
    # One model a side is the plain paired difference.
    single = paired_mean_differences(labels, [pred_b], [pred_a], users, GROUPS, ["rec_w"])["rec_w"]
    assert single == paired_difference(labels, pred_b, pred_a, users, GROUPS, "rec_w")


def test_mean_intervals_average_models_on_the_same_resamples():
    labels, pred_a, pred_b, _, users = correlated_case(6)
    one = intervals(labels, pred_a, users, GROUPS)
    assert mean_intervals(labels, [pred_a, pred_a], users, GROUPS) == one
    both = mean_intervals(labels, [pred_a, pred_b], users, GROUPS)
    boot = Bootstrap(labels, users, GROUPS)
    mean = (boot.values(pred_a)["rec_w"] + boot.values(pred_b)["rec_w"]) / 2
    assert both["rec_w"] == pytest.approx(list(np.percentile(mean, [2.5, 97.5])))


def test_scored_reads_predictions_old_and_new():
    frame = pd.DataFrame({"sample_id": ["u2:5", "u1:3", "u1:4", "x"],
                          "split": ["test", "test", "test", "balanced_test"],
                          "label": ["a", "b", "c", "d"], "pred": ["a", None, "c", "d"]})
    old = scored(frame, "test")
    assert old["sample_id"].tolist() == ["u1:3", "u1:4", "u2:5"]
    assert old["user_id"].tolist() == ["u1", "u1", "u2"] and old["pred"].tolist() == ["<unmatched>", "c", "a"]
    new = scored(frame.assign(user_id=["p", "q", "q", "r"]).drop(columns="pred").assign(
        top=[[{"behavior": "z"}], [{"behavior": "b"}], [], [{"behavior": "d"}]]), "test")
    assert new["user_id"].tolist() == ["q", "q", "p"] and new["pred"].tolist() == ["b", "<unmatched>", "z"]


def test_a_thousand_resamples_of_five_thousand_samples_take_well_under_seconds():
    rng = np.random.default_rng(0)
    users = [f"u{u:02d}" for u in rng.integers(0, 50, 5000)]
    labels = list(rng.choice(CLASSES, 5000))
    pred = [b if rng.random() < 0.4 else str(rng.choice(CLASSES)) for b in labels]
    for by_behavior in (False, True):
        start = time.perf_counter()
        ci = intervals(labels, pred, users, GROUPS, by_behavior=by_behavior, resamples=1000)
        assert time.perf_counter() - start < 2.0
        assert ci["rec_w"][0] < 0.46 < ci["rec_w"][1]
