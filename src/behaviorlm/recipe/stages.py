"""The stages of the progressive recipe and the variants built from them.

Stage one tunes the base model on one subset of the training samples:

- ``anchor``: anchor behaviors plus the auxiliary conversations at ratio epsilon (A-Tuning, Section 3.2);
- ``anchor-noaux``: anchors only (ablation "A-Tuning w/o Aux. Task");
- ``ft``: every behavior, the TALLRec/LLaRA-style fine-tuning the paper compares with;
- ``tail-first``: medium and tail behaviors only, the reversed curriculum of Section 4.5;
- ``llara``: ``ft``'s samples, with hybrid behavior tokens from a SASRec in the prompts (``lm.hybrid``).

Stage two (B-Tuning, Section 3.3) continues a stage-one adapter on F samples per behavior, picked by
``selection.select_balanced`` with difficulty (DDS) and contrast (CDS), or an ablated selection.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from behaviorlm.config import PromptConfig, RunConfig, SelectionConfig, TrainConfig
from behaviorlm.data.types import PreparedData, Sample
from behaviorlm.lm.formats import segments_of, training_examples

log = logging.getLogger(__name__)

STAGE_ONE = ("anchor", "anchor-noaux", "ft", "tail-first", "llara")
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
    "llara": ("llara", None),
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


def variant_prompt(variant: str, prompt: PromptConfig) -> PromptConfig:
    """The prompts a variant's model reads: llara's history behaviors carry their hybrid tokens."""
    return prompt.model_copy(update={"behavior_tokens": True}) if variant == "llara" else prompt


def stage_one_samples(subset: str, data: PreparedData, config: RunConfig) -> list[Sample]:
    """The training samples (targets) of a stage-one subset, capped at ``train.max_train_samples`` (seeded); ``ft``
    also gets B-Tuning's ``selection.per_behavior`` x behaviors, the targets BehaviorLM adds after A-Tuning.
    ``llara`` trains on exactly ``ft``'s samples: the two differ only in the hybrid tokens."""
    subset = "ft" if subset == "llara" else subset
    samples = data.split("train")
    stats = data.stats
    if subset in ("anchor", "anchor-noaux"):
        samples = [s for s in samples if s.label in stats.anchors]
    elif subset == "tail-first":
        samples = [s for s in samples if stats.by_name[s.label].group != "head"]
    elif subset != "ft":
        raise ValueError(f"unknown stage-one subset {subset!r}")
    limit = config.train.max_train_samples
    if subset == "ft" and limit is not None:
        # A fair comparison: plain fine-tuning learns from as many targets as A-Tuning and B-Tuning together.
        limit += config.selection.per_behavior * len(stats.behaviors)
    return cap(samples, limit, config.train.seed, config.prompt, data.split("train"))


def cap(samples: Sequence[Sample], limit: int | None, seed: int, prompt: PromptConfig | None = None,
        context: Sequence[Sample] = ()) -> list[Sample]:
    """At most ``limit`` samples, seeded. Packed: whole segments drawn at random (then the first targets of the
    last one), so the kept targets stay stretches of consecutive events, cheap to train on together."""
    samples = list(samples)
    if limit is None or len(samples) <= limit:
        return samples
    if prompt is None or prompt.format == "paper":
        return random.Random(seed).sample(samples, limit)
    by_id = {s.sample_id: s for s in samples}
    segments = segments_of(samples, prompt, context)
    random.Random(seed).shuffle(segments)
    ids = [i for segment in segments for i in segment.sample_ids][:limit]
    return [by_id[i] for i in ids]


def tune_on_samples(config: RunConfig, data: PreparedData, out: Path, samples: Sequence[Sample], *,
                    aux: int = 0, train: TrainConfig | None = None, init_adapter: str | None = None,
                    validate: bool = True, prompt_seed: int | None = None, loaded: tuple | None = None) -> dict:
    """The one way a tuning stage is wired (``behaviorlm run`` and ``behaviorlm tune``): the model, exactly
    ``samples`` as targets in the prompt format, ``aux`` general conversations, the validator, ``lm.tuning.tune``.
    ``loaded``: the (model, tokenizer) to tune instead of a fresh ``config.model`` (llara's hybrid model).
    Returns what the manifest records, the targets read back from the encoded training set."""
    from behaviorlm.data.chat import auxiliary_examples
    from behaviorlm.lm.loading import load_model
    from behaviorlm.lm.tuning import ranking_validator, tune

    train = train or config.train
    prompt_seed = train.seed if prompt_seed is None else prompt_seed
    model, tokenizer = loaded or load_model(config.model.name, config.model.device, config.model.dtype,
                                            trust_remote_code=config.model.trust_remote_code)
    examples = training_examples(samples, data.candidates, config.prompt, data.split("train"), prompt_seed)
    conversations = auxiliary_examples(aux, tokenizer, config.aux, train.seed) if aux else []
    validator = None
    if validate and train.eval_samples:  # keeps the best checkpoint by validation accuracy
        validator = ranking_validator(tokenizer, data.split("valid"), data.candidates, n=train.eval_samples,
                                      prompt_seed=prompt_seed, batch_size=config.eval.batch_size, seed=train.seed,
                                      prompt=config.prompt)
    log.info("tuning on %d behavior samples (%d %s chats) + %d conversations", len(samples), len(examples),
             config.prompt.format, len(conversations))
    result = tune(model, tokenizer, examples + conversations, out, config.lora, train, init_adapter=init_adapter,
                  validate=validator, model_cfg=config.model)
    targets = result.answers - sum(sum(m["role"] == "assistant" for m in c) for c in conversations)
    if targets < len(samples):
        log.warning("%d of %d targets were cut by train.max_length %d", len(samples) - targets, len(samples),
                    train.max_length)
    return {
        "adapter": str(result.adapter_dir), "behavior_samples": len(samples), "targets": targets,
        "chats": len(examples), "aux_conversations": aux, "prompt_format": config.prompt.format,
        "steps": result.steps, "tokens": result.tokens, "answers_trained": result.answers_trained,
        "train_seconds": round(result.seconds, 1), "best_metric": result.best_metric,
    }


def aux_count(subset: str, n_samples: int, config: RunConfig) -> int:
    """epsilon x the anchor sample count for A-Tuning; no auxiliary task anywhere else."""
    return round(config.aux.ratio * n_samples) if subset == "anchor" else 0


def selection_config(selection: str, config: RunConfig) -> SelectionConfig:
    return config.selection.model_copy(update=SELECTIONS[selection])


def relative(path: Path, root: Path) -> str:
    return str(Path(path).resolve().relative_to(root.resolve()))
