"""Loading a run folder for the report, and how its models, metrics and protocols are named and ordered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from behaviorlm.data.types import Stats
from behaviorlm.errors import InputError

METRIC_KEYS = ("prec_w", "rec_w", "overall", "head", "medium", "tail")
METRIC_LABELS = {"prec_w": "Prec_w", "rec_w": "Rec_w", "overall": "Overall", "head": "Head", "medium": "Medium",
                 "tail": "Tail", "hit@1": "Hit@1", "hit@3": "Hit@3", "hit@5": "Hit@5"}
PROTOCOLS = {"next_behavior": "Next-behavior protocol (test split)", "long_tail": "Long-tail protocol (balanced test)"}
PROTOCOL_SHORT = {"next_behavior": "NB", "long_tail": "LT"}
SPLITS = {"next_behavior": "test", "long_tail": "balanced_test"}

# Display order: the floors, from-scratch and LLM-enhanced baselines first, BehaviorLM last (the paper's Table 1).
MODEL_ORDER = ("most-frequent", "markov", "sasrec", "bert4rec", "llm-esr", "alphafuse", "zero-shot", "ft",
               "llara", "anchor-only", "tail-first", "no-aux", "no-dds", "no-cds", "no-a-tuning", "behaviorlm")
LLM_ENHANCED = {"llm-esr", "alphafuse"}
BASELINES = {"most-frequent", "markov", "sasrec", "bert4rec"} | LLM_ENHANCED
DISPLAY = {"most-frequent": "Most frequent", "markov": "Markov chain", "sasrec": "SASRec", "bert4rec": "BERT4Rec",
           "llm-esr": "LLM-ESR", "alphafuse": "AlphaFuse",
           "zero-shot": "LLM zero-shot (NT)", "ft": "LLM-FT (all behaviors)",
           "llara": "LLaRA (hybrid tokens)", "anchor-only": "Anchor-only",
           "tail-first": "Tail-first", "no-aux": "w/o aux. task", "no-dds": "w/o DDS", "no-cds": "w/o CDS",
           "no-a-tuning": "w/o A-Tuning", "behaviorlm": "BehaviorLM"}


def display(name: str) -> str:
    return DISPLAY.get(name, name)


def category(name: str, baseline: bool) -> str:
    """The model's family in the paper's Table 1: traditional, LLM-enhanced recommender, or language model."""
    if name.split("/")[-1] in LLM_ENHANCED:
        return "LLM-enhanced"
    return "Traditional" if baseline else "LLM"


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


EXPERIMENTS = ("comparison", "ablations", "few_shot", "anchor_tail", "sample_efficiency", "embedding_map",
               "model_size")


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
