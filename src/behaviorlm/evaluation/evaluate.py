"""Evaluate a language model (base or with an adapter) on both protocols of the paper.

    behaviorlm evaluate --data DIR --out OUT                     # zero-shot base model ("LLM-NT")
    behaviorlm evaluate --data DIR --out OUT --adapter RUN/adapter --limit 200 --per-behavior 5
    behaviorlm evaluate --run RUN --events NEW --out OUT        # a run's models on users it never saw (new_log.py)
    behaviorlm evaluate --data DIR --out OUT --model openai:gpt-4o  # a chat endpoint (baselines/chat_endpoint.py)

next-behavior protocol = the test split (natural distribution; ``eval.limit`` samples, a seeded random subset);
long-tail protocol = the balanced test set (``eval.per_behavior`` samples of every behavior).
Writes ``OUT/metrics.json`` (``model``, ``next_behavior``, ``long_tail``, ``seconds``, ``samples_per_second`` ...;
each protocol with ``ci95``, the 95 % interval of every metric from a bootstrap over users, stratified by behavior
on the balanced set, see ``uncertainty.py``), ``OUT/predictions.parquet`` (sample_id, user_id, split, label, pred,
top: the 5 best candidates with probabilities; the user lets two models' predictions be compared paired) and
``OUT/model.json`` (base model, adapter, prompt seed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from behaviorlm.baselines.chat_endpoint import add_endpoint_options, check_no_endpoint_options, endpoint_model
from behaviorlm.baselines.chat_endpoint import run as run_endpoint
from behaviorlm.config import EvalConfig, PromptConfig
from behaviorlm.data.types import PreparedData, write_json_atomic
from behaviorlm.errors import InputError
from behaviorlm.evaluation.metrics import compute_metrics
from behaviorlm.files import atomic_path
from behaviorlm.evaluation.new_log import IMPORT_OPTIONS, add_import_options
from behaviorlm.evaluation.new_log import score as score_run
from behaviorlm.lm.formats import rank_samples
from behaviorlm.prompts import render_sample

PROTOCOLS = {"next_behavior": "test", "long_tail": "balanced_test"}
TOP_K = 5
PREDICTION_COLUMNS = ["sample_id", "user_id", "split", "label", "pred", "top"]


def write_predictions(rows: list[dict], out_dir: Path) -> None:
    """``out_dir/predictions.parquet``, atomically: one row per scored sample (PREDICTION_COLUMNS)."""
    with atomic_path(out_dir / "predictions.parquet") as tmp:
        pd.DataFrame(rows, columns=PREDICTION_COLUMNS).to_parquet(tmp, index=False)


def evaluate_model(
    model,
    tokenizer,
    data: PreparedData,
    out_dir: str | Path,
    name: str,
    eval_cfg: EvalConfig | None = None,
    prompt_seed: int = 0,
    model_info: dict | None = None,
    progress: bool = True,
    prompt: PromptConfig | None = None,
) -> dict:
    """Rank (or generate) the answers of the test split and the balanced test set; write and return the metrics."""
    from behaviorlm.lm.ranking import CandidateRanker

    eval_cfg, prompt = eval_cfg or EvalConfig(), prompt or PromptConfig()
    if eval_cfg.mode == "generate" and prompt.format != "paper":
        raise InputError("eval.mode generate decodes paper-format prompts only; use rank with prompt.format packed")
    out_dir = Path(out_dir)
    candidates = data.candidates
    groups = data.stats.groups
    ranker = CandidateRanker(model, tokenizer, batch_size=eval_cfg.batch_size, progress=progress)
    metrics: dict = {"model": name}
    rows: list[dict] = []
    total_seconds, total_samples = 0.0, 0
    for protocol, split in PROTOCOLS.items():
        samples = data.evaluation_samples(split, eval_cfg.limit, eval_cfg.per_behavior)
        labels = [s.label for s in samples]
        start = time.perf_counter()
        if eval_cfg.mode == "generate":
            prompts = [render_sample(s, candidates, prompt_seed, with_answer=False,
                                     behavior_tokens=prompt.behavior_tokens) for s in samples]
            predicted = ranker.generate(prompts, candidates)
            tops = [[] if p is None else [{"behavior": p, "probability": None}] for p in predicted]
            ranked = None
        else:
            # Both test sets are the held-out users' samples: their log joins nearby targets into one segment.
            ranking = rank_samples(ranker, samples, candidates, prompt, prompt_seed, context=data.split("test"))
            predicted = [r[0][0] for r in ranking]
            tops = [[{"behavior": b, "probability": p} for b, p in r[:TOP_K]] for r in ranking]
            ranked = [[b for b, _ in r] for r in ranking]
        seconds = time.perf_counter() - start
        # An unmatched generation is a wrong answer; the placeholder is never a behavior name.
        y_pred = [p if p is not None else "<unmatched>" for p in predicted]
        result = compute_metrics(labels, y_pred, groups, ranked=ranked, users=[s.user_id for s in samples],
                                 by_behavior=split == "balanced_test")
        result.update(seconds=seconds, samples_per_second=len(samples) / seconds if seconds else None)
        if eval_cfg.mode == "generate":
            result["unmatched"] = sum(p is None for p in predicted)
        metrics[protocol] = result
        total_seconds += seconds
        total_samples += len(samples)
        rows += [{"sample_id": s.sample_id, "user_id": s.user_id, "split": split, "label": s.label, "pred": p,
                  "top": t} for s, p, t in zip(samples, predicted, tops)]
    metrics.update(seconds=total_seconds, samples_per_second=total_samples / total_seconds if total_seconds else None,
                   mode=eval_cfg.mode, limit=eval_cfg.limit, per_behavior=eval_cfg.per_behavior,
                   candidates=len(candidates), prompt_seed=prompt_seed, prompt_format=prompt.format)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(rows, out_dir)
    info = {"base_model": None, "adapter": None, "prompt_seed": prompt_seed, "prompt": prompt.model_dump(),
            **(model_info or {})}
    write_json_atomic(info, out_dir / "model.json")
    write_json_atomic(metrics, out_dir / "metrics.json")
    return metrics


def metrics_line(m: dict) -> str:
    """One protocol's metrics for the terminal: n per group and each metric with its 95 % interval."""
    ci = m.get("ci95") or {}
    counts = "/".join(str(n) for n in (m.get("n_by_group") or {}).values())
    cells = [f"{k} {m[k]:.4f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")
             for k in ("prec_w", "rec_w", "overall", "head", "medium", "tail", "hit@5") if m.get(k) is not None]
    return f"n={m.get('n', 0)}" + (f" (head/medium/tail {counts})" if counts else "") + "  " + "  ".join(cells)


ALL = "all"
PROMPT_FORMATS = ("paper", "packed")
LOG_FORMATS = ("canonical", "generic", "llmob", "tsinghua")


def size(text: str) -> int | str:
    """A sample count for --limit / --per-behavior, or "all"."""
    if text == ALL:
        return ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or {ALL!r}, got {text!r}") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="prepared dataset folder (from `behaviorlm prepare`; with --run, from "
                        "`behaviorlm prepare --like RUN`)")
    parser.add_argument("--run", help="score this run's models (RUN/<model>/model.json) on a new log: --events NEW "
                        "is prepared like the run (its vocabulary, fold map, groups, candidates; every user a test "
                        "user) into OUT/data; metrics go to OUT/<model>/")
    parser.add_argument("--events", help="with --run: the new event log")
    parser.add_argument("--out", required=True, help="output folder: metrics.json, predictions.parquet, model.json")
    parser.add_argument("--config", help="run config YAML (model and eval sections are used)")
    parser.add_argument("--model", help='base model: "smollm2-135m" (embedded, default), a Hugging Face id or a folder; '
                        "openai:NAME for a model behind an OpenAI-compatible chat endpoint (see its options below); "
                        "with --run: which of the run's models (default: all of them)")
    parser.add_argument("--adapter", help="PEFT adapter folder to evaluate on top of the base model")
    parser.add_argument("--name", help="model name written into metrics.json (default: the --out folder's name)")
    parser.add_argument("--limit", type=size, help="next-behavior protocol: a seeded random subset of N test samples "
                        "(default from config: 500; all: every sample)")
    parser.add_argument("--per-behavior", type=size, help="long-tail protocol: at most N balanced-test samples of "
                        "every behavior, tail included (default from config: 10; all: every sample)")
    parser.add_argument("--format", choices=[*PROMPT_FORMATS, *LOG_FORMATS],
                        help="prompt format: paper (one prompt a sample) or packed (segments of a user's log, each "
                             "event a target; what a run tuned with prompt.format packed expects); default: config. "
                             "With --run the prompt format is the run's, and --format names the new log's format "
                             "(canonical, generic, llmob, tsinghua; default: the run's)")
    parser.add_argument("--mode", choices=["rank", "generate"],
                        help="rank: score every candidate (default); generate: greedy answer mapped to a candidate")
    parser.add_argument("--batch-size", type=int, help="prompts scored together (default from config: 8)")
    parser.add_argument("--prompt-seed", type=int, default=0, help="seed choosing each sample's instruction format")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--int8", action="store_true", help="CPU only: dynamic int8 linear layers, faster; "
                        "predictions may differ slightly (`behaviorlm bench` measures both); also eval.int8")
    parser.add_argument("--trust-remote-code", action="store_true", help="let the model run Python code that comes "
                        "with it; a config's model.trust_remote_code is refused without this flag")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set eval.batch_size=4 (repeatable)")
    add_import_options(parser)
    add_endpoint_options(parser)


def evaluation_config(args: argparse.Namespace, *options: tuple[str, object]):
    """``--config`` with ``--set`` and the given (key, flag value) options over it, ``--limit`` and
    ``--per-behavior`` included ("all" = no limit); both sizes must be at least 1."""
    from behaviorlm.config import load_config

    overrides = list(args.set)
    for key, value in (("eval.limit", args.limit), ("eval.per_behavior", args.per_behavior), *options):
        if value is not None:
            overrides.append(f"{key}={'null' if value == ALL else value}")
    config = load_config(args.config, overrides)
    for flag, value in (("--limit", config.eval.limit), ("--per-behavior", config.eval.per_behavior)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    return config


def run(args: argparse.Namespace) -> int:
    from behaviorlm.config import allowed_remote_code, load_config
    from behaviorlm.errors import check_destination
    from behaviorlm.lm.hybrid import is_hybrid
    from behaviorlm.lm.loading import check_int8, for_inference, load_model

    if endpoint_model(args.model) is not None:
        return run_endpoint(args)
    check_no_endpoint_options(args)
    if args.run:
        return score_run(args)
    for flag, value in (("--events", args.events), ("--dayfirst", args.dayfirst),
                        *((flag, getattr(args, field)) for field, (flag, _) in IMPORT_OPTIONS.items())):
        if value is not None:
            raise InputError(f"{flag} goes with --run (a new log scored with a run's models)")
    if args.format in LOG_FORMATS:
        raise InputError(f"--format {args.format}: a log format goes with --run and --events; the prompt formats "
                         "are paper and packed")
    if not args.data:
        raise InputError("--data DIR (a prepared dataset) or --run RUN --events NEW is needed")
    check_destination(args.out, directory=True)
    config = evaluation_config(args, ("model.name", args.model), ("eval.mode", args.mode),
                               ("eval.batch_size", args.batch_size), ("model.device", args.device),
                               ("prompt.format", args.format))
    data = PreparedData(args.data)
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", file=args.adapter)
    trusted = allowed_remote_code(config.model, args.trust_remote_code, args.config)
    int8 = args.int8 or config.eval.int8
    if int8:
        check_int8(config.model.device)
    model, tokenizer = load_model(config.model.name, config.model.device, config.model.dtype, adapter=args.adapter,
                                  trust_remote_code=trusted)
    model = for_inference(model, int8=int8)
    out = Path(args.out)
    info = {"base_model": config.model.name, "adapter": str(Path(args.adapter).resolve()) if args.adapter else None,
            "prompt_seed": args.prompt_seed, "int8": int8}
    # A llara adapter reads prompts whose history behaviors carry its hybrid tokens.
    prompt = config.prompt.model_copy(update={"behavior_tokens": bool(args.adapter) and is_hybrid(args.adapter)})
    metrics = evaluate_model(model, tokenizer, data, out, args.name or out.resolve().name, config.eval,
                             prompt_seed=args.prompt_seed, model_info=info, prompt=prompt)
    for protocol in PROTOCOLS:
        print(f"{protocol:14s} {metrics_line(metrics[protocol])}")
    print(f"{metrics['samples_per_second']:.2f} samples/s; wrote {out / 'metrics.json'}")
    return 0
