"""Two honest floors that any learned model must beat.

- ``MostFrequent``: the behavior the user did most often in the shown history.
- ``MarkovChain``: P(next | last behavior), estimated from the training targets and smoothed
  towards the global distribution, so an unseen or rare last behavior backs off to it.
"""

from __future__ import annotations

import numpy as np

from behaviorlm.baselines.neural import subsample
from behaviorlm.data.types import Sample
from behaviorlm.errors import InputError


class _CountingBaseline:
    name = "floor"

    def __init__(self, candidates: list[str], *, seed: int = 0, train_fraction: float = 1.0,
                 max_train_samples: int | None = None, alpha: float = 1.0):
        if not candidates:
            raise InputError("no candidate behaviors")
        if alpha <= 0:
            raise InputError(f"smoothing alpha must be positive, got {alpha}")
        self.candidates = list(candidates)
        self.index = {name: i for i, name in enumerate(self.candidates)}
        self.seed, self.train_fraction, self.max_train_samples, self.alpha = seed, train_fraction, max_train_samples, alpha
        self.prior: np.ndarray | None = None
        self.train_samples = 0

    def hparams(self) -> dict:
        return {"seed": self.seed, "train_fraction": self.train_fraction,
                "max_train_samples": self.max_train_samples, "alpha": self.alpha}

    def _train(self, train: list[Sample]) -> list[Sample]:
        train = subsample(train, self.train_fraction, self.max_train_samples, self.seed)
        if not train:
            raise InputError("no training samples")
        self.train_samples = len(train)
        counts = np.zeros(len(self.candidates))
        for sample in train:
            if sample.label in self.index:
                counts[self.index[sample.label]] += 1
        # Additive smoothing keeps every candidate possible and rankable.
        self.prior = (counts + self.alpha) / (counts.sum() + self.alpha * len(counts))
        return train

    def _check_fitted(self) -> None:
        if self.prior is None:
            raise RuntimeError("fit() first")


class MostFrequent(_CountingBaseline):
    """Predict the most frequent behavior of the history; ties go to the globally more frequent one."""

    name = "most-frequent"

    def fit(self, train: list[Sample], valid: list[Sample] | None = None) -> MostFrequent:
        self._train(train)
        return self

    def predict_proba(self, samples: list[Sample]) -> np.ndarray:
        self._check_fitted()
        out = np.zeros((len(samples), len(self.candidates)))
        for row, sample in enumerate(samples):
            for event in sample.history:
                if event.behavior in self.index:
                    out[row, self.index[event.behavior]] += 1
        # The prior sums to 1 < any count gap, so it only breaks ties and ranks the unseen behaviors.
        out += 0.5 * self.prior
        return out / out.sum(axis=1, keepdims=True)


class MarkovChain(_CountingBaseline):
    """First-order chain over (last history behavior -> target) pairs of the training samples.

    P(next | last) = (n(last, next) + alpha * P(next)) / (n(last) + alpha): with few observations of
    ``last`` it falls back to the global distribution P, with many it follows the counts.
    """

    name = "markov"

    def fit(self, train: list[Sample], valid: list[Sample] | None = None) -> MarkovChain:
        train = self._train(train)
        self.counts = np.zeros((len(self.candidates), len(self.candidates)))
        for sample in train:
            if sample.history and sample.history[-1].behavior in self.index and sample.label in self.index:
                self.counts[self.index[sample.history[-1].behavior], self.index[sample.label]] += 1
        return self

    def predict_proba(self, samples: list[Sample]) -> np.ndarray:
        self._check_fitted()
        out = np.tile(self.prior, (len(samples), 1))
        for row, sample in enumerate(samples):
            last = self.index.get(sample.history[-1].behavior) if sample.history else None
            if last is not None:
                out[row] = (self.counts[last] + self.alpha * self.prior) / (self.counts[last].sum() + self.alpha)
        return out
