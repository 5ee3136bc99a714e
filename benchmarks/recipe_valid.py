"""Choose the recipe's settings on the validation split: each model of a run, scored on validation samples.

The run's stages are built (or reused) exactly as ``behaviorlm run`` builds them, in the same run folder, so a
grid over B-Tuning or selection settings retrains only what the settings change: one A-Tuning serves every
B-Tuning tried. Each combination's variant (default ``behaviorlm``) and the reference (default ``ft``) are then
scored on the same validation samples, never the test split:

- long-tail: up to ``--per-behavior`` validation samples of every behavior (the long-tail protocol on `valid`);
- next-behavior: ``--next`` samples as stretches of consecutive samples of every validation user (0 = skip).

Printed per combination: the long-tail overall/head/medium/tail and next-behavior Rec_w with 95 % intervals
(bootstrap over users), and the paired difference variant - reference on the same samples.

    python -m benchmarks.recipe_valid --config configs/demo.yaml --run runs/demo \\
        --grid b_train.epochs=1,3 --grid selection.per_behavior=6,12

Predictions are kept in ``--out`` (one file per model), so a rerun scores nothing twice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from behaviorlm.config import load_config
from behaviorlm.data.types import PreparedData, Sample, balanced, stretches

from benchmarks.sweep import grid

LONG_TAIL = ("overall", "head", "medium", "tail")


def validation_sets(data: PreparedData, per_behavior: int, next_limit: int) -> dict[str, list[Sample]]:
    valid = data.split("valid")
    sets = {"long_tail": balanced(valid, per_behavior, seed="valid")}
    if next_limit:
        sets["next_behavior"] = stretches(valid, min(next_limit, len(valid)), seed=f"valid:{next_limit}")
    return sets


def predictions(config, data: PreparedData, adapter: str, sets: dict[str, list[Sample]], cache: Path
                ) -> dict[str, list[str]]:
    """Top-1 predictions of the adapter on each validation set, read from ``cache`` when already scored."""
    from benchmarks.format_choice import score

    if cache.is_file():
        kept = json.loads(cache.read_text())
        if all(kept.get(name, {}).get("ids") == [s.sample_id for s in samples] for name, samples in sets.items()):
            return {name: kept[name]["predicted"] for name in sets}
    out = {}
    for name, samples in sets.items():
        predicted, seconds = score(config, data, adapter, samples)
        out[name] = {"ids": [s.sample_id for s in samples], "predicted": predicted, "seconds": round(seconds, 1)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return {name: out[name]["predicted"] for name in sets}


def summary(data: PreparedData, sets: dict[str, list[Sample]], predicted: dict[str, list[str]],
            reference: dict[str, list[str]] | None) -> dict:
    from behaviorlm.evaluation.metrics import compute_metrics
    from behaviorlm.evaluation.uncertainty import intervals, paired_difference

    groups = data.stats.groups
    rows = {}
    for name, samples in sets.items():
        labels, users = [s.label for s in samples], [s.user_id for s in samples]
        by_behavior = name == "long_tail"
        point = compute_metrics(labels, predicted[name], groups)
        ci = intervals(labels, predicted[name], users, groups, by_behavior=by_behavior)
        keys = LONG_TAIL if by_behavior else ("rec_w",)
        rows[name] = {k: {"value": point[k], "ci95": ci[k]} for k in keys}
        if reference is not None:
            for k in keys:
                diff = paired_difference(labels, predicted[name], reference[name], users, groups, k,
                                         by_behavior=by_behavior)
                rows[name][k]["minus_reference"] = {"value": diff.value, "ci95": diff.ci95,
                                                    "significant": diff.significant}
    return rows


def cell(entry: dict, signed: bool = False) -> str:
    value, ci = entry.get("value"), entry.get("ci95")
    if value is None:
        return "-"
    number = "+.3f" if signed else ".3f"
    bounds = "+.2f" if signed else ".2f"
    return f"{value:{number}}" + (f" [{ci[0]:{bounds}},{ci[1]:{bounds}}]" if ci else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--run", required=True, help="run folder whose stages are reused and extended")
    parser.add_argument("--out", help="folder for predictions and results.json (default: RUN/valid)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config key and the values to try (repeatable; every combination runs)")
    parser.add_argument("--variant", default="behaviorlm", help="the variant each combination builds")
    parser.add_argument("--reference", default="ft", help="variant scored once for the paired differences "
                                                          "(built with the unchanged config; 'none' to skip)")
    parser.add_argument("--per-behavior", type=int, default=10, help="validation samples of every behavior")
    parser.add_argument("--next", type=int, default=0, help="next-behavior validation samples (0 = skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)

    from behaviorlm.recipe.pipeline import Pipeline
    from behaviorlm.recipe.stages import model_stage

    root = Path(args.run)
    out = Path(args.out or root / "valid")
    base = load_config(args.config, args.set)

    def adapter_of(config, variant: str) -> tuple[PreparedData, str]:
        pipeline = Pipeline(config, root)
        data = pipeline.prepare()
        return data, str(root / pipeline.tune_stage(model_stage(variant)))

    reference = None
    if args.reference != "none":
        data, adapter = adapter_of(base, args.reference)
        sets = validation_sets(data, args.per_behavior, args.next)
        reference = predictions(base, data, adapter, sets, out / "predictions" / f"{Path(adapter).parent.name}.json")
        reference_rows = summary(data, sets, reference, None)
    results = []
    for settings, overrides in grid(args.grid):
        config = load_config(args.config, args.set + overrides)
        data, adapter = adapter_of(config, args.variant)
        sets = validation_sets(data, args.per_behavior, args.next)
        predicted = predictions(config, data, adapter, sets, out / "predictions" / f"{Path(adapter).parent.name}.json")
        results.append({"settings": settings, "stage": Path(adapter).parent.name,
                        "metrics": summary(data, sets, predicted, reference)})
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(
            {"reference": {"variant": args.reference, "metrics": reference_rows} if reference else None,
             "variant": args.variant, "results": results}, indent=2))

    shown = [("long_tail", k) for k in LONG_TAIL] + ([("next_behavior", "rec_w")] if args.next else [])
    print(f"{'model':<40}" + "".join(f"{'LT ' + k if p == 'long_tail' else 'NB ' + k:>20}" for p, k in shown))
    if reference:
        print(f"{args.reference:<40}" + "".join(f"{cell(reference_rows[p][k]):>20}" for p, k in shown))
    for r in results:
        name = " ".join(f"{k}={v}" for k, v in r["settings"].items()) or args.variant
        print(f"{name:<40}" + "".join(f"{cell(r['metrics'][p][k]):>20}" for p, k in shown))
        if reference:
            diffs = [r["metrics"][p][k]["minus_reference"] for p, k in shown]
            print(f"{'  minus ' + args.reference:<40}" + "".join(
                f"{cell(d, signed=True) + ('' if d['significant'] else '*'):>20}" for d in diffs))
    if reference:
        print("* the paired 95 % interval includes 0 (not significant)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
