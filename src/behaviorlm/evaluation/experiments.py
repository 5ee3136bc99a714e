"""``behaviorlm experiment``: the paper's experiment suite on one run folder.

Every experiment runs the same resumable pipeline with a changed configuration; tuning stages shared
between experiments (one A-Tuning serves BehaviorLM, its ablations and the few-shot curve) are computed
once. Results go to ``RUN/experiments/<name>.json``, which ``behaviorlm report`` turns into tables and
figures:

- ``comparison``   Table 1: LLM variants, SASRec, BERT4Rec, LLM-ESR, AlphaFuse and the floors, mean +- std over
                   seeds and the 95 % bootstrap interval of the mean (same users drawn for every seed's model),
                   and each model's seed-averaged difference to ``ft`` with its paired interval
- ``ablations``    Table 5: drops of each ablated variant relative to BehaviorLM (long-tail protocol), with
                   the paired difference's 95 % interval
- ``few-shot``     Figure 3b: B-Tuning with F samples per behavior
- ``anchor-tail``  Figures 1c and 4: anchor vs tail accuracy of ft, anchor-only, tail-first, BehaviorLM
- ``sample-efficiency``  Figure 5: SASRec on growing fractions of the training data vs BehaviorLM
- ``embedding-map``      Figure 1b: the base model's embeddings of behavior names, PCA to 2-D
- ``model-size``   zero-shot, ``ft`` and BehaviorLM with each base model of ``--models`` (same data and settings)
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
from pathlib import Path

import pandas as pd

from behaviorlm.config import RunConfig, load_config
from behaviorlm.data.types import write_json_atomic
from behaviorlm.evaluation.evaluate import PROTOCOLS
from behaviorlm.evaluation.metrics import compute_metrics
from behaviorlm.evaluation.uncertainty import mean_intervals, paired_differences, paired_mean_differences, scored
from behaviorlm.recipe import launch
from behaviorlm.recipe.pipeline import Pipeline
from behaviorlm.recipe.stages import ModelStage, model_stage

log = logging.getLogger(__name__)

GROUPS = ("overall", "head", "medium", "tail")
METRICS = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
COMPARED = ["zero-shot", "ft", "llara", "anchor-only", "behaviorlm"]
BASELINES = ["sasrec", "bert4rec", "llm-esr", "alphafuse", "markov", "most-frequent"]
ABLATIONS = ["no-aux", "no-dds", "no-cds", "no-a-tuning"]


def with_updates(config: RunConfig, **sections) -> RunConfig:
    raw = config.model_dump()
    for key, value in sections.items():
        if isinstance(value, dict):
            raw[key] = {**(raw.get(key) or {}), **value}
        else:
            raw[key] = value
    return RunConfig.model_validate(raw)


def seeded(config: RunConfig, seed: int) -> RunConfig:
    b_train = None if config.b_train is None else {**config.b_train.model_dump(), "seed": seed}
    return with_updates(config, train={"seed": seed}, selection={"seed": seed}, b_train=b_train)


def mean_std(values: list[float | None]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def seed_scored(folders: list[Path]) -> dict[str, list[pd.DataFrame]]:
    """Per protocol, each seed's scored predictions (``scored``); a protocol is left out when a folder has no
    predictions.parquet or the seeds scored different samples."""
    paths = [f / "predictions.parquet" for f in folders]
    if not all(p.is_file() for p in paths):
        return {}
    frames = [pd.read_parquet(p) for p in paths]
    out = {}
    for protocol, split in PROTOCOLS.items():
        runs = [scored(f, split) for f in frames]
        if not runs[0].empty and all(r["sample_id"].equals(runs[0]["sample_id"]) for r in runs):
            out[protocol] = runs
    return out


def seed_mean_intervals(folders: list[Path], groups: dict[str, str]) -> dict[str, dict]:
    """Per protocol, the 95 % interval of each metric's mean over the seeds' models (``mean_intervals``)."""
    return {protocol: mean_intervals(runs[0]["label"], [r["pred"] for r in runs], runs[0]["user_id"], groups,
                                     by_behavior=PROTOCOLS[protocol] == "balanced_test")
            for protocol, runs in seed_scored(folders).items()}


def seed_differences(ours: list[Path], theirs: list[Path], groups: dict[str, str]) -> dict[str, dict]:
    """Per protocol and metric, one variant's models (one per seed) against another's on the same samples: the
    difference of their means with the paired 95 % interval over test users, and each seed's own difference with
    their std, the training noise the interval does not cover."""
    a, b = seed_scored(ours), seed_scored(theirs)
    out = {}
    for protocol in a.keys() & b.keys():
        labels, users = a[protocol][0]["label"], a[protocol][0]["user_id"]
        if not b[protocol][0]["sample_id"].equals(a[protocol][0]["sample_id"]):
            continue
        ours_pred, theirs_pred = [r["pred"] for r in a[protocol]], [r["pred"] for r in b[protocol]]
        differences = paired_mean_differences(labels, ours_pred, theirs_pred, users, groups, METRICS,
                                              by_behavior=PROTOCOLS[protocol] == "balanced_test")
        points = [(compute_metrics(list(labels), list(x), groups), compute_metrics(list(labels), list(y), groups))
                  for x, y in zip(ours_pred, theirs_pred)]
        out[protocol] = {}
        for metric, d in differences.items():
            per_seed = [None if x[metric] is None or y[metric] is None else x[metric] - y[metric] for x, y in points]
            out[protocol][metric] = {"value": d.value, "ci95": d.ci95, "significant": d.significant,
                                     "per_seed": per_seed, "std": mean_std(per_seed)["std"]}
    return out


def comparison(config: RunConfig, root: Path, seeds: list[int]) -> dict:
    """Table 1 over training seeds: each model's mean +- std and the interval of the mean, and (``versus_ft``) its
    difference to plain fine-tuning averaged over the seeds, with the paired interval and the per-seed spread."""
    per_seed: dict[str, list[dict]] = {}
    folders: dict[str, list[Path]] = {}
    for seed in seeds:
        cfg = with_updates(seeded(config, seed), variants=COMPARED, baselines=BASELINES)
        eval_root = root / "experiments" / "comparison" / f"seed-{seed}"
        pipeline = Pipeline(cfg, root, eval_root)
        for model, result in pipeline.execute().items():
            per_seed.setdefault(model, []).append(result)
            folders.setdefault(model, []).append(eval_root / ("baselines" if model in BASELINES else "") / model)
    groups = pipeline.data.stats.groups
    rows = []
    for model, results in per_seed.items():
        ci = seed_mean_intervals(folders[model], groups)
        row = {"model": model, "seeds": seeds, **{
            p: {m: {**mean_std([r[p][m] for r in results]), "ci95": (ci.get(p) or {}).get(m)} for m in METRICS}
            for p in PROTOCOLS}}
        if model != "ft" and "ft" in folders:
            row["versus_ft"] = seed_differences(folders[model], folders["ft"], groups)
        rows.append(row)
    return {"rows": rows}


def relative_change(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return 100.0 * (value - reference) / reference


def ablations(config: RunConfig, root: Path) -> dict:
    """Each ablation's long-tail accuracies relative to BehaviorLM (Table 5), and its difference to BehaviorLM on the
    same samples with the paired bootstrap's 95 % interval over test users (``difference``). The interval does not
    cover training noise: retrain with other ``b_train.seed`` values to see that."""
    cfg = with_updates(config, variants=["behaviorlm", *ABLATIONS], baselines=[])
    eval_root = root / "experiments" / "ablations"
    pipeline = Pipeline(cfg, root, eval_root)
    results = pipeline.execute()
    reference = results["behaviorlm"]["long_tail"]
    reference_scored = long_tail_scored(eval_root / "behaviorlm")
    rows = [
        {"variant": v, **{g: relative_change(results[v]["long_tail"][g], reference[g]) for g in GROUPS},
         "absolute": {g: results[v]["long_tail"][g] for g in GROUPS},
         "difference": long_tail_difference(long_tail_scored(eval_root / v), reference_scored,
                                            pipeline.data.stats.groups)}
        for v in ABLATIONS
    ]
    return {"reference": "behaviorlm", "reference_absolute": {g: reference[g] for g in GROUPS}, "rows": rows}


def long_tail_scored(folder: Path) -> pd.DataFrame:
    return scored(pd.read_parquet(folder / "predictions.parquet"), PROTOCOLS["long_tail"])


def long_tail_difference(ours: pd.DataFrame, theirs: pd.DataFrame, groups: dict[str, str]) -> dict | None:
    """One model's long-tail predictions (``long_tail_scored``) minus another's, per group: value, ci95 and
    significant; None unless both scored the same samples."""
    if ours.empty or not ours["sample_id"].equals(theirs["sample_id"]):
        return None
    differences = paired_differences(ours["label"], ours["pred"], theirs["pred"], ours["user_id"], groups,
                                     GROUPS, by_behavior=True)
    return {g: {"value": d.value, "ci95": d.ci95, "significant": d.significant} for g, d in differences.items()}


def few_shot(config: RunConfig, root: Path, shots: list[int]) -> dict:
    points = []
    for f in shots:
        cfg = with_updates(config, variants=["behaviorlm"], baselines=[], selection={"per_behavior": f})
        result = Pipeline(cfg, root, root / "experiments" / "few_shot" / f"F-{f}").execute()["behaviorlm"]
        long_tail = result["long_tail"]
        points.append({"F": f, **{g: long_tail[g] for g in GROUPS},
                       "ci95": {g: (long_tail.get("ci95") or {}).get(g) for g in GROUPS}})
    return {"points": points}


def anchor_tail(config: RunConfig, root: Path) -> dict:
    import json

    cfg = with_updates(config, variants=["ft", "anchor-only", "tail-first", "behaviorlm"], baselines=[])
    eval_root = root / "experiments" / "anchor_tail"
    pipeline = Pipeline(cfg, root, eval_root)
    pipeline.execute()
    anchors = pipeline.data.stats.anchors
    rows = []
    for variant in cfg.variants:
        recall = json.loads((eval_root / variant / "metrics.json").read_text())["long_tail"]["per_behavior"]
        anchor = [r for b, r in recall.items() if b in anchors]
        tail = [r for b, r in recall.items() if b not in anchors]
        rows.append({"model": variant, "anchor": statistics.fmean(anchor) if anchor else None,
                     "tail": statistics.fmean(tail) if tail else None})
    return {"rows": rows}


def sample_efficiency(config: RunConfig, root: Path, fractions: list[float]) -> dict:
    from behaviorlm.baselines.run import run_baseline

    pipeline = Pipeline(with_updates(config, variants=["behaviorlm"], baselines=[]), root,
                        root / "experiments" / "sample_efficiency")
    results = pipeline.execute()
    manifest = pipeline.run.manifest["stages"]
    behaviorlm = model_stage("behaviorlm")
    tuned = sum(manifest[pipeline.stage_name(key)]["result"]["behavior_samples"]
                for key in (ModelStage(behaviorlm.stage_one).tune_key, behaviorlm.tune_key))
    points = [{"model": "behaviorlm", "train_samples": tuned,
               **{k: results["behaviorlm"]["long_tail"][k] for k in ("overall",)},
               "rec_w": results["behaviorlm"]["next_behavior"]["rec_w"]}]
    # The fraction sets the training size; the rest as the run's SASRec, scored on the samples BehaviorLM saw.
    params = {k: v for k, v in config.baseline_params.items() if k != "max_train_samples"}
    for fraction in fractions:
        out = root / "experiments" / "sample_efficiency" / f"sasrec-{fraction:g}"
        metrics = run_baseline("sasrec", pipeline.data, out, seed=config.train.seed, train_fraction=fraction,
                               limit=config.eval.limit, per_behavior=config.eval.per_behavior, **params)
        points.append({"model": "sasrec", "fraction": fraction, "train_samples": metrics.get("train_samples"),
                       "overall": metrics["long_tail"]["overall"], "rec_w": metrics["next_behavior"]["rec_w"]})
    return {"points": points}


def embedding_map(config: RunConfig, root: Path) -> dict:
    from behaviorlm.evaluation.embedding_map import behavior_embedding_map
    from behaviorlm.lm.loading import load_model

    pipeline = Pipeline(with_updates(config, variants=[], baselines=[]), root, root / "experiments")
    pipeline.execute()
    model, tokenizer = load_model(config.model.name, config.model.device, config.model.dtype,
                                  trust_remote_code=config.model.trust_remote_code)
    return {"model": config.model.name, **behavior_embedding_map(model, tokenizer, pipeline.data.stats)}


def model_size(config: RunConfig, root: Path, models: list[str]) -> dict:
    """The recipe with each base model in turn; tuning stages carry the model in their fingerprint, so every model
    gets its own, and the run's own model reuses what the run already has."""
    rows = []
    for name in models or [config.model.name]:
        cfg = with_updates(config, model={"name": name}, variants=["zero-shot", "ft", "behaviorlm"], baselines=[])
        folder = root / "experiments" / "model_size" / re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
        for variant, result in Pipeline(cfg, root, folder).execute().items():
            rows.append({"base_model": name, "model": variant,
                         **{p: {m: result[p][m] for m in METRICS} for p in ("next_behavior", "long_tail")}})
    return {"rows": rows}


EXPERIMENTS = ("comparison", "ablations", "few-shot", "anchor-tail", "sample-efficiency", "embedding-map",
               "model-size")


def run_experiment(name: str, config: RunConfig, root: Path, seeds: list[int], shots: list[int],
                   fractions: list[float], models: list[str] | None = None) -> dict:
    if name == "comparison":
        result = comparison(config, root, seeds)
    elif name == "ablations":
        result = ablations(config, root)
    elif name == "few-shot":
        result = few_shot(config, root, shots)
    elif name == "anchor-tail":
        result = anchor_tail(config, root)
    elif name == "sample-efficiency":
        result = sample_efficiency(config, root, fractions)
    elif name == "model-size":
        result = model_size(config, root, models or [])
    else:
        result = embedding_map(config, root)
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, root / "experiments" / f"{name.replace('-', '_')}.json")
    return result


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", choices=[*EXPERIMENTS, "all"], help="experiments to run, in order")
    parser.add_argument("--config", required=True, help="YAML run configuration (as for `behaviorlm run`)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>); shared with `behaviorlm run`")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.max_train_samples=200")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the comparison (default 0 1 2)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 20, 50],
                        help="F values of the few-shot curve (default 1 5 10 20 50)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0],
                        help="training-data fractions for SASRec in the sample-efficiency curve")
    parser.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                        help="base models of the model-size comparison: embedded names or Hugging Face model "
                             "folders (default: the config's model alone)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    root = Path(args.out or Path("runs") / Path(args.config).stem)
    names = list(EXPERIMENTS) if "all" in args.names else args.names

    def experiments() -> None:
        for name in names:
            log.info("experiment %s", name)
            run_experiment(name, config, root, args.seeds, args.shots, args.fractions, args.models)
            log.info("wrote %s", root / "experiments" / (name.replace("-", "_") + ".json"))

    launch.orchestrate(experiments)  # under a launcher, the ranks other than 0 serve rank 0's tuning stages
    return 0
