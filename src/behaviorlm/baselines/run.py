"""Train one baseline on a prepared dataset and score it on both protocols, like the language models.

``OUT/metrics.json`` has the shared schema: ``model``, ``next_behavior`` (test split, natural
distribution), ``long_tail`` (balanced test split), each with the 95 % bootstrap intervals ``ci95`` (users
resampled; within each behavior on the balanced set), ``seconds`` (training wall time), plus
``train_samples``, ``eval_seconds``, the hyperparameters and the per-epoch training history.
``OUT/predictions.parquet`` has the language models' columns, so a comparison with one can be paired.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from behaviorlm.baselines.markov import MarkovChain, MostFrequent
from behaviorlm.data.types import PreparedData, Sample, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.evaluation.evaluate import write_predictions
from behaviorlm.evaluation.metrics import compute_metrics

BASELINES = ("sasrec", "bert4rec", "llm-esr", "alphafuse", "markov", "most-frequent")
NEURAL = ("sasrec", "bert4rec", "llm-esr", "alphafuse")
"""Trained by the shared neural loop: they take the same training options (epochs, hidden size, ...)."""
LANGUAGE = ("llm-esr", "alphafuse")
"""LLM-enhanced: they embed the behavior names with a language model (``language_model``)."""
TOP_K = 5


def make_baseline(name: str, candidates: list[str], **hparams):
    """A fresh, unfitted baseline. Options a model does not have raise an InputError."""
    if name == "sasrec":
        from behaviorlm.baselines.sasrec import SASRec as cls
    elif name == "bert4rec":
        from behaviorlm.baselines.bert4rec import BERT4Rec as cls
    elif name == "llm-esr":
        from behaviorlm.baselines.llm_esr import LLMESR as cls
    elif name == "alphafuse":
        from behaviorlm.baselines.alphafuse import AlphaFuse as cls
    elif name == "markov":
        cls = MarkovChain
    elif name == "most-frequent":
        cls = MostFrequent
    else:
        raise InputError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    try:
        return cls(candidates, **hparams)
    except TypeError as exc:
        raise InputError(f"baseline {name}: {exc}") from None


def score(model, samples: list[Sample], split: str, groups: dict[str, str], k: int = TOP_K) -> tuple[dict, list]:
    """The six metrics with their intervals (and hit@k from the top-k ranking) of a fitted model on one split,
    and its prediction rows."""
    if not samples:
        return compute_metrics([], [], groups), []
    proba = model.predict_proba(samples)
    # Stable sort: equal scores keep candidate order, so rankings are reproducible.
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    ranked = [[model.candidates[j] for j in row] for row in order]
    metrics = compute_metrics([s.label for s in samples], [r[0] for r in ranked], groups, ranked=ranked,
                              users=[s.user_id for s in samples], by_behavior=split == "balanced_test")
    rows = [{"sample_id": s.sample_id, "user_id": s.user_id, "split": split, "label": s.label, "pred": r[0],
             "top": [{"behavior": model.candidates[j], "probability": float(p[j])} for j in row]}
            for s, r, row, p in zip(samples, ranked, order, proba)]
    return metrics, rows


def run_baseline(
    name: str,
    data: PreparedData,
    out_dir: str | Path,
    seed: int = 0,
    train_fraction: float = 1.0,
    limit: int | None = None,
    per_behavior: int | None = None,
    **hparams,
) -> dict:
    """Fit ``name`` on data's train split (validation split for early stopping), evaluate, write metrics.json.

    ``limit`` scores N samples of the test split and ``per_behavior`` at most N of each behavior of the balanced
    test set (``PreparedData.evaluation_samples``): the samples a language-model evaluation with the same settings
    sees. None = all.
    """
    for option, value in (("limit", limit), ("per_behavior", per_behavior)):
        if value is not None and value < 1:
            raise InputError(f"{option} must be at least 1, got {value}")
    model = make_baseline(name, data.candidates, seed=seed, train_fraction=train_fraction, **hparams)
    train, valid = data.split("train"), data.split("valid")  # reading is not training: load before the clock starts
    started = time.perf_counter()
    model.fit(train, valid)
    seconds = time.perf_counter() - started
    groups = data.stats.groups
    test = data.evaluation_samples("test", limit)
    balanced = data.evaluation_samples("balanced_test", per_behavior=per_behavior)
    started = time.perf_counter()
    next_behavior, test_rows = score(model, test, "test", groups)
    long_tail, balanced_rows = score(model, balanced, "balanced_test", groups)
    metrics = {
        "model": name,
        "next_behavior": next_behavior,
        "long_tail": long_tail,
        "seconds": seconds,
        "eval_seconds": time.perf_counter() - started,
        "limit": limit,
        "per_behavior": per_behavior,
        "train_samples": model.train_samples,
        "hparams": model.hparams(),
    }
    if hasattr(model, "history"):
        metrics["best_epoch"] = model.best_epoch
        metrics["epochs"] = model.history
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(test_rows + balanced_rows, out)
    write_json_atomic(metrics, out / "metrics.json")
    return metrics
