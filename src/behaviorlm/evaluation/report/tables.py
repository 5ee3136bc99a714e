"""The report's tables: the Table block, cell formatting, and one builder per table.

Also the per-model numbers that a table and a figure share: mean anchor/tail accuracy (with its interval) and
the anchor/tail confusion counts. Intervals are the 95 % bootstrap intervals over users that metrics.json
carries (``evaluation/uncertainty.py``); BehaviorLM's improvement over the best other model is shown only where
a paired bootstrap of the difference, on both models' predictions of the same samples, excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.data.types import Stats
from behaviorlm.evaluation.report.artifacts import (
    METRIC_KEYS,
    METRIC_LABELS,
    PROTOCOLS,
    SPLITS,
    ModelResult,
    RunArtifacts,
    category,
    display,
    model_sort_key,
    read_optional_json,
)
from behaviorlm.evaluation.uncertainty import Difference, intervals, paired_difference, scored


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


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_ci(value, ci, digits: int = 4) -> str:
    """A value and, when there is one, its 95 % interval: "0.4123 [0.381, 0.447]"."""
    if value is None or not ci:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{ci[0]:.3f}, {ci[1]:.3f}]"


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


# -- builders -----------------------------------------------------------------------------------------------
def paired(run: RunArtifacts, a: str, b: str, protocol: str, metric: str) -> Difference | None:
    """A's metric minus B's with its paired-bootstrap interval; None unless both scored the same samples."""
    if a not in run.predictions or b not in run.predictions:
        return None
    split = SPLITS[protocol]
    ours, theirs = scored(run.predictions[a], split), scored(run.predictions[b], split)
    if ours.empty or not ours["sample_id"].equals(theirs["sample_id"]):
        return None
    return paired_difference(ours["label"], ours["pred"], theirs["pred"], ours["user_id"], run.stats.groups, metric,
                             by_behavior=split == "balanced_test")


def improvement(run: RunArtifacts, values: list[list[float | None]]) -> list[str]:
    """Per column: BehaviorLM vs the best other model, relative, where the paired interval excludes 0."""
    names = run.model_names
    ours = values[names.index("behaviorlm")]
    columns = [(p, k) for p in PROTOCOLS for k in METRIC_KEYS]
    cells = []
    for c, value in enumerate(ours):
        rivals = [(v[c], n) for n, v in zip(names, values) if n != "behaviorlm" and v[c] is not None]
        if value is None or not rivals:
            cells.append("–")
            continue
        best, rival = max(rivals)
        diff = paired(run, "behaviorlm", rival, *columns[c])
        if diff is None:
            cells.append("n.s. (unpaired)")
        elif not diff.significant:
            cells.append("n.s.")
        else:
            cells.append(f"{(value - best) / best * 100:+.1f}%" if best else f"{value - best:+.4f}")
    return cells


def overall_table(run: RunArtifacts) -> Table:
    """Table 1 analog from this run's metrics.json files: each value with its 95 % interval, and BehaviorLM's
    improvement over the best other model where a paired test finds one."""
    header, groups = metric_header(METRIC_KEYS)
    values = [[m.protocol(p).get(k) for p in PROTOCOLS for k in METRIC_KEYS] for m in run.models]
    cis = [[(m.protocol(p).get("ci95") or {}).get(k) for p in PROTOCOLS for k in METRIC_KEYS] for m in run.models]
    rows = [[category(m.name, m.baseline), display(m.name)] + [fmt_ci(v, ci) for v, ci in zip(vals, c)]
            for m, vals, c in zip(run.models, values, cis)]
    caption = ("Overall prediction performance (Table 1 analog): each value with its 95 % bootstrap interval over "
               "users [lo, hi]. Best per column in bold.")
    table = Table("table-overall", caption, ["Category", "Model"] + header, rows,
                  best_cells(list(zip(*values)), col_offset=2), header_groups=[("", 2)] + groups)
    if "behaviorlm" in run.model_names and len(run.models) > 1:
        table.caption += (" Improv.: BehaviorLM relative to the best other model of the column, shown where the "
                          "95 % interval of a paired bootstrap of the difference (the same users drawn for both) "
                          "excludes 0; n.s. where it does not; n.s. (unpaired) where the two models' predictions "
                          "of the same samples are not both in the run folder, so no paired test was possible.")
        table.footer.append(["", "Improv. vs best other"] + improvement(run, values))
    return table


def sample_size_table(run: RunArtifacts) -> Table:
    """How many samples (and users) each model was scored on, and how the long-tail samples split by group."""
    def counts(m: ModelResult, protocol: str) -> list[str]:
        metrics = m.protocol(protocol)
        by_group = metrics.get("n_by_group") or {}
        values = [metrics.get("n"), (metrics.get("bootstrap") or {}).get("users")]
        values += [by_group.get(g) for g in ("head", "medium", "tail")]
        return ["–" if v is None else f"{v:,}" for v in values]

    keys = ("n", "users", "head", "medium", "tail")
    rows = [[display(m.name)] + [c for p in PROTOCOLS for c in counts(m, p)] for m in run.models]
    labels = ["Samples", "Users", "Head", "Medium", "Tail"]
    return Table("table-sizes", "Samples each model was scored on: in all, their users (the bootstrap's "
                 "resampling unit), and per frequency group. A group's figure rests on its own samples only.",
                 ["Model"] + labels * len(PROTOCOLS), rows,
                 header_groups=[("", 1)] + [(PROTOCOLS[p], len(keys)) for p in PROTOCOLS])


def training_table(run: RunArtifacts) -> Table | None:
    """The training targets and CPU time behind each tuned model, read from the manifest's stage records."""
    stages = (run.manifest or {}).get("stages") or {}
    rows = []
    for m in run.models:
        info = read_optional_json(m.folder / "model.json") or {}
        record = stages.get(Path(str(info.get("adapter") or "")).parent.name)
        if m.baseline or record is None:
            continue
        chain = [record["result"]]
        if chain[0].get("stage_one") in stages:
            chain.insert(0, stages[chain[0]["stage_one"]]["result"])
        selection = stages.get(chain[-1].get("selection") or "", {}).get("seconds")
        targets = [r.get("targets") for r in chain]
        train = sum(float(r.get("train_seconds") or 0) for r in chain)
        rows.append([display(m.name), str(chain[-1].get("prompt_format", "paper")),
                     " + ".join("–" if t is None else f"{t:,}" for t in targets),
                     "–" if None in targets else f"{sum(targets):,}", format_seconds(train),
                     format_seconds(selection), format_seconds(train + float(selection or 0))])
    if not rows:
        return None
    return Table("table-training", "What each tuned model learned from: training targets per stage (stage one + "
                 "B-Tuning, read back from the encoded training sets) and the CPU time of tuning and selection.",
                 ["Model", "Format", "Targets by stage", "Targets", "Training", "Selection", "In all"], rows)


def comparison_table(comparison: dict) -> Table:
    """Table 1 analog over seeds: mean ± std, and the 95 % interval of the mean when the experiment has it."""
    rows_raw = sorted(comparison.get("rows", []), key=lambda r: model_sort_key(str(r.get("model"))))
    header, groups = metric_header(METRIC_KEYS)
    means, rows = [], []
    for row in rows_raw:
        cells, row_means = [], []
        for p in PROTOCOLS:
            for k in METRIC_KEYS:
                stat = (row.get(p) or {}).get(k) or {}
                mean, std, ci = stat.get("mean"), stat.get("std"), stat.get("ci95")
                row_means.append(mean)
                cells.append("–" if mean is None else f"{mean:.4f} ± {std or 0:.4f}"
                             + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        means.append(row_means)
        rows.append([display(str(row.get("model"))), str(len(row.get("seeds", [])))] + cells)
    return Table("table-comparison", "Overall performance over seeds, mean ± std (Table 1 analog), with the 95 % "
                 "bootstrap interval of the mean over the test users [lo, hi]: the std is the spread between training "
                 "seeds, the interval the uncertainty from the evaluated sample. Best mean per column in bold.",
                 ["Model", "Seeds"] + header, rows,
                 best_cells(list(zip(*means)), col_offset=2) if means else set(), header_groups=[("", 2)] + groups)


def comparison_difference_table(comparison: dict) -> Table | None:
    """Each model minus ``ft``, averaged over the seeds: the paired 95 % interval over test users and the per-seed
    std (training noise); bold where the interval excludes 0. None for an experiment written without them."""
    rows_raw = sorted((r for r in comparison.get("rows", []) if r.get("versus_ft")),
                      key=lambda r: model_sort_key(str(r.get("model"))))
    if not rows_raw:
        return None
    header, groups = metric_header(METRIC_KEYS)
    rows, bold = [], set()
    for r, row in enumerate(rows_raw):
        cells = []
        for c, (p, k) in enumerate((p, k) for p in PROTOCOLS for k in METRIC_KEYS):
            d = ((row["versus_ft"].get(p) or {}).get(k)) or {}
            if d.get("value") is None:
                cells.append("–")
                continue
            cell = f"{d['value']:+.4f} ± {d.get('std') or 0:.4f}"
            if d.get("ci95"):
                cell += f" [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" + ("" if d.get("significant") else " n.s.")
            if d.get("significant"):
                bold.add((r, c + 2))
            cells.append(cell)
        rows.append([display(str(row.get("model"))), str(len(row.get("seeds", [])))] + cells)
    return Table("table-comparison-vs-ft", "Difference to plain fine-tuning (ft) over seeds: the mean of the "
                 "model's metric minus ft's, ± the std of the per-seed differences (training noise), and the paired "
                 "95 % interval over test users of the mean difference (n.s.: it includes 0). Bold: the interval "
                 "excludes 0.", ["Model", "Seeds"] + header, rows, bold, header_groups=[("", 2)] + groups)


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


def anchor_tail_intervals(run: RunArtifacts) -> dict[str, tuple[list | None, list | None]]:
    """95 % intervals of each model's mean anchor and tail accuracy, from its balanced-test predictions
    (stratified user bootstrap, as the long-tail metrics)."""
    kinds = {b.name: "anchor" if b.anchor else "non-anchor" for b in run.stats.behaviors}
    out = {}
    for name, frame in run.predictions.items():
        rows = scored(frame, "balanced_test")
        if not rows.empty:
            ci = intervals(rows["label"], rows["pred"], rows["user_id"], kinds, by_behavior=True)
            out[name] = (ci.get("anchor"), ci.get("non-anchor"))
    return out


def ablation_table(ablations: dict) -> Table:
    """Table 5 analog: each ablation's change relative to BehaviorLM, with the paired difference and its interval
    where the experiment recorded them; only a drop whose interval excludes 0 can be the column's bold one."""
    keys = ("overall", "head", "medium", "tail")
    rows, drops = [], []
    for row in ablations.get("rows", []):
        difference = row.get("difference") or {}
        cells, row_drops = [], []
        for k in keys:
            value, paired = row.get(k), difference.get(k)
            cell = "–" if value is None else f"{value:+.2f}%"
            if paired and paired.get("ci95"):
                low, high = paired["ci95"]
                cell += f" ({paired['value']:+.3f} [{low:+.3f}, {high:+.3f}]{'' if paired['significant'] else ' n.s.'})"
            cells.append(cell)
            # A file written before differences were recorded: every drop counts, as it did then.
            counts = paired.get("significant") if paired else not difference
            row_drops.append(value if value is not None and value < 0 and counts else None)
        rows.append([display(str(row.get("variant")))] + cells)
        drops.append(row_drops)
    # The largest (significant) drop per column is the component that matters most there.
    worst = set()
    for c, column in enumerate(zip(*drops)):
        present = [v for v in column if v is not None]
        if present:
            worst |= {(r, c + 1) for r, v in enumerate(column) if v == min(present)}
    reference = display(str(ablations.get("reference", "behaviorlm")))
    absolute = ablations.get("reference_absolute") or {}
    levels = ", ".join(f"{k} {fmt(absolute.get(k))}" for k in keys if k in absolute)
    has_intervals = any(row.get("difference") for row in ablations.get("rows", []))
    return Table("table-ablations", f"Change of each ablation relative to full {reference}, in % "
                 "(Table 5 analog; negative = worse)"
                 + (", with the difference in accuracy on the same samples and its paired 95 % interval over test "
                    "users (n.s.: it includes 0; training noise is not in it). Largest significant drop per column "
                    "in bold." if has_intervals else ". Largest drop per column in bold; no intervals recorded (rerun "
                    "the experiment).")
                 + (f" {reference} itself, long-tail protocol: {levels}." if levels else ""),
                 ["Variant", "Overall", "Head", "Medium", "Tail"], rows, worst)


def model_size_table(model_size: dict) -> Table:
    keys = ("rec_w", "overall", "head", "medium", "tail")
    rows, values = [], []
    for row in model_size.get("rows", []):
        vals = [row["next_behavior"]["rec_w"]] + [row["long_tail"][k] for k in keys[1:]]
        values.append(vals)
        rows.append([str(row["base_model"]), display(str(row["model"]))] + [fmt(v) for v in vals])
    return Table("table-model-size", "The recipe with each base model: next-behavior Rec_w and the long-tail "
                 "protocol's class-averaged accuracies. Best per column in bold.",
                 ["Base model", "Model", "NB Rec_w", "LT Overall", "LT Head", "LT Medium", "LT Tail"], rows,
                 best_cells(list(zip(*values)), col_offset=2) if values else set())


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
