"""LLaRA-style hybrid tokens: the embedding hook, prompts, training of the projector with LoRA, save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.lm.conftest import BEHAVIORS, make_samples

from behaviorlm.config import LoraConfig, PromptConfig, TrainConfig
from behaviorlm.errors import InputError
from behaviorlm.lm.formats import rank_samples, training_examples
from behaviorlm.lm.hybrid import MODULE, attach_hybrid, hybrid_lora, write_hybrid_file
from behaviorlm.lm.loading import attach_adapter, tiny_model
from behaviorlm.lm.ranking import CandidateRanker
from behaviorlm.lm.tuning import tune
from behaviorlm.prompts import behavior_token, render_sample, render_segment

LORA = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
HYBRID = PromptConfig(behavior_tokens=True)
PACKED = PromptConfig(format="packed", segment_targets=4, behavior_tokens=True)


def items(dim: int = 8) -> torch.Tensor:
    return torch.randn(len(BEHAVIORS), dim, generator=torch.Generator().manual_seed(1))


def hybrid_tiny():
    model, tokenizer = tiny_model(seed=0)
    return attach_hybrid(model, tokenizer, BEHAVIORS, items()), tokenizer


def test_prompts_carry_hybrid_tokens_in_the_history_only():
    sample = make_samples(1)[0]
    user = render_sample(sample, BEHAVIORS, behavior_tokens=True).user
    for event in sample.history:
        assert f"{event.behavior} {behavior_token(BEHAVIORS.index(event.behavior))})" in user
    assert "<|behavior_" not in render_sample(sample, BEHAVIORS).user
    events = (*sample.history, sample.target)
    chat = render_segment(events, BEHAVIORS, targets=(2, 3), behavior_tokens=True)
    assert chat[1]["content"].count("<|behavior_") == 2  # the two events before the first target
    assert all("<|behavior_" not in m["content"] for m in chat[2:])  # answers and next contexts stay plain


def test_the_hook_replaces_exactly_the_placeholder_rows():
    model, tokenizer = hybrid_tiny()
    text = f"(Monday, 8, home, Sleep {behavior_token(1)}), (Monday, 9, office, Work {behavior_token(2)})"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    placeholders = ids >= model.config.vocab_size
    assert placeholders.sum() == 2
    with torch.no_grad():
        hooked = model.get_input_embeddings()(ids)
        plain = torch.nn.functional.embedding(ids.masked_fill(placeholders, 0), model.get_input_embeddings().weight)
        projected = getattr(model, MODULE)(torch.tensor([1, 2]))
    assert torch.equal(hooked[~placeholders], plain[~placeholders])
    assert torch.equal(hooked[placeholders], projected)
    with torch.no_grad():  # text without placeholders: the layer's own output
        plain_ids = torch.tensor([tokenizer("(Monday, 8, home, Sleep)")["input_ids"]])
        assert torch.equal(model.get_input_embeddings()(plain_ids), model.get_input_embeddings().weight[plain_ids])


def test_attaching_twice_or_after_the_adapter_is_refused():
    model, tokenizer = hybrid_tiny()
    with pytest.raises(ValueError, match="already carries"):
        attach_hybrid(model, tokenizer, BEHAVIORS, items())
    peft_model = hybrid_lora(tiny_model()[0], LORA, seed=0)
    with pytest.raises(ValueError, match="before the adapter"):
        attach_hybrid(peft_model, tokenizer, BEHAVIORS, items())
    with pytest.raises(InputError, match="embed_tokens"):
        hybrid_lora(tiny_model()[0], LORA.model_copy(update={"target_modules": ["embed_tokens"]}), seed=0)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The hybrid tiny model LoRA-tuned for a few steps on paper prompts with hybrid tokens: (TuneResult, tokenizer)."""
    model, tokenizer = hybrid_tiny()
    model = hybrid_lora(model, LORA, seed=0)
    examples = training_examples(make_samples(16), BEHAVIORS, HYBRID)
    assert all("<|behavior_" in chat[1]["content"] for chat in examples)
    result = tune(model, tokenizer, examples, tmp_path_factory.mktemp("llara"), LORA,
                  TrainConfig(batch_size=8, epochs=2, learning_rate=1e-2, save_every=1000, warmup_ratio=0.0),
                  progress=False)
    write_hybrid_file(result.adapter_dir, BEHAVIORS, items().shape[1])
    return result, tokenizer


def test_lora_training_trains_the_projector(tuned):
    result, _ = tuned
    wrapper = getattr(result.model.get_base_model(), MODULE)
    trained, initial = wrapper.modules_to_save["default"], wrapper.original_module
    assert all(p.requires_grad for p in trained.parameters())
    assert not torch.equal(trained.projector[0].weight, initial.projector[0].weight)
    assert not torch.equal(trained.projector[2].weight, initial.projector[2].weight)
    assert torch.equal(trained.items, initial.items), "the SASRec table stays frozen"


@pytest.mark.parametrize("prompt", [HYBRID, PACKED], ids=["paper", "packed"])
def test_a_saved_llara_adapter_scores_as_the_tuned_model(tuned, prompt):
    result, tokenizer = tuned
    fresh, fresh_tokenizer = tiny_model(seed=0)
    loaded = attach_adapter(fresh, result.adapter_dir, tokenizer=fresh_tokenizer)
    samples = make_samples(6, "p", history_len=4, seed=3)
    before = rank_samples(CandidateRanker(result.model, tokenizer, progress=False), samples, BEHAVIORS, prompt)
    after = rank_samples(CandidateRanker(loaded, fresh_tokenizer, progress=False), samples, BEHAVIORS, prompt)
    assert after == before
    # The hybrid tokens matter: the same model without them in its prompts scores differently.
    plain = prompt.model_copy(update={"behavior_tokens": False})
    assert rank_samples(CandidateRanker(loaded, fresh_tokenizer, progress=False), samples, BEHAVIORS, plain) != before


def test_a_llara_adapter_needs_the_tokenizer_and_a_readable_description(tuned, tmp_path):
    result, _ = tuned
    with pytest.raises(ValueError, match="needs the tokenizer"):
        attach_adapter(tiny_model()[0], result.adapter_dir)
    damaged = tmp_path / "adapter"
    damaged.mkdir()
    for item in result.adapter_dir.iterdir():
        (damaged / item.name).write_bytes(item.read_bytes())
    (damaged / "hybrid.json").write_text(json.dumps({"behaviors": BEHAVIORS}))
    model, tokenizer = tiny_model()
    with pytest.raises(InputError, match="hybrid.json.*not a readable llara description"):
        attach_adapter(model, damaged, tokenizer=tokenizer)


def test_the_packed_ranker_shares_its_prefix_cache_with_hybrid_tokens(tuned):
    """Packed segments share the opening (instruction, candidates) through the KV prefix cache; the history with its
    hybrid tokens comes after it, and every target scores as the conversation cut there."""
    result, tokenizer = tuned
    samples = make_samples(4, "q", history_len=3, seed=5)
    conversations = [render_segment((*s.history, s.target), BEHAVIORS, (3,), behavior_tokens=True) for s in samples]
    ranker = CandidateRanker(result.model, tokenizer, progress=False)
    together = np.concatenate(ranker.score_segments(conversations, BEHAVIORS))
    alone = np.concatenate([ranker.score_segments([c], BEHAVIORS)[0] for c in conversations])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_a_merged_llara_model_keeps_its_trained_projector(tuned):
    """``for_inference`` (evaluate, serve) folds LoRA into the weights and PEFT's trained copy of the projector back
    into the model, where the hook finds it."""
    from behaviorlm.lm.loading import for_inference

    result, _ = tuned
    fresh, tokenizer = tiny_model(seed=0)
    loaded = attach_adapter(fresh, result.adapter_dir, tokenizer=tokenizer)
    samples = make_samples(6, "p", history_len=4, seed=3)
    before = CandidateRanker(loaded, tokenizer, progress=False).score(
        [render_sample(s, BEHAVIORS, with_answer=False, behavior_tokens=True) for s in samples], BEHAVIORS)
    merged = for_inference(loaded)
    assert isinstance(getattr(merged, MODULE), type(getattr(result.model.get_base_model(), MODULE).original_module))
    after = CandidateRanker(merged, tokenizer, progress=False).score(
        [render_sample(s, BEHAVIORS, with_answer=False, behavior_tokens=True) for s in samples], BEHAVIORS)
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_export_refuses_a_llara_model(tmp_path, capsys):
    from tests.lm.conftest import write_minimal_run

    from behaviorlm.cli import main

    root = write_minimal_run(tmp_path / "run")
    write_hybrid_file(root / "ft" / "adapter", BEHAVIORS, 8)
    code = main(["export", "--run", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a llara model" in err, err


@pytest.mark.parametrize("prompt_format", ["paper", "packed"])
def test_a_served_llara_run_prompts_with_its_hybrid_tokens(tuned, tiny_dir, tmp_path, prompt_format):
    """``Predictor.from_run`` (predict, serve) reads the adapter as a llara one and renders the history with its
    hybrid tokens, so a served llara model ranks exactly as the ranker on the tuned model's own prompts."""
    from behaviorlm.serving.api import Predictor

    result, tokenizer = tuned
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    stats = {"behaviors": [{"name": b, "count": 10, "share": 0.25, "group": "head", "anchor": True}
                           for b in BEHAVIORS], "samples": {}, "settings": {"history_len": 4}}
    (run / "data" / "stats.json").write_text(json.dumps(stats))
    (run / "config.yaml").write_text(f"prompt:\n  format: {prompt_format}\ndata:\n  history_len: 4\n")
    (run / "llara").mkdir()
    (run / "llara" / "model.json").write_text(json.dumps({"base_model": "tiny", "adapter": None}))
    predictor = Predictor.from_run(run, "llara", device="cpu", base_model=str(tiny_dir), adapter=result.adapter_dir)
    assert predictor.behavior_tokens
    sample = make_samples(1, "s", history_len=4, seed=7)[0]
    history = [{"time": e.time.isoformat(), "place": e.place, "behavior": e.behavior} for e in sample.history]
    served = predictor.predict(history, {"time": sample.target.time.isoformat(), "place": sample.target.place},
                               k=len(BEHAVIORS))
    prompt = predictor.prompt_for(history, {"time": sample.target.time.isoformat(), "place": sample.target.place})
    assert any(behavior_token(i) in prompt.user for i in range(len(BEHAVIORS)))
    expected = CandidateRanker(result.model, tokenizer, progress=False).rank([prompt], BEHAVIORS)[0]
    assert [b for b, _ in expected] == [r["behavior"] for r in served]
    np.testing.assert_allclose([p for _, p in expected], [r["probability"] for r in served], atol=1e-4)
