"""Does ``train.torch_compile`` pay back within a stage? The same packed LoRA stage, eager and compiled.

Both sides train the first N consecutive training samples of a prepared dataset, as packed segments (one a step,
as the main job's stage one does), with the same LoRA and optimizer settings, each in its own process
(``benchmarks.training``). Printed per side: the first step (compilation happens there, and again whenever a new
sequence length forces a recompile), the median of the other steps, the stage's seconds and the final answer loss;
then the steps a stage needs before the compiled one is ahead (the break-even), against the main job's stage sizes::

    python -m benchmarks.compile_probe --data runs/demo/data --targets 960 --out compile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from behaviorlm.config import LoraConfig, PromptConfig, TrainConfig


def side(result: dict) -> dict:
    steps = result["step_seconds"]
    later = steps[1:] or steps
    return {"seconds": result["seconds"], "steps": len(steps), "first_step_s": steps[0],
            "median_later_step_s": statistics.median(later), "slowest_later_step_s": max(later),
            "final_loss": result["final_loss"], "peak_rss_bytes": result["peak_rss_bytes"], "step_seconds": steps}


def break_even(eager: dict, compiled: dict) -> float | None:
    """Steps after which the compiled stage has spent less time than the eager one: the probe's steps when it is
    ahead already, else those plus its remaining lag over the per-step saving (None: a compiled step is no faster).
    Totals, not first steps alone, so recompiles for new sequence lengths count."""
    lag = compiled["seconds"] - eager["seconds"]
    if lag <= 0:
        return float(eager["steps"])
    saved = eager["median_later_step_s"] - compiled["median_later_step_s"]
    return None if saved <= 0 else eager["steps"] + lag / saved


def probe(model_name: str, data_dir: Path, targets: int, segment_targets: int, workdir: Path) -> dict:
    from behaviorlm.data.types import PreparedData
    from behaviorlm.lm.formats import training_examples

    from benchmarks.training import benchmark_training

    data = PreparedData(data_dir)
    samples = data.split("train")[:targets]
    examples = training_examples(samples, data.candidates, PromptConfig(format="packed",
                                                                       segment_targets=segment_targets))
    lora = LoraConfig(dropout=0.0, last_n_layers=10)
    out: dict = {"data": str(data_dir), "targets": len(samples), "segments": len(examples)}
    for name, compiled in (("eager", False), ("compiled", True)):
        train = TrainConfig(epochs=1, batch_size=1, learning_rate=1e-3, save_every=10**6, eval_samples=0, seed=0,
                            max_length=8192, torch_compile=compiled)
        result = benchmark_training(model_name, examples, lora, train, workdir / name, trainers=("project",))
        out[name] = side(result["project"])
    out["break_even_steps"] = break_even(out["eager"], out["compiled"])
    out["final_loss_difference"] = out["compiled"]["final_loss"] - out["eager"]["final_loss"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One packed LoRA stage eager and torch.compile'd: step times, "
                                                 "break-even, final loss.")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", required=True, help="prepared dataset folder (e.g. runs/demo/data)")
    parser.add_argument("--targets", type=int, default=960, help="the first N training samples, all targets")
    parser.add_argument("--segment-targets", type=int, default=48)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compile-probe-") as tmp:
        result = probe(args.model, Path(args.data), args.targets, args.segment_targets, Path(tmp))
    for name in ("eager", "compiled"):
        r = result[name]
        print(f"{name:>9}: {r['steps']} steps in {r['seconds']:.1f} s; first step {r['first_step_s']:.1f} s, "
              f"later steps median {r['median_later_step_s']:.2f} s (slowest {r['slowest_later_step_s']:.1f} s); "
              f"final answer loss {r['final_loss']:.4f}")
    steps = result["break_even_steps"]
    print("break-even: " + ("never (a compiled step is not faster)" if steps is None else f"after {steps:.0f} steps")
          + f"; final loss compiled - eager {result['final_loss_difference']:+.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
