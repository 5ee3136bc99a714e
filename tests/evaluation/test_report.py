"""The report renders every table and figure from a tiny made-up run folder, offline, and degrades gracefully."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from behaviorlm.cli import main
from behaviorlm.errors import InputError
from behaviorlm.evaluation.report import render_report

BEHAVIORS = [  # name, share, group, anchor
    ("Convenience Store", 0.30, "head", True), ("Train Station", 0.22, "head", True),
    ("Office", 0.15, "head", True), ("Ramen Restaurant", 0.10, "head", True),
    ("Park", 0.07, "head", True), ("Coffee Shop", 0.05, "medium", True),
    ("Bookstore", 0.04, "medium", True), ("Gym", 0.03, "medium", True),
    ("Shrine", 0.02, "medium", True), ("Museum", 0.008, "tail", False),
    ("Karaoke & Bar $^$", 0.006, "tail", False), ("Zoo", 0.004, "tail", False),
    ("Hot Spring", 0.0015, "tail", False), ("Planetarium", 0.0005, "tail", False),
]
MODELS = ["zero-shot", "ft", "behaviorlm"]
BASELINES = ["sasrec", "markov"]
FIGURE_IDS = ["fig-long-tail", "fig-group-accuracy", "fig-anchor-tail", "fig-few-shot", "fig-sample-efficiency",
              "fig-embedding-map", "fig-confusion"]
TABLE_IDS = ["table-summary", "table-stages", "table-overall", "table-sizes", "table-comparison",
             "table-comparison-vs-ft", "table-hits",
             "table-ablations", "table-model-size", "table-per-behavior", "table-confusion"]
SIX = ("prec_w", "rec_w", "overall", "head", "medium", "tail")


def fake_metrics(rng: np.random.Generator, name: str, hits: bool = True) -> dict:
    def protocol() -> dict:
        per = {b: float(rng.uniform(0.05, 0.9)) for b, *_ in BEHAVIORS}
        groups = {g: float(np.mean([per[b] for b, _, gg, _ in BEHAVIORS if gg == g])) for g in ("head", "medium", "tail")}
        out = {"n": 140, "prec_w": float(rng.uniform(0.3, 0.7)), "rec_w": float(rng.uniform(0.3, 0.7)),
               "overall": float(np.mean(list(per.values()))), **groups, "per_behavior": per,
               "n_by_group": {"head": 50, "medium": 40, "tail": 50}, "bootstrap": {"users": 12}}
        out["ci95"] = {k: [out[k] - 0.05, out[k] + 0.04] for k in SIX}
        if hits:
            out |= {"hit@1": out["rec_w"], "hit@3": min(1.0, out["rec_w"] + 0.2), "hit@5": min(1.0, out["rec_w"] + 0.3)}
        return out

    return {"model": name, "next_behavior": protocol(), "long_tail": protocol(), "seconds": float(rng.uniform(5, 500))}


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_stats(run: Path) -> None:
    behaviors = [{"name": n, "count": int(s * 10000), "share": s, "group": g, "anchor": a} for n, s, g, a in BEHAVIORS]
    write_json(run / "data" / "stats.json", {"behaviors": behaviors,
                                             "samples": {"train": 800, "valid": 100, "test": 100, "balanced_test": 140},
                                             "settings": {"anchor_threshold": 0.01}})


def write_predictions(run: Path, name: str, rng: np.random.Generator) -> None:
    names = [b for b, *_ in BEHAVIORS]
    rows = []
    for split, n in (("test", 30), ("balanced_test", 70)):
        for i in range(n):
            label = names[i % len(names)] if split == "balanced_test" else names[int(rng.integers(0, 4))]
            ranked = list(rng.permutation(names))
            rows.append({"sample_id": f"{split}-{i}", "split": split, "label": label,
                         "top": [{"behavior": b, "probability": float(p)} for b, p in zip(ranked[:3], (0.5, 0.3, 0.2))]})
    pd.DataFrame(rows).to_parquet(run / name / "predictions.parquet", index=False)


def make_full_run(run: Path) -> Path:
    rng = np.random.default_rng(0)
    write_stats(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"events": "events.csv", "format": "llmob"},
                                                     "model": {"name": "smollm2-135m"}}))
    write_json(run / "manifest.json", {"stages": {"prepare": {"seconds": 3.2, "status": "done"},
                                                  "tune-anchor": {"seconds": 4021.0, "status": "done"},
                                                  "evaluate-behaviorlm": {"seconds": 75.5, "status": "done"}},
                                       "versions": {"behaviorlm": "0.1.0", "torch": "2.x"}, "last_run_seconds": 4100})
    for name in MODELS:
        write_json(run / name / "metrics.json", fake_metrics(rng, name))
        write_predictions(run, name, rng)
    for name in BASELINES:
        write_json(run / "baselines" / name / "metrics.json", fake_metrics(rng, name, hits=name == "sasrec"))
    write_json(run / "selection" / "selection.json", {
        "selected": 60, "scored": 180, "seconds": 95.0,
        "kinds": {b: {"dds_cds": 2, "dds_only": 1, "random": 1} for b, *_ in BEHAVIORS},
        "scanned": {b: 12 for b, *_ in BEHAVIORS}})
    def stat() -> dict:
        return {k: {"mean": (mean := float(rng.uniform(0.2, 0.6))), "std": float(rng.uniform(0, 0.03)),
                    "ci95": [mean - 0.1, mean + 0.1]} for k in SIX}

    def versus_ft(model: str) -> dict:  # behaviorlm's tail gain is significant, everything else is not
        def one(significant: bool) -> dict:
            return {"value": 0.06 if significant else 0.01, "std": 0.014, "per_seed": [0.05, 0.06, 0.07],
                    "ci95": [0.04, 0.08] if significant else [-0.02, 0.03], "significant": significant}
        return {p: {k: one(model == "behaviorlm" and p == "long_tail" and k == "tail") for k in SIX}
                for p in ("next_behavior", "long_tail")}

    write_json(run / "experiments" / "comparison.json", {"rows": [
        {"model": m, "seeds": [0, 1, 2], "next_behavior": stat(), "long_tail": stat(),
         **({} if m == "ft" else {"versus_ft": versus_ft(m)})} for m in MODELS + BASELINES]})
    write_json(run / "experiments" / "anchor_tail.json", {"rows": [
        {"model": "ft", "anchor": 0.99, "tail": 0.01}, {"model": "anchor-only", "anchor": 0.45, "tail": 0.3},
        {"model": "tail-first", "anchor": 0.35, "tail": 0.25}]})
    write_json(run / "experiments" / "ablations.json", {"reference": "behaviorlm", "reference_absolute": {
        "overall": 0.4238, "head": 0.5392, "medium": 0.4353, "tail": 0.3912}, "rows": [
        {"variant": "no-aux", "overall": -4.71, "head": -1.07, "medium": -5.99, "tail": -4.58},
        {"variant": "no-dds", "overall": -6.23, "head": -4.34, "medium": -7.66, "tail": -5.62},
        {"variant": "no-cds", "overall": -5.5, "head": -3.24, "medium": -6.83, "tail": -5.02},
        {"variant": "no-a-tuning", "overall": -10.0, "head": -2.77, "medium": -11.74, "tail": 1.5}]})
    write_json(run / "experiments" / "few_shot.json", {"points": [
        {"F": f, "overall": 0.2 + 0.05 * i, "head": 0.4 + 0.02 * i, "medium": 0.2 + 0.04 * i, "tail": 0.1 + 0.06 * i,
         "ci95": {"overall": [0.15 + 0.05 * i, 0.25 + 0.05 * i], "head": None, "medium": None, "tail": None}}
        for i, f in enumerate((1, 5, 10, 20, 50))]})
    write_json(run / "experiments" / "sample_efficiency.json", {"points": [
        {"model": "sasrec", "train_samples": n, "overall": 0.05 + 0.03 * i, "rec_w": 0.2 + 0.05 * i}
        for i, n in enumerate((500, 1000, 5000, 20000, 80000))] + [
        {"model": "behaviorlm", "train_samples": 2000, "overall": 0.2, "rec_w": 0.4}]})
    write_json(run / "experiments" / "model_size.json", {"rows": [
        {"base_model": base, "model": m, "next_behavior": {"rec_w": 0.1 * i + 0.05 * j},
         "long_tail": {"overall": 0.2 + 0.1 * i, "head": 0.3, "medium": 0.2, "tail": 0.1 + 0.1 * i}}
        for i, base in enumerate(("smollm2-135m", "llama-3.1-8b")) for j, m in enumerate(MODELS)]})
    write_json(run / "experiments" / "embedding_map.json", {"model": "smollm2-135m", "explained_variance": [0.3, 0.2],
                                                          "points": [{"behavior": b, "x": float(rng.normal()),
                                                                      "y": float(rng.normal()), "anchor": a, "share": s}
                                                                     for b, s, _, a in BEHAVIORS]})
    return run


def figure_ids(html: str) -> list[str]:
    return re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, str, str]:
    """Rendered once for the module: figures cost seconds each on a small CPU."""
    run = make_full_run(tmp_path_factory.mktemp("report") / "run")
    html_path, md_path = render_report(run)
    return run, html_path.read_text(), md_path.read_text()


def test_full_run_has_every_figure_and_table_and_is_offline(full_report):
    run, html, md = full_report
    assert figure_ids(html) == FIGURE_IDS
    for table_id in TABLE_IDS + ["table-selection-selection"]:
        assert re.search(f'<table id="{table_id}"[ >]', html), table_id
    assert 'id="not-run"' not in html
    # Offline: no external resources at all (no scripts, stylesheets or links to the web).
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    # Every figure is also a PNG file the Markdown refers to.
    for fig in FIGURE_IDS:
        png = run / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](figures/{fig}.png)" in md
    assert "| Model | Seeds | NB Prec_w" in md
    comparison = md[md.index("| Model | Seeds | NB Prec_w"):].split("\n\n")[0]
    assert re.search(r"\| \d\.\d{4} ± \d\.\d{4} \[\d\.\d{3}, \d\.\d{3}\] \|", comparison)
    versus = md[md.index("Difference to plain fine-tuning"):].split("\n\n")[1]
    behaviorlm = next(line for line in versus.splitlines() if line.startswith("| BehaviorLM"))
    assert "**+0.0600 ± 0.0140 [+0.040, +0.080]**" in behaviorlm  # the significant cell, bold, no "n.s."
    assert behaviorlm.count("n.s.") == 11 and "| ft |" not in versus


def test_table_contents(full_report):
    _, html, _ = full_report
    overall = html[html.index('<table id="table-overall">'):html.index("</table>", html.index('id="table-overall"'))]
    # Baselines first, BehaviorLM last, with an improvement row; 5 models, each with 12 metric cells.
    order = [overall.index(label) for label in ("Markov chain", "SASRec", "LLM zero-shot (NT)", "LLM-FT", "BehaviorLM<")]
    assert order == sorted(order)
    assert "Improv. vs best other" in overall
    assert overall.count("<tr>") == 2 + 5 + 1
    assert overall.count("<b>") >= 12  # one best per metric column
    assert len(re.findall(r"<td>(?:<b>)?\d\.\d{4} \[\d\.\d{3}, \d\.\d{3}\]", overall)) == 5 * 12
    sizes = html[html.index('id="table-sizes"'):].split("</table>")[0]
    assert sizes.count("<td>140</td><td>12</td><td>50</td><td>40</td><td>50</td>") == 2 * 5
    ablations = html[html.index('id="table-ablations"'):]
    assert "<b>-10.00%</b>" in ablations.split("</table>")[0] and "+1.50%" in ablations
    assert "overall 0.4238" in ablations
    model_sizes = html[html.index('id="table-model-size"'):].split("</table>")[0]
    assert model_sizes.count("<tr>") == 1 + 6 and "llama-3.1-8b" in model_sizes
    assert model_sizes.count("<td><b>0.3000</b></td>") == 3  # the larger model's long-tail overall, best per variant
    # Per-behavior table: one row per behavior, sorted by share.
    per = html[html.index('id="table-per-behavior"'):].split("</table>")[0]
    assert per.count("<tr>") == 1 + len(BEHAVIORS)
    assert per.index("Convenience Store") < per.index("Museum") < per.index("Planetarium")
    # Selection totals: 14 behaviors x (2, 1, 1).
    selection = html[html.index('id="table-selection-selection"'):].split("</table>")[0]
    assert "<td>Total</td><td></td><td></td><td>28</td><td>14</td><td>14</td><td>56</td><td>168</td>" in selection
    assert "Karaoke &amp; Bar $^$" in html  # escaped in HTML, not math in figures
    assert "180 training samples scored by the stage-one model in 1 min 35 s" in html


def test_anchor_tail_accuracy_from_metrics_and_experiment(tmp_path):
    from behaviorlm.evaluation.report import load_run
    from behaviorlm.evaluation.report.tables import anchor_tail_accuracy

    run = load_run(make_full_run(tmp_path / "run"))
    accuracy = anchor_tail_accuracy(run)
    per = json.loads((tmp_path / "run" / "ft" / "metrics.json").read_text())["long_tail"]["per_behavior"]
    anchors = [per[b] for b, _, _, a in BEHAVIORS if a]
    tails = [per[b] for b, _, _, a in BEHAVIORS if not a]
    # Computed from the run's own metrics.json wins over the experiment's row for the same model.
    assert accuracy["ft"] == pytest.approx((np.mean(anchors), np.mean(tails)))
    assert accuracy["tail-first"] == (0.35, 0.25) and accuracy["anchor-only"] == (0.45, 0.3)
    assert list(accuracy) == ["markov", "sasrec", "zero-shot", "ft", "anchor-only", "tail-first", "behaviorlm"]


def test_confusion_counts_follow_predictions(tmp_path):
    from behaviorlm.data.types import Stats
    from behaviorlm.evaluation.report.tables import confusion_counts

    stats = Stats.from_json(json.loads((make_full_run(tmp_path / "run") / "data" / "stats.json").read_text()))
    frame = pd.DataFrame({
        "split": ["balanced_test"] * 5 + ["test"],
        "label": ["Office", "Office", "Zoo", "Zoo", "Museum", "Zoo"],
        "pred": ["Office", "Zoo", "Park", "Zoo", "nonsense", "Zoo"],
    })
    m = confusion_counts(frame, stats)
    assert m.loc["anchor"].tolist() == [1, 1, 0]
    assert m.loc["tail"].tolist() == [1, 1, 1]
    assert list(m.columns) == ["anchor", "tail", "invalid"]


def test_minimal_run_renders_with_not_run_notes(tmp_path):
    run = tmp_path / "run"
    write_stats(run)
    write_json(run / "behaviorlm" / "metrics.json", fake_metrics(np.random.default_rng(1), "behaviorlm", hits=False))
    html = render_report(run)[0].read_text()
    assert figure_ids(html) == ["fig-long-tail", "fig-group-accuracy", "fig-anchor-tail"]
    assert 'id="not-run"' in html
    note = html[html.index('id="not-run"'):html.index("</div>")]
    for missing in ("experiments/ablations.json", "experiments/few_shot.json", "experiments/sample_efficiency.json",
                    "experiments/embedding_map.json", "experiments/comparison.json", "predictions.parquet",
                    "selection.json"):
        assert missing in note, missing
    assert '<table id="table-overall">' in html and '<table id="table-hits">' not in html
    assert "Improv." not in html  # one model: nothing to improve on


def test_stats_only_run_renders_distribution(tmp_path):
    run = tmp_path / "run"
    write_stats(run)
    html = render_report(run)[0].read_text()
    assert figure_ids(html) == ["fig-long-tail"]
    assert "Overall comparison (Table 1)" in html  # listed as not run


def test_missing_inputs_are_input_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="run folder not found"):
        render_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="stats.json"):
        render_report(tmp_path / "empty")
    write_stats(tmp_path / "bad")
    (tmp_path / "bad" / "experiments").mkdir()
    (tmp_path / "bad" / "experiments" / "few_shot.json").write_text("{not json")
    with pytest.raises(InputError, match="few_shot.json"):
        render_report(tmp_path / "bad")
    assert not (tmp_path / "bad" / "report.html").exists()  # nothing half-written
    (tmp_path / "bad" / "experiments" / "few_shot.json").write_text('{"points": [{"overall": 0.3}]}')
    with pytest.raises(InputError, match="few_shot.json.*unexpected content"):
        render_report(tmp_path / "bad")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "stats.json" in capsys.readouterr().err


def test_cli_verb_writes_both_files(tmp_path, capsys):
    run = tmp_path / "run"
    write_stats(run)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert "report.html" in capsys.readouterr().out


def test_improvement_is_shown_only_where_the_paired_interval_excludes_zero(tmp_path):
    from behaviorlm.evaluation.evaluate import write_predictions
    from behaviorlm.evaluation.metrics import compute_metrics
    from behaviorlm.evaluation.report import load_run
    from behaviorlm.evaluation.report.tables import overall_table

    run = tmp_path / "run"
    write_stats(run)
    names = [b for b, *_ in BEHAVIORS]
    groups = {b: g for b, _, g, _ in BEHAVIORS}
    rng = np.random.default_rng(0)
    samples = {"test": [(f"t{u}:{i}", f"t{u}", names[int(rng.integers(0, 4))]) for u in range(30) for i in range(10)],
               "balanced_test": [(f"b{u}:{b}{i}", f"b{u}", b) for b in names for u in range(4) for i in range(2)]}
    noise = {split: rng.random(len(rows)) for split, rows in samples.items()}
    wrong = {split: [names[(names.index(b) + 1) % len(names)] for _, _, b in rows] for split, rows in samples.items()}

    def write_model(name: str, right: dict[str, float]) -> None:
        metrics, rows = {"model": name}, []
        for protocol, split in (("next_behavior", "test"), ("long_tail", "balanced_test")):
            ids, users, labels = zip(*samples[split])
            pred = [b if x < right[split] else w for b, x, w in zip(labels, noise[split], wrong[split])]
            metrics[protocol] = compute_metrics(labels, pred, groups, users=users, by_behavior=split != "test")
            rows += [{"sample_id": i, "user_id": u, "split": split, "label": b, "pred": p,
                      "top": [{"behavior": p, "probability": 1.0}]} for i, u, b, p in zip(ids, users, labels, pred)]
        (run / name).mkdir(parents=True)
        write_predictions(rows, run / name)
        write_json(run / name / "metrics.json", metrics)

    write_model("ft", {"test": 0.3, "balanced_test": 0.5})
    write_model("behaviorlm", {"test": 0.8, "balanced_test": 0.5})  # the same balanced-set answers as ft
    # A baseline without predictions, best only on long-tail Tail: that column cannot be tested.
    zero = {k: 0.0 for k in SIX}
    write_json(run / "baselines" / "sasrec" / "metrics.json",
               {"model": "sasrec", "next_behavior": zero, "long_tail": {**zero, "tail": 1.0}})

    table = overall_table(load_run(run))
    nb, lt = table.footer[0][2:8], table.footer[0][8:14]  # Prec_w, Rec_w, Overall, Head, Medium, Tail
    assert re.fullmatch(r"\+\d+\.\d%", nb[1])  # Rec_w: 0.8 vs 0.3 on the same users' samples
    assert nb[4:] == ["–", "–"]  # no medium or tail behavior among the test labels
    assert lt[:5] == ["n.s."] * 5  # the same answers as ft: a difference of exactly 0
    assert lt[5] == "n.s. (unpaired)"
    assert "paired bootstrap" in table.caption


def test_bars_carry_their_intervals_as_error_bars():
    from matplotlib.container import ErrorbarContainer

    from behaviorlm.evaluation.report.figures import bar_groups, new_figure

    fig, axes = new_figure(6, 4)
    ax = axes[0][0]
    series = {"ft": [0.4, None, 0.2], "behaviorlm": [0.5, 0.3, 0.1]}
    cis = {"ft": [[0.3, 0.5], None, [0.1, 0.35]], "behaviorlm": [[0.45, 0.6], None, None]}
    bar_groups(ax, ["Overall", "Head", "Tail"], series, {}, intervals=cis)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # one per series that has an interval
    ends = [sorted({round(float(y), 6) for seg in c.lines[2][0].get_segments() for _, y in seg}) for c in bars]
    assert ends == [[0.1, 0.3, 0.35, 0.5], [0.45, 0.6]]
    assert ax.get_ylim()[1] >= 0.6


def test_ablation_table_shows_paired_intervals_and_bolds_only_significant_drops():
    from behaviorlm.evaluation.report.tables import ablation_table

    def paired(value, low, high):
        return {"value": value, "ci95": [low, high], "significant": low > 0 or high < 0}

    ablations = {"reference": "behaviorlm", "reference_absolute": {"overall": 0.2, "head": 0.4, "medium": 0.2,
                                                                     "tail": 0.1}, "rows": [
        {"variant": "no-aux", "overall": -20.0, "head": 0.0, "medium": -5.0, "tail": -10.0,
         "difference": {"overall": paired(-0.04, -0.09, 0.01), "head": paired(0.0, -0.1, 0.1),
                        "medium": paired(-0.01, -0.05, 0.03), "tail": paired(-0.01, -0.02, -0.005)}},
        {"variant": "no-dds", "overall": -5.0, "head": -2.5, "medium": 0.0, "tail": -30.0,
         "difference": {"overall": paired(-0.01, -0.02, -0.001), "head": paired(-0.01, -0.1, 0.08),
                        "medium": paired(0.0, -0.02, 0.02), "tail": paired(-0.03, -0.08, 0.02)}}]}
    table = ablation_table(ablations)
    assert table.rows[0][1] == "-20.00% (-0.040 [-0.090, +0.010] n.s.)"
    assert table.rows[1][1] == "-5.00% (-0.010 [-0.020, -0.001])"
    # Overall: no-dds's smaller but significant drop is the bold one; tail: only no-aux's drop excludes 0.
    assert table.bold == {(1, 1), (0, 4)}
    assert "paired 95 % interval" in table.caption
