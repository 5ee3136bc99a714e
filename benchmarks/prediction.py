"""Prediction benchmark: ranked-candidate scoring (``CandidateRanker``) against the two naive ways.

(a) **separate forwards**: each (prompt, candidate) pair is its own sequence, prompt tokens + candidate answer
    tokens, run through the model from scratch (no cache) with full-vocabulary logits, right-padded batches of
    ``batch_size`` sequences. It scores exactly the tokens the ranker scores, so the two must pick the same
    top-1 on every sample (checked; the largest score difference is reported too).
(b) **greedy generation** (``CandidateRanker.generate``): decode the answer, map it to a candidate.

Every rate is measured on the same samples as the ranker rate it is compared with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.machine import ModelSize
from benchmarks.workload import Sizes, Workload


@torch.inference_mode()
def separate_forward_scores(model, tokenizer, prompts, candidates: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """(n_prompts, n_candidates) log-probabilities, one full forward per (prompt, candidate)."""
    from behaviorlm.lm.ranking import ChatFormat

    fmt = ChatFormat(tokenizer)
    cand = [fmt.answer_ids(c) for c in candidates]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = [(i, j, fmt.prompt_ids(p), cand[j]) for i, p in enumerate(prompts) for j in range(len(cand))]
    out = np.empty((len(prompts), len(cand)), dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        batch = rows[start: start + batch_size]
        width = max(len(p) + len(c) for _, _, p, c in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for r, (_, _, p, c) in enumerate(batch):
            ids[r, : len(p) + len(c)] = torch.tensor(p + c, device=device)
            mask[r, : len(p) + len(c)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits  # full vocabulary at every position
        for r, (i, j, p, c) in enumerate(batch):
            logp = torch.log_softmax(logits[r, len(p) - 1: len(p) + len(c) - 1].float(), dim=-1)
            out[i, j] = float(logp.gather(1, torch.tensor(c, device=device)[:, None]).sum())
    return out


def scored_work(tokenizer, prompts, candidates: Sequence[str]) -> tuple[int, int]:
    """(tokens, logit positions) exact scoring of one call cannot do without: the prefix all prompts share once,
    each prompt's own tokens once, then the candidates' prefix tree, where every token but a candidate's last is
    fed once however many candidates share it; each fed token (and the prompt's last) needs its logits."""
    from behaviorlm.lm.ranking import ChatFormat, shared_prefix_length

    fmt = ChatFormat(tokenizer)
    fed = {tuple(ids[:k]) for c in candidates for ids in [fmt.answer_ids(c)] for k in range(1, len(ids))}
    encoded = [fmt.prompt_ids(p) for p in prompts]
    shared = shared_prefix_length(encoded)
    prompt_tokens = shared + sum(len(e) - shared for e in encoded)
    return prompt_tokens + len(prompts) * len(fed), len(prompts) * (1 + len(fed))


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def benchmark_prediction(model, tokenizer, workload: Workload, sizes: Sizes, size: ModelSize,
                         prompt_seed: int = 0) -> dict:
    """Seconds, rates, agreement and the ranker's FLOPs (the suite turns them into a fraction of peak)."""
    from behaviorlm.lm.ranking import CandidateRanker

    if min(sizes.predict_samples, sizes.separate_samples, sizes.generate_samples) < 1 or not workload.samples:
        raise ValueError("the prediction benchmark needs at least one sample for each method")
    ranker = CandidateRanker(model, tokenizer, batch_size=sizes.predict_batch_size, progress=False)
    prompts = workload.prompts(prompt_seed)
    ranker.score(prompts[:1], workload.candidates[0])  # warm-up: thread pool, allocator, first-call paths

    cache: dict[tuple, tuple[dict[int, object], float]] = {}

    def per_group(indices: list[int], fn) -> tuple[dict[int, object], float]:
        """Run ``fn(prompts, candidates)`` for each candidate set among ``indices``; results by index, seconds."""
        wanted = set(indices)
        results, seconds = {}, 0.0
        for group, cand in workload.groups():
            chosen = [i for i in group if i in wanted]
            if chosen:
                value, spent = _timed(lambda: fn([prompts[i] for i in chosen], cand))
                seconds += spent
                results.update(zip(chosen, value))
        return results, seconds

    def ranked(indices: list[int]) -> tuple[dict[int, object], float]:
        """Ranker scores and seconds on these samples (each subset timed once)."""
        if tuple(indices) not in cache:
            cache[tuple(indices)] = per_group(indices, ranker.score)
        return cache[tuple(indices)]

    n = len(prompts)
    everything = list(range(n))
    rank_scores, rank_seconds = ranked(everything)
    tokens = positions = 0
    for group, cand in workload.groups():
        t, p = scored_work(tokenizer, [prompts[i] for i in group], cand)
        tokens, positions = tokens + t, positions + p
    flops = size.forward_flops(tokens, positions)
    top1 = {i: workload.candidates[i][int(np.argmax(rank_scores[i]))] for i in everything}
    labels = [s.label for s in workload.samples]

    sep_idx = everything[: sizes.separate_samples]
    _, rank_sep_seconds = ranked(sep_idx)
    sep_scores, sep_seconds = per_group(
        sep_idx, lambda p, c: separate_forward_scores(model, tokenizer, p, c, sizes.predict_batch_size))
    sep_top1 = {i: workload.candidates[i][int(np.argmax(sep_scores[i]))] for i in sep_idx}
    disagree = [workload.samples[i].sample_id for i in sep_idx if sep_top1[i] != top1[i]]
    max_diff = max(float(np.max(np.abs(np.asarray(sep_scores[i]) - np.asarray(rank_scores[i])))) for i in sep_idx)

    gen_idx = everything[: sizes.generate_samples]
    _, rank_gen_seconds = ranked(gen_idx)
    generated, gen_seconds = per_group(gen_idx, ranker.generate)

    threads = {}
    for count in sizes.thread_counts:
        previous = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            _, seconds = per_group(everything, ranker.score)
        finally:
            torch.set_num_threads(previous)
        threads[str(count)] = {"seconds": seconds, "samples_per_s": n / seconds}

    batch_sizes = {}
    for batch in sizes.rank_batch_sizes:
        other = CandidateRanker(model, tokenizer, batch_size=batch, progress=False)
        _, seconds = per_group(everything, other.score)
        batch_sizes[str(batch)] = {"seconds": seconds, "samples_per_s": n / seconds}
    if batch_sizes:
        batch_sizes[str(sizes.predict_batch_size)] = {"seconds": rank_seconds, "samples_per_s": n / rank_seconds}

    int8 = None
    if sizes.int8 and model.device.type == "cpu":  # the ranker on a dynamic-int8 copy: speed and top-1 agreement
        quantized = int8_ranker(model, tokenizer, sizes.predict_batch_size)
        quantized.score(prompts[:1], workload.candidates[0])  # warm-up
        q_scores, q_seconds = per_group(everything, quantized.score)
        q_gen_seconds = q_seconds if gen_idx == everything else per_group(gen_idx, quantized.score)[1]
        q_top1 = {i: workload.candidates[i][int(np.argmax(q_scores[i]))] for i in everything}
        int8 = {"seconds": q_seconds, "samples_per_s": n / q_seconds, "speedup_vs_float": rank_seconds / q_seconds,
                "speedup_vs_generate": gen_seconds / q_gen_seconds,
                "top1_agreement_with_float": sum(q_top1[i] == top1[i] for i in everything),
                "top1_accuracy": _accuracy(q_top1, labels, everything)}

    return {
        "samples": n,
        "candidates": sorted({len(c) for c in workload.candidates}),
        "int8": int8,
        "ranker": {"seconds": rank_seconds, "samples_per_s": n / rank_seconds, "tokens": tokens,
                   "logit_positions": positions, "tokens_per_s": tokens / rank_seconds, "flops": flops,
                   "batch_size": sizes.predict_batch_size, "top1_accuracy": _accuracy(top1, labels, everything)},
        "separate_forwards": {"samples": len(sep_idx), "seconds": sep_seconds,
                              "samples_per_s": len(sep_idx) / sep_seconds,
                              "ranker_seconds_same_samples": rank_sep_seconds,
                              "top1_agreement": len(sep_idx) - len(disagree), "disagreeing_samples": disagree,
                              "max_abs_score_difference": max_diff},
        "generate": {"samples": len(gen_idx), "seconds": gen_seconds, "samples_per_s": len(gen_idx) / gen_seconds,
                     "ranker_seconds_same_samples": rank_gen_seconds,
                     "top1_agreement": sum(generated[i] == top1[i] for i in gen_idx),
                     "unmatched": sum(generated[i] is None for i in gen_idx),
                     "top1_accuracy": _accuracy(generated, labels, gen_idx)},
        "threads": threads,
        "batch_sizes": batch_sizes,
        "rank_speedup_vs_separate_forwards": sep_seconds / rank_sep_seconds,
        "rank_speedup_vs_generate": gen_seconds / rank_gen_seconds,
    }


def int8_ranker(model, tokenizer, batch_size: int):
    """A ranker over a dynamic-int8 copy of ``model`` (``for_inference(int8=True)``); the float model is kept."""
    import copy

    from behaviorlm.lm.loading import for_inference
    from behaviorlm.lm.ranking import CandidateRanker

    return CandidateRanker(for_inference(copy.deepcopy(model), int8=True), tokenizer, batch_size=batch_size,
                           progress=False)


def _accuracy(predicted: dict, labels: list[str], indices: list[int]) -> float:
    return sum(predicted[i] == labels[i] for i in indices) / max(1, len(indices))
