"""Candidate ranking: cached-prefix scoring is exact, the chat format marks the answer, generation agrees."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tests.lm.conftest import BEHAVIORS, make_samples

from behaviorlm.lm.ranking import CandidateRanker, ChatFormat, candidate_blocks, match_candidate
from behaviorlm.prompts import Prompt, render_sample

CANDIDATES = ["Work", "Workout", "Go home", "Eat dinner at a restaurant", "Sleep"]


def separate_forward_scores(model, tokenizer, prompts, candidates) -> np.ndarray:
    """The naive reference: one full forward pass per (prompt, candidate)."""
    fmt = ChatFormat(tokenizer)
    out = np.zeros((len(prompts), len(candidates)))
    for i, prompt in enumerate(prompts):
        prefix = fmt.prompt_ids(prompt)
        for j, candidate in enumerate(candidates):
            answer = fmt.answer_ids(candidate)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prefix + answer])).logits[0].float(), dim=-1)
            out[i, j] = sum(float(logp[len(prefix) - 1 + t, tok]) for t, tok in enumerate(answer))
    return out


@pytest.mark.parametrize("batch_size,max_block", [(1, 2048), (3, 12), (8, 1)])
def test_cached_scoring_equals_separate_forwards(tiny, batch_size, max_block):
    model, tokenizer = tiny
    prompts = [Prompt("role and task", "history " * k, None) for k in (1, 7, 3, 12)]
    ranker = CandidateRanker(model, tokenizer, batch_size=batch_size, max_block=max_block, progress=False)
    scores = ranker.score(prompts, CANDIDATES)
    assert scores.shape == (4, 5)
    np.testing.assert_allclose(scores, separate_forward_scores(model, tokenizer, prompts, CANDIDATES), atol=1e-4)


def test_the_prompts_common_prefix_is_encoded_once_and_scores_stay_exact(tiny):
    model, tokenizer = tiny
    prompts = [Prompt("role and task", f"history {'x ' * k}then {'y ' * (5 - k)}", None) for k in (1, 4, 2)]
    ranker = CandidateRanker(model, tokenizer, batch_size=2, progress=False)
    encoded = [ranker.format.prompt_ids(p) for p in prompts]
    shared = ranker._encode_shared_prefix(encoded)
    first_difference = next(t for t in range(len(encoded[0])) if len({e[t] for e in encoded}) > 1)
    assert shared.length == first_difference > 5
    assert ranker._encode_shared_prefix(encoded[:1]) is None  # a lone prompt keeps its whole prompt
    np.testing.assert_allclose(ranker.score(prompts, CANDIDATES),
                               separate_forward_scores(model, tokenizer, prompts, CANDIDATES), atol=1e-4)


def test_shared_answer_prefixes_run_once():
    cand = [[5, 1], [5, 7, 1], [5, 7, 8, 1], [9, 1], [3]]
    [block] = candidate_blocks(cand, max_nodes=100)
    # Nodes = proper prefixes: (5), (5,7), (5,7,8), (9); the end tokens are predicted, never fed.
    assert block.ids.tolist() == [5, 7, 8, 9] and block.offset.tolist() == [0, 1, 2, 0]
    assert block.allowed.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert sorted(zip(block.edge_cand.tolist(), block.edge_token.tolist())) == [
        (0, 1), (1, 1), (1, 7), (2, 1), (2, 7), (2, 8), (3, 1)]
    assert len(candidate_blocks(cand, max_nodes=1)) == 2  # whole first-token subtrees, never split


def test_eager_attention_takes_the_additive_mask():
    from behaviorlm.lm.loading import tiny_model

    model, tokenizer = tiny_model(seed=1)
    model.set_attn_implementation("eager")
    prompts = [Prompt("role and task", "history " * k, None) for k in (2, 5)]
    scores = CandidateRanker(model, tokenizer, batch_size=2, progress=False).score(prompts, CANDIDATES)
    np.testing.assert_allclose(scores, separate_forward_scores(model, tokenizer, prompts, CANDIDATES), atol=1e-4)


def test_rank_returns_sorted_probabilities_that_sum_to_one(tiny):
    model, tokenizer = tiny
    prompts = [render_sample(s, BEHAVIORS, with_answer=False) for s in make_samples(3)]
    ranked = CandidateRanker(model, tokenizer, progress=False).rank(prompts, BEHAVIORS)
    for row in ranked:
        probs = [p for _, p in row]
        assert sorted(b for b, _ in row) == BEHAVIORS
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0)
    top2 = CandidateRanker(model, tokenizer, progress=False).rank(prompts, BEHAVIORS, k=2)
    assert [[b for b, _ in r] for r in top2] == [[b for b, _ in r[:2]] for r in ranked]


def test_answer_tokens_end_with_the_end_of_turn_token(tiny):
    _, tokenizer = tiny
    fmt = ChatFormat(tokenizer)
    ids = fmt.answer_ids("Go home")
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == "Go home"


def test_chat_format_marks_every_assistant_turn_and_nothing_else(tiny):
    _, tokenizer = tiny
    fmt = ChatFormat(tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"},
                {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye"}]
    ids, flags = fmt.encode(messages)
    answer_text = tokenizer.decode([t for t, f in zip(ids, flags) if f])
    eos = tokenizer.eos_token
    assert answer_text == f"hello there{eos}bye{eos}"
    # The prompt of a turn is tokenized exactly as the ranker encodes it.
    prompt = Prompt("sys", "question", None)
    ids, flags = fmt.encode(prompt.messages() + [{"role": "assistant", "content": "Work"}])
    assert ids[: flags.index(True)] == fmt.prompt_ids(prompt)
    assert [t for t, f in zip(ids, flags) if f] == fmt.answer_ids("Work")


def test_plain_format_without_a_chat_template(tiny):
    _, tokenizer = tiny
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    fmt = ChatFormat(plain)
    prompt = Prompt("sys", "question", None)
    assert plain.decode(fmt.prompt_ids(prompt)) == prompt.plain_text()
    assert plain.decode(fmt.answer_ids("Work")) == f" Work{plain.eos_token}"


@pytest.mark.parametrize("text,expected", [
    ("Work", "Work"), (" work. ", "Work"), ("Workout", "Workout"), ('"Go home"', "Go home"),
    ("Go home, then sleep", "Go home"), ("Sleeping", "Sleep"), ("Swim", None), ("", None),
])
def test_match_candidate(text, expected):
    assert match_candidate(text, CANDIDATES) == expected


def test_rank_and_generate_agree_on_a_trained_model(trained):
    result, tokenizer = trained
    prompts = [render_sample(s, BEHAVIORS, with_answer=False) for s in make_samples(12, "v", seed=5)]
    ranker = CandidateRanker(result.model, tokenizer, batch_size=4, progress=False)
    scores = ranker.score(prompts, BEHAVIORS)
    top1 = [BEHAVIORS[j] for j in scores.argmax(axis=1)]
    generated = ranker.generate(prompts, BEHAVIORS)
    assert None not in generated
    # An answer the model gives with probability above 1/2 wins every greedy step (each next token has at least
    # that conditional probability), so greedy decoding must produce it; near ties may legitimately differ.
    confident = [i for i, row in enumerate(scores) if np.exp(row.max()) > 0.5]
    assert len(confident) >= len(prompts) // 2
    assert [generated[i] for i in confident] == [top1[i] for i in confident]
