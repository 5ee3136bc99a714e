"""The report's figures: the Figure block (a rendered PNG) and one matplotlib builder per figure.

Bars carry their 95 % bootstrap interval (over users) as an error bar wherever the run has one.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from behaviorlm.evaluation.report.artifacts import (
    METRIC_LABELS,
    PROTOCOLS,
    RunArtifacts,
    display,
    model_sort_key,
)

GROUP_COLORS = {"head": "#3b6fb6", "medium": "#e69f00", "tail": "#2a9d5c"}
ANCHOR_COLOR, TAIL_COLOR = "#3b6fb6", "#e07b39"


@dataclass
class Figure:
    id: str
    caption: str
    png: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


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


def bar_top(series: dict[str, list[float | None]], intervals: dict[str, list] | None = None) -> float:
    """The highest bar or error-bar end."""
    tops = [v for values in series.values() for v in values if v is not None]
    tops += [ci[1] for cis in (intervals or {}).values() for ci in cis if ci]
    return max(tops, default=1.0)


def bar_groups(ax, labels: Sequence[str], series: dict[str, list[float | None]], colors: dict[str, str],
               annotate: bool = False, intervals: dict[str, list[list[float] | None]] | None = None) -> None:
    """Grouped bars: one group per label, one bar per series; missing values leave a gap marked '–'.
    ``intervals`` (per series, per label: [lo, hi] or None) become error bars."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        heights = [v if v is not None else 0 for v in values]
        bars = ax.bar(pos, heights, width, color=colors.get(name, "#999"), label=display(name))
        cis = (intervals or {}).get(name) or [None] * len(values)
        shown = [(p, v, ci) for p, v, ci in zip(pos, values, cis) if v is not None and ci]
        if shown:
            where, at, ci = zip(*shown)
            # A percentile interval need not contain its point; the bar still shows the interval's ends.
            below = [max(v - c[0], 0.0) for v, c in zip(at, ci)]
            above = [max(c[1] - v, 0.0) for v, c in zip(at, ci)]
            ax.errorbar(where, at, yerr=[below, above], fmt="none", ecolor="#333", elinewidth=0.8, capsize=2)
        for bar, v, ci in zip(bars, values, cis):
            if v is None:
                ax.text(bar.get_x() + width / 2, 0.005, "–", ha="center", va="bottom", fontsize=7)
            elif annotate:
                y = max(v, ci[1]) if ci else v
                ax.text(bar.get_x() + width / 2, y + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, min(1.05, bar_top(series, intervals) * 1.15 + 0.05))
    ax.grid(axis="y", alpha=0.3)


def group_labels(run: RunArtifacts, protocol: str, keys: Sequence[str]) -> list[str]:
    """Tick labels with each group's number of samples, when every model was scored on the same ones."""
    sizes = {(m.protocol(protocol).get("n"), tuple(sorted((m.protocol(protocol).get("n_by_group") or {}).items())))
             for m in run.models}
    if len(sizes) != 1:
        return [METRIC_LABELS[k] for k in keys]
    n, by_group = next(iter(sizes))
    counts = {"overall": n, **dict(by_group)}
    return [METRIC_LABELS[k] + (f"\n(n={counts[k]})" if counts.get(k) is not None else "") for k in keys]


def group_bars_figure(run: RunArtifacts) -> Figure:
    """Per-group accuracy of every model, on both protocols."""
    colors = model_colors(run.model_names)
    fig, axes = new_figure(12, 4.4, ncols=2, sharey=True)
    keys = ("overall", "head", "medium", "tail")
    top = 0.0
    for ax, protocol in zip(axes[0], PROTOCOLS):
        series = {m.name: [m.protocol(protocol).get(k) for k in keys] for m in run.models}
        intervals = {m.name: [(m.protocol(protocol).get("ci95") or {}).get(k) for k in keys] for m in run.models}
        bar_groups(ax, group_labels(run, protocol, keys), series, colors, intervals=intervals)
        ax.set_title(PROTOCOLS[protocol], fontsize=10)
        top = max(top, bar_top(series, intervals))
    axes[0][0].set_ylabel("mean per-behavior recall")
    axes[0][0].set_ylim(0, min(1.05, top * 1.15 + 0.05))  # shared y: the higher panel decides
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return Figure("fig-group-accuracy", "Accuracy per frequency group for every model (Overall = mean recall "
                  "over all behaviors; '–' = no behavior of that group evaluated; n = samples of the group). "
                  "Error bars: 95 % bootstrap intervals over users.", to_png(fig))


def anchor_tail_figure(run: RunArtifacts, accuracy: dict[str, tuple], intervals: dict[str, tuple] | None = None
                       ) -> Figure:
    """Figures 1c / 4: mean accuracy on anchor vs tail behaviors, per model, on the balanced set; ``intervals``
    (model: (anchor [lo, hi], tail [lo, hi])) become error bars."""
    names = list(accuracy)
    fig, axes = new_figure(max(6.0, 1.1 * len(names) + 2), 4.4)
    ax = axes[0][0]
    series = {"anchor behaviors": [accuracy[n][0] for n in names], "tail behaviors": [accuracy[n][1] for n in names]}
    colors = {"anchor behaviors": ANCHOR_COLOR, "tail behaviors": TAIL_COLOR}
    cis = [(intervals or {}).get(n) or (None, None) for n in names]
    bar_groups(ax, [display(n) for n in names], series, colors, annotate=True,
               intervals={"anchor behaviors": [c[0] for c in cis], "tail behaviors": [c[1] for c in cis]})
    ax.set_xticks(ax.get_xticks(), [display(n) for n in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean recall (long-tail protocol)")
    ax.set_title("Anchor vs tail behavior accuracy", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return Figure("fig-anchor-tail", "Mean accuracy over anchor and over tail behaviors on the balanced test set "
                  "(Figures 1c and 4 analog). Error bars: 95 % bootstrap intervals over users, for models whose "
                  "predictions are in the run folder.", to_png(fig))


def few_shot_figure(few_shot: dict) -> Figure:
    """Figure 3b: B-Tuning accuracy against F, the samples per behavior."""
    points = sorted(few_shot.get("points", []), key=lambda p: p["F"])
    fs = [p["F"] for p in points]
    fig, axes = new_figure(6.5, 4.2)
    ax = axes[0][0]
    styles = {"overall": ("black", "o"), "head": (GROUP_COLORS["head"], "s"),
              "medium": (GROUP_COLORS["medium"], "^"), "tail": (GROUP_COLORS["tail"], "D")}
    for key, (color, marker) in styles.items():
        shown = [p for p in points if p.get(key) is not None]
        if not shown:
            continue
        xs, ys = [p["F"] for p in shown], [p[key] for p in shown]
        ax.plot(xs, ys, color=color, marker=marker, label=METRIC_LABELS[key], linewidth=2 if key == "overall" else 1.3)
        bounds = [(p.get("ci95") or {}).get(key) for p in shown]
        if all(bounds):  # the 95 % interval over users of each point (runs before intervals have none)
            low = [y - b[0] for y, b in zip(ys, bounds)]
            high = [b[1] - y for y, b in zip(ys, bounds)]
            ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xticks(fs, [str(f) for f in fs])
    ax.minorticks_off()
    ax.set_xlabel("F: B-Tuning samples per behavior (log scale)")
    ax.set_ylabel("mean per-behavior recall (long-tail protocol)")
    ax.set_title("Few-shot B-Tuning", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return Figure("fig-few-shot", "Accuracy against the number of B-Tuning samples per behavior "
                  "(Figure 3b analog). Error bars: 95 % bootstrap intervals over users.", to_png(fig))


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

