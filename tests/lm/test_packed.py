"""The packed format is exact: one pass over a segment gives every target the loss and the candidate scores of the
conversation cut at that target."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.lm.conftest import BEHAVIORS, PLACE_TO_BEHAVIOR

from behaviorlm.config import PromptConfig
from behaviorlm.data.types import Event, Sample
from behaviorlm.lm.formats import rank_samples, training_examples
from behaviorlm.lm.ranking import CandidateRanker, ChatFormat
from behaviorlm.lm.tuning import AnswerCollator, encode_examples, label_positions
from behaviorlm.prompts import Prompt, event_text, render_sample, render_segment

PLACES = list(PLACE_TO_BEHAVIOR)


def events(n: int, shift: int = 0) -> list[Event]:
    return [Event(datetime(2024, 5, 6, 7) + timedelta(hours=i), PLACES[(i * 3 + shift) % 4],
                  PLACE_TO_BEHAVIOR[PLACES[(i * 3 + shift) % 4]]) for i in range(n)]


def turn_of(conversation: list[dict], targets, event: int) -> int:
    """The message index of an event's assistant turn (events before the first target are written as history)."""
    assistant = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    return assistant[event - min(targets)]


def separate_scores(model, tokenizer, conversation: list[dict], turn: int) -> np.ndarray:
    """Scores of the candidates after the conversation cut before message ``turn`` (an assistant turn)."""
    fmt = ChatFormat(tokenizer)
    prefix = fmt.encode(conversation[:turn], generation_prompt=True)[0]
    out = []
    for candidate in BEHAVIORS:
        answer = fmt.answer_ids(candidate)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prefix + answer])).logits[0].float(), dim=-1)
        out.append(sum(float(logp[len(prefix) - 1 + t, tok]) for t, tok in enumerate(answer)))
    return np.array(out)


@pytest.mark.parametrize("batch_size,max_block", [(1, 2048), (3, 7)])
def test_packed_scores_equal_separate_forwards_of_the_cut_conversations(tiny, batch_size, max_block):
    model, tokenizer = tiny
    segments = [(events(9), (3, 5, 8)), (events(6, shift=1), (3, 4, 5)), (events(4, shift=2), (3,))]
    conversations = [render_segment(e, BEHAVIORS, targets) for e, targets in segments]
    ranker = CandidateRanker(model, tokenizer, batch_size=batch_size, max_block=max_block, progress=False)
    scores = ranker.score_segments(conversations, BEHAVIORS)  # several passes and batches when max_block is small
    for (_, targets), conversation, got in zip(segments, conversations, scores):
        assert got.shape == (len(targets), len(BEHAVIORS))
        for row, event in zip(got, targets):
            turn = turn_of(conversation, targets, event)
            np.testing.assert_allclose(row, separate_scores(model, tokenizer, conversation, turn), atol=1e-4)


def test_a_single_target_segment_scores_as_the_paper_ranker_does(tiny):
    model, tokenizer = tiny
    prompts = [Prompt("role and task", "history " * k, None) for k in (1, 7, 3)]
    ranker = CandidateRanker(model, tokenizer, batch_size=2, progress=False)
    as_segments = ranker.score_segments([p.messages() + [{"role": "assistant", "content": "Work"}] for p in prompts],
                                        BEHAVIORS)
    np.testing.assert_allclose(np.concatenate(as_segments), ranker.score(prompts, BEHAVIORS), atol=1e-5)


def summed_answer_loss(model, tokenizer, conversations: list[list[dict]]) -> float:
    batch = AnswerCollator(tokenizer.pad_token_id)(encode_examples(tokenizer, conversations, 4096))
    keep, targets = label_positions(batch.pop("labels"))
    with torch.no_grad():
        logits = model(**batch, logits_to_keep=keep).logits
    return float(F.cross_entropy(logits.float(), targets, reduction="sum"))


def test_packed_loss_equals_the_sum_of_the_cut_conversations_losses(tiny):
    model, tokenizer = tiny
    targets = (2, 3, 6, 7)
    conversation = render_segment(events(8), BEHAVIORS, targets)
    separate = []
    for event in targets:  # the conversation up to and with this target, the only turn learned
        cut = [dict(m) for m in conversation[: turn_of(conversation, targets, event) + 1]]
        for message in cut[:-1]:
            if message["role"] == "assistant":
                message["target"] = False
        cut[-1].pop("target", None)
        separate.append(cut)
    packed = summed_answer_loss(model, tokenizer, [conversation])
    assert packed == pytest.approx(sum(summed_answer_loss(model, tokenizer, [c]) for c in separate), rel=1e-5)


def test_only_target_turns_are_learned(tiny):
    _, tokenizer = tiny
    log = events(6)
    conversation = render_segment(log, BEHAVIORS, targets=(3, 5))
    [item] = encode_examples(tokenizer, [conversation], 4096)
    learned = tokenizer.decode([t for t in item["labels"] if t != -100])
    eos = tokenizer.eos_token
    assert learned == f"{log[3].behavior}{eos}{log[5].behavior}{eos}"
    assert len(conversation) == 1 + 2 * 3  # system, then events 3, 4 and 5 as turn pairs
    first_turn = conversation[1]["content"]
    assert all(event_text(e) in first_turn for e in log[:3])  # the first target's history, written once
    assert first_turn.count("Sleep,") == 1  # the candidate set is read once, up front


def split_samples(user: str, n: int, history: int = 3, shift: int = 0) -> list[Sample]:
    log = events(n, shift)
    return [Sample(f"{user}:{i}", user, tuple(log[i - history:i]), log[i]) for i in range(history, n)]


def test_both_formats_train_on_exactly_the_samples_and_rank_them_in_order(tiny):
    model, tokenizer = tiny
    samples = split_samples("a", 20) + split_samples("b", 9, shift=1)
    packed = PromptConfig(format="packed", segment_targets=6)
    chats = training_examples(samples, BEHAVIORS, packed)
    answers = sum(1 for c in chats for m in c if m["role"] == "assistant" and m.get("target", True))
    assert answers == len(samples) and len(chats) == 3 + 1  # user a: 17 targets in 6s, user b: 6
    assert len(training_examples(samples, BEHAVIORS, PromptConfig())) == len(samples)

    ranker = CandidateRanker(model, tokenizer, progress=False)
    chosen = samples[::-4]  # out of order, from both users
    ranked = rank_samples(ranker, chosen, BEHAVIORS, packed, context=samples, k=2)
    assert len(ranked) == len(chosen) and all(len(r) == 2 for r in ranked)
    paper = rank_samples(ranker, chosen[:1], BEHAVIORS, PromptConfig(), k=2)
    prompt = render_sample(chosen[0], BEHAVIORS, with_answer=False)
    assert paper == ranker.rank([prompt], BEHAVIORS, k=2)
