"""Samples -> integer tensors for the sequential baselines.

Every event becomes four ids: behavior, hour of day, weekday and place. A sample is stored as one
right-padded row ``history + [target]`` so that both models can slice what they need: SASRec reads
the history and predicts each next event, BERT4Rec hides the target behavior behind ``[MASK]``.
The target's behavior id is the label; its hour, weekday and place are the "next event" context the
language model's prompt also shows, so the baselines get the same information.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

import torch

from behaviorlm.data.types import Sample

PAD = 0
"""Padding id, shared by every id table (behavior, hour, weekday, place)."""
UNKNOWN_PLACE = 1


@dataclass(frozen=True)
class Vocab:
    """Id tables. Behavior ``candidates[i]`` has id ``i + 1``, so class index = id - 1."""

    candidates: tuple[str, ...]
    places: tuple[str, ...]

    @classmethod
    def build(cls, candidates: list[str], train: list[Sample], min_place_count: int = 1) -> Vocab:
        """Places are learned from the training samples only; rarer or unseen ones share one id."""
        counts = Counter(e.place for s in train for e in (*s.history, s.target) if e.place)
        return cls(tuple(candidates), tuple(sorted(p for p, n in counts.items() if n >= min_place_count)))

    @property
    def n_classes(self) -> int:
        return len(self.candidates)

    @property
    def mask_id(self) -> int:
        return self.n_classes + 1

    @property
    def bos_id(self) -> int:
        return self.n_classes + 2

    @property
    def unknown_id(self) -> int:
        """A history behavior outside the candidate set (cannot be a label)."""
        return self.n_classes + 3

    @property
    def n_behavior_ids(self) -> int:
        return self.n_classes + 4

    @property
    def n_place_ids(self) -> int:
        return len(self.places) + 2

    def behavior_ids(self) -> dict[str, int]:
        return {name: i + 1 for i, name in enumerate(self.candidates)}

    def place_ids(self) -> dict[str, int]:
        return {name: i + 2 for i, name in enumerate(self.places)}


@dataclass
class Encoded:
    """``n`` samples as right-padded (n, max_len + 1) id matrices; column ``lengths - 1`` is the target."""

    behavior: torch.Tensor
    hour: torch.Tensor
    weekday: torch.Tensor
    place: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    """Class index of each target in the candidate list, -100 when the target is not a candidate."""
    rows: torch.Tensor
    """Each sample's position in the list that was encoded (kept by ``subset``), to look up per-sample data."""

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, index: torch.Tensor) -> Encoded:
        fields = (self.behavior, self.hour, self.weekday, self.place, self.lengths, self.labels, self.rows)
        return Encoded(*(t[index] for t in fields))


def encode(samples: list[Sample], vocab: Vocab, max_len: int) -> Encoded:
    """Keep the last ``max_len`` history events of each sample."""
    behavior_ids, place_ids = vocab.behavior_ids(), vocab.place_ids()
    n, width = len(samples), max_len + 1
    # Filled as numpy arrays, row by row: element-wise writes into torch tensors are ~10x slower.
    out = {k: np.zeros((n, width), dtype=np.int64) for k in ("behavior", "hour", "weekday", "place")}
    lengths = np.zeros(n, dtype=np.int64)
    labels = np.full(n, -100, dtype=np.int64)
    for row, sample in enumerate(samples):
        events = (*sample.history[-max_len:], sample.target) if max_len > 0 else (sample.target,)
        k = len(events)
        out["behavior"][row, :k] = [behavior_ids.get(e.behavior, vocab.unknown_id) for e in events]
        out["hour"][row, :k] = [e.time.hour + 1 for e in events]
        out["weekday"][row, :k] = [e.time.weekday() + 1 for e in events]
        out["place"][row, :k] = [place_ids.get(e.place, UNKNOWN_PLACE) for e in events]
        lengths[row] = k
        if sample.target.behavior in behavior_ids:
            labels[row] = behavior_ids[sample.target.behavior] - 1
    tensors = [torch.from_numpy(a) for a in (out["behavior"], out["hour"], out["weekday"], out["place"], lengths, labels)]
    return Encoded(*tensors, rows=torch.arange(n))
