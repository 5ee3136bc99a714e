"""``behaviorlm report RUN_DIR``: one page that shows how every model did on a run folder, and why.

It mirrors the paper's Table 1 (six metrics on both protocols), Table 5 (ablations), Figure 1a (long-tail
distribution), 1b (embedding map), 1c/4 (anchor vs tail accuracy), 3b (few-shot curve) and 5 (sample
efficiency), plus a per-behavior accuracy table, anchor/tail confusion matrices and the B-Tuning
selection accounting. Only ``RUN/data/stats.json`` is required: each section is rendered when its inputs
exist, and the missing ones are listed in a "not run" note.

Writes ``RUN/report.html`` (self-contained: inline CSS, figures as inline base64 PNG, no scripts, opens
offline) and ``RUN/report.md`` (Markdown tables; figures saved as ``RUN/figures/*.png``).

The module reads top to bottom: loading the run folder, table builders, figure builders, the sections
that combine them, then the HTML/Markdown writers and the CLI verb.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from jinja2 import Environment
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from behaviorlm.data.types import Stats
from behaviorlm.errors import InputError

METRIC_KEYS = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
METRIC_LABELS = {"prec_w": "Prec_w", "rec_w": "Rec_w", "overall": "Overall", "head": "Head", "medium": "Medium",
                 "tail": "Tail", "hit@1": "Hit@1", "hit@3": "Hit@3", "hit@5": "Hit@5"}
PROTOCOLS = {"next_behavior": "Next-behavior protocol (test split)", "long_tail": "Long-tail protocol (balanced test)"}
PROTOCOL_SHORT = {"next_behavior": "NB", "long_tail": "LT"}
GROUP_COLORS = {"head": "#3b6fb6", "medium": "#e69f00", "tail": "#2a9d5c"}
ANCHOR_COLOR, TAIL_COLOR = "#3b6fb6", "#e07b39"

# Display order: the floors and from-scratch baselines first, BehaviorLM last (as in the paper's Table 1).
MODEL_ORDER = ("most-frequent", "markov", "sasrec", "bert4rec", "zero-shot", "ft", "anchor-only", "tail-first",
               "no-aux", "no-dds", "no-cds", "no-a-tuning", "behaviorlm")
BASELINES = {"most-frequent", "markov", "sasrec", "bert4rec"}
DISPLAY = {"most-frequent": "Most frequent", "markov": "Markov chain", "sasrec": "SASRec", "bert4rec": "BERT4Rec",
           "zero-shot": "LLM zero-shot (NT)", "ft": "LLM-FT (all behaviors)", "anchor-only": "Anchor-only",
           "tail-first": "Tail-first", "no-aux": "w/o aux. task", "no-dds": "w/o DDS", "no-cds": "w/o CDS",
           "no-a-tuning": "w/o A-Tuning", "behaviorlm": "BehaviorLM"}


def display(name: str) -> str:
    return DISPLAY.get(name, name)


def model_sort_key(name: str) -> tuple[float, str]:
    base = name.split("/")[-1]
    # Unknown names (e.g. model-size runs) go just before BehaviorLM so the reference stays last.
    rank = MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER) - 1.5
    return (rank, name)


# ---------------------------------------------------------------------------------------------------------
# Loading the run folder
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ModelResult:
    name: str
    folder: Path
    metrics: dict
    baseline: bool

    def protocol(self, key: str) -> dict:
        value = self.metrics.get(key)
        return value if isinstance(value, dict) else {}


@dataclass
class RunArtifacts:
    """Everything the report reads from a run folder; absent inputs are None or empty."""

    root: Path
    stats: Stats
    config: dict | None = None
    manifest: dict | None = None
    models: list[ModelResult] = field(default_factory=list)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    selections: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def anchor_threshold(self) -> float | None:
        value = self.stats.settings.get("anchor_threshold")
        if value is None and self.config:
            value = (self.config.get("data") or {}).get("anchor_threshold")
        return float(value) if value is not None else None


EXPERIMENTS = ("comparison", "ablations", "few_shot", "anchor_tail", "sample_efficiency", "embedding_map")


def read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", file=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", file=str(path))
    return raw


def read_optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def load_run(run_dir: str | Path) -> RunArtifacts:
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError("run folder not found", file=str(root))
    stats_path = root / "data" / "stats.json"
    if not stats_path.is_file():
        raise InputError("no data/stats.json: not a run folder made by `behaviorlm run`", file=str(root))
    try:
        stats = Stats.from_json(read_json(stats_path))
    except (KeyError, TypeError) as exc:
        raise InputError(f"not a behavior statistics file ({exc})", file=str(stats_path)) from None

    run = RunArtifacts(root=root, stats=stats, manifest=read_optional_json(root / "manifest.json"))
    if (root / "config.yaml").is_file():
        try:
            run.config = yaml.safe_load((root / "config.yaml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML ({str(exc).splitlines()[0]})", file=str(root / "config.yaml")) from None

    found = sorted(root.glob("*/metrics.json")) + sorted(root.glob("baselines/*/metrics.json"))
    seen: set[str] = set()
    for path in found:
        metrics = read_json(path)
        folder = path.parent
        name = str(metrics.get("model") or folder.name)
        if name in seen:  # same model name in two folders: tell them apart by folder
            name = folder.relative_to(root).as_posix()
        seen.add(name)
        baseline = folder.parent.name == "baselines" or name in BASELINES
        run.models.append(ModelResult(name, folder, metrics, baseline))
        if (folder / "predictions.parquet").is_file():
            run.predictions[name] = pd.read_parquet(folder / "predictions.parquet")
    run.models.sort(key=lambda m: model_sort_key(m.name))

    selection_files = [root / "selection" / "selection.json"] + sorted(root.glob("stages/*/selection.json"))
    for path in selection_files:
        if path.is_file():
            run.selections[path.parent.relative_to(root).as_posix()] = read_json(path)
    for name in EXPERIMENTS:
        raw = read_optional_json(root / "experiments" / f"{name}.json")
        if raw is not None:
            run.experiments[name] = raw
    return run


# ---------------------------------------------------------------------------------------------------------
# Report blocks: tables, figures, sections
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    id: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    footer: list[list[str]] = field(default_factory=list)
    header_groups: list[tuple[str, int]] = field(default_factory=list)
    """Optional spanning header row: (label, number of columns)."""
    css_class: str = ""


@dataclass
class Figure:
    id: str
    caption: str
    png: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Table | Figure] = field(default_factory=list)


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def best_cells(columns: Sequence[Sequence[float | None]], row_offset: int = 0, col_offset: int = 0) -> set:
    """(row, col) of each column's maximum (ties all bold), ignoring missing values."""
    out = set()
    for c, column in enumerate(columns):
        values = [v for v in column if v is not None]
        if len(set(values)) < 2:  # nothing to single out
            continue
        top = max(values)
        out |= {(r + row_offset, c + col_offset) for r, v in enumerate(column) if v is not None and v == top}
    return out


def format_seconds(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def metric_header(keys: Sequence[str], protocols: Sequence[str] = tuple(PROTOCOLS)) -> tuple[list[str], list]:
    header = [METRIC_LABELS[k] for _ in protocols for k in keys]
    return header, [(PROTOCOLS[p], len(keys)) for p in protocols]


# -- tables -------------------------------------------------------------------------------------------------
def overall_table(run: RunArtifacts) -> Table:
    """Table 1 analog from this run's metrics.json files, with BehaviorLM's improvement over the best other."""
    header, groups = metric_header(METRIC_KEYS)
    values = [[m.protocol(p).get(k) for p in PROTOCOLS for k in METRIC_KEYS] for m in run.models]
    rows = [["Traditional" if m.baseline else "LLM", display(m.name)] + [fmt(v) for v in vals]
            for m, vals in zip(run.models, values)]
    table = Table("table-overall", "Overall prediction performance (Table 1 analog). Best per column in bold.",
                  ["Category", "Model"] + header, rows, best_cells(list(zip(*values)), col_offset=2),
                  header_groups=[("", 2)] + groups)
    names = run.model_names
    if "behaviorlm" in names and len(names) > 1:
        ours = values[names.index("behaviorlm")]
        others = [v for n, v in zip(names, values) if n != "behaviorlm"]
        improv = []
        for c, value in enumerate(ours):
            rivals = [o[c] for o in others if o[c] is not None]
            best = max(rivals) if rivals else None
            improv.append(f"{(value - best) / best * 100:+.1f}%" if value is not None and best else "–")
        table.footer.append(["", "Improv. vs best other"] + improv)
    return table


def comparison_table(comparison: dict) -> Table:
    """Table 1 analog over seeds: mean ± std."""
    rows_raw = sorted(comparison.get("rows", []), key=lambda r: model_sort_key(str(r.get("model"))))
    header, groups = metric_header(METRIC_KEYS)
    means, rows = [], []
    for row in rows_raw:
        cells, row_means = [], []
        for p in PROTOCOLS:
            for k in METRIC_KEYS:
                stat = (row.get(p) or {}).get(k) or {}
                mean, std = stat.get("mean"), stat.get("std")
                row_means.append(mean)
                cells.append("–" if mean is None else f"{mean:.4f} ± {std or 0:.4f}")
        means.append(row_means)
        rows.append([display(str(row.get("model"))), str(len(row.get("seeds", [])))] + cells)
    return Table("table-comparison", "Overall performance over seeds, mean ± std (Table 1 analog). "
                 "Best mean per column in bold.", ["Model", "Seeds"] + header, rows,
                 best_cells(list(zip(*means)), col_offset=2) if means else set(), header_groups=[("", 2)] + groups)


def hit_rate_table(run: RunArtifacts) -> Table | None:
    keys = ("hit@1", "hit@3", "hit@5")
    if not any(m.protocol(p).get("hit@1") is not None for m in run.models for p in PROTOCOLS):
        return None
    header, groups = metric_header(keys)
    values = [[m.protocol(p).get(k) for p in PROTOCOLS for k in keys] for m in run.models]
    rows = [[display(m.name)] + [fmt(v) for v in vals] + [format_seconds(m.metrics.get("seconds"))]
            for m, vals in zip(run.models, values)]
    return Table("table-hits", "Top-k hit rates (truth among the k highest-ranked candidates) and the seconds "
                 "each model's run took.", ["Model"] + header + ["Seconds"], rows,
                 best_cells(list(zip(*values)), col_offset=1), header_groups=[("", 1)] + groups + [("", 1)])


def per_behavior_accuracy(model: ModelResult) -> tuple[dict[str, float], str]:
    """Per-behavior recall on the balanced set (every behavior has samples there), else on the test split."""
    for protocol in ("long_tail", "next_behavior"):
        per = model.protocol(protocol).get("per_behavior")
        if per:
            return per, protocol
    return {}, ""


def per_behavior_table(run: RunArtifacts) -> Table:
    behaviors = sorted(run.stats.behaviors, key=lambda b: -b.share)
    accs = [per_behavior_accuracy(m) for m in run.models]
    fallback = [display(m.name) for m, (_, p) in zip(run.models, accs) if p == "next_behavior"]
    values = [[acc.get(b.name) for acc, _ in accs] for b in behaviors]
    rows = [[b.name, b.group, "yes" if b.anchor else "", f"{b.share * 100:.2f}%"] + [fmt(v, 3) for v in vals]
            for b, vals in zip(behaviors, values)]
    bold = set()
    for r, vals in enumerate(values):  # best model per behavior
        present = [v for v in vals if v is not None]
        if len(set(present)) > 1:
            bold |= {(r, c + 4) for c, v in enumerate(vals) if v == max(present)}
    caption = ("Accuracy (recall) per behavior on the long-tail protocol, behaviors sorted by share of events. "
               "Best model per behavior in bold.")
    if fallback:
        caption += f" Next-behavior protocol for: {', '.join(fallback)}."
    return Table("table-per-behavior", caption, ["Behavior", "Group", "Anchor", "Share"]
                 + [display(m.name) for m in run.models], rows, bold)


def anchor_tail_accuracy(run: RunArtifacts) -> dict[str, tuple[float | None, float | None]]:
    """Mean long-tail-protocol recall over anchor and over tail (non-anchor) behaviors, per model.

    Computed from each model's per-behavior recall; models evaluated only by the anchor-tail experiment
    (experiments/anchor_tail.json, same data) are added from its rows.
    """
    anchors = run.stats.anchors
    out = {}
    for m in run.models:
        per = m.protocol("long_tail").get("per_behavior") or {}
        if not per:
            continue
        a = [v for b, v in per.items() if b in anchors]
        t = [v for b, v in per.items() if b not in anchors]
        out[m.name] = (float(np.mean(a)) if a else None, float(np.mean(t)) if t else None)
    for row in (run.experiments.get("anchor_tail") or {}).get("rows", []):
        out.setdefault(str(row.get("model")), (row.get("anchor"), row.get("tail")))
    return dict(sorted(out.items(), key=lambda item: model_sort_key(item[0])))


def ablation_table(ablations: dict) -> Table:
    keys = ("overall", "head", "medium", "tail")
    rows, values = [], []
    for row in ablations.get("rows", []):
        vals = [row.get(k) for k in keys]
        values.append(vals)
        rows.append([display(str(row.get("variant")))] + ["–" if v is None else f"{v:+.2f}%" for v in vals])
    # The largest drop per column is the component that matters most there.
    worst = set()
    for c, column in enumerate(zip(*values)):
        present = [v for v in column if v is not None]
        if present and min(present) < 0:
            worst |= {(r, c + 1) for r, v in enumerate(column) if v == min(present)}
    reference = display(str(ablations.get("reference", "behaviorlm")))
    absolute = ablations.get("reference_absolute") or {}
    levels = ", ".join(f"{k} {fmt(absolute.get(k))}" for k in keys if k in absolute)
    return Table("table-ablations", f"Change of each ablation relative to full {reference}, in % "
                 "(Table 5 analog; negative = worse). Largest drop per column in bold."
                 + (f" {reference} itself, long-tail protocol: {levels}." if levels else ""),
                 ["Variant", "Overall", "Head", "Medium", "Tail"], rows, worst)


def confusion_counts(frame: pd.DataFrame, stats: Stats) -> pd.DataFrame | None:
    """2x2 (plus "invalid" when a prediction is not a known behavior) counts on the balanced test set."""
    if "label" not in frame:
        return None
    if "split" in frame:
        frame = frame[frame["split"] == "balanced_test"]
    if frame.empty:
        return None
    if "pred" in frame:
        pred = frame["pred"]
    elif "top" in frame:
        pred = frame["top"].map(lambda top: top[0]["behavior"] if top is not None and len(top) else None)
    else:
        return None
    anchors, known = stats.anchors, set(stats.names)

    def kind(b) -> str:
        return "anchor" if b in anchors else "tail" if b in known else "invalid"

    table = pd.crosstab(frame["label"].map(kind), pred.map(kind))
    columns = ["anchor", "tail"] + (["invalid"] if "invalid" in table.columns else [])
    return table.reindex(index=["anchor", "tail"], columns=columns, fill_value=0)


def confusion_table(matrices: dict[str, pd.DataFrame]) -> Table:
    rows = []
    for name, m in matrices.items():
        share = m.div(m.sum(axis=1).replace(0, np.nan), axis=0)
        cells = [f"{share.loc[t, p] * 100:.1f}%" if not np.isnan(share.loc[t, p]) else "–"
                 for t in ("anchor", "tail") for p in ("anchor", "tail")]
        invalid = int(m["invalid"].sum()) if "invalid" in m else 0
        rows.append([display(name)] + cells + [str(invalid), str(int(m.values.sum()))])
    return Table("table-confusion", "Anchor/tail confusion on the balanced test set: share of each true kind "
                 "predicted as each kind (rows sum to 100% with invalid answers).",
                 ["Model", "anchor → anchor", "anchor → tail", "tail → anchor", "tail → tail", "invalid", "n"], rows)


def selection_table(name: str, selection: dict, stats: Stats) -> tuple[Table, str]:
    """Per behavior: how many B-Tuning samples of each kind were used (hard contrastive, hard, random fill)."""
    per_behavior = selection.get("kinds")
    if per_behavior is None:  # also accept {behavior: {kind: n}} at the top level
        per_behavior = {k: v for k, v in selection.items() if isinstance(v, dict) and k in stats.by_name}
    kinds = ["dds_cds", "dds_only", "random"]
    kinds += sorted({k for v in per_behavior.values() for k in v} - set(kinds))
    scanned = selection.get("scanned") or {}
    order = sorted(per_behavior, key=lambda b: -(stats.by_name[b].share if b in stats.by_name else 0))
    rows = []
    for b in order:
        info = stats.by_name.get(b)
        counts = [int(per_behavior[b].get(k, 0)) for k in kinds]
        rows.append([b, info.group if info else "?", "yes" if info and info.anchor else ""] + [str(c) for c in counts]
                    + [str(sum(counts))] + ([str(scanned.get(b, "–"))] if scanned else []))
    totals = [sum(int(per_behavior[b].get(k, 0)) for b in order) for k in kinds]
    footer = [["Total", "", ""] + [str(t) for t in totals] + [str(sum(totals))]
              + ([str(sum(v for v in scanned.values() if isinstance(v, int)))] if scanned else [])]
    labels = {"dds_cds": "DDS+CDS (same-kind mistake)", "dds_only": "DDS only (other mistake)",
              "random": "random fill"}
    header = ["Behavior", "Group", "Anchor"] + [labels.get(k, k) for k in kinds] + ["Total"]
    header += ["Scanned"] if scanned else []
    facts = []
    if "selected" in selection:
        facts.append(f"{selection['selected']} samples selected")
    if "scored" in selection:
        facts.append(f"{selection['scored']} training samples scored by the stage-one model in "
                     f"{format_seconds(selection.get('seconds'))}")
    table = Table(f"table-selection-{slug(name)}", f"B-Tuning selection ({name}): samples used per behavior by "
                  "kind.", header, rows, footer=footer)
    return table, "; ".join(facts)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# -- figures ------------------------------------------------------------------------------------------------
def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    fig = MplFigure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def to_png(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed color per model across every figure; BehaviorLM always red."""
    palette = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
               "#64b5cd", "#2f4b7c", "#a05195", "#003f5c"]
    others = [n for n in names if n != "behaviorlm"]
    colors = {n: palette[i % len(palette)] for i, n in enumerate(others)}
    colors["behaviorlm"] = "#c44e52"
    return colors


def long_tail_figure(run: RunArtifacts) -> Figure:
    """Figure 1a: behavior shares sorted, colored by frequency group, with the anchor threshold."""
    behaviors = sorted(run.stats.behaviors, key=lambda b: -b.share)
    n = len(behaviors)
    fig, axes = new_figure(min(max(7.0, 0.22 * n + 2), 16), 4.6)
    ax = axes[0][0]
    x = np.arange(n)
    ax.bar(x, [b.share * 100 for b in behaviors], color=[GROUP_COLORS.get(b.group, "#999") for b in behaviors],
           edgecolor=["black" if b.anchor else "none" for b in behaviors], linewidth=0.6)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_ylabel("share of events (log scale)")
    if n <= 70:
        ax.set_xticks(x, [b.name for b in behaviors], rotation=90, fontsize=7 if n > 30 else 8)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"{n} behaviors, ranked by frequency")
    threshold = run.anchor_threshold()
    handles = [Patch(color=c, label=g) for g, c in GROUP_COLORS.items() if any(b.group == g for b in behaviors)]
    if threshold is not None:
        handles.append(ax.axhline(threshold * 100, color="black", linestyle="--", linewidth=1,
                                  label=f"anchor threshold ({threshold * 100:g}%)"))
    anchors = [b for b in behaviors if b.anchor]
    covered = sum(b.share for b in anchors) * 100
    ax.set_title(f"Long-tail distribution of behaviors\n{len(anchors)} anchor behaviors (outlined) cover "
                 f"{covered:.1f}% of events; {n - len(anchors)} tail behaviors share the rest", fontsize=10)
    ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    ax.set_xlim(-0.7, n - 0.3)
    ax.grid(axis="y", alpha=0.3, which="major")
    return Figure("fig-long-tail", "Behavior frequency distribution (Figure 1a analog).", to_png(fig))


def bar_groups(ax, labels: Sequence[str], series: dict[str, list[float | None]], colors: dict[str, str],
               annotate: bool = False) -> None:
    """Grouped bars: one group per label, one bar per series; missing values leave a gap marked '–'."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(pos, heights, width, color=colors.get(name, "#999"), label=display(name))
        for bar, v in zip(bars, values):
            if v is None:
                ax.text(bar.get_x() + width / 2, 0.005, "–", ha="center", va="bottom", fontsize=7)
            elif annotate:
                ax.text(bar.get_x() + width / 2, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels)
    top = max((v for values in series.values() for v in values if v is not None), default=1.0)
    ax.set_ylim(0, min(1.05, top * 1.15 + 0.05))
    ax.grid(axis="y", alpha=0.3)


def group_bars_figure(run: RunArtifacts) -> Figure:
    """Per-group accuracy of every model, on both protocols."""
    colors = model_colors(run.model_names)
    fig, axes = new_figure(12, 4.4, ncols=2, sharey=True)
    keys = ("overall", "head", "medium", "tail")
    for ax, protocol in zip(axes[0], PROTOCOLS):
        series = {m.name: [m.protocol(protocol).get(k) for k in keys] for m in run.models}
        bar_groups(ax, [METRIC_LABELS[k] for k in keys], series, colors)
        ax.set_title(PROTOCOLS[protocol], fontsize=10)
    axes[0][0].set_ylabel("mean per-behavior recall")
    top = max((v for m in run.models for p in PROTOCOLS for k in keys if (v := m.protocol(p).get(k)) is not None),
              default=1.0)
    axes[0][0].set_ylim(0, min(1.05, top * 1.15 + 0.05))  # shared y: the higher panel decides
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return Figure("fig-group-accuracy", "Accuracy per frequency group for every model (Overall = mean recall "
                  "over all behaviors; '–' = no behavior of that group evaluated).", to_png(fig))


def anchor_tail_figure(run: RunArtifacts, accuracy: dict[str, tuple]) -> Figure:
    """Figures 1c / 4: mean accuracy on anchor vs tail behaviors, per model, on the balanced set."""
    names = list(accuracy)
    fig, axes = new_figure(max(6.0, 1.1 * len(names) + 2), 4.4)
    ax = axes[0][0]
    series = {"anchor behaviors": [accuracy[n][0] for n in names], "tail behaviors": [accuracy[n][1] for n in names]}
    colors = {"anchor behaviors": ANCHOR_COLOR, "tail behaviors": TAIL_COLOR}
    bar_groups(ax, [display(n) for n in names], series, colors, annotate=True)
    ax.set_xticks(ax.get_xticks(), [display(n) for n in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean recall (long-tail protocol)")
    ax.set_title("Anchor vs tail behavior accuracy", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return Figure("fig-anchor-tail", "Mean accuracy over anchor and over tail behaviors on the balanced test set "
                  "(Figures 1c and 4 analog).", to_png(fig))


def few_shot_figure(few_shot: dict) -> Figure:
    """Figure 3b: B-Tuning accuracy against F, the samples per behavior."""
    points = sorted(few_shot.get("points", []), key=lambda p: p["F"])
    fs = [p["F"] for p in points]
    fig, axes = new_figure(6.5, 4.2)
    ax = axes[0][0]
    styles = {"overall": ("black", "o"), "head": (GROUP_COLORS["head"], "s"),
              "medium": (GROUP_COLORS["medium"], "^"), "tail": (GROUP_COLORS["tail"], "D")}
    for key, (color, marker) in styles.items():
        xs = [f for f, p in zip(fs, points) if p.get(key) is not None]
        ys = [p[key] for p in points if p.get(key) is not None]
        if xs:
            ax.plot(xs, ys, color=color, marker=marker, label=METRIC_LABELS[key], linewidth=2 if key == "overall" else 1.3)
    ax.set_xscale("log")
    ax.set_xticks(fs, [str(f) for f in fs])
    ax.minorticks_off()
    ax.set_xlabel("F: B-Tuning samples per behavior (log scale)")
    ax.set_ylabel("mean per-behavior recall (long-tail protocol)")
    ax.set_title("Few-shot B-Tuning", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return Figure("fig-few-shot", "Accuracy against the number of B-Tuning samples per behavior "
                  "(Figure 3b analog).", to_png(fig))


def sample_efficiency_figure(efficiency: dict) -> Figure:
    """Figure 5: accuracy against training samples (log x); single-point models drawn as a reference level."""
    by_model: dict[str, list[dict]] = {}
    for p in efficiency.get("points", []):
        by_model.setdefault(str(p.get("model")), []).append(p)
    colors = model_colors(sorted(by_model, key=model_sort_key))
    fig, axes = new_figure(11, 4.2, ncols=2)
    for ax, key, label in zip(axes[0], ("rec_w", "overall"), ("Rec_w (accuracy)", "Overall (mean recall)")):
        for name in sorted(by_model, key=model_sort_key):
            pts = sorted((p for p in by_model[name] if p.get(key) is not None), key=lambda p: p["train_samples"])
            if not pts:
                continue
            xs, ys = [p["train_samples"] for p in pts], [p[key] for p in pts]
            color = colors[name]
            if len(pts) > 1:
                ax.plot(xs, ys, marker="o", color=color, label=display(name))
            else:
                ax.plot(xs, ys, marker="*", markersize=15, linestyle="none", color=color,
                        label=f"{display(name)} ({xs[0]:,} samples)")
                ax.axhline(ys[0], color=color, linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("training samples (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Sample efficiency: accuracy against training-set size", fontsize=10)
    axes[0][0].legend(fontsize=8, frameon=False)
    return Figure("fig-sample-efficiency", "Accuracy against training-set size (Figure 5 analog): from-scratch "
                  "models as curves, tuned language models as points with a dotted level line.", to_png(fig))


def embedding_map_figure(emb: dict) -> Figure:
    """Figure 1b: behavior-name embeddings in 2-D, anchors and tails marked, marker area ~ share."""
    points = emb.get("points", [])
    fig, axes = new_figure(8, 6.2)
    ax = axes[0][0]
    label_all = len(points) <= 40
    for is_anchor, color, label in ((True, ANCHOR_COLOR, "anchor behaviors"), (False, TAIL_COLOR, "tail behaviors")):
        pts = [p for p in points if bool(p.get("anchor")) == is_anchor]
        if not pts:
            continue
        sizes = [25 + 1500 * math.sqrt(max(float(p.get("share") or 0), 0)) for p in pts]
        ax.scatter([p["x"] for p in pts], [p["y"] for p in pts], s=sizes, color=color, alpha=0.65,
                   edgecolors="white", linewidths=0.6, label=label)
        for p in pts:
            if label_all or is_anchor:
                ax.annotate(p["behavior"], (p["x"], p["y"]), xytext=(4, 3), textcoords="offset points",
                            fontsize=7, color="#222")
    ev = emb.get("explained_variance")
    pcs = [f"PC{i + 1}" + (f" ({ev[i] * 100:.0f}% of variance)" if ev and len(ev) > i else "") for i in range(2)]
    ax.set_xlabel(pcs[0])
    ax.set_ylabel(pcs[1])
    ax.set_title(f"Behavior-name embeddings of {emb.get('model', 'the base model')} (PCA)", fontsize=10)
    legend = ax.legend(fontsize=8, frameon=False, markerscale=0.6)
    for handle in legend.legend_handles:
        handle.set_sizes([60])
    ax.grid(alpha=0.2)
    note = "" if label_all else " Only anchors are labeled."
    return Figure("fig-embedding-map", "Behavior names embedded by the base model and projected to 2-D "
                  f"(Figure 1b analog); marker area grows with the behavior's share.{note}", to_png(fig))


def confusion_figure(matrices: dict[str, pd.DataFrame]) -> Figure:
    names = list(matrices)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = new_figure(3.2 * ncols + 0.6, 2.9 * nrows, ncols=ncols, nrows=nrows)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_axis_off()
            continue
        m = matrices[names[i]]
        share = m.div(m.sum(axis=1).replace(0, np.nan), axis=0).fillna(0).to_numpy()
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(share):
            ax.text(c, r, f"{int(m.iat[r, c])}\n{v * 100:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 else "black")
        ax.set_xticks(range(m.shape[1]), [f"pred. {c}" for c in m.columns], fontsize=8)
        ax.set_yticks(range(2), ["true anchor", "true tail"], fontsize=8)
        ax.set_title(display(names[i]), fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.7, label="share of the true kind")
    return Figure("fig-confusion", "Anchor/tail confusion on the balanced test set: counts and share of each "
                  "true kind (row).", to_png(fig))


# -- sections -----------------------------------------------------------------------------------------------
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
             "so Overall/Head/Medium/Tail there measure robustness on rare behaviors.",
             ([overall_table(run)] if run.models else [])
             + ([comparison_table(exp["comparison"])] if "comparison" in exp else [])
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
                         [anchor_tail_figure(run, accuracy)]))
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
                "(NAME: comparison, ablations, few-shot, anchor-tail, sample-efficiency, embedding-map or all); "
                "metrics.json, predictions and selection files from `behaviorlm run`.")


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)


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
