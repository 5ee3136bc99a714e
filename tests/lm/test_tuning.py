"""LoRA tuning: answer-only loss, logits only where needed, resume, validation, adapters that round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.lm.conftest import BEHAVIORS, make_samples
from safetensors.torch import load_file
from transformers import TrainerCallback

from behaviorlm.config import LoraConfig, TrainConfig
from behaviorlm.errors import InputError
from behaviorlm.lm.loading import attach_adapter, load_model, tiny_model
from behaviorlm.lm.ranking import CandidateRanker
from behaviorlm.lm.tuning import (AnswerCollator, AnswerOnlyTrainer, behavior_examples, encode_examples,
                                  merge_adapter, paper_lr_factor, ranking_validator, tune)
from behaviorlm.prompts import render_sample

LORA = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def examples(n: int = 16):
    return behavior_examples(make_samples(n), BEHAVIORS)


def prompts(n: int = 6):
    return [render_sample(s, BEHAVIORS, with_answer=False) for s in make_samples(n, "p", seed=3)]


def test_labels_cover_only_the_answer(tiny):
    _, tokenizer = tiny
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "what next?"},
            {"role": "assistant", "content": "Eat breakfast"}]
    [item] = encode_examples(tokenizer, [chat], max_length=512)
    labelled = [t for t in item["labels"] if t != -100]
    assert tokenizer.decode(labelled) == f"Eat breakfast{tokenizer.eos_token}"
    first = item["labels"].index(labelled[0])
    assert item["input_ids"][first:first + len(labelled)] == labelled
    assert all(t == -100 for t in item["labels"][:first] + item["labels"][first + len(labelled):])


def test_too_long_examples_keep_their_answer(tiny):
    _, tokenizer = tiny
    [item] = encode_examples(tokenizer, examples(1), max_length=12)
    assert len(item["input_ids"]) == 12
    assert tokenizer.decode([t for t in item["labels"] if t != -100]) == f"Work{tokenizer.eos_token}"


def test_loss_on_labelled_positions_equals_the_full_logits_loss(tiny):
    model, tokenizer = tiny
    batch = AnswerCollator(tokenizer.pad_token_id)(encode_examples(tokenizer, examples(4), 512))
    reference = model(**batch).loss  # transformers' own shifted loss over full-vocabulary logits
    trainer = AnswerOnlyTrainer.__new__(AnswerOnlyTrainer)  # compute_loss needs no Trainer state here
    trainer.tokens_seen, trainer.answers_seen, trainer.current_gradient_accumulation_steps = 0, 0, 1
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(batch))
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    assert trainer.tokens_seen == int(batch["attention_mask"].sum())
    assert trainer.answers_seen == 4


def test_paper_schedule_warms_up_from_the_minimum_and_decays_back_to_it():
    assert paper_lr_factor(0, 2, 10, 0.01) == 0.01
    assert paper_lr_factor(1, 2, 10, 0.01) == pytest.approx(0.505)
    assert paper_lr_factor(2, 2, 10, 0.01) == 1.0
    assert paper_lr_factor(6, 2, 10, 0.01) == pytest.approx(0.505)
    assert paper_lr_factor(10, 2, 10, 0.01) == pytest.approx(0.01)


def test_the_tuner_follows_the_paper_schedule(tmp_path, fresh_tiny):
    model, tokenizer = fresh_tiny
    train = TrainConfig(batch_size=4, max_steps=10, warmup_ratio=0.2, learning_rate=1e-3, min_learning_rate=1e-5,
                        save_every=1)
    result = tune(model, tokenizer, examples(), tmp_path / "run", LORA, train, progress=False)
    logged = {h["step"]: h["learning_rate"] for h in result.history if "learning_rate" in h}
    assert sorted(logged) == list(range(1, 11))
    for step, rate in logged.items():  # the rate optimizer step number `step` (from 1) used
        assert rate == pytest.approx(1e-3 * paper_lr_factor(step - 1, 2, 10, 0.01))


def test_training_lowers_the_loss(trained):
    result, _ = trained
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) >= 2 and losses[-1] < 0.5 * losses[0]
    assert result.steps == 80 and result.tokens > 0 and result.seconds > 0  # 32 samples / 8 a batch x 20 epochs
    assert result.answers == 32 and result.answers_trained == 32 * 20
    saved = json.loads((result.adapter_dir.parent / "tune.json").read_text())
    assert saved["steps"] == 80 and saved["tokens"] == result.tokens and saved["answers_trained"] == 640


def test_adapter_round_trips_through_load_model(trained, tiny_dir):
    result, tokenizer = trained
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    loaded, loaded_tokenizer = load_model(str(tiny_dir), device="cpu", adapter=result.adapter_dir)
    before = CandidateRanker(result.model, tokenizer, progress=False).score(prompts(), BEHAVIORS)
    after = CandidateRanker(loaded, loaded_tokenizer, progress=False).score(prompts(), BEHAVIORS)
    np.testing.assert_allclose(after, before, atol=1e-4)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "lm_head"]], ids=["attention", "tied-head"])
def test_merged_model_scores_like_the_adapter(tiny_dir, tmp_path, targets):
    model, tokenizer = load_model(str(tiny_dir), device="cpu")
    train = TrainConfig(batch_size=4, max_steps=3, learning_rate=5e-2, save_every=100)
    lora = LORA.model_copy(update={"target_modules": targets})
    result = tune(model, tokenizer, examples(), tmp_path / "run", lora, train, progress=False)
    merged_dir = merge_adapter(str(tiny_dir), result.adapter_dir, tmp_path / "merged")
    assert not (merged_dir / "adapter_config.json").exists()
    merged, merged_tokenizer = load_model(str(merged_dir), device="cpu")
    base = CandidateRanker(load_model(str(tiny_dir), device="cpu")[0], tokenizer, progress=False).score(
        prompts(), BEHAVIORS)
    expected = CandidateRanker(result.model, tokenizer, progress=False).score(prompts(), BEHAVIORS)
    got = CandidateRanker(merged, merged_tokenizer, progress=False).score(prompts(), BEHAVIORS)
    assert np.abs(expected - base).max() > 1e-3  # the adapter changed something worth merging
    np.testing.assert_allclose(got, expected, atol=1e-4)


class StopAt(TrainerCallback):
    """Simulates an interruption (Ctrl-C) after a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_the_last_checkpoint(tmp_path, tiny):
    train = TrainConfig(batch_size=4, max_steps=6, save_every=2, learning_rate=1e-3)
    straight = tune(tiny_model()[0], tiny[1], examples(), tmp_path / "straight", LORA, train, progress=False)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        tune(tiny_model()[0], tiny[1], examples(), out, LORA, train, progress=False, callbacks=[StopAt(3)])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "adapter").exists()
    resumed = tune(tiny_model()[0], tiny[1], examples(), out, LORA, train, progress=False)
    assert resumed.steps == 6
    assert min(h["step"] for h in resumed.history) > 2  # steps 1-2 came from the checkpoint, not retrained
    scores = [CandidateRanker(r.model, tiny[1], progress=False).score(prompts(3), BEHAVIORS)
              for r in (straight, resumed)]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-4)

    again = tune(tiny_model()[0], tiny[1], examples(), out, LORA, train, progress=False)
    assert again.model is None and again.steps == 6  # complete: nothing retrained

    with pytest.raises(InputError, match="other data or settings"):
        tune(tiny_model()[0], tiny[1], examples(8), out, LORA, train, progress=False)


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {  # what a kill while Trainer writes a checkpoint folder can leave
    "empty-folder": lambda ckpt: [f.unlink() for f in ckpt.iterdir()],
    "truncated-weights": lambda ckpt: truncate(ckpt / "adapter_model.safetensors"),
    "truncated-optimizer": lambda ckpt: truncate(ckpt / "optimizer.pt"),
    "truncated-trainer-state": lambda ckpt: truncate(ckpt / "trainer_state.json"),
}
RESUMABLE = dict(lora=LORA.model_copy(update={"dropout": 0.1}),  # dropout: the checkpoint's RNG state matters
                 train=TrainConfig(batch_size=4, max_steps=4, save_every=1, learning_rate=1e-3))  # 2 epochs of 2 steps


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory, tiny):
    result = tune(tiny_model()[0], tiny[1], examples(8), tmp_path_factory.mktemp("straight"), **RESUMABLE,
                  progress=False)
    return load_file(result.adapter_dir / "adapter_model.safetensors")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, tiny, straight_weights, caplog, damage):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tune(tiny_model()[0], tiny[1], examples(8), out, **RESUMABLE, progress=False, callbacks=[StopAt(3)])
    DAMAGE[damage](out / "checkpoints" / "checkpoint-2")

    resumed = tune(tiny_model()[0], tiny[1], examples(8), out, **RESUMABLE, progress=False)
    assert "checkpoint-2: damaged" in caplog.text and "resuming from the checkpoint before it" in caplog.text
    assert min(h["step"] for h in resumed.history) == 2  # resumed from checkpoint-1
    weights = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert max(float((weights[k] - straight_weights[k]).abs().max()) for k in weights) == 0.0


def test_validation_keeps_the_best_adapter(tmp_path, fresh_tiny):
    model, tokenizer = fresh_tiny
    calls = []

    def validate(m, tok):  # made-up accuracies: the best is reached at step 4 and tied at step 6
        calls.append(m)
        return [0.1, 0.9, 0.9, 0.3][len(calls) - 1]

    train = TrainConfig(batch_size=4, max_steps=8, eval_every=2, save_every=100, learning_rate=1e-2)
    result = tune(model, tokenizer, examples(), tmp_path / "run", LORA, train, validate=validate, progress=False)
    assert len(calls) == 4 and result.best_metric == 0.9
    assert json.loads((result.adapter_dir / "validation.json").read_text())["step"] == 6  # a tie: the later
    assert [h["step"] for h in result.history if "accuracy" in h] == [2, 4, 6, 8]
    # The returned model holds the best (step 6) weights, which the saved adapter reproduces.
    loaded = attach_adapter(tiny_model()[0], result.adapter_dir)
    np.testing.assert_allclose(CandidateRanker(loaded, tokenizer, progress=False).score(prompts(2), BEHAVIORS),
                               CandidateRanker(result.model, tokenizer, progress=False).score(prompts(2), BEHAVIORS),
                               atol=1e-4)


def test_ranking_validator_measures_accuracy(trained):
    result, tokenizer = trained
    samples = make_samples(8, "v", seed=1)
    validate = ranking_validator(tokenizer, samples, BEHAVIORS, n=8)
    ranked = CandidateRanker(result.model, tokenizer, progress=False).rank(
        [render_sample(s, BEHAVIORS, with_answer=False) for s in samples], BEHAVIORS, k=1)
    expected = np.mean([r[0][0] == s.label for r, s in zip(ranked, samples)])
    assert validate(result.model, tokenizer) == pytest.approx(expected)


def test_init_adapter_continues_training(trained, tmp_path):
    result, tokenizer = trained
    train = TrainConfig(batch_size=8, max_steps=1, learning_rate=1e-6, save_every=100)
    stage_two = tune(tiny_model()[0], tokenizer, examples(8), tmp_path / "b", train=train,
                     init_adapter=result.adapter_dir, progress=False)
    config = json.loads((stage_two.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 16  # the first stage's LoRA settings, not the default
    # A tiny learning rate barely moves it: stage two starts from stage one's weights, not from zero.
    np.testing.assert_allclose(
        CandidateRanker(stage_two.model, tokenizer, progress=False).score(prompts(2), BEHAVIORS),
        CandidateRanker(result.model, tokenizer, progress=False).score(prompts(2), BEHAVIORS), atol=0.05)


def test_last_n_layers_adapts_only_the_last_layers(tmp_path, fresh_tiny):
    model, tokenizer = fresh_tiny
    lora = LoraConfig(r=2, target_modules=["q_proj"], last_n_layers=1)
    tune(model, tokenizer, examples(4), tmp_path / "run", lora, TrainConfig(batch_size=4, max_steps=1),
         progress=False)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == {"1"}


def test_unknown_init_adapter_is_an_input_error(tmp_path, fresh_tiny):
    model, tokenizer = fresh_tiny
    with pytest.raises(InputError, match="adapter_config.json"):
        tune(model, tokenizer, examples(4), tmp_path / "run", LORA, TrainConfig(max_steps=1),
             init_adapter=tmp_path / "nothing", progress=False)


def test_torch_compile_reaches_the_trainer_and_leaves_existing_fingerprints_alone(tmp_path, tiny):
    from behaviorlm.lm.tuning import _training_arguments

    model, _ = tiny
    assert _training_arguments(tmp_path, TrainConfig(torch_compile=True), model, progress=False).torch_compile
    assert not _training_arguments(tmp_path, TrainConfig(), model, progress=False).torch_compile
    assert "torch_compile" not in TrainConfig().model_dump(), "stages tuned before the option must keep their keys"
    assert TrainConfig(torch_compile=True).model_dump()["torch_compile"] is True
