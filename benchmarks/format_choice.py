"""Which prompt format learns more per CPU-minute? Validation accuracy of plain fine-tuning in each format.

Both formats train (one epoch, the config's LoRA and schedule) on the same training samples: ``--targets`` of them,
drawn as whole packed segments of the train split; the packed format also trains on ``--scale`` times as many, which
costs it about what the smaller set costs the paper format. Each model is then scored, in its own format, on the
same ``--valid`` random samples of the validation split (never the test split). Printed: targets, training seconds,
validation accuracy with its 95 % interval (bootstrap over users), accuracy per training CPU-minute.

    python -m benchmarks.format_choice --config configs/demo.yaml --out runs/format-choice

Rerunning resumes: finished stages are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from behaviorlm.config import load_config
from behaviorlm.data.types import PreparedData


def prepared(config, out: Path) -> PreparedData:
    """The config's dataset, prepared once into ``out/data`` (a rerun reuses it)."""
    from behaviorlm.data.prepare import prepare_dataset

    if not (out / "data" / "stats.json").is_file():
        prepare_dataset(config.data, out / "data", simulator=config.simulator)
    return PreparedData(out / "data")


def score(config, data: PreparedData, adapter: str | None, samples) -> tuple[list[str], float]:
    """Top-1 predictions of the (adapted) model on ``samples`` in the config's format, and the seconds it took."""
    from behaviorlm.lm.formats import rank_samples
    from behaviorlm.lm.loading import load_model
    from behaviorlm.lm.ranking import CandidateRanker

    model, tokenizer = load_model(config.model.name, config.model.device, config.model.dtype, adapter=adapter)
    ranker = CandidateRanker(model, tokenizer, batch_size=config.eval.batch_size, progress=False)
    started = time.perf_counter()
    ranked = rank_samples(ranker, samples, data.candidates, config.prompt, config.train.seed,
                          context=data.split("valid"), k=1)
    return [r[0][0] for r in ranked], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config (data, model, lora, train sections are used)")
    parser.add_argument("--out", required=True, help="folder for the prepared data, adapters and results.json")
    parser.add_argument("--targets", type=int, default=128, help="training samples of the paper-format run")
    parser.add_argument("--scale", type=int, default=10, help="the packed format also trains on this many times more")
    parser.add_argument("--valid", type=int, default=200, help="validation samples scored (the same for every model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--set-packed", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the packed runs only, e.g. train.batch_size=1 (a batch is that "
                             "many segments of prompt.segment_targets targets each)")
    args = parser.parse_args(argv)

    from behaviorlm.evaluation.uncertainty import intervals
    from behaviorlm.recipe.stages import cap, tune_on_samples

    out = Path(args.out)
    base = load_config(args.config, args.set)
    data = prepared(base, out)
    paper = load_config(args.config, [*args.set, "prompt.format=paper"])
    packed = load_config(args.config, [*args.set, "prompt.format=packed", *args.set_packed])
    train = data.split("train")
    large = cap(train, args.targets * args.scale, base.train.seed, packed.prompt, train)
    small = large[: args.targets]  # whole segments first: the small set is a prefix of the large one's segments
    valid = random.Random(base.train.seed).sample(data.split("valid"), min(args.valid, len(data.split("valid"))))
    labels = [s.label for s in valid]
    runs = [("paper", paper, small), ("packed", packed, small), (f"packed x{args.scale}", packed, large)]
    rows = []
    for name, config, samples in runs:
        folder = out / name.replace(" ", "-")
        result = tune_on_samples(config, data, folder, samples, validate=False)
        predicted, seconds = score(config, data, str(folder / "adapter"), valid)
        accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
        ci = intervals(labels, predicted, [s.user_id for s in valid], data.stats.groups)["rec_w"]
        rows.append({"run": name, "format": config.prompt.format, "targets": result["targets"],
                     "train_seconds": result["train_seconds"], "valid_accuracy": accuracy, "valid_ci95": ci,
                     "accuracy_per_train_minute": accuracy / (result["train_seconds"] / 60),
                     "valid_seconds": seconds, "valid_predictions_per_s": len(valid) / seconds})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"{'run':<14}{'targets':>8}{'train s':>9}{'valid acc':>10}  {'95% CI':<16}{'acc/min':>8}{'valid/s':>9}")
    for r in rows:
        lo, hi = r["valid_ci95"]
        print(f"{r['run']:<14}{r['targets']:>8}{r['train_seconds']:>9.0f}{r['valid_accuracy']:>10.3f}  "
              f"[{lo:.3f}, {hi:.3f}]  {r['accuracy_per_train_minute']:>8.3f}{r['valid_predictions_per_s']:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
