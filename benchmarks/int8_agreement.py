"""Is dynamic int8 good enough for a run's evaluation and selection? Top-1 agreement and speed, on validation.

Each tuned model of a run (its adapters, built or reused as ``behaviorlm run`` builds them) ranks the same
validation samples twice: merged float weights, then the same weights with dynamic int8 linear layers
(``lm.loading.for_inference``). Printed per model and protocol: samples, top-1 agreement, accuracy of each, and
the seconds of each. ``eval.int8`` is worth turning on where agreement is at least 99 % on at least 200 samples.

    python -m benchmarks.int8_agreement --config configs/demo.yaml --run runs/demo \\
        --variants ft anchor-only behaviorlm --next 200

The validation sets are those of ``benchmarks/recipe_valid.py``: ``--per-behavior`` samples of every behavior
(the long-tail protocol on `valid`) and ``--next`` stretches of consecutive samples. Never the test split.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from behaviorlm.config import load_config

from benchmarks.recipe_valid import validation_sets

THRESHOLD = 0.99


def top1(model, tokenizer, config, data, samples) -> tuple[list[str], float]:
    from behaviorlm.lm.formats import rank_samples
    from behaviorlm.lm.ranking import CandidateRanker

    ranker = CandidateRanker(model, tokenizer, batch_size=config.eval.batch_size, progress=False)
    started = time.perf_counter()
    ranked = rank_samples(ranker, samples, data.candidates, config.prompt, config.train.seed,
                          context=data.split("valid"), k=1)
    return [r[0][0] for r in ranked], time.perf_counter() - started


def compare(config, data, adapter: str, sets: dict) -> dict:
    from behaviorlm.lm.loading import for_inference, load_model

    model, tokenizer = load_model(config.model.name, "cpu", "float32", adapter=adapter,
                                  trust_remote_code=config.model.trust_remote_code)
    model = for_inference(model)
    quantized = for_inference(copy.deepcopy(model), int8=True)
    out = {}
    for name, samples in sets.items():
        labels = [s.label for s in samples]
        exact, exact_s = top1(model, tokenizer, config, data, samples)
        approx, approx_s = top1(quantized, tokenizer, config, data, samples)
        agree = sum(a == b for a, b in zip(exact, approx))
        out[name] = {"samples": len(samples), "agree": agree, "agreement": agree / len(samples),
                     "float_accuracy": sum(p == y for p, y in zip(exact, labels)) / len(samples),
                     "int8_accuracy": sum(p == y for p, y in zip(approx, labels)) / len(samples),
                     "float_s": round(exact_s, 1), "int8_s": round(approx_s, 1),
                     "speedup": exact_s / approx_s if approx_s else None}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--run", required=True, help="run folder whose tuned models are compared (built if missing)")
    parser.add_argument("--variants", nargs="+", default=["ft", "anchor-only", "behaviorlm"])
    parser.add_argument("--per-behavior", type=int, default=10, help="validation samples of every behavior")
    parser.add_argument("--next", type=int, default=200, help="next-behavior validation samples (0 = skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", help="results JSON (default: RUN/valid/int8_agreement.json)")
    args = parser.parse_args(argv)

    from behaviorlm.recipe.pipeline import Pipeline
    from behaviorlm.recipe.stages import model_stage

    root = Path(args.run)
    config = load_config(args.config, args.set)
    pipeline = Pipeline(config, root)
    data = pipeline.prepare()
    sets = validation_sets(data, args.per_behavior, args.next)
    results = {}
    for variant in args.variants:
        adapter = str(root / pipeline.tune_stage(model_stage(variant)))
        results[variant] = compare(config, data, adapter, sets)
        for name, r in results[variant].items():
            print(f"{variant:<12} {name:<14} top-1 equal {r['agree']}/{r['samples']} ({r['agreement']:.3f})  "
                  f"accuracy float {r['float_accuracy']:.3f} int8 {r['int8_accuracy']:.3f}  "
                  f"seconds float {r['float_s']} int8 {r['int8_s']} (x{r['speedup']:.2f})", flush=True)
    total = sum(r["samples"] for v in results.values() for r in v.values())
    agree = sum(r["agree"] for v in results.values() for r in v.values())
    verdict = agree / total >= THRESHOLD and all(r["samples"] >= 200 for v in results.values() for r in v.values())
    print(f"overall top-1 agreement {agree}/{total} ({agree / total:.4f}); "
          f"eval.int8 {'qualifies' if verdict else 'does not qualify'} (>= {THRESHOLD:.0%} on >= 200 samples)")
    out = Path(args.out or root / "valid" / "int8_agreement.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python -m benchmarks.int8_agreement " + " ".join(
                                   sys.argv[1:] if argv is None else argv),
                               "results": results, "agreement": agree / total, "qualifies": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
