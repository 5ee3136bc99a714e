"""Choose tuning settings on the validation split: plain fine-tuning under each combination of a small grid.

Every combination trains one stage (the config's stage-one samples for ``--subset``, capped at
``train.max_train_samples``) and is scored on the same ``--valid`` validation samples (stretches of consecutive
samples from every validation user, as ``eval.limit`` takes test samples), in the config's prompt format. The
test split is never read. Printed, best first: the settings, targets, training seconds, validation accuracy
(Rec_w) and class-averaged accuracy (Overall) with their 95 % intervals (bootstrap over users).

    python -m benchmarks.sweep --config configs/demo.yaml --out runs/sweep \\
        --grid train.learning_rate=3e-4,1e-3,3e-3 --grid lora.last_n_layers=6,10

Rerunning resumes: finished combinations are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import yaml

from behaviorlm.config import load_config
from behaviorlm.data.types import stretches

from benchmarks.format_choice import prepared, score


def grid(items: list[str]) -> list[tuple[dict, list[str]]]:
    """Every combination of ``KEY=V1,V2`` items: its settings {key: value} and its config overrides."""
    axes = [(key, [yaml.safe_load(v) for v in values.split(",")])
            for key, values in (item.split("=", 1) for item in items)]
    keys = [key for key, _ in axes]
    return [(dict(zip(keys, combination)), [f"{k}={v}" for k, v in zip(keys, combination)])
            for combination in itertools.product(*[values for _, values in axes])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="folder for the prepared data, adapters and results.json")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config key and the values to try (repeatable; every combination runs)")
    parser.add_argument("--subset", default="ft", choices=["ft", "anchor"], help="stage-one samples to train on")
    parser.add_argument("--valid", type=int, default=200, help="validation samples scored (the same for all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)

    from behaviorlm.evaluation.metrics import compute_metrics
    from behaviorlm.evaluation.uncertainty import intervals
    from behaviorlm.recipe.stages import stage_one_samples, tune_on_samples

    out = Path(args.out)
    base = load_config(args.config, args.set)
    data = prepared(base, out)
    valid_split = data.split("valid")
    valid = stretches(valid_split, min(args.valid, len(valid_split)), seed=f"valid:{args.valid}")
    labels, users = [s.label for s in valid], [s.user_id for s in valid]
    rows = []
    for settings, overrides in grid(args.grid):
        config = load_config(args.config, args.set + overrides)
        name = "_".join(o.replace("=", "-") for o in overrides) or "base"
        samples = stage_one_samples(args.subset, data, config)
        result = tune_on_samples(config, data, out / name, samples, validate=False)
        predicted, seconds = score(config, data, str(out / name / "adapter"), valid)
        point = compute_metrics(labels, predicted, data.stats.groups)
        ci = intervals(labels, predicted, users, data.stats.groups)
        rows.append({"settings": settings, "targets": result["targets"],
                     "train_seconds": result["train_seconds"], "valid_rec_w": point["rec_w"],
                     "valid_rec_w_ci95": ci["rec_w"], "valid_overall": point["overall"],
                     "valid_overall_ci95": ci["overall"], "valid_seconds": seconds, "run": name})
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    rows.sort(key=lambda r: -r["valid_rec_w"])
    print(f"{'settings':<48}{'targets':>8}{'train s':>9}{'Rec_w':>7}  {'95% CI':<16}{'Overall':>8}  {'95% CI':<16}")
    for r in rows:
        settings = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        lo, hi = r["valid_rec_w_ci95"]
        olo, ohi = r["valid_overall_ci95"] or (float("nan"), float("nan"))
        print(f"{settings:<48}{r['targets']:>8}{r['train_seconds']:>9.0f}{r['valid_rec_w']:>7.3f}  "
              f"[{lo:.3f}, {hi:.3f}]  {r['valid_overall']:>8.3f}  [{olo:.3f}, {ohi:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
