"""The plain reference trainer: Hugging Face ``Trainer`` + PEFT LoRA, the way a LLaMA-Factory-style setup runs it.

It learns exactly what the project's tuner learns, from exactly the same tokens (the tuner's ``encode_examples``:
chat template, labels on the answer tokens only, -100 on the prompt), with the same LoRA and optimizer settings,
but in the straightforward way:

- batches in random order, padded to the longest sequence in the batch (no length grouping);
- the model's standard causal-LM loss, i.e. logits over the full vocabulary at every position.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Trainer

from behaviorlm.config import LoraConfig, TrainConfig
from behaviorlm.lm.tuning import AnswerCollator, AnswerOnlyTrainer, schedule_arguments


class PaperScheduleTrainer(Trainer):
    """The stock Trainer with the project's learning-rate schedule, so both sides take the same steps."""

    create_scheduler = AnswerOnlyTrainer.create_scheduler


class PadToLongest(AnswerCollator):
    """The project's right-padding collator, counting the padded and the real tokens it produced."""

    def __init__(self, pad_id: int):
        super().__init__(pad_id)
        self.padded_tokens = 0
        self.real_tokens = 0

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        self.padded_tokens += batch["input_ids"].numel()
        self.real_tokens += int(batch["attention_mask"].sum())
        return batch


def train_reference(model, tokenizer, examples: Sequence[list[dict[str, str]]], out_dir: Path, lora: LoraConfig,
                    train: TrainConfig) -> dict:
    """LoRA-train ``model`` with HF Trainer; returns seconds, steps, losses and token counts."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import TrainingArguments

    from benchmarks.training import StepTimer

    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, peft_config)
    model.train()
    from behaviorlm.lm.tuning import encode_examples

    features = encode_examples(tokenizer, examples, train.max_length)
    collator = PadToLongest(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    timer = StepTimer()
    args = TrainingArguments(
        output_dir=str(out_dir),
        **schedule_arguments(train),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        train_sampling_strategy="random",
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        disable_tqdm=True,
    )
    trainer = PaperScheduleTrainer(model=model, args=args, train_dataset=features, data_collator=collator,
                                   callbacks=[timer])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    return {"model": model, "seconds": seconds, "steps": trainer.state.global_step, "step_seconds": timer.seconds,
            "losses": losses, "padded_tokens": collator.padded_tokens, "real_tokens": collator.real_tokens}
