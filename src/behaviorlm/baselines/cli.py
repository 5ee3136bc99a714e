"""``behaviorlm baseline NAME --data DIR --out OUT``: train and evaluate one baseline recommender."""

from __future__ import annotations

import argparse

from behaviorlm.baselines.run import BASELINES, LANGUAGE, NEURAL
from behaviorlm.config import EvalConfig
from behaviorlm.evaluation.evaluate import ALL, metrics_line, size


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=BASELINES,
                        help="sasrec / bert4rec: transformers trained from scratch; llm-esr / alphafuse: SASRec "
                             "with the base language model's embeddings of the behavior names (dual view / ID "
                             "embeddings in their null space); markov: P(next | last behavior); most-frequent: the "
                             "history's most frequent behavior")
    parser.add_argument("--data", required=True, help="prepared dataset folder (made by `behaviorlm prepare`)")
    parser.add_argument("--out", required=True, help="output folder; OUT/metrics.json and OUT/predictions.parquet are written there")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling, masking and subsampling")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on this seeded fraction of the training samples (sample-efficiency curves)")
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="cap the number of training samples (after --train-fraction)")
    defaults = EvalConfig()
    parser.add_argument("--limit", type=size, default=defaults.limit,
                        help="next-behavior protocol: a seeded random subset of N test samples, the one a language "
                             f"model's evaluation with the same limit sees (default {defaults.limit}; "
                             "all: every sample)")
    parser.add_argument("--per-behavior", type=size, default=defaults.per_behavior,
                        help="long-tail protocol: at most N balanced-test samples of every behavior "
                             f"(default {defaults.per_behavior}; all: every sample)")
    neural = parser.add_argument_group("sasrec / bert4rec / llm-esr / alphafuse options")
    neural.add_argument("--epochs", type=int, default=None, help="maximum training epochs (default 30)")
    neural.add_argument("--patience", type=int, default=None,
                        help="stop after this many epochs without a better validation accuracy (default 3)")
    neural.add_argument("--batch-size", type=int, default=None, help="training batch size (default 128)")
    neural.add_argument("--hidden", type=int, default=None, help="hidden size (default 64)")
    neural.add_argument("--layers", type=int, default=None, help="transformer layers (default 2)")
    neural.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    neural.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1: these models are small, and one thread is fastest on a "
                             "busy machine; results are reproducible for a given thread count)")
    language = parser.add_argument_group("llm-esr / alphafuse options")
    language.add_argument("--model", default=None,
                          help='language model that embeds the behavior names: "smollm2-135m" (embedded, default), '
                               "a Hugging Face id in the local cache or a folder; the embeddings are computed once "
                               "and cached")
    language.add_argument("--device", default=None, help="where the names are embedded: cpu, cuda, ... (default auto)")
    language.add_argument("--trust-remote-code", action="store_true",
                          help="let the language model run Python code that comes with it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from behaviorlm.baselines.run import run_baseline
    from behaviorlm.data.types import PreparedData
    from behaviorlm.errors import InputError

    hparams = {"max_train_samples": args.max_train_samples}
    options = {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size,
               "hidden": args.hidden, "layers": args.layers, "lr": args.lr, "threads": args.threads}
    given = {k: v for k, v in options.items() if v is not None}
    if args.name in NEURAL:
        hparams.update(given, progress=not args.quiet)
    elif given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{flags}: only for {', '.join(NEURAL)}, not {args.name}")
    language = {"language_model": args.model, "device": args.device,
                "trust_remote_code": args.trust_remote_code or None}
    given = {k: v for k, v in language.items() if v is not None}
    if args.name in LANGUAGE:
        hparams.update(given)
    elif given:
        flags = ", ".join({"language_model": "--model"}.get(k, "--" + k.replace("_", "-")) for k in given)
        raise InputError(f"{flags}: only for {', '.join(LANGUAGE)}, not {args.name}")
    data = PreparedData(args.data)
    metrics = run_baseline(args.name, data, args.out, seed=args.seed, train_fraction=args.train_fraction,
                           limit=None if args.limit == ALL else args.limit,
                           per_behavior=None if args.per_behavior == ALL else args.per_behavior, **hparams)
    for protocol in ("next_behavior", "long_tail"):
        if metrics[protocol].get("n"):
            print(f"{args.name} {protocol} {metrics_line(metrics[protocol])}")
    print(f"trained on {metrics['train_samples']} samples in {metrics['seconds']:.1f}s; wrote {args.out}/metrics.json")
    return 0
