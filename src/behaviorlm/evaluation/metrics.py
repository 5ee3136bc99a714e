"""The six metrics of the paper (Appendix B), plus top-k hit rates.

- ``prec_w`` / ``rec_w``: precision and recall per class, weighted by the class's support
  (rec_w equals Hit-Rate@1 / accuracy over samples).
- ``overall``: recall averaged over the classes present in the evaluated labels;
  ``head`` / ``medium`` / ``tail``: the same average restricted to one frequency group.
A group with no evaluated class gets ``None`` (the paper prints "-"). ``n_by_group`` counts the evaluated
samples of each group, so a reader can tell how much a group's figure rests on.

Given each sample's user, ``ci95`` holds the 95 % bootstrap interval of every metric and ``bootstrap`` how it was
drawn: users resampled with replacement, within each behavior for the balanced set (``by_behavior``); see
``uncertainty.py``.

Appendix B writes Prec_w with weights TP_c + FP_c, which reduces to plain accuracy; the paper's tables
(where Prec_w differs from Rec_w) match support weights TP_c + FN_c, as scikit-learn's ``average="weighted"``
uses, so that is what ``prec_w`` is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

GROUPS = ("head", "medium", "tail")


def per_class_recall(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    true = np.asarray(y_true, dtype=object)
    pred = np.asarray(y_pred, dtype=object)
    return {c: float(np.mean(pred[true == c] == c)) for c in sorted(set(true.tolist()))}


def compute_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    groups: dict[str, str],
    ranked: Sequence[Sequence[str]] | None = None,
    ks: Sequence[int] = (1, 3, 5),
    users: Sequence[str] | None = None,
    by_behavior: bool = False,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if ranked is not None and len(ranked) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(ranked)} rankings")
    if len(y_true) == 0:  # not `not y_true`: numpy arrays and pandas Series have no truth value
        return {"n": 0}
    labels = sorted(set(y_true))
    prec, rec, _, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    recall = per_class_recall(y_true, y_pred)
    out: dict = {"n": len(y_true), "prec_w": float(prec), "rec_w": float(rec), "overall": float(np.mean(list(recall.values())))}
    for group in GROUPS:
        values = [r for c, r in recall.items() if groups.get(c) == group]
        out[group] = float(np.mean(values)) if values else None
    if ranked is not None:
        for k in ks:
            out[f"hit@{k}"] = float(np.mean([t in list(r)[:k] for t, r in zip(y_true, ranked)]))
    out["n_by_group"] = {g: sum(groups.get(c) == g for c in y_true) for g in GROUPS}
    out["per_behavior"] = recall
    if users is not None:
        from behaviorlm.evaluation.uncertainty import bootstrap_record, intervals

        out["ci95"] = intervals(y_true, y_pred, users, groups, ranked, by_behavior=by_behavior,
                                resamples=resamples, seed=seed, ks=ks)
        out["bootstrap"] = bootstrap_record(users, by_behavior, resamples, seed)
    return out
