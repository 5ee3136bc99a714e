"""The stages of the progressive recipe and the variants built from them.

Stage one tunes the base model on one subset of the training samples:

- ``anchor``: anchor behaviors plus the auxiliary conversations at ratio epsilon (A-Tuning, Section 3.2);
- ``anchor-noaux``: anchors only (ablation "A-Tuning w/o Aux. Task");
- ``ft``: every behavior, the TALLRec/LLaRA-style fine-tuning the paper compares with;
- ``tail-first``: medium and tail behaviors only, the reversed curriculum of Section 4.5.

Stage two (B-Tuning, Section 3.3) continues a stage-one adapter on F samples per behavior, picked by
``selection.select_balanced`` with difficulty (DDS) and contrast (CDS), or an ablated selection.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from behaviorlm.config import RunConfig, SelectionConfig, TrainConfig
from behaviorlm.data.types import PreparedData, Sample

STAGE_ONE = ("anchor", "anchor-noaux", "ft", "tail-first")
SELECTIONS = {
    "dds_cds": {"difficulty": True, "contrastive": True},
    "dds": {"difficulty": True, "contrastive": False},
    "uniform": {"difficulty": False, "contrastive": False},
}

VARIANTS: dict[str, tuple[str, str | None] | None] = {
    "zero-shot": None,
    "ft": ("ft", None),
    "anchor-only": ("anchor", None),
    "behaviorlm": ("anchor", "dds_cds"),
    "no-aux": ("anchor-noaux", "dds_cds"),
    "no-dds": ("anchor", "uniform"),
    "no-cds": ("anchor", "dds"),
    "no-a-tuning": ("ft", "dds_cds"),
    "tail-first": ("tail-first", "dds_cds"),
}
"""variant -> (stage-one subset, B-Tuning selection or None); None = the untuned base model."""


@dataclass(frozen=True)
class ModelStage:
    """Where a variant's model comes from: stage one alone, or stage one followed by B-Tuning."""

    stage_one: str
    selection: str | None = None

    @property
    def tune_key(self) -> str:
        return f"tune-{self.stage_one}" if self.selection is None else f"tune-{self.stage_one}+b-{self.selection}"

    @property
    def select_key(self) -> str:
        return f"select-{self.stage_one}-{self.selection}"


def model_stage(variant: str) -> ModelStage | None:
    spec = VARIANTS[variant]
    return None if spec is None else ModelStage(*spec)


def stage_one_samples(subset: str, data: PreparedData, train: TrainConfig) -> list[Sample]:
    """The training samples of a stage-one subset, capped at ``train.max_train_samples`` (seeded)."""
    samples = data.split("train")
    stats = data.stats
    if subset in ("anchor", "anchor-noaux"):
        samples = [s for s in samples if s.label in stats.anchors]
    elif subset == "tail-first":
        samples = [s for s in samples if stats.by_name[s.label].group != "head"]
    elif subset != "ft":
        raise ValueError(f"unknown stage-one subset {subset!r}")
    return cap(samples, train.max_train_samples, train.seed)


def cap(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    samples = list(samples)
    if limit is None or len(samples) <= limit:
        return samples
    return random.Random(seed).sample(samples, limit)


def aux_count(subset: str, n_samples: int, config: RunConfig) -> int:
    """epsilon x the anchor sample count for A-Tuning; no auxiliary task anywhere else."""
    return round(config.aux.ratio * n_samples) if subset == "anchor" else 0


def selection_config(selection: str, config: RunConfig) -> SelectionConfig:
    return config.selection.model_copy(update=SELECTIONS[selection])


def relative(path: Path, root: Path) -> str:
    return str(Path(path).resolve().relative_to(root.resolve()))
