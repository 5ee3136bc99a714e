"""95 % bootstrap intervals of the evaluation metrics, and paired differences between two models.

Samples of one user are correlated (overlapping histories, one person's habits), so the bootstrap resamples
users, not samples (a cluster bootstrap):

- next-behavior protocol (natural test split): draw as many users as the set has, with replacement, and keep
  every sample of each drawn user (a user drawn twice counts twice);
- long-tail protocol (balanced test set, ``by_behavior=True``): stratified by behavior. For each behavior,
  draw with replacement among the users who have samples of that behavior, as many users as there are, and
  keep all their samples of it. Every behavior stays in every resample, as the balanced design intends.

The draw, so that it can be reproduced: clusters are the users (or the (behavior, user) pairs) in sorted
order; ``u = numpy.random.default_rng(seed).random((resamples, clusters))``; slot k of resample b, whose
cluster belongs to stratum s (the behavior, or the one stratum of all users), takes the stratum's cluster
number ``floor(u[b, k] * size(s))``. The interval is the 2.5th and 97.5th percentile of the resampled values.

A resample only reweights per-cluster counts, so all resamples' metrics come from a few matrix products
``(resamples x clusters) @ (clusters x behaviors)``. Comparing two models on the same samples draws the same
users for both (a paired bootstrap) and takes the interval of the resampled difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

RESAMPLES = 1000
SEED = 0
GROUPS = ("head", "medium", "tail")
KS = (1, 3, 5)


def bootstrap_record(users: Sequence[str], by_behavior: bool, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """How the intervals of one protocol were computed, for metrics.json."""
    return {"resamples": resamples, "unit": "user", "users": len(set(users)),
            "stratified_by": "behavior" if by_behavior else None, "seed": seed, "level": 0.95}


def draw_weights(strata: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, clusters): how often each cluster is drawn. ``strata`` numbers each cluster's stratum, sorted."""
    sizes = np.bincount(strata)
    start = np.cumsum(sizes) - sizes
    u = np.random.default_rng(seed).random((resamples, len(strata)))
    picks = start[strata] + np.floor(u * sizes[strata]).astype(np.int64)
    offsets = np.arange(resamples, dtype=np.int64)[:, None] * len(strata)
    counts = np.bincount((picks + offsets).ravel(), minlength=resamples * len(strata))
    return counts.reshape(resamples, len(strata)).astype(np.float64)


class Bootstrap:
    """The resampling design of one evaluated sample set; ``values`` scores any model's answers on it.

    ``groups`` maps behaviors to the frequency groups; any further group name in it (e.g. the report's
    anchor / non-anchor split) gets its class-averaged recall too.
    """

    def __init__(self, labels: Sequence[str], users: Sequence[str], groups: dict[str, str], *,
                 by_behavior: bool = False, resamples: int = RESAMPLES, seed: int = SEED):
        labels = np.asarray(labels, dtype=str)
        users = np.asarray(users, dtype=str)
        if len(labels) != len(users) or len(labels) == 0:
            raise ValueError(f"{len(labels)} labels and {len(users)} users: need the same, non-zero number")
        self.classes, self.label_codes = np.unique(labels, return_inverse=True)
        user_names, user_codes = np.unique(users, return_inverse=True)
        key = self.label_codes * len(user_names) + user_codes if by_behavior else user_codes
        cluster_keys, self.cluster_of = np.unique(key, return_inverse=True)
        strata = cluster_keys // len(user_names) if by_behavior else np.zeros(len(cluster_keys), dtype=np.int64)
        self.weights = draw_weights(strata, resamples, seed)
        self.truth = self._per_cluster(self.label_codes)
        self.masks = {"overall": np.ones(len(self.classes), dtype=bool)}
        names = [*GROUPS, *sorted({g for g in groups.values() if isinstance(g, str)} - set(GROUPS))]
        self.masks |= {g: np.array([groups.get(c) == g for c in self.classes]) for g in names}

    @property
    def clusters(self) -> int:
        return self.weights.shape[1]

    def _per_cluster(self, codes: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """(clusters, behaviors) counts of ``codes`` (one behavior per sample), over the samples in ``keep``."""
        cluster, codes = (self.cluster_of, codes) if keep is None else (self.cluster_of[keep], codes[keep])
        c = len(self.classes)
        return np.bincount(cluster * c + codes, minlength=self.clusters * c).reshape(self.clusters, c).astype(float)

    def values(self, predicted: Sequence[str], ranked: Sequence[Sequence[str]] | None = None,
               weights: np.ndarray | None = None, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
        """Every metric of ``compute_metrics`` on each resample (NaN where a group has no behavior)."""
        predicted = np.asarray(predicted, dtype=str)
        if len(predicted) != len(self.label_codes):
            raise ValueError(f"{len(self.label_codes)} labels but {len(predicted)} predictions")
        pos = np.minimum(np.searchsorted(self.classes, predicted), len(self.classes) - 1)
        known = self.classes[pos] == predicted  # an answer that is no evaluated behavior is just wrong
        correct = known & (pos == self.label_codes)
        w = self.weights if weights is None else weights
        support, tp = w @ self.truth, w @ self._per_cluster(self.label_codes, correct)
        answered = w @ self._per_cluster(pos, known)
        total = support.sum(axis=1)
        precision = np.divide(tp, answered, out=np.zeros_like(tp), where=answered > 0)
        present = support > 0
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
        out = {"prec_w": (support * precision).sum(axis=1) / total, "rec_w": tp.sum(axis=1) / total}
        for name, mask in self.masks.items():
            n = present[:, mask].sum(axis=1)
            out[name] = np.divide(recall[:, mask].sum(axis=1), n, out=np.full(len(n), np.nan), where=n > 0)
        if ranked is not None:
            if len(ranked) != len(predicted):
                raise ValueError(f"{len(predicted)} predictions but {len(ranked)} rankings")
            truth = self.classes[self.label_codes]
            for k in ks:
                hit = np.array([t in list(r)[:k] for t, r in zip(truth, ranked)], dtype=float)
                out[f"hit@{k}"] = (w @ np.bincount(self.cluster_of, hit, minlength=self.clusters)) / total
        return out

    def point(self, predicted: Sequence[str], ranked: Sequence[Sequence[str]] | None = None) -> dict[str, float | None]:
        """The metrics on the evaluated samples themselves (every cluster once)."""
        values = self.values(predicted, ranked, weights=np.ones((1, self.clusters)))
        return {k: None if np.isnan(v[0]) else float(v[0]) for k, v in values.items()}


def interval(values: np.ndarray) -> list[float] | None:
    """[2.5th, 97.5th] percentile of the resampled values that exist; None if none does."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def intervals(labels: Sequence[str], predicted: Sequence[str], users: Sequence[str], groups: dict[str, str],
              ranked: Sequence[Sequence[str]] | None = None, *, by_behavior: bool = False,
              resamples: int = RESAMPLES, seed: int = SEED, ks: Sequence[int] = KS) -> dict[str, list[float] | None]:
    """95 % interval of every metric (user-level bootstrap; stratified by behavior with ``by_behavior``)."""
    boot = Bootstrap(labels, users, groups, by_behavior=by_behavior, resamples=resamples, seed=seed)
    return {k: interval(v) for k, v in boot.values(predicted, ranked, ks=ks).items()}


def mean_intervals(labels: Sequence[str], predictions: Sequence[Sequence[str]], users: Sequence[str],
                   groups: dict[str, str], *, by_behavior: bool = False, resamples: int = RESAMPLES,
                   seed: int = SEED) -> dict[str, list[float] | None]:
    """95 % interval of the mean over several models (e.g. training seeds) scored on the same samples.

    Each resample draws the same users for every model, so the interval covers the test sample's uncertainty of
    the seed-averaged metric; the spread between seeds is the standard deviation reported beside it.
    """
    boot = Bootstrap(labels, users, groups, by_behavior=by_behavior, resamples=resamples, seed=seed)
    per_model = [boot.values(p) for p in predictions]
    return {k: interval(np.mean([v[k] for v in per_model], axis=0)) for k in per_model[0]}


class Difference(NamedTuple):
    """Metric of model A minus metric of model B, with the 95 % interval of the paired bootstrap."""

    value: float | None
    ci95: list[float] | None

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def paired_difference(labels: Sequence[str], predicted_a: Sequence[str], predicted_b: Sequence[str],
                      users: Sequence[str], groups: dict[str, str], metric: str, *, by_behavior: bool = False,
                      resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """A's ``metric`` minus B's on the same samples, the same users drawn for both in every resample."""
    return paired_differences(labels, predicted_a, predicted_b, users, groups, [metric], by_behavior=by_behavior,
                              resamples=resamples, seed=seed)[metric]


def paired_differences(labels: Sequence[str], predicted_a: Sequence[str], predicted_b: Sequence[str],
                       users: Sequence[str], groups: dict[str, str], metrics: Sequence[str], *,
                       by_behavior: bool = False, resamples: int = RESAMPLES, seed: int = SEED
                       ) -> dict[str, Difference]:
    """``paired_difference`` of several metrics from one bootstrap (each model's resamples computed once)."""
    return paired_mean_differences(labels, [predicted_a], [predicted_b], users, groups, metrics,
                                   by_behavior=by_behavior, resamples=resamples, seed=seed)


def paired_mean_differences(labels: Sequence[str], predictions_a: Sequence[Sequence[str]],
                            predictions_b: Sequence[Sequence[str]], users: Sequence[str], groups: dict[str, str],
                            metrics: Sequence[str], *, by_behavior: bool = False, resamples: int = RESAMPLES,
                            seed: int = SEED) -> dict[str, Difference]:
    """The mean metric of A's models minus the mean of B's (e.g. two variants, each trained with several seeds),
    all scored on the same samples; every resample draws the same users for every model. The interval covers the
    evaluated sample's uncertainty of the seed-averaged difference, not the spread between seeds."""
    boot = Bootstrap(labels, users, groups, by_behavior=by_behavior, resamples=resamples, seed=seed)
    points = [[boot.point(p) for p in side] for side in (predictions_a, predictions_b)]
    values = [[boot.values(p) for p in side] for side in (predictions_a, predictions_b)]
    out = {}
    for metric in metrics:
        a, b = ([pt[metric] for pt in side] for side in points)
        if None in a or None in b:
            out[metric] = Difference(None, None)
            continue
        resampled_a, resampled_b = (np.mean([v[metric] for v in side], axis=0) for side in values)
        out[metric] = Difference(float(np.mean(a) - np.mean(b)), interval(resampled_a - resampled_b))
    return out


def scored(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """One split's rows of a predictions.parquet as sample_id, user_id, label, pred, sorted by sample id.

    Files written before ``user_id`` was recorded give the user as the sample id's part before its last ":"
    ("user:position"); the top-ranked candidate stands in for a missing ``pred``, "<unmatched>" for no answer.
    """
    rows = frame[frame["split"] == split] if "split" in frame else frame
    ids = rows["sample_id"].astype(str)
    if "user_id" in rows:
        users = rows["user_id"].astype(str)
    else:
        parts = ids.str.rpartition(":")
        users = parts[0].where(parts[1] == ":", ids)
    if "pred" in rows:
        pred = rows["pred"]
    else:
        pred = rows["top"].map(lambda top: top[0]["behavior"] if top is not None and len(top) else None)
    out = pd.DataFrame({"sample_id": ids, "user_id": users, "label": rows["label"],
                        "pred": pred.where(pred.notna(), "<unmatched>")})
    return out.sort_values("sample_id", kind="stable").reset_index(drop=True)
