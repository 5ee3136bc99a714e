"""Difficulty-based data selection for B-Tuning (Section 3.3, Algorithm 1).

For each behavior, F training samples are picked:

- DDS (difficulty): the stage-one model mispredicts the sample;
- CDS (contrast, d = 0): the predicted behavior is in the truth's category (anchor mistaken for
  another anchor, tail for another tail).

Candidates are scanned behavior by behavior in a seeded random order and scanning stops as soon as F
samples qualify (the paper's footnote: F is small, so scoring the whole training set is unnecessary),
with a per-behavior scan cap because each scored sample costs about a second on a CPU. A behavior with
too few qualifying samples is filled with other mispredicted samples, then with random samples of that
behavior; how many of each kind were used is recorded.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from behaviorlm.config import SelectionConfig
from behaviorlm.data.types import Sample

KINDS = ("dds_cds", "dds_only", "random")

PredictTop1 = Callable[[Sequence[Sample]], list[str]]


@dataclass
class SelectionResult:
    samples: list[Sample]
    kinds: dict[str, dict[str, int]]
    """Per behavior: how many samples of each kind (see KINDS) were used."""
    scored: int = 0
    seconds: float = 0.0
    scanned: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=lambda: {"anchor": 0, "tail": 0})
    """The scored samples' predictions by category: CDS can pick a tail sample only where the model answers some
    tail behavior, which a model tuned on anchors alone may never do."""

    def summary(self) -> dict:
        return {
            "selected": len(self.samples),
            "scored": self.scored,
            "seconds": round(self.seconds, 2),
            "seconds_per_scored_sample": round(self.seconds / self.scored, 3) if self.scored else None,
            "kinds": self.kinds,
            "scanned": self.scanned,
            "answered": self.answered,
            "totals": {k: sum(v[k] for v in self.kinds.values()) for k in KINDS},
        }


def select_balanced(
    train: Sequence[Sample],
    anchors: set[str],
    predict_top1: PredictTop1,
    config: SelectionConfig,
    chunk_size: int = 8,
) -> SelectionResult:
    """Pick ``config.per_behavior`` samples of every behavior present in ``train``.

    ``predict_top1`` maps samples to the stage-one model's top-1 behaviors. With ``config.difficulty`` off
    the selection is uniform (no scoring); with ``config.contrastive`` off any mistake qualifies.
    """
    started = time.perf_counter()
    rng = random.Random(config.seed)
    by_behavior: dict[str, list[Sample]] = defaultdict(list)
    for sample in train:
        by_behavior[sample.label].append(sample)

    chosen: list[Sample] = []
    kinds: dict[str, dict[str, int]] = {}
    scanned: dict[str, int] = {}
    scored = 0
    answered = {"anchor": 0, "tail": 0}
    want = config.per_behavior
    progress = tqdm(sorted(by_behavior), desc="selecting", unit="behavior", disable=not config.difficulty)
    for behavior in progress:
        pool = list(by_behavior[behavior])
        rng.shuffle(pool)
        same_category: list[Sample] = []
        other_category: list[Sample] = []
        position = 0
        if config.difficulty:
            limit = min(len(pool), config.max_scan_per_behavior)
            while position < limit and _qualifying(same_category, other_category, config) < want:
                chunk = pool[position:min(position + chunk_size, limit)]
                position += len(chunk)
                for sample, predicted in zip(chunk, predict_top1(chunk)):
                    answered["anchor" if predicted in anchors else "tail"] += 1
                    if predicted != sample.label:
                        same = (predicted in anchors) == (sample.label in anchors)
                        (same_category if same else other_category).append(sample)
            scored += position
        if config.contrastive:
            mistakes = same_category + other_category
        else:  # any mistake qualifies: keep them in scan order
            mistakes = sorted(same_category + other_category, key=pool.index)
        picked = mistakes[:want]
        used = {id(s) for s in picked}
        unscanned_first = pool[position:] + pool[:position]
        fill = [s for s in unscanned_first if id(s) not in used][: want - len(picked)]
        in_same = {id(s) for s in same_category}
        n_same = sum(id(s) in in_same for s in picked)
        kinds[behavior] = {"dds_cds": n_same, "dds_only": len(picked) - n_same, "random": len(fill)}
        chosen.extend(picked + fill)
        scanned[behavior] = position
        progress.set_postfix(scored=scored)
    rng.shuffle(chosen)
    return SelectionResult(chosen, kinds, scored, time.perf_counter() - started, scanned, answered)


def _qualifying(same_category: list, other_category: list, config: SelectionConfig) -> int:
    return len(same_category) if config.contrastive else len(same_category) + len(other_category)
