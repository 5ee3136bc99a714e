"""``behaviorlm evaluate --run RUN --events NEW``: a run's models scored on a log of users it never saw.

    behaviorlm evaluate --run runs/demo --events june.csv --out runs/demo-june
    behaviorlm evaluate --run runs/demo --data data/june --out runs/demo-june --model behaviorlm

The new log is prepared like the run (``data.like``: the run's importer settings, vocabulary, fold map,
groups and candidates; every user a test user) into ``OUT/data``, or taken from ``--data`` (made by
``prepare --like RUN``). Each of the run's models (``RUN/<model>/model.json``, or the one ``--model`` names) is
loaded as the run names it and prompted in its run's prompt format and seed; ``OUT/<model>/`` gets
``metrics.json`` (both protocols, six metrics with their 95 % intervals), ``predictions.parquet`` and ``model.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from behaviorlm.data.types import PreparedData
from behaviorlm.errors import InputError, check_destination

IMPORT_OPTIONS = {  # DataConfig field -> flag, help
    "user_col": ("--user-col", "user id column"),
    "time_col": ("--time-col", "timestamp column"),
    "behavior_col": ("--behavior-col", "behavior column"),
    "location_col": ("--location-col", "place column"),
    "group_col": ("--group-col", "behavior group column (names the 'Other <group>' classes)"),
    "time_format": ("--time-format", "strftime format of the timestamps, or 'unix'"),
    "app_categories": ("--app-categories", "tsinghua: App2Category.txt"),
    "min_events_per_user": ("--min-events", "skip users with fewer events"),
}
"""Importer settings ``evaluate --run`` takes from the command line over the run's (and ``--dayfirst``)."""


def add_import_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("with --run and --events: how to read the new log (default: as the run did)")
    for field, (flag, help_text) in IMPORT_OPTIONS.items():
        group.add_argument(flag, dest=field, type=int if field == "min_events_per_user" else str, help=help_text)
    group.add_argument("--dayfirst", action=argparse.BooleanOptionalAction, default=None,
                       help="numeric dates with the year last: 06/05/2024 is 6 May (--dayfirst) or June 5")


def run_models(root: Path, name: str | None) -> list[str]:
    """The run's evaluated models (``RUN/<model>/model.json``), or the one named."""
    models = sorted(p.parent.name for p in root.glob("*/model.json"))
    if name is not None:
        if name not in models:
            raise InputError(f"no model {name!r} in this run (available: {', '.join(models) or 'none'})",
                             file=str(root))
        return [name]
    if not models:
        raise InputError("the run has no evaluated model yet (no RUN/<model>/model.json); finish `behaviorlm run`",
                         file=str(root))
    return models


def check_like(data: PreparedData, run_data: PreparedData, where: str) -> None:
    """A prepared dataset scored for a run must speak its classes and groups."""
    if data.candidates != run_data.candidates or data.stats.groups != run_data.stats.groups:
        missing = sorted(set(run_data.candidates) ^ set(data.candidates))
        detail = f", e.g. {missing[0]!r}" if missing else " (the head/medium/tail groups differ)"
        raise InputError(f"not prepared like the run: its classes differ from the run's{detail}; prepare the log "
                         "with `behaviorlm prepare --like RUN` or pass --events", file=where)


def score(args: argparse.Namespace) -> int:
    """The ``--run`` path of ``behaviorlm evaluate``."""
    from behaviorlm.config import PromptConfig, allowed_remote_code, load_config
    from behaviorlm.data.like import like_config, prepare_like, reference
    from behaviorlm.evaluation.evaluate import PROTOCOLS, evaluate_model, metrics_line
    from behaviorlm.lm.loading import check_int8, for_inference, load_model
    from behaviorlm.recipe.pipeline import print_table, summarize
    from behaviorlm.serving.api import read_model_json, resolve_run

    for flag, value in (("--config", args.config), ("--adapter", args.adapter), ("--mode", args.mode)):
        if value is not None:
            raise InputError(f"{flag}: with --run the run's own configuration and models are used; drop {flag}")
    if args.format in ("paper", "packed"):
        raise InputError("--format: with --run the prompt format is the run's; --format names the new log's format "
                         "(canonical, generic, llmob, tsinghua)")
    if bool(args.events) == bool(args.data):
        raise InputError("--run needs one of --events NEW (a log to prepare like the run) or --data DIR "
                         "(made by `behaviorlm prepare --like RUN`)")
    root, out = Path(args.run), check_destination(args.out, directory=True)
    if not (root / "data" / "stats.json").is_file():
        raise InputError("not a run folder (no data/stats.json); run `behaviorlm run` first", file=str(root))
    ref = reference(root)
    config_path = root / "config.yaml"
    overrides = list(args.set) + [f"eval.{key}={'null' if value == 'all' else value}" for key, value in
                                  (("limit", args.limit), ("per_behavior", args.per_behavior),
                                   ("batch_size", args.batch_size)) if value is not None]
    config = load_config(config_path if config_path.is_file() else None, overrides)
    allowed_remote_code(config.model, args.trust_remote_code, config_path)
    models = run_models(root, args.model)
    if args.int8:
        check_int8(args.device or config.model.device)
    if args.events:
        options = {k: getattr(args, k) for k in IMPORT_OPTIONS}
        data_config = like_config(ref, args.events, format=args.format, dayfirst=args.dayfirst, **options)
        data = prepare_like(ref, data_config, out / "data")
    else:
        data = PreparedData(args.data)
        check_like(data, PreparedData(root / "data"), args.data)
    new_log = data.stats.settings.get("new_log") or {}
    print(f"{data.stats.settings.get('users', {}).get('test', '?')} users, {len(data.candidates)} classes of the "
          f"run ({new_log.get('classes_present', '?')} present); {len(new_log.get('unseen_mapped', {}))} unseen "
          f"behaviors mapped to 'Other', {len(new_log.get('unseen_left_out', {}))} left out "
          f"({new_log.get('events_left_out', 0)} events)")

    results = {}
    for name in models:
        _stats, _history, source, _batch = resolve_run(root, name, trust_remote_code=args.trust_remote_code)
        info = read_model_json(root / name)
        prompt = config.prompt.model_copy(update=PromptConfig(**info["prompt"]).model_dump()) \
            if info.get("prompt") else config.prompt
        seed = int(info.get("prompt_seed", config.train.seed))
        model, tokenizer = load_model(source.base_model, args.device or config.model.device, source.dtype,
                                      adapter=str(source.adapter) if source.adapter else None,
                                      trust_remote_code=source.trust_remote_code)
        model = for_inference(model, int8=args.int8)
        model_info = {**info, "run": str(root.resolve()), "run_model": name, "int8": args.int8,
                      "data": str(data.root.resolve())}
        metrics = evaluate_model(model, tokenizer, data, out / name, name, config.eval, prompt_seed=seed,
                                 model_info=model_info, prompt=prompt)
        for protocol in PROTOCOLS:
            print(f"{name:>12} {protocol:14s} {metrics_line(metrics[protocol])}")
        results[name] = summarize(metrics)
        del model
    print(f"\nscored {len(results)} models of {root} on {data.root}; wrote {out}/<model>/metrics.json")
    print_table(results)
    return 0
