"""LoRA instruction tuning with the loss on the assistant's answer tokens only (PEFT on the Hugging Face Trainer).

Built on ``transformers.Trainer``, so ``accelerate launch`` or ``torchrun`` runs the same code on several GPUs::

    torchrun --nproc_per_node 4 -m behaviorlm.cli tune --data DIR --out RUN

Paper defaults (Appendix D): AdamW, linear warm-up from 1e-6 over 10% of the steps, cosine decay from 1e-4 back
to 1e-6 (``paper_lr_factor``). Batches are grouped by length so padding stays small;
the language-model head runs only at the positions whose next token is a label (the answer), which on a CPU
saves most of the cost of a behavior sample (hundreds of prompt tokens, a handful of answer tokens).

A stage writes into ``out_dir``: ``checkpoints/`` (periodic, for resuming after an interruption: rerun the same
call), ``best/`` while training (the adapter with the best validation accuracy), and at the end ``adapter/`` (PEFT
safetensors: the best checkpoint when a validator is given, else the last) and ``tune.json`` (``TuneResult``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from behaviorlm import distributed
from behaviorlm.config import LoraConfig, ModelConfig, PromptConfig, TrainConfig
from behaviorlm.data.types import Sample, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.files import atomic_path, copy_tree_atomic
from behaviorlm.lm.checkpoints import last_valid_checkpoint
from behaviorlm.lm.formats import TrainingExample, rank_samples, training_examples
from behaviorlm.lm.loading import attach_adapter, load_model, peft_quietly
from behaviorlm.lm.ranking import CandidateRanker, ChatFormat

log = logging.getLogger(__name__)

Validator = Callable[[Any, Any], float]
"""validate(model, tokenizer) -> accuracy on a fixed validation set (higher is better)."""


@dataclass
class TuneResult:
    adapter_dir: Path
    best_metric: float | None
    steps: int
    seconds: float
    tokens: int
    history: list[dict] = field(default_factory=list)
    validation_seconds: float = 0.0
    """Part of ``seconds`` spent validating (``tokens_per_second`` leaves it out)."""
    answers: int = 0
    """Assistant answers in the encoded examples (after truncation): what one epoch trains on."""
    answers_trained: int = 0
    """Assistant answers the trainer's loss saw, all epochs together (read back from the trainer)."""
    model: Any = field(default=None, repr=False, compare=False)
    """The tuned PeftModel holding the saved adapter's weights (None when the stage was already complete)."""

    def to_json(self) -> dict:
        training = self.seconds - self.validation_seconds
        return {"adapter_dir": str(self.adapter_dir), "best_metric": self.best_metric, "steps": self.steps,
                "seconds": self.seconds, "validation_seconds": self.validation_seconds, "tokens": self.tokens,
                "tokens_per_second": self.tokens / training if training > 0 else None, "answers": self.answers,
                "answers_trained": self.answers_trained, "history": self.history}


def behavior_examples(samples: Sequence[Sample], candidates: Sequence[str], prompt_seed: int = 0,
                      prompt: PromptConfig | None = None, context: Sequence[Sample] = ()) -> list[TrainingExample]:
    """Behavior samples as chats in the prompt format (default: the paper's, one chat per sample)."""
    return training_examples(samples, candidates, prompt or PromptConfig(), context, prompt_seed)


def ranking_validator(tokenizer, samples: Sequence[Sample], candidates: Sequence[str], n: int = 64,
                      prompt_seed: int = 0, batch_size: int = 8, seed: int = 0, prompt: PromptConfig | None = None
                      ) -> Validator:
    """Accuracy (top-1 of the candidate ranker) on a fixed random subset of ``n`` samples, in the prompt format
    (packed: the other ``samples`` supply the events between the chosen ones)."""
    prompt = prompt or PromptConfig()
    chosen = list(samples)
    if len(chosen) > n:
        chosen = random.Random(seed).sample(chosen, n)
    labels = [s.label for s in chosen]

    def validate(model, tokenizer=tokenizer) -> float:
        ranker = CandidateRanker(model, tokenizer, batch_size=batch_size, progress=False)
        ranked = rank_samples(ranker, chosen, candidates, prompt, prompt_seed, context=samples, k=1)
        return sum(r[0][0] == y for r, y in zip(ranked, labels)) / max(1, len(labels))

    return validate


def encode_examples(tokenizer, examples: Sequence[TrainingExample], max_length: int) -> list[dict]:
    """Token ids with labels on the answer tokens only (everything else -100).

    Longer than ``max_length``: the oldest tokens are cut, keeping the answer; examples left without an answer
    token are dropped.
    """
    fmt = ChatFormat(tokenizer)
    out, cut, dropped = [], 0, 0
    for messages in examples:
        ids, is_answer = fmt.encode(messages)
        if len(ids) > max_length:
            ids, is_answer, cut = ids[-max_length:], is_answer[-max_length:], cut + 1
        if not any(is_answer[1:]):
            dropped += 1
            continue
        out.append({"input_ids": ids, "labels": [t if a else -100 for t, a in zip(ids, is_answer)]})
    if cut or dropped:
        log.warning("%d examples longer than %d tokens were cut at the start; %d without an answer were dropped",
                    cut, max_length, dropped)
    return out


class AnswerCollator:
    """Right-pads a batch; padding gets label -100 and attention 0."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SharedPrefixCollator(AnswerCollator):
    """A batch as one row: the opening its examples share (system turn, instruction, candidate set), once, then each
    example's rest. A 4-D mask lets every example's tokens see the opening and their own earlier tokens only, and
    position ids continue from the opening, so each example's loss is the one it has alone, while the opening, most
    of a one-target chat, is encoded once a batch instead of once an example (``tests/lm/test_shared_prefix.py``).

    ``additive``: the mask as 0 / -inf of that dtype (eager attention) instead of booleans (SDPA).

    One row of W tokens costs W² attention pairs where the padded batch costs n x width²: the row wins only when the
    opening is long enough. ``pair_cost`` (``attention_pair_cost``) weighs a pair against a token's pass through the
    layers' weights; a batch is shared only where that estimate is lower than the padded batch's. Measured on the
    2-core CPU: paper-format chats of one user (different instruction formats, a short common opening) trained 35 %
    slower as one row; B-Tuning's one-target packed chats (a third of their tokens shared) 6 % faster.
    ``pair_cost`` 0 shares every batch with a common opening."""

    def __init__(self, pad_id: int, additive: torch.dtype | None = None, pair_cost: float = 0.0):
        super().__init__(pad_id)
        self.additive = additive
        self.pair_cost = pair_cost

    def worth_sharing(self, features: list[dict], shared: int) -> bool:
        """One row of W tokens (W + cost x W² pairs) against n padded rows of the longest (n x width x (1 + cost x
        width)), both in units of a token's pass through the weights."""
        lengths = [len(f["input_ids"]) for f in features]
        row = sum(lengths) - (len(lengths) - 1) * shared
        width = max(lengths)
        return row * (1 + self.pair_cost * row) < len(lengths) * width * (1 + self.pair_cost * width)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        shared = shared_opening(features)
        if len(features) < 2 or shared == 0 or not self.worth_sharing(features, shared):
            return super().__call__(features)
        rests = [f["input_ids"][shared:] for f in features]
        width = shared + sum(map(len, rests))
        ids = torch.tensor(features[0]["input_ids"][:shared] + [t for rest in rests for t in rest])
        labels = torch.tensor(features[0]["labels"][:shared] + [t for f in features for t in f["labels"][shared:]])
        positions = torch.cat([torch.arange(shared)] + [torch.arange(shared, shared + len(r)) for r in rests])
        owner = torch.cat([torch.full((shared,), -1)] + [torch.full((len(r),), i) for i, r in enumerate(rests)])
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = causal & ((owner[None, :] == -1) | (owner[None, :] == owner[:, None]))
        mask = allowed[None, None]
        if self.additive is not None:
            mask = torch.zeros(mask.shape, dtype=self.additive).masked_fill(~mask, torch.finfo(self.additive).min)
        return {"input_ids": ids[None], "attention_mask": mask, "position_ids": positions[None], "labels": labels[None],
                "example_tokens": torch.tensor(sum(len(f["input_ids"]) for f in features))}


def shared_opening(features: list[dict]) -> int:
    """Tokens every feature starts with, stopping before any label and before the token that predicts one (that
    position would have to predict two examples' answers at once)."""
    first, *others = [f["input_ids"] for f in features]
    shared = min(map(len, [first, *others])) - 1
    for ids in others:
        shared = next((i for i, (a, b) in enumerate(zip(first[:shared], ids)) if a != b), shared)
    for f in features:
        labelled = next((i for i, label in enumerate(f["labels"]) if label != -100), len(f["labels"]))
        shared = min(shared, labelled - 1)
    return max(0, shared)


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose logits predict a label, those labels): position t predicts token t + 1."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep, labels.roll(-1, dims=1)[keep]


def count_answers(labels: torch.Tensor) -> int:
    """Answers (runs of labelled tokens) in a batch of labels."""
    labelled = labels != -100
    return int((labelled[:, 1:] & ~labelled[:, :-1]).sum() + labelled[:, 0].sum())


class EpochOrder(LengthGroupedSampler):
    """Trainer's length-grouped order, drawn from (seed, epoch) alone. Trainer draws it from the global torch RNG,
    which a run resumed in a later epoch reaches in another state: its data order, and so its adapter, would differ
    from an uninterrupted run's."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        digest = hashlib.sha256(f"{self.seed}:{epoch}".encode()).hexdigest()
        self.generator = torch.Generator().manual_seed(int(digest[:15], 16))


class AnswerOnlyTrainer(Trainer):
    """Trainer whose loss runs the language-model head only at positions that predict a label."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_seen = 0
        self.answers_seen = 0

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            # Grouped by the global batch (every process's share of a step): N processes of batch b then train on
            # the same samples each step as one process of batch N x b.
            return EpochOrder(sampler.batch_size * self.args.world_size, sampler.lengths, self.args.seed)
        return sampler

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            warmup = self.args.get_warmup_steps(num_training_steps)
            floor = (self.args.lr_scheduler_kwargs or {}).get("min_lr", 0.0) / self.args.learning_rate
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: paper_lr_factor(step, warmup, num_training_steps, floor))
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        # The examples' own tokens (a shared opening counted once per example), as a padded batch's mask counts them.
        shared = inputs.pop("example_tokens", None)
        keep, targets = label_positions(labels)
        outputs = model(**inputs, logits_to_keep=keep)
        total = F.cross_entropy(outputs.logits.float(), targets, reduction="sum")
        self.tokens_seen += int(inputs["attention_mask"].sum()) if shared is None else int(shared)
        self.answers_seen += count_answers(labels)
        if num_items_in_batch is not None:  # token count over the whole accumulated batch (and all processes)
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients again
        else:
            loss = total / max(1, targets.numel()) / self.current_gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss


def paper_lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Learning rate / peak at ``step``: linear warm-up from ``floor`` to 1, then cosine decay back to ``floor``
    (Hugging Face's own cosine schedules warm up from 0)."""
    if step < warmup:
        return floor + (1.0 - floor) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_arguments(train: TrainConfig) -> dict:
    """The paper's optimizer and schedule (Appendix D) as TrainingArguments: AdamW, cosine to a minimum lr, warm-up."""
    return dict(
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": train.min_learning_rate},
        warmup_steps=train.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=train.weight_decay,
        optim="adamw_torch",
        seed=train.seed,
    )


def _atomic_save_adapter(model, target: Path, extra: dict | None = None) -> None:
    with atomic_path(target) as tmp:
        model.save_pretrained(str(tmp))
        if extra is not None:
            write_json_atomic(extra, tmp / "validation.json")


class ValidationCallback(TrainerCallback):
    """Runs ``validate`` every ``every`` steps (0 = each epoch) and at the end; keeps the best adapter in ``best``."""

    def __init__(self, validate: Validator, model, tokenizer, best_dir: Path, every: int, at_start: bool):
        self.validate, self.model, self.tokenizer, self.best_dir = validate, model, tokenizer, best_dir
        self.every, self.at_start = every, at_start
        self.history: list[dict] = []
        self.last_step = -1
        self.seconds = 0.0

    def _best(self) -> float | None:
        meta = self.best_dir / "validation.json"
        return json.loads(meta.read_text())["accuracy"] if meta.is_file() else None

    def _run(self, state) -> None:
        if not state.is_world_process_zero or state.global_step == self.last_step:
            return
        self.last_step = state.global_step
        start = time.perf_counter()
        accuracy = float(self.validate(self.model, self.tokenizer))
        seconds = time.perf_counter() - start
        self.seconds += seconds
        entry = {"step": state.global_step, "epoch": state.epoch, "accuracy": accuracy, "seconds": round(seconds, 2)}
        best = self._best()
        if best is None or accuracy >= best:  # a tie goes to the later, longer-trained weights
            _atomic_save_adapter(self.model, self.best_dir, entry)
            entry["best"] = True
        state.best_metric = max(accuracy, best) if best is not None else accuracy
        self.history.append(entry)
        log.info("validation at step %d: accuracy %.4f%s", state.global_step, accuracy,
                 " (best)" if entry.get("best") else "")

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_start and state.global_step == 0:
            self._run(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            self._run(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.every == 0:
            self._run(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._run(state)


class HistoryCallback(TrainerCallback):
    def __init__(self):
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.history.append({"step": state.global_step, **{k: logs[k] for k in ("loss", "learning_rate",
                                                                                   "grad_norm") if k in logs}})


def _fingerprint(model_name: str, examples: Sequence[TrainingExample], lora: LoraConfig, train: TrainConfig,
                 init_adapter: str | None) -> dict:
    digest = hashlib.sha256(json.dumps(list(examples), sort_keys=True).encode()).hexdigest()[:16]
    return {"model": model_name, "examples": len(examples), "examples_sha": digest, "lora": lora.model_dump(),
            "train": train.model_dump(mode="json"), "init_adapter": str(init_adapter) if init_adapter else None}


def peft_lora_config(model, lora: LoraConfig, **extra):
    """The project's LoRA settings as PEFT's config: ``lora.last_n_layers`` counted from the model's top layer."""
    from peft import LoraConfig as PeftLoraConfig

    layers = None
    if lora.last_n_layers:
        total = model.config.get_text_config().num_hidden_layers
        layers = list(range(max(0, total - lora.last_n_layers), total))
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), layers_to_transform=layers,
                          task_type="CAUSAL_LM", **extra)


def _lora_model(model, lora: LoraConfig, init_adapter: str | Path | None, seed: int):
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        if init_adapter is not None:
            raise ValueError("init_adapter given for a model that already carries an adapter")
        return model
    if init_adapter is not None:
        return attach_adapter(model, init_adapter, trainable=True)
    config = peft_lora_config(model, lora)
    set_seed(seed)  # the LoRA matrices' initialisation, so two runs with one seed start from the same adapter
    with peft_quietly():
        return get_peft_model(model, config)


def _read_json(path: Path) -> dict | None:
    """A JSON file's content; None when it is missing or unreadable (not written whole)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _completed(out_dir: Path, spec: dict) -> TuneResult | None:
    """The result of a finished stage with this spec; refuses a folder that holds another stage."""
    spec_file, done_file = out_dir / "tune_spec.json", out_dir / "tune.json"
    saved_spec = _read_json(spec_file)
    if saved_spec is not None and saved_spec != json.loads(json.dumps(spec)):
        raise InputError("holds a tuning run with other data or settings; choose a new --out folder or delete it",
                         file=str(out_dir))
    raw = _read_json(done_file)
    if raw is not None and (out_dir / "adapter" / "adapter_config.json").is_file():
        log.info("%s: stage already complete", out_dir)
        return TuneResult(out_dir / "adapter", raw["best_metric"], raw["steps"], raw["seconds"], raw["tokens"],
                          raw["history"], raw.get("validation_seconds", 0.0), raw.get("answers", 0),
                          raw.get("answers_trained", 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        write_json_atomic(spec, spec_file)
    return None


def _training_arguments(out_dir: Path, train: TrainConfig, model, progress: bool) -> TrainingArguments:
    on_gpu = next(model.parameters()).device.type == "cuda"
    bf16 = on_gpu and torch.cuda.is_bf16_supported() if train.bf16 == "auto" else bool(train.bf16)
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        **schedule_arguments(train),
        train_sampling_strategy="group_by_length",
        save_strategy="steps",
        save_steps=max(1, train.save_every),
        save_total_limit=2,
        logging_steps=max(1, min(10, train.save_every)),
        eval_strategy="no",
        report_to="none",
        bf16=bf16,
        torch_compile=train.torch_compile,
        use_cpu=next(model.parameters()).device.type == "cpu",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # several processes: every LoRA weight takes part in every step
        disable_tqdm=not progress,
    )


def _keep_adapter(trainer: AnswerOnlyTrainer, model, out_dir: Path, validation: ValidationCallback | None
                  ) -> float | None:
    """Write the stage's final adapter to ``out_dir/adapter``: the best validated one, else the last; its accuracy.
    ``best/`` is copied, not moved: until ``tune.json`` is written a rerun resumes, and needs it to know the best."""
    adapter_dir = out_dir / "adapter"
    if validation is not None and (out_dir / "best").is_dir():
        _load_adapter_weights(model, out_dir / "best")
        best_metric = json.loads((out_dir / "best" / "validation.json").read_text())["accuracy"]
        copy_tree_atomic(out_dir / "best", adapter_dir)
        return best_metric
    _atomic_save_adapter(model, adapter_dir)
    return None


def tune(
    model_name_or_model,
    tokenizer,
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    lora: LoraConfig | None = None,
    train: TrainConfig | None = None,
    init_adapter: str | Path | None = None,
    validate: Validator | None = None,
    *,
    model_cfg: ModelConfig | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> TuneResult:
    """One LoRA stage on exactly ``examples``. Rerunning the same call after an interruption resumes from the last
    checkpoint.

    ``model_name_or_model``: a name for ``load_model`` (a fresh copy is loaded) or a loaded model, which is changed
    in place (LoRA layers are injected) — pass a name when the base model must stay untouched. ``init_adapter``
    continues training an existing adapter (its LoRA settings win over ``lora``). ``validate(model, tokenizer)``
    returns the validation accuracy that drives best-checkpoint selection (see ``ranking_validator``).
    ``callbacks``: extra ``TrainerCallback``s (progress reporting, early stop...).
    """
    lora, train, model_cfg = lora or LoraConfig(), train or TrainConfig(), model_cfg or ModelConfig()
    out_dir = Path(out_dir)
    examples = list(examples)
    if not examples:
        raise InputError("no training examples (is the chosen subset empty?)", file=str(out_dir))
    name = model_name_or_model if isinstance(model_name_or_model, str) else getattr(
        getattr(model_name_or_model, "config", None), "name_or_path", type(model_name_or_model).__name__)
    done = _completed(out_dir, _fingerprint(str(name), examples, lora, train, init_adapter))
    if done is not None:
        return done

    if isinstance(model_name_or_model, str):
        model, loaded_tokenizer = load_model(model_name_or_model, model_cfg.device, model_cfg.dtype,
                                             trust_remote_code=model_cfg.trust_remote_code)
        tokenizer = tokenizer or loaded_tokenizer
    else:
        model = model_name_or_model
    if tokenizer is None:
        raise ValueError("a tokenizer is needed when a loaded model is passed")
    model = _lora_model(model, lora, init_adapter, train.seed)
    model.train()

    dataset = encode_examples(tokenizer, examples, train.max_length)
    if not dataset:
        raise InputError("no example has an answer token left after truncation; raise train.max_length",
                         file=str(out_dir))
    history = HistoryCallback()
    callbacks = [history, *callbacks]
    validation = None
    if validate is not None:
        validation = ValidationCallback(validate, model, tokenizer, out_dir / "best", train.eval_every,
                                        train.eval_at_start)
        callbacks.append(validation)
    trainer = AnswerOnlyTrainer(model=model, args=_training_arguments(out_dir, train, model, progress),
                                train_dataset=dataset, data_collator=_collator(model, tokenizer),
                                callbacks=callbacks)
    resume = last_valid_checkpoint(out_dir / "checkpoints")
    if resume:
        log.info("resuming from %s", resume)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start

    answers = sum(count_answers(torch.tensor([d["labels"]])) for d in dataset)
    tokens, answers_seen = _summed(trainer, trainer.tokens_seen, trainer.answers_seen)
    result = TuneResult(out_dir / "adapter", None, trainer.state.global_step, seconds, tokens,
                        history.history + (validation.history if validation else []),
                        validation.seconds if validation else 0.0, answers, answers_seen, model)
    if trainer.is_world_process_zero():
        result.best_metric = _keep_adapter(trainer, model, out_dir, validation)
        write_json_atomic(result.to_json(), out_dir / "tune.json")
        shutil.rmtree(out_dir / "best", ignore_errors=True)
    trainer.accelerator.wait_for_everyone()  # the other processes return once the adapter is written
    model.eval()
    return result


def _collator(model, tokenizer) -> AnswerCollator:
    """Shared openings where the attention takes a 4-D mask (SDPA, eager; not flash attention) and they pay,
    else padding."""
    pad_id = tokenizer.pad_token_id or 0
    implementation = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    if "flash" in implementation:
        return AnswerCollator(pad_id)
    additive = next(model.parameters()).dtype if implementation == "eager" else None
    return SharedPrefixCollator(pad_id, additive, attention_pair_cost(model.config))


def attention_pair_cost(config) -> float:
    """Multiply-adds of one attention (query, key) pair over those of one token through a layer's projections and
    gated MLP (Llama-family shapes); 0 where the configuration does not say (every common opening is then shared)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        hidden, heads, ffn = text.hidden_size, text.num_attention_heads, text.intermediate_size
    except AttributeError:
        return 0.0
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    projections = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    return 2 * heads * head_dim / (projections + 3 * hidden * ffn)


def _summed(trainer: Trainer, *counts: int) -> list[int]:
    """Counts over all processes: each counts the batches it trained on."""
    if trainer.accelerator.num_processes == 1:
        return list(counts)
    total = trainer.accelerator.reduce(torch.tensor(counts, device=trainer.accelerator.device), "sum")
    return [int(c) for c in total.tolist()]


def _load_adapter_weights(model, adapter_dir: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    set_peft_model_state_dict(model, weights)


def merge_adapter(base: str, adapter_dir: str | Path, out_dir: str | Path, trust_remote_code: bool = False,
                  device: str = "auto", dtype: str = "auto") -> Path:
    """Fold an adapter into its base model and save a standalone model folder (``lm.export.save_merged``); the merge
    runs where the model is loaded (``device``: a GPU when there is one) in ``dtype`` (auto: bf16 there, fp32 on CPU)."""
    from behaviorlm.lm.export import save_merged

    model, tokenizer = load_model(base, device=device, dtype=dtype, adapter=adapter_dir,
                                  trust_remote_code=trust_remote_code)
    return save_merged(model, tokenizer, out_dir, {"base_model": base, "adapter": str(adapter_dir)})


def steps_per_epoch(n_examples: int, train: TrainConfig, processes: int = 1) -> int:
    """Optimizer steps in one epoch (for sizing ``eval_every`` / ``save_every``)."""
    return max(1, math.ceil(n_examples / (train.batch_size * train.grad_accum * processes)))
