"""Training benchmark: the project's LoRA tuner against the plain reference (``reference.py``).

Both train the same samples with the same LoRA and optimizer settings and batch size for one epoch, each in a
fresh process so that its peak RSS (``getrusage`` maxrss, read right after training) is its own. Throughput is
real (non-pad) tokens per second of ``Trainer.train()``; both sides then score the mean answer-token loss of
the trained model on the training samples, so "equal final loss" is checked on the same measurement.

One trainer alone (what ``bench`` runs in each child process)::

    python -m benchmarks.training --spec SPEC.json --trainer project --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from behaviorlm.config import LoraConfig, TrainConfig
from behaviorlm.lm.tuning import label_positions

TRAINERS = ("project", "reference")
REPO = Path(__file__).resolve().parents[1]


class StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step (``seconds``), to tell one-off first-step costs from the steady rate."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.started)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@torch.inference_mode()
def answer_loss(model, features: list[dict]) -> float:
    """Mean cross-entropy over all answer tokens (token-weighted), one example at a time.

    The same number as the causal-LM loss with these labels; logits are computed at the labelled positions only.
    """
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for f in features:
        ids = torch.tensor([f["input_ids"]], device=device)
        keep, targets = label_positions(torch.tensor([f["labels"]], device=device))
        logits = model(input_ids=ids, logits_to_keep=keep).logits
        total += float(torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets,
                                                         reduction="sum"))
        count += int(keep.sum())
    return total / max(1, count)


def run_trainer(trainer: str, model_name: str, examples: list, lora: LoraConfig, train: TrainConfig,
                workdir: Path) -> dict:
    """Load the model, train it with ``trainer``, measure; the figures of one side of the comparison."""
    from behaviorlm.lm.tuning import encode_examples, tune

    from benchmarks.machine import model_size
    from benchmarks.reference import train_reference
    from benchmarks.workload import load

    model, tokenizer = load(model_name)
    size = model_size(model)
    features = encode_examples(tokenizer, examples, train.max_length)
    shutil.rmtree(workdir, ignore_errors=True)  # tune() would resume a finished stage instead of training
    torch.manual_seed(train.seed)
    if trainer == "reference":
        result = train_reference(model, tokenizer, examples, workdir / "reference", lora, train)
        trained = result.pop("model")
    elif trainer == "project":
        timer = StepTimer()
        out = tune(model, tokenizer, examples, workdir / "project", lora, train, progress=False, callbacks=[timer])
        trained = out.model
        result = {"seconds": out.seconds, "steps": out.steps, "losses": [h["loss"] for h in out.history if "loss" in h],
                  "real_tokens": out.tokens, "step_seconds": timer.seconds}
    else:
        raise ValueError(f"unknown trainer {trainer!r}; expected one of {TRAINERS}")
    rss = peak_rss_bytes()
    epochs = round(train.epochs)  # the benchmark trains whole epochs: every sample the same number of times
    samples = len(features) * epochs
    tokens = sum(len(f["input_ids"]) for f in features) * epochs
    loss_positions = sum(sum(1 for t in f["labels"][1:] if t != -100) for f in features) * epochs
    started = time.perf_counter()
    final = answer_loss(trained, features)
    return {
        "trainer": trainer,
        "samples": samples,
        "tokens": tokens,
        "loss_positions": loss_positions,
        "seconds": result["seconds"],
        "steps": result["steps"],
        "tokens_per_s": tokens / result["seconds"],
        "samples_per_s": samples / result["seconds"],
        "train_flops": size.train_flops(tokens, loss_positions),
        "peak_rss_bytes": rss,
        "final_loss": final,
        "logged_losses": result.get("losses", []),
        "step_seconds": result.get("step_seconds"),
        "real_tokens": result.get("real_tokens"),
        "padded_tokens": result.get("padded_tokens"),
        "loss_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "model_size": size.to_json(),
    }


def benchmark_training(model_name: str, examples: list, lora: LoraConfig, train: TrainConfig, workdir: Path,
                       isolate: bool = True, trainers: tuple[str, ...] = TRAINERS) -> dict:
    """The trainers, each in its own process (``isolate``) or, for tests, in this one (RSS is then shared)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {"model": model_name, "examples": examples, "lora": lora.model_dump(),
            "train": train.model_dump(mode="json")}
    (workdir / "spec.json").write_text(json.dumps(spec))
    results = {}
    for trainer in trainers:
        if isolate:
            results[trainer] = _child(trainer, workdir)
        else:
            results[trainer] = run_trainer(trainer, model_name, examples, lora, train, workdir / trainer)
            results[trainer]["peak_rss_shared"] = True
    return results


def _child(trainer: str, workdir: Path) -> dict:
    out = workdir / f"{trainer}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "benchmarks.training", "--spec", str(workdir / "spec.json"),
               "--trainer", trainer, "--out", str(out), "--workdir", str(workdir / trainer)]
    done = subprocess.run(command, env=env)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the {trainer} trainer failed (exit status {done.returncode}): {' '.join(command)}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train with one trainer and write its figures as JSON.")
    parser.add_argument("--spec", required=True, help="JSON: model, examples (chats), lora and train settings")
    parser.add_argument("--trainer", choices=TRAINERS, required=True, help="which trainer to run")
    parser.add_argument("--out", required=True, help="where to write the figures (JSON)")
    parser.add_argument("--workdir", default=None, help="scratch folder for adapters (default: a temporary one)")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(args.workdir or tmp)
        result = run_trainer(args.trainer, spec["model"], spec["examples"], LoraConfig(**spec["lora"]),
                             TrainConfig(**spec["train"]), workdir)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
