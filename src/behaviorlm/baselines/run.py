"""Train one baseline on a prepared dataset and score it on both protocols, like the language models.

``OUT/metrics.json`` has the shared schema: ``model``, ``next_behavior`` (test split, natural
distribution), ``long_tail`` (balanced test split), ``seconds`` (training wall time), plus
``train_samples``, ``eval_seconds``, the hyperparameters and the per-epoch training history.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from behaviorlm.baselines.markov import MarkovChain, MostFrequent
from behaviorlm.data.types import PreparedData, Sample, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.evaluation.metrics import compute_metrics

BASELINES = ("sasrec", "bert4rec", "markov", "most-frequent")
TOP_K = 5


def make_baseline(name: str, candidates: list[str], **hparams):
    """A fresh, unfitted baseline. Options a model does not have raise an InputError."""
    if name == "sasrec":
        from behaviorlm.baselines.sasrec import SASRec as cls
    elif name == "bert4rec":
        from behaviorlm.baselines.bert4rec import BERT4Rec as cls
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


def score(model, samples: list[Sample], groups: dict[str, str], k: int = TOP_K) -> dict:
    """The six metrics (and hit@k from the top-k ranking) of a fitted model on one split."""
    if not samples:
        return compute_metrics([], [], groups)
    proba = model.predict_proba(samples)
    # Stable sort: equal scores keep candidate order, so rankings are reproducible.
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    ranked = [[model.candidates[j] for j in row] for row in order]
    return compute_metrics([s.label for s in samples], [r[0] for r in ranked], groups, ranked=ranked)


def run_baseline(
    name: str,
    data: PreparedData,
    out_dir: str | Path,
    seed: int = 0,
    train_fraction: float = 1.0,
    limit: int | None = None,
    **hparams,
) -> dict:
    """Fit ``name`` on data's train split (validation split for early stopping), evaluate, write metrics.json.

    ``limit`` scores N samples of each test split (``PreparedData.evaluation_samples``), the same subset a limited
    language-model evaluation sees.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    model = make_baseline(name, data.candidates, seed=seed, train_fraction=train_fraction, **hparams)
    train, valid = data.split("train"), data.split("valid")  # reading is not training: load before the clock starts
    started = time.perf_counter()
    model.fit(train, valid)
    seconds = time.perf_counter() - started
    groups = data.stats.groups
    test, balanced = data.evaluation_samples("test", limit), data.evaluation_samples("balanced_test", limit)
    started = time.perf_counter()
    metrics = {
        "model": name,
        "next_behavior": score(model, test, groups),
        "long_tail": score(model, balanced, groups),
        "seconds": seconds,
        "eval_seconds": time.perf_counter() - started,
        "train_samples": model.train_samples,
        "hparams": model.hparams(),
    }
    if hasattr(model, "history"):
        metrics["best_epoch"] = model.best_epoch
        metrics["epochs"] = model.history
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(metrics, out / "metrics.json")
    return metrics
