"""A batch of chats that open alike is trained as one row, the opening encoded once: same loss, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from behaviorlm.config import PromptConfig
from behaviorlm.lm.formats import training_examples
from behaviorlm.lm.tuning import AnswerCollator, SharedPrefixCollator, encode_examples, label_positions, shared_opening

from tests.lm.conftest import BEHAVIORS, make_samples


def answer_loss(model, batch: dict) -> torch.Tensor:
    batch = dict(batch)
    keep, targets = label_positions(batch.pop("labels"))
    logits = model(**batch, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def one_target_chats(tokenizer, n: int = 4) -> list[dict]:
    """Single-target packed chats (B-Tuning's shape): the same system turn, instruction and candidates, then
    each its own history, context and answer."""
    samples = make_samples(n, seed=3)
    chats = training_examples(samples, BEHAVIORS, PromptConfig(format="packed"), prompt_seed=0)
    return encode_examples(tokenizer, chats, 4096)


def test_the_opening_stops_before_the_first_answer_and_its_predictor():
    features = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, 4, 5]},
                {"input_ids": [1, 2, 3, 4, 9], "labels": [-100, -100, -100, -100, 9]}]
    assert shared_opening(features) == 2  # token 3 predicts the first example's answer 4: it stays unshared
    features[1]["input_ids"] = [1, 7, 3, 4, 9]
    assert shared_opening(features) == 1


@pytest.mark.parametrize("additive", [False, True])
def test_shared_opening_gives_the_padded_batchs_loss_and_gradients(fresh_tiny, additive):
    from behaviorlm.config import LoraConfig
    from behaviorlm.lm.tuning import _lora_model

    model, tokenizer = fresh_tiny
    if additive:
        model.config._attn_implementation = "eager"
    model = _lora_model(model, LoraConfig(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]), None, seed=0)
    features = one_target_chats(tokenizer)
    shared = shared_opening(features)
    assert shared > 50  # system turn, instruction and candidate set
    padded = AnswerCollator(tokenizer.pad_token_id or 0)(features)
    packed = SharedPrefixCollator(tokenizer.pad_token_id or 0, torch.float32 if additive else None)(features)
    assert packed["input_ids"].shape[1] == sum(len(f["input_ids"]) for f in features) - 3 * shared
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())

    assert int(packed.pop("example_tokens")) == sum(len(f["input_ids"]) for f in features)

    def loss_and_grads(batch):
        model.zero_grad()
        loss = answer_loss(model, batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss_padded, grads_padded = loss_and_grads(padded)
    loss_packed, grads_packed = loss_and_grads(packed)
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for a, b in zip(grads_packed, grads_padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # float sums in another order


def test_a_batch_without_a_common_opening_is_padded_as_before(tiny):
    _, tokenizer = tiny
    features = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    out = SharedPrefixCollator(0)(features)
    assert out["attention_mask"].shape == (2, 3)
    assert "position_ids" not in out


def test_a_batch_is_shared_only_where_one_long_row_costs_less_than_the_padded_batch():
    def batch(opening: int) -> list[dict]:  # four chats of 100 tokens, the first `opening` common to all
        return [{"input_ids": list(range(opening)) + [1000 + 100 * i + t for t in range(100 - opening)],
                 "labels": [-100] * 99 + [7]} for i in range(4)]

    collator = SharedPrefixCollator(0, pair_cost=0.01)
    # 90 shared: a 130-token row (130 + 169) against 4 x 100 padded (400 + 400): one row.
    assert collator(batch(90))["input_ids"].shape == (1, 130)
    # 5 shared: a 385-token row (385 + 1482) costs more than the padded batch (800): padded, as without an opening.
    short = collator(batch(5))
    assert short["input_ids"].shape == (4, 100) and "position_ids" not in short
    # Without an attention cost every common opening is shared, as before.
    assert SharedPrefixCollator(0)(batch(5))["input_ids"].shape == (1, 385)


def test_attention_pair_cost_follows_the_model_shapes():
    from transformers import LlamaConfig

    from behaviorlm.lm.tuning import attention_pair_cost

    smollm2 = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                          head_dim=64)
    # q, o: 576 x 576; k, v: 576 x 192; gated MLP: 3 x 576 x 1536; a pair: 576 for q.k, 576 for the values.
    assert attention_pair_cost(smollm2) == pytest.approx(1152 / 3_538_944)
    assert attention_pair_cost(object()) == 0.0
