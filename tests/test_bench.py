"""The benchmark machinery end to end on the tiny model with tiny sizes: keys, commands, sane numbers.

Speed itself is never asserted here (timings on a shared CPU are noise); ``behaviorlm bench`` measures it.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from behaviorlm.bench import benchmarks_module
from behaviorlm.cli import main

REQUIRED = ("peak_gflops", "train_speedup_vs_reference", "train_fraction_of_peak", "rank_speedup_vs_separate_forwards",
            "rank_speedup_vs_generate", "rank_fraction_of_peak", "packed_train_targets_per_s_ratio",
            "packed_eval_predictions_per_s_ratio")


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(prepared_dir):
    suite = benchmarks_module("suite")
    workload = benchmarks_module("workload")
    sizes = workload.Sizes(train_samples=4, train_batch_size=2, predict_samples=2, separate_samples=1,
                           generate_samples=1, predict_batch_size=2, matmul_n=256, matmul_repeats=2,
                           thread_counts=(1,), rank_batch_sizes=(1,), format_train_samples=12,
                           format_eval_samples=12, segment_targets=6)
    options = suite.Options(model="tiny", data=str(prepared_dir), sizes=sizes, isolate=False,
                            sections=("machine", "train", "predict", "formats"))
    return suite.run_suite(options)


def test_report_has_every_headline_figure_as_a_positive_number(report):
    for key in REQUIRED:
        assert positive(report[key]), (key, report[key])
    assert set(report["targets"]) == set(REQUIRED) - {"peak_gflops"}


def test_every_figure_names_the_command_that_reproduces_it(report):
    names = {f["name"] for f in report["figures"]}
    assert set(REQUIRED) <= names
    for figure in report["figures"]:
        assert figure["command"].startswith("behaviorlm bench --model tiny --data "), figure
        assert "--only" in figure["command"]
    assert json.loads(json.dumps(report)) == report  # plain JSON


def test_formats_are_compared_on_the_same_targets(report):
    formats = report["formats"]
    paper, packed = formats["train"]["paper"], formats["train"]["packed"]
    assert paper["targets"] == packed["targets"] == 12
    assert paper["chats"] == 12 and packed["chats"] == 2  # 12 consecutive samples of one user, 6 a segment
    assert packed["tokens"] < paper["tokens"] / 3  # instruction and candidates read once a segment
    for name in ("paper", "packed"):
        assert formats["eval"][name]["predictions"] == 12
        assert positive(formats["eval"][name]["predictions_per_s"])
        assert formats["eval"]["packed"]["tokens"] < formats["eval"]["paper"]["tokens"]
    assert positive(report["packed_train_targets_per_s_ratio"])
    assert positive(report["packed_eval_predictions_per_s_ratio"])
    # The trees are part of the scoring time, so removing the rest can only raise the ratio.
    for name in ("paper", "packed"):
        assert 0 < formats["eval"][name]["tree_seconds"] < formats["eval"][name]["seconds"]
    assert report["packed_eval_ratio_if_sequences_free"] > report["packed_eval_predictions_per_s_ratio"]


def test_training_compares_both_trainers_on_the_same_work(report):
    project, reference = report["training"]["project"], report["training"]["reference"]
    assert project["samples"] == reference["samples"] == 4
    assert project["tokens"] == reference["tokens"] > 0
    assert project["steps"] == reference["steps"] == 2
    # The reference pads to the longest in each batch; the project's trainer counts real tokens only.
    assert reference["padded_tokens"] >= reference["real_tokens"] == project["real_tokens"] == project["tokens"]
    for side in (project, reference):
        assert positive(side["tokens_per_s"]) and positive(side["final_loss"]) and side["peak_rss_bytes"] > 0
    # Both start from the same model and take two tiny steps: the final losses must be close.
    assert report["training"]["final_loss_relative_gap"] < 0.01


def test_ranker_agrees_with_separate_forwards(report):
    separate = report["prediction"]["separate_forwards"]
    assert separate["top1_agreement"] == separate["samples"] == 1
    assert separate["disagreeing_samples"] == []
    assert separate["max_abs_score_difference"] < 1e-3
    assert benchmarks_module("suite").failures(report) == []
    assert set(report["prediction"]["threads"]) == {"1"}
    assert set(report["prediction"]["batch_sizes"]) == {"1", "2"}  # the tried size and the default


def test_int8_ranker_is_timed_and_compared_with_the_float_one(report):
    int8 = report["prediction"]["int8"]
    assert positive(int8["speedup_vs_float"]) and positive(int8["speedup_vs_generate"])
    assert report["rank_int8_top1_agreement"] == f"{int8['top1_agreement_with_float']}/2"
    assert {"rank_int8_speedup_vs_float", "rank_int8_top1_agreement"} <= {f["name"] for f in report["figures"]}


def test_table_lists_figures_and_targets(report):
    table = benchmarks_module("suite").format_table(report)
    assert "rank_speedup_vs_separate_forwards" in table and "targets:" in table


def test_cli_machine_only_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "tiny", "--only", "machine", "--quick", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert positive(written["peak_gflops"])
    assert written["figures"][0]["command"] == "behaviorlm bench --quick --model tiny --only machine"
    assert "peak_gflops" in capsys.readouterr().out


def test_thread_probe_child_reports_a_rate_per_thread_count(capsys):
    assert benchmarks_module("threads").main(["--model", "tiny", "--threads", "1", "--tokens", "32"]) == 0
    rates = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(rates) == {"1"} and positive(rates["1"])


def test_pipeline_stage_timings_from_a_manifest(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {
        "data": {"status": "done", "seconds": 2.5}, "tune-ft-1234": {"status": "done", "seconds": 60.0}}}))
    timings = benchmarks_module("pipeline").stage_timings(run)
    assert [s["stage"] for s in timings["stages"]] == ["data", "tune-ft-1234"]
    assert timings["stage_seconds_total"] == 62.5


def test_watch_charges_peak_rss_to_the_running_stage(tmp_path):
    manifest = tmp_path / "manifest.json"
    script = (
        "import json, time, pathlib\n"
        f"m = pathlib.Path({str(manifest)!r})\n"
        "m.write_text(json.dumps({'stages': {'big': {'status': 'running'}}}))\n"
        "block = b'x' * (200 * 1024 * 1024)\n"  # 200 MB, written, so resident while 'big' runs
        "time.sleep(1.0)\n"
    )
    watched = benchmarks_module("pipeline").watch([sys.executable, "-c", script], manifest, interval=0.1)
    assert watched["exit_status"] == 0
    assert watched["peak_rss_bytes"] >= 200 * 1024 * 1024
    assert watched["stage_peak_rss_bytes"]["big"] >= 200 * 1024 * 1024


def test_bad_pipeline_folder_is_one_line_error(tmp_path, capsys):
    assert main(["bench", "--model", "tiny", "--pipeline", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "Traceback" not in err
