"""Samples in the configured prompt format, as training chats and as ranked predictions.

``paper``: one chat per sample (``prompts.render_sample``). ``packed``: the samples are grouped into segments of
their users' logs (``data.segments.pack``) and each segment is one chat with many targets
(``prompts.render_segment``). ``context`` samples only supply the events between targets (e.g. the whole split), so
targets a few events apart share a segment instead of each paying for its own instruction and history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from behaviorlm.config import PromptConfig
from behaviorlm.data.segments import JOIN_GAP, Segment, pack
from behaviorlm.data.types import Sample
from behaviorlm.prompts import render_sample, render_segment

TrainingExample = list[dict]
"""A chat: [{"role": "system"|"user"|"assistant", "content": str}, ...]; assistant turns are learned unless they
carry ``"target": False``."""
Ranking = list[tuple[str, float]]


SCORING_JOIN_GAP = 6
"""Scoring encodes the opening every segment shares (instruction, candidates) once per call, so a new segment costs
only its first target's history (~140 tokens at L = 10): join targets across gaps of at most ~6 events (~21 tokens
each), not the 16 that training, which reads every segment's opening, is worth."""


def segments_of(samples: Sequence[Sample], prompt: PromptConfig, context: Iterable[Sample] = (),
                join_gap: int = JOIN_GAP) -> list[Segment]:
    history = max((len(s.history) for s in samples), default=0)
    return pack(samples, history + prompt.segment_targets, context, join_gap)


def training_examples(samples: Sequence[Sample], candidates: Sequence[str], prompt: PromptConfig,
                      context: Iterable[Sample] = (), prompt_seed: int = 0) -> list[TrainingExample]:
    """Chats whose learned assistant turns are exactly ``samples`` (each once)."""
    if prompt.format == "paper":
        return [render_sample(s, list(candidates), prompt_seed, behavior_tokens=prompt.behavior_tokens
                              ).messages(with_answer=True) for s in samples]
    return [render_segment(seg.events, candidates, seg.targets, behavior_tokens=prompt.behavior_tokens)
            for seg in segments_of(samples, prompt, context)]


def rank_samples(ranker, samples: Sequence[Sample], candidates: Sequence[str], prompt: PromptConfig,
                 prompt_seed: int = 0, context: Iterable[Sample] = (), k: int | None = None) -> list[Ranking]:
    """Per sample (in order), the candidates ranked by ``ranker`` (a ``CandidateRanker``) in the prompt format."""
    if prompt.format == "paper":
        prompts = [render_sample(s, list(candidates), prompt_seed, with_answer=False,
                                 behavior_tokens=prompt.behavior_tokens) for s in samples]
        return ranker.rank(prompts, candidates, k)
    segments = segments_of(samples, prompt, context, SCORING_JOIN_GAP)
    chats = [render_segment(seg.events, candidates, seg.targets, behavior_tokens=prompt.behavior_tokens)
             for seg in segments]
    by_id: dict[str, Ranking] = {}
    for segment, rankings in zip(segments, ranker.rank_segments(chats, candidates, k)):
        by_id.update(zip(segment.sample_ids, rankings))
    return [by_id[s.sample_id] for s in samples]
