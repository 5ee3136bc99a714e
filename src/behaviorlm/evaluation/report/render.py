"""The report's sections, the HTML and Markdown writers, ``render_report`` and the ``behaviorlm report`` verb.

Each section is built when its inputs exist; the missing ones become the "not run" note.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from jinja2 import Environment

from behaviorlm.errors import InputError
from behaviorlm.evaluation.report.artifacts import PROTOCOL_SHORT, PROTOCOLS, RunArtifacts, display, load_run
from behaviorlm.evaluation.report.figures import (
    Figure,
    anchor_tail_figure,
    confusion_figure,
    embedding_map_figure,
    few_shot_figure,
    group_bars_figure,
    long_tail_figure,
    sample_efficiency_figure,
)
from behaviorlm.evaluation.report.tables import (
    Table,
    ablation_table,
    anchor_tail_accuracy,
    anchor_tail_intervals,
    comparison_difference_table,
    comparison_table,
    confusion_counts,
    confusion_table,
    model_size_table,
    format_seconds,
    hit_rate_table,
    overall_table,
    per_behavior_table,
    sample_size_table,
    training_table,
    selection_table,
)
from behaviorlm.files import write_bytes_atomic


# ---------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Table | Figure] = field(default_factory=list)


def summary_section(run: RunArtifacts) -> Section:
    stats = run.stats
    anchors = [b for b in stats.behaviors if b.anchor]
    groups = {g: sum(b.group == g for b in stats.behaviors) for g in ("head", "medium", "tail")}
    data_cfg = (run.config or {}).get("data") or {}
    model_cfg = (run.config or {}).get("model") or {}
    facts = [
        ["Run folder", run.root.name],
        ["Events", "– (no config.yaml)" if run.config is None else str(data_cfg.get("events") or "built-in "
                   "simulator") + (f" ({data_cfg['format']})" if data_cfg.get("format") else "")],
        ["Base model", str(model_cfg.get("name", "–"))],
        ["Behaviors", f"{len(stats.behaviors)} ({groups['head']} head, {groups['medium']} medium, "
                      f"{groups['tail']} tail)"],
        ["Anchor behaviors", f"{len(anchors)}, covering {sum(b.share for b in anchors) * 100:.1f}% of events"],
        ["Samples", ", ".join(f"{k}: {v:,}" for k, v in stats.samples.items() if isinstance(v, int))],
        ["Models evaluated", ", ".join(display(n) for n in run.model_names) or "none"],
    ]
    if run.manifest and run.manifest.get("last_run_seconds") is not None:
        facts.append(["Last run took", format_seconds(run.manifest["last_run_seconds"])])
    section = Section("summary", "Summary", blocks=[Table("table-summary", "Run at a glance.", [], facts,
                                                         css_class="facts")])
    stages = (run.manifest or {}).get("stages") or {}
    if stages:
        rows = [[name, str(s.get("status", "–")), format_seconds(s.get("seconds"))] for name, s in stages.items()]
        total = sum(float(s.get("seconds") or 0) for s in stages.values())
        section.blocks.append(Table("table-stages", "Pipeline stages and their wall time.",
                                    ["Stage", "Status", "Time"], rows, footer=[["Total", "", format_seconds(total)]]))
    versions = (run.manifest or {}).get("versions") or {}
    if versions:
        section.intro = "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    return section


def sections(run: RunArtifacts) -> tuple[list[Section], list[str]]:
    """The report's sections in order, and a note for each one whose inputs are missing."""
    out, missing = [summary_section(run)], []
    exp = run.experiments

    def need(ok, title: str, inputs: str, build: Callable[[], Section]) -> None:
        if not ok:
            missing.append(f"{title} — needs {inputs}")
            return
        try:
            out.append(build())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a file that exists but has another shape
            raise InputError(f"{title}: unexpected content ({type(exc).__name__}: {exc})", file=inputs) from None

    metrics_glob = "RUN/*/metrics.json"
    need(run.models or "comparison" in exp, "Overall comparison (Table 1)",
         f"{metrics_glob} or experiments/comparison.json", lambda: Section(
             "overall", "Overall comparison", "Six metrics on both protocols. The next-behavior protocol keeps the "
             "natural (skewed) distribution; the long-tail protocol has the same number of samples per behavior, "
             "so Overall/Head/Medium/Tail there measure robustness on rare behaviors. Intervals come from a "
             "bootstrap over users (samples of one user are correlated), stratified by behavior on the long-tail "
             "protocol.",
             ([overall_table(run), sample_size_table(run)] if run.models else [])
             + ([t] if (t := training_table(run)) else [])
             + ([comparison_table(exp["comparison"])] if "comparison" in exp else [])
             + ([t] if "comparison" in exp and (t := comparison_difference_table(exp["comparison"])) else [])
             + ([t] if (t := hit_rate_table(run)) else [])))
    if run.models and "comparison" not in exp:
        missing.append("Mean ± std over seeds — needs experiments/comparison.json")
    out.append(Section("long-tail", "Long-tail distribution of behaviors", blocks=[long_tail_figure(run)]))
    need(run.models, "Per-group accuracy", metrics_glob, lambda: Section(
        "group-accuracy", "Accuracy per frequency group", blocks=[group_bars_figure(run)]))
    accuracy = anchor_tail_accuracy(run)
    need(accuracy, "Anchor vs tail accuracy (Figures 1c, 4)",
         "long_tail per_behavior in metrics.json or experiments/anchor_tail.json",
         lambda: Section("anchor-tail", "Anchor vs tail accuracy", "In the paper, tuning on every behavior "
                         "favors the frequent anchors (LLM-FT), tuning on tails first hurts both, and BehaviorLM "
                         "narrows the gap on tail behaviors.",
                         [anchor_tail_figure(run, accuracy, anchor_tail_intervals(run))]))
    need("ablations" in exp, "Ablations (Table 5)", "experiments/ablations.json", lambda: Section(
        "ablations", "Ablations", blocks=[ablation_table(exp["ablations"])]))
    need("few_shot" in exp, "Few-shot curve (Figure 3b)", "experiments/few_shot.json", lambda: Section(
        "few-shot", "Few-shot B-Tuning", blocks=[few_shot_figure(exp["few_shot"])]))
    need("sample_efficiency" in exp, "Sample efficiency (Figure 5)", "experiments/sample_efficiency.json",
         lambda: Section("sample-efficiency", "Sample efficiency", blocks=[sample_efficiency_figure(
             exp["sample_efficiency"])]))
    need("embedding_map" in exp, "Embedding map (Figure 1b)", "experiments/embedding_map.json", lambda: Section(
        "embedding-map", "Behavior embedding map", "The paper observes that tail behaviors sit near semantically "
        "related anchors in the base model's representation, which is what lets anchor tuning transfer to them; "
        "this map shows whether that holds for this model and these behaviors.",
        [embedding_map_figure(exp["embedding_map"])]))
    need("model_size" in exp, "Model size", "experiments/model_size.json", lambda: Section(
        "model-size", "Base model size", "The same data, settings and recipe with each base model.",
        [model_size_table(exp["model_size"])]))
    need(run.models, "Per-behavior accuracy", metrics_glob, lambda: Section(
        "per-behavior", "Accuracy per behavior", blocks=[per_behavior_table(run)]))
    matrices = {name: m for name in run.model_names if name in run.predictions
                and (m := confusion_counts(run.predictions[name], run.stats)) is not None}
    need(matrices, "Anchor/tail confusion", "RUN/<model>/predictions.parquet with balanced_test rows",
         lambda: Section("confusion", "Anchor/tail confusion", "How often a true anchor is predicted as a tail "
                         "behavior and vice versa.", [confusion_figure(matrices), confusion_table(matrices)]))

    def selection_section() -> Section:
        section = Section("selection", "B-Tuning selection accounting", "DDS keeps training samples the "
                          "stage-one model mispredicts; CDS keeps only mistakes of the same kind as the truth (an "
                          "anchor mistaken for another anchor, a tail for another tail). Behaviors with too few such "
                          "samples are filled with other mistakes, then with random samples.")
        facts = []
        for name, selection in run.selections.items():
            table, fact = selection_table(name, selection, run.stats)
            section.blocks.append(table)
            facts.append(f"{name}: {fact}." if fact else "")
        section.intro += " " + " ".join(f for f in facts if f)
        return section

    need(run.selections, "B-Tuning selection accounting", "selection/selection.json or stages/*/selection.json",
         selection_section)
    return out, missing


# ---------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------
HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>BehaviorLM report: {{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5em 2em 4em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav { font-size: 0.9em; margin: 0.8em 0 1.2em; } nav a { margin-right: 1em; color: #3b6fb6; text-decoration: none; }
.note { background: #fff8e5; border: 1px solid #f0d58c; border-radius: 4px; padding: 0.6em 1em; font-size: 0.9em; }
.note ul { margin: 0.3em 0; padding-left: 1.4em; }
.scroll { overflow-x: auto; margin: 0.8em 0 1.4em; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-size: 0.95em; color: #444; padding-bottom: 0.4em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
thead th { background: #f4f6fa; } tfoot td { border-top: 2px solid #bbb; font-style: italic; }
table.facts td { text-align: left; } table.facts td:first-child { font-weight: 600; padding-right: 1.5em; }
th.group { text-align: center; border-bottom: 2px solid #c8d0e0; }
figure { margin: 1em 0 1.8em; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
</style></head>
<body>
<h1>BehaviorLM report: {{ title }}</h1>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
{% if missing %}<div class="note" id="not-run"><strong>Not run</strong> (inputs missing from this run folder):
<ul>{% for m in missing %}<li>{{ m }}</li>{% endfor %}</ul>{{ hint }}</div>{% endif %}
{% for s in sections %}
<section id="{{ s.id }}"><h2>{{ s.title }}</h2>
{% if s.intro %}<p>{{ s.intro }}</p>{% endif %}
{% for b in s.blocks %}{% if b.png is defined %}
<figure id="{{ b.id }}"><img alt="{{ b.caption }}" src="data:image/png;base64,{{ b.base64 }}">
<figcaption>{{ b.caption }}</figcaption></figure>
{% else %}
<div class="scroll"><table id="{{ b.id }}"{% if b.css_class %} class="{{ b.css_class }}"{% endif %}><caption>{{ b.caption }}</caption><thead>
{% if b.header_groups %}<tr>{% for label, span in b.header_groups %}<th colspan="{{ span }}" class="group">{{ label }}</th>{% endfor %}</tr>{% endif %}
{% if b.header %}<tr>{% for h in b.header %}<th>{{ h }}</th>{% endfor %}</tr>{% endif %}</thead><tbody>
{% for row in b.rows %}{% set r = loop.index0 %}<tr>{% for cell in row %}{% set c = loop.index0 %}<td{% if not is_number(cell) %} class="text"{% endif %}>{% if (r, c) in b.bold %}<b>{{ cell }}</b>{% else %}{{ cell }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody>
{% if b.footer %}<tfoot>{% for row in b.footer %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tfoot>{% endif %}
</table></div>
{% endif %}{% endfor %}
</section>
{% endfor %}
</body></html>
"""


NOT_RUN_HINT = ("experiments/*.json come from `behaviorlm experiment NAME --config CONFIG --out RUN_DIR` "
                "(NAME: comparison, ablations, few-shot, anchor-tail, sample-efficiency, embedding-map, model-size "
                "or all); metrics.json, predictions and selection files from `behaviorlm run`.")


def is_number(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "+-–") and cell not in ("-",)


def render_html(title: str, sections_: list[Section], missing: list[str]) -> str:
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(HTML_TEMPLATE).render(title=title, sections=sections_, missing=missing,
                                                 is_number=is_number, hint=NOT_RUN_HINT)


def markdown_table(table: Table) -> str:
    header = list(table.header) or [""] * len(table.rows[0])
    if table.header_groups:  # Markdown has one header row: prefix each column with its group's short name
        labels = [label for label, span in table.header_groups for _ in range(span)]
        short = {v: PROTOCOL_SHORT[k] for k, v in PROTOCOLS.items()}
        header = [f"{short.get(g, g)} {h}".strip() for g, h in zip(labels, header)]

    def line(cells) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rows = [[f"**{cell}**" if (r, c) in table.bold else cell for c, cell in enumerate(row)]
            for r, row in enumerate(table.rows)]
    lines = [f"*{table.caption}*", "", line(header), line(["---"] * len(header))]
    lines += [line(row) for row in rows + [[f"*{c}*" if c else "" for c in row] for row in table.footer]]
    if table.header_groups:
        lines += ["", "NB = next-behavior protocol (test split), LT = long-tail protocol (balanced test)."]
    return "\n".join(lines)


def render_markdown(title: str, sections_: list[Section], missing: list[str]) -> str:
    parts = [f"# BehaviorLM report: {title}", ""]
    if missing:
        parts += ["> **Not run** (inputs missing from this run folder):"] + [f"> - {m}" for m in missing]
        parts += [">", f"> {NOT_RUN_HINT}", ""]
    for section in sections_:
        parts += [f"## {section.title}", ""]
        if section.intro:
            parts += [section.intro, ""]
        for block in section.blocks:
            if isinstance(block, Figure):
                parts += [f"![{block.caption}](figures/{block.id}.png)", "", f"*{block.caption}*", ""]
            else:
                parts += [markdown_table(block), ""]
    return "\n".join(parts)


def write_atomic(path: Path, data: bytes | str) -> None:
    write_bytes_atomic(path, data if isinstance(data, bytes) else data.encode("utf-8"))


def render_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Render RUN/report.html and RUN/report.md (figures under RUN/figures/); returns both paths."""
    run = load_run(run_dir)
    with matplotlib.rc_context({"text.parse_math": False}):  # a "$" in a behavior name is just a character
        sections_, missing = sections(run)
    title = run.root.resolve().name
    figures_dir = run.root / "figures"
    figures_dir.mkdir(exist_ok=True)
    for section in sections_:
        for block in section.blocks:
            if isinstance(block, Figure):
                write_atomic(figures_dir / f"{block.id}.png", block.png)
    md_path, html_path = run.root / "report.md", run.root / "report.html"
    write_atomic(md_path, render_markdown(title, sections_, missing))
    write_atomic(html_path, render_html(title, sections_, missing))
    return html_path, md_path


# ---------------------------------------------------------------------------------------------------------
# CLI verb
# ---------------------------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="run folder made by `behaviorlm run` (needs data/stats.json; every other input is "
                             "optional and its section is skipped, with a note, when absent)")


def run(args: argparse.Namespace) -> int:
    html_path, md_path = render_report(args.run_dir)
    print(f"wrote {html_path} and {md_path}")
    return 0
