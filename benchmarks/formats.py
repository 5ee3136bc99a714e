"""Paper vs packed prompt format on the same samples, in one run.

- **Training**: the same consecutive training samples are the targets of a one-epoch LoRA stage in each format
  (paper: one chat per sample; packed: segments of ``segment_targets`` targets), trained by the project's tuner,
  each format in its own process so its peak RSS is its own. Rate: targets / ``Trainer.train()`` seconds; the
  steady rate leaves the first optimizer step (one-off set-up) out, as a stage of many steps sees it.
- **Evaluation**: the same consecutive test samples ranked in each format (packed: the test split supplies the
  segments' events), each format in its own process. Rate: predictions / seconds of ``rank_samples``.

Fractions of peak divide the FLOPs each format's work needs (``machine.ModelSize``) by its seconds and by the
suite's matmul peak. One format alone (what the suite runs in each child process)::

    python -m benchmarks.formats --data DIR --format packed --samples 48 --segment-targets 48 --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from behaviorlm.config import LoraConfig, PromptConfig, TrainConfig

FORMATS = ("paper", "packed")
REPO = Path(__file__).resolve().parents[1]


def scoring_work(tokenizer, samples, candidates, prompt: PromptConfig, context) -> tuple[int, int]:
    """(tokens fed, logit positions) that exact ranking of ``samples`` in this format cannot do without: each
    sequence up to its last answer start (a prefix common to all once), then every target's candidate tree."""
    from behaviorlm.lm.formats import SCORING_JOIN_GAP, segments_of
    from behaviorlm.lm.ranking import ChatFormat, shared_prefix_length
    from behaviorlm.prompts import render_sample, render_segment

    fmt = ChatFormat(tokenizer)
    nodes = len({tuple(ids[:k]) for c in candidates for ids in [fmt.answer_ids(c)] for k in range(1, len(ids))})
    if prompt.format == "paper":
        sequences = [fmt.prompt_ids(render_sample(s, list(candidates), with_answer=False)) for s in samples]
    else:
        encoded = [fmt.encode_targets(render_segment(seg.events, candidates, seg.targets))
                   for seg in segments_of(samples, prompt, context, SCORING_JOIN_GAP)]
        sequences = [e.ids[: e.starts[-1]] for e in encoded]
    shared = shared_prefix_length(sequences)
    tokens = shared + sum(len(s) - shared for s in sequences)
    return tokens + len(samples) * nodes, len(samples) * (1 + nodes)


def evaluate_format(model_name: str, data_dir: Path, prompt: PromptConfig, n: int) -> dict:
    """Rank the first ``n`` test samples in one format; seconds, rate, work, accuracy, peak RSS."""
    from behaviorlm.data.types import PreparedData
    from behaviorlm.lm.formats import rank_samples
    from behaviorlm.lm.ranking import CandidateRanker

    from benchmarks.machine import model_size
    from benchmarks.training import peak_rss_bytes
    from benchmarks.workload import load

    data = PreparedData(data_dir)
    test = data.split("test")
    samples, candidates = test[:n], data.candidates
    model, tokenizer = load(model_name)
    ranker = CandidateRanker(model, tokenizer, progress=False)
    rank_samples(ranker, samples[:1], candidates, prompt, context=test)  # warm-up: thread pool, first-call paths
    ranker.tree_seconds = 0.0
    started = time.perf_counter()
    ranked = rank_samples(ranker, samples, candidates, prompt, context=test, k=1)
    seconds = time.perf_counter() - started
    tokens, positions = scoring_work(tokenizer, samples, candidates, prompt, context=test)
    return {"format": prompt.format, "predictions": len(samples), "seconds": seconds,
            "predictions_per_s": len(samples) / seconds, "tree_seconds": ranker.tree_seconds, "tokens": tokens,
            "logit_positions": positions,
            "flops": model_size(model).forward_flops(tokens, positions), "peak_rss_bytes": peak_rss_bytes(),
            "top1_accuracy": sum(r[0][0] == s.label for r, s in zip(ranked, samples)) / len(samples),
            "threads": torch.get_num_threads()}


def train_format(model_name: str, data_dir: Path, prompt: PromptConfig, n: int, batch_size: int, workdir: Path,
                 isolate: bool) -> dict:
    """One epoch on the first ``n`` training samples as targets in one format (``benchmarks.training``)."""
    from behaviorlm.data.types import PreparedData
    from behaviorlm.lm.formats import training_examples

    from benchmarks.training import benchmark_training

    data = PreparedData(data_dir)
    samples = data.split("train")[:n]
    examples = training_examples(samples, data.candidates, prompt)
    train = TrainConfig(epochs=1, batch_size=batch_size, save_every=10**6, eval_samples=0, seed=0, max_length=8192)
    result = benchmark_training(model_name, examples, LoraConfig(dropout=0.0), train, workdir, isolate=isolate,
                                trainers=("project",))["project"]
    steps = result["step_seconds"]
    # Without the first step (thread pool, allocator and autograd set-up), as a long stage runs.
    steady = (len(samples) * (len(steps) - 1) / len(steps) / sum(steps[1:])) if len(steps) > 1 else None
    return {**result, "format": prompt.format, "targets": len(samples), "chats": len(examples),
            "targets_per_s": len(samples) / result["seconds"], "steady_targets_per_s": steady}


def benchmark_formats(model_name: str, data_dir: Path, train_samples: int, eval_samples: int,
                      segment_targets: int, paper_batch_size: int, workdir: Path, isolate: bool = True) -> dict:
    """Both formats, training and evaluation, and the packed/paper ratios of their rates."""
    out: dict = {"data": str(data_dir), "segment_targets": segment_targets, "train": {}, "eval": {}}
    for name in FORMATS:
        prompt = PromptConfig(format=name, segment_targets=segment_targets)
        batch = paper_batch_size if name == "paper" else 1
        out["train"][name] = train_format(model_name, data_dir, prompt, train_samples, batch, workdir / name,
                                          isolate)
        out["eval"][name] = (_child(model_name, data_dir, prompt, eval_samples, workdir) if isolate
                             else evaluate_format(model_name, data_dir, prompt, eval_samples))
    out["packed_train_targets_per_s_ratio"] = (out["train"]["packed"]["targets_per_s"]
                                               / out["train"]["paper"]["targets_per_s"])
    out["packed_eval_predictions_per_s_ratio"] = (out["eval"]["packed"]["predictions_per_s"]
                                                  / out["eval"]["paper"]["predictions_per_s"])
    # The candidate trees are the same work in both formats; were the packed sequences free, the ratio would be
    # the paper format's seconds over the packed trees' seconds.
    out["packed_eval_ratio_if_sequences_free"] = (out["eval"]["paper"]["seconds"]
                                                  / max(out["eval"]["packed"]["tree_seconds"], 1e-9))
    steady = [out["train"][name]["steady_targets_per_s"] for name in ("packed", "paper")]
    out["packed_train_steady_targets_per_s_ratio"] = steady[0] / steady[1] if None not in steady else None
    return out


def _child(model_name: str, data_dir: Path, prompt: PromptConfig, n: int, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"eval-{prompt.format}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "benchmarks.formats", "--model", model_name, "--data", str(data_dir),
               "--format", prompt.format, "--samples", str(n), "--segment-targets", str(prompt.segment_targets),
               "--out", str(out)]
    done = subprocess.run(command, env=env)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the {prompt.format} evaluation failed (exit status {done.returncode}): "
                           f"{' '.join(command)}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rank test samples in one prompt format; figures as JSON.")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--samples", type=int, required=True, help="the first N samples of the test split")
    parser.add_argument("--segment-targets", type=int, default=PromptConfig().segment_targets)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    prompt = PromptConfig(format=args.format, segment_targets=args.segment_targets)
    result = evaluate_format(args.model, Path(args.data), prompt, args.samples)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
