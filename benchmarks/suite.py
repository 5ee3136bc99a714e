"""The whole benchmark: machine limit, training, prediction, pipeline -> one JSON document and a table.

Every figure carries the command that reproduces it. Speed-ups are ratios of two measurements taken in the
same run on the same samples; fractions of peak divide the FLOPs the work needs (``machine.ModelSize``) by the
seconds it took and by the matmul peak of the same run (the better of a measurement at the start and one at the
end).
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from behaviorlm.data.types import PreparedData
from benchmarks import machine, workload
from benchmarks.workload import Sizes

SECTIONS = ("machine", "threads", "train", "predict", "formats", "pipeline")

TARGETS = {
    "packed_train_targets_per_s_ratio": 10.0,
    "packed_eval_predictions_per_s_ratio": 3.0,
    "train_speedup_vs_reference": 1.5,
    "rank_speedup_vs_separate_forwards": 10.0,
    "rank_speedup_vs_generate": 3.0,
    "rank_fraction_of_peak": 0.6,
    "train_fraction_of_peak": 0.4,
}
"""Goals each figure is checked against (at least this much)."""

EQUAL_LOSS_TOLERANCE = 0.02
"""Relative difference of the two trainers' final losses still counted as equal."""


@dataclass
class Options:
    quick: bool = False
    model: str = "smollm2-135m"
    data: str | None = None
    sections: tuple[str, ...] = ("machine", "threads", "train", "predict", "formats")
    pipeline_run: str | None = None
    pipeline_config: str | None = None
    pipeline_out: str | None = None
    pipeline_overrides: list[str] = field(default_factory=list)
    sizes: Sizes | None = None
    """Explicit sizes (tests); None = QUICK or FULL by ``quick``."""
    isolate: bool = True
    """Each trainer in its own process (per-trainer peak RSS); False runs them here (tests)."""

    def resolved_sizes(self) -> Sizes:
        return self.sizes or (workload.QUICK if self.quick else workload.FULL)

    def command(self, section: str) -> str:
        parts = ["behaviorlm", "bench"] + (["--quick"] if self.quick else []) + ["--model", self.model]
        if self.data:
            parts += ["--data", self.data]
        if section == "pipeline":
            if self.pipeline_config:
                parts += ["--pipeline-config", self.pipeline_config]
                for item in self.pipeline_overrides:
                    parts += ["--pipeline-set", item]
            elif self.pipeline_run:
                parts += ["--pipeline", self.pipeline_run]
        return shlex.join(parts + ["--only", section])


def log(message: str) -> None:
    import sys

    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_suite(options: Options) -> dict:
    sizes = options.resolved_sizes()
    started = time.perf_counter()
    report: dict = {
        "schema": "behaviorlm-bench/1",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": options.quick,
        "model": options.model,
        "sizes": sizes.to_json(),
        "machine": machine.machine_info(),
        "figures": [],
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"machine limit: {sizes.matmul_n}x{sizes.matmul_n} fp32 matmul, best of {sizes.matmul_repeats}")
    report["matmul"] = [machine.matmul_gflops(sizes.matmul_n, sizes.matmul_repeats, device=device)]
    if "machine" in options.sections and sizes.thread_counts:
        report["matmul_by_threads"] = {str(t): machine.matmul_gflops(sizes.matmul_n, sizes.matmul_repeats,
                                                                     device=device, threads=t)["gflops"]
                                       for t in sizes.thread_counts}

    if "threads" in options.sections:
        _timed_section(report, "threads", lambda: _threads(report, options, sizes))

    with tempfile.TemporaryDirectory(prefix="behaviorlm-bench-") as tmp:
        workdir = Path(tmp)
        folders = None
        if {"train", "predict", "formats"} & set(options.sections):
            log("data: " + (options.data or "preparing a small simulator dataset (history 10 and 20)"))
            folders = workload.dataset_folders(options.data, workdir / "data", sizes)
        report["data_seconds"] = time.perf_counter() - started
        if "train" in options.sections:
            _timed_section(report, "train", lambda: _training(report, options, sizes, folders, workdir))
        if "predict" in options.sections:
            _timed_section(report, "predict", lambda: _prediction(report, options, sizes, folders))
        if "formats" in options.sections:
            _timed_section(report, "formats", lambda: _formats(report, options, sizes, folders, workdir))
    if "pipeline" in options.sections:
        _timed_section(report, "pipeline", lambda: _pipeline(report, options))
    if {"train", "predict", "formats"} & set(options.sections):
        log("machine limit, again")
        report["matmul"].append(machine.matmul_gflops(sizes.matmul_n, sizes.matmul_repeats, device=device))
    _limits(report, options)
    report["targets"] = {name: {"target": goal, "value": report[name], "met": report[name] >= goal}
                         for name, goal in TARGETS.items() if name in report}
    report["seconds"] = time.perf_counter() - started
    return report


def _limits(report: dict, options: Options) -> None:
    """Peak, ceilings and fractions of peak, once every measurement is in.

    The peak is measured at the start and, after the long sections, again at the end; the better of the two is
    kept, because a busy machine only ever lowers it."""
    peak = max(m["gflops"] for m in report["matmul"])
    report["peak_gflops"] = peak
    figures = [("peak_gflops", peak, "GFLOP/s", "machine")]
    if "model_size" in report:
        size = machine.ModelSize(**report["model_size"])
        report["ceilings"] = size.ceilings(peak)
        figures += [("ceiling_forward_tokens_per_s", report["ceilings"]["forward_tokens_per_s"], "tokens/s", "machine"),
                    ("ceiling_lora_train_tokens_per_s", report["ceilings"]["lora_train_tokens_per_s"], "tokens/s",
                     "machine")]
    if "training" in report:
        for side in ("project", "reference"):
            entry = report["training"][side]
            entry["fraction_of_peak"] = entry["train_flops"] / entry["seconds"] / (peak * 1e9)
        report["train_fraction_of_peak"] = report["training"]["project"]["fraction_of_peak"]
        report["reference_train_fraction_of_peak"] = report["training"]["reference"]["fraction_of_peak"]
        figures += [("train_fraction_of_peak", report["train_fraction_of_peak"], "of peak", "train"),
                    ("reference_train_fraction_of_peak", report["reference_train_fraction_of_peak"], "of peak",
                     "train")]
    if "formats" in report:
        for name, entry in report["formats"]["train"].items():
            entry["fraction_of_peak"] = entry["train_flops"] / entry["seconds"] / (peak * 1e9)
            figures.append((f"train_fraction_of_peak[{name}]", entry["fraction_of_peak"], "of peak", "formats"))
        for name, entry in report["formats"]["eval"].items():
            entry["fraction_of_peak"] = entry["flops"] / entry["seconds"] / (peak * 1e9)
            figures.append((f"eval_fraction_of_peak[{name}]", entry["fraction_of_peak"], "of peak", "formats"))
    if "prediction" in report:
        ranker = report["prediction"]["ranker"]
        ranker["fraction_of_peak"] = ranker["flops"] / ranker["seconds"] / (peak * 1e9)
        report["rank_fraction_of_peak"] = ranker["fraction_of_peak"]
        figures.append(("rank_fraction_of_peak", ranker["fraction_of_peak"], "of peak", "predict"))
    report["figures"] = [{"name": name, "value": value, "unit": unit, "command": options.command(section)}
                         for name, value, unit, section in figures] + report["figures"]


def _timed_section(report: dict, name: str, fn) -> None:
    started = time.perf_counter()
    fn()
    report.setdefault("section_seconds", {})[name] = time.perf_counter() - started
    log(f"{name}: {report['section_seconds'][name]:.0f} s")


def _figure(report: dict, name: str, value, unit: str, command: str) -> None:
    report["figures"].append({"name": name, "value": value, "unit": unit, "command": command})


def _threads(report: dict, options: Options, sizes: Sizes) -> None:
    from benchmarks.threads import POLICIES, probe

    counts = list(sizes.thread_counts) or [torch.get_num_threads()]
    log(f"thread settings: forward tokens/s at {counts} threads, OpenMP wait policy {' and '.join(POLICIES)}, "
        "each in a fresh process")
    rates = probe(options.model, counts)
    default = str(torch.get_num_threads())
    report["thread_settings"] = {"torch_threads": torch.get_num_threads(),
                                 "omp_wait_policy_here": os.environ.get("OMP_WAIT_POLICY", "default"),
                                 "forward_tokens_per_s": rates}
    command = options.command("threads")
    for policy, by_threads in rates.items():
        for count, rate in by_threads.items():
            _figure(report, f"forward_tokens_per_s[threads={count},omp={policy}]", rate, "tokens/s", command)
    if default in rates["default"] and default in rates["PASSIVE"]:
        report["passive_wait_speedup"] = rates["PASSIVE"][default] / rates["default"][default]
        _figure(report, "passive_wait_speedup", report["passive_wait_speedup"], "x", command)


def _training(report: dict, options: Options, sizes: Sizes, folders, workdir: Path) -> None:
    from behaviorlm.config import LoraConfig, TrainConfig

    from benchmarks.training import benchmark_training

    chosen = workload.pick(folders, "train", sizes.train_samples)
    lora = LoraConfig()
    train = TrainConfig(epochs=sizes.train_epochs, batch_size=sizes.train_batch_size, save_every=10**6,
                        eval_samples=0, seed=0)
    log(f"training: {len(chosen.samples)} samples x {sizes.train_epochs} epoch(s), batch {sizes.train_batch_size}, "
        f"{sizes.train_steps} steps per trainer, each trainer in "
        f"{'its own process' if options.isolate else 'this process'}")
    results = benchmark_training(options.model, chosen.chat_examples(), lora, train, workdir / "train",
                                 isolate=options.isolate)
    project, reference = results["project"], results["reference"]
    report["model_size"] = project["model_size"]
    loss_gap = abs(project["final_loss"] - reference["final_loss"]) / max(1e-9, abs(reference["final_loss"]))
    report["training"] = {"workload": chosen.to_json(), "lora": lora.model_dump(), "batch_size": train.batch_size,
                          "project": project, "reference": reference, "final_loss_relative_gap": loss_gap,
                          "equal_final_loss": loss_gap <= EQUAL_LOSS_TOLERANCE}
    report["train_speedup_vs_reference"] = project["tokens_per_s"] / reference["tokens_per_s"]
    command = options.command("train")
    for name, value, unit in [
        ("train_tokens_per_s", project["tokens_per_s"], "tokens/s"),
        ("reference_train_tokens_per_s", reference["tokens_per_s"], "tokens/s"),
        ("train_samples_per_s", project["samples_per_s"], "samples/s"),
        ("reference_train_samples_per_s", reference["samples_per_s"], "samples/s"),
        ("train_speedup_vs_reference", report["train_speedup_vs_reference"], "x"),
        ("train_peak_rss_gb", project["peak_rss_bytes"] / 1e9, "GB"),
        ("reference_train_peak_rss_gb", reference["peak_rss_bytes"] / 1e9, "GB"),
        ("train_final_loss", project["final_loss"], "nats/token"),
        ("reference_train_final_loss", reference["final_loss"], "nats/token"),
    ]:
        _figure(report, name, value, unit, command)


def _prediction(report: dict, options: Options, sizes: Sizes, folders) -> None:
    from benchmarks.prediction import benchmark_prediction

    chosen = workload.pick(folders, "test", sizes.predict_samples)
    n = len(chosen.samples)
    log(f"prediction: {n} samples; separate forwards on {min(sizes.separate_samples, n)}, "
        f"generation on {min(sizes.generate_samples, n)}")
    model, tokenizer = workload.load(options.model)
    size = machine.model_size(model)
    report.setdefault("model_size", size.to_json())
    result = benchmark_prediction(model, tokenizer, chosen, sizes, size)
    result["workload"] = chosen.to_json()
    report["prediction"] = result
    report["torch_threads"] = torch.get_num_threads()
    report["rank_speedup_vs_separate_forwards"] = result["rank_speedup_vs_separate_forwards"]
    report["rank_speedup_vs_generate"] = result["rank_speedup_vs_generate"]
    report["rank_top1_agreement_separate"] = (f"{result['separate_forwards']['top1_agreement']}/"
                                              f"{result['separate_forwards']['samples']}")
    report["rank_top1_agreement_generate"] = f"{result['generate']['top1_agreement']}/{result['generate']['samples']}"
    command = options.command("predict")
    for name, value, unit in [
        ("rank_samples_per_s", result["ranker"]["samples_per_s"], "samples/s"),
        ("separate_forwards_samples_per_s", result["separate_forwards"]["samples_per_s"], "samples/s"),
        ("generate_samples_per_s", result["generate"]["samples_per_s"], "samples/s"),
        ("rank_speedup_vs_separate_forwards", result["rank_speedup_vs_separate_forwards"], "x"),
        ("rank_speedup_vs_generate", result["rank_speedup_vs_generate"], "x"),
        ("rank_top1_agreement_separate", report["rank_top1_agreement_separate"], "samples"),
        ("rank_top1_agreement_generate", report["rank_top1_agreement_generate"], "samples"),
    ]:
        _figure(report, name, value, unit, command)
    if result["int8"]:
        int8 = result["int8"]
        report["rank_int8_top1_agreement"] = f"{int8['top1_agreement_with_float']}/{n}"
        for name, value, unit in [("rank_int8_samples_per_s", int8["samples_per_s"], "samples/s"),
                                  ("rank_int8_speedup_vs_float", int8["speedup_vs_float"], "x"),
                                  ("rank_int8_speedup_vs_generate", int8["speedup_vs_generate"], "x"),
                                  ("rank_int8_top1_agreement", report["rank_int8_top1_agreement"], "samples")]:
            _figure(report, name, value, unit, command)
    for count, entry in result["threads"].items():
        _figure(report, f"rank_samples_per_s_{count}_threads", entry["samples_per_s"], "samples/s", command)
    for batch, entry in sorted(result["batch_sizes"].items(), key=lambda item: int(item[0])):
        _figure(report, f"rank_samples_per_s_batch_{batch}", entry["samples_per_s"], "samples/s", command)


def _formats(report: dict, options: Options, sizes: Sizes, folders, workdir: Path) -> None:
    from benchmarks.formats import benchmark_formats

    folder = next((f for f in folders if PreparedData(f).stats.settings.get("history_len") == 10), folders[0])
    log(f"formats: paper vs packed ({sizes.segment_targets} targets a segment) on the same "
        f"{sizes.format_train_samples} training and {sizes.format_eval_samples} test samples of {folder.name}, "
        "each format in its own process")
    result = benchmark_formats(options.model, folder, sizes.format_train_samples, sizes.format_eval_samples,
                               sizes.segment_targets, sizes.train_batch_size, workdir / "formats", options.isolate)
    report["formats"] = result
    command = options.command("formats")
    for name in ("packed_train_targets_per_s_ratio", "packed_train_steady_targets_per_s_ratio",
                 "packed_eval_predictions_per_s_ratio", "packed_eval_ratio_if_sequences_free"):
        if result[name] is not None:
            report[name] = result[name]
            _figure(report, name, result[name], "x", command)
    for name in ("paper", "packed"):
        train, evaluation = result["train"][name], result["eval"][name]
        for figure, value, unit in [
            (f"train_targets_per_s[{name}]", train["targets_per_s"], "targets/s"),
            (f"train_steady_targets_per_s[{name}]", train["steady_targets_per_s"], "targets/s"),
            (f"train_tokens_per_target[{name}]", train["tokens"] / train["targets"], "tokens"),
            (f"train_peak_rss_gb[{name}]", train["peak_rss_bytes"] / 1e9, "GB"),
            (f"eval_predictions_per_s[{name}]", evaluation["predictions_per_s"], "predictions/s"),
            (f"eval_tokens_per_prediction[{name}]", evaluation["tokens"] / evaluation["predictions"], "tokens"),
            (f"eval_tree_share[{name}]", evaluation["tree_seconds"] / evaluation["seconds"], "of the seconds"),
            (f"eval_peak_rss_gb[{name}]", evaluation["peak_rss_bytes"] / 1e9, "GB"),
        ]:
            _figure(report, figure, value, unit, command)


def _pipeline(report: dict, options: Options) -> None:
    from benchmarks.pipeline import run_pipeline, stage_timings

    if options.pipeline_config:
        out = options.pipeline_out or tempfile.mkdtemp(prefix="behaviorlm-bench-run-")
        log(f"pipeline: behaviorlm run --config {options.pipeline_config} --out {out}")
        result = run_pipeline(options.pipeline_config, out, options.pipeline_overrides)
    elif options.pipeline_run:
        result = stage_timings(options.pipeline_run)
    else:
        return
    report["pipeline"] = result
    command = options.command("pipeline")
    for stage in result["stages"]:
        _figure(report, f"stage_seconds[{stage['stage']}]", stage["seconds"], "s", command)
        if stage.get("peak_rss_bytes"):
            _figure(report, f"stage_peak_rss_gb[{stage['stage']}]", stage["peak_rss_bytes"] / 1e9, "GB", command)
    if "peak_rss_bytes" in result:
        _figure(report, "run_wall_seconds", result["wall_seconds"], "s", command)
        _figure(report, "run_peak_rss_gb", result["peak_rss_bytes"] / 1e9, "GB", command)


def failures(report: dict) -> list[str]:
    """Correctness problems that make the benchmark fail (speed targets only warn)."""
    problems = []
    separate = report.get("prediction", {}).get("separate_forwards")
    if separate and separate["disagreeing_samples"]:
        problems.append(f"ranker and separate forwards disagree on top-1 for {separate['disagreeing_samples']}")
    return problems


def format_table(report: dict) -> str:
    """The figures as an aligned text table, then the targets."""
    rows = [(f["name"], _fmt(f["value"]), f["unit"]) for f in report["figures"]]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>{vwidth}}  unit", "-" * (width + vwidth + 12)]
    lines += [f"{n:<{width}}  {v:>{vwidth}}  {u}" for n, v, u in rows]
    if report.get("targets"):
        lines += ["", "targets:"]
        for name, t in report["targets"].items():
            lines.append(f"  {name:<{width}} {_fmt(t['value']):>8} (goal >= {t['target']:g}) "
                         f"{'met' if t['met'] else 'MISSED'}")
    if "training" in report:
        lines.append(f"  equal final loss (within {EQUAL_LOSS_TOLERANCE:.0%}): "
                     f"{'yes' if report['training']['equal_final_loss'] else 'NO'} "
                     f"(gap {report['training']['final_loss_relative_gap']:.2%})")
    lines += ["", "reproduce a section with the command in the JSON's figures[].command, e.g.:"]
    lines += sorted({f"  {f['command']}" for f in report["figures"]})
    lines.append(f"torch threads: {report['machine']['torch_threads']}; total {report.get('seconds', 0):.0f} s")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
