"""Compare models scored on the same samples: each model's metrics and its paired difference to a reference.

    behaviorlm compare runs/demo/ft runs/demo/behaviorlm runs/demo/experiments/few_shot/F-*/behaviorlm
    behaviorlm compare runs/demo/ft runs/demo/baselines/markov --data runs/demo/data --json out.json

Each MODEL is a folder with the ``predictions.parquet`` that ``evaluate``, ``run``, ``experiment`` and ``baseline``
write. The first is the reference (or ``--reference``). Printed per protocol: every model's metrics with their 95 %
intervals (bootstrap over users, stratified by behavior on the long-tail protocol, as in ``metrics.json``), then
each model minus the reference on the samples both scored, with the paired interval; ``*`` marks an interval that
includes 0 (not significant). The behavior groups come from the prepared data (``--data``; by default the first
``data/stats.json`` found above the first model folder).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from behaviorlm.data.types import PreparedData
from behaviorlm.errors import InputError

PROTOCOL_SPLITS = {"next_behavior": "test", "long_tail": "balanced_test"}
SHOWN = {"next_behavior": ("prec_w", "rec_w"), "long_tail": ("overall", "head", "medium", "tail")}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="folders holding predictions.parquet")
    parser.add_argument("--reference", help="the model folder the others are compared with (default: the first)")
    parser.add_argument("--data", help="prepared data folder with stats.json (default: found above the first model)")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def find_data(folder: Path) -> Path:
    for parent in [folder, *folder.resolve().parents]:
        if (parent / "data" / "stats.json").is_file():
            return parent / "data"
    raise InputError("no data/stats.json above this folder; pass --data", file=str(folder))


def read_predictions(folder: Path) -> pd.DataFrame:
    path = folder / "predictions.parquet"
    if not path.is_file():
        raise InputError("no predictions.parquet (run `behaviorlm evaluate` or `behaviorlm run` first)",
                         file=str(folder))
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"cannot read ({type(exc).__name__})", file=str(path)) from None


def compare(frames: dict[str, pd.DataFrame], reference: str, groups: dict[str, str]) -> dict:
    """Per protocol: each model's metrics with ``ci95`` and, for the others, ``minus_reference`` on shared samples."""
    from behaviorlm.evaluation.metrics import compute_metrics
    from behaviorlm.evaluation.uncertainty import paired_differences, scored

    out: dict = {}
    for protocol, split in PROTOCOL_SPLITS.items():
        by_behavior = split == "balanced_test"
        rows = {name: scored(frame, split) for name, frame in frames.items()}
        if rows[reference].empty:
            continue
        ref = rows[reference].set_index("sample_id")
        section = {}
        for name, row in rows.items():
            if row.empty:
                continue
            metrics = compute_metrics(row["label"], row["pred"], groups, users=row["user_id"], by_behavior=by_behavior)
            entry = {"n": metrics["n"], **{k: metrics.get(k) for k in SHOWN[protocol]},
                     "ci95": {k: metrics["ci95"].get(k) for k in SHOWN[protocol]}}
            if name != reference:
                shared = row[row["sample_id"].isin(ref.index)]
                theirs = ref.loc[shared["sample_id"], "pred"].to_numpy()
                diffs = paired_differences(shared["label"], shared["pred"], theirs, shared["user_id"], groups,
                                           SHOWN[protocol], by_behavior=by_behavior)
                entry["shared_samples"] = len(shared)
                entry["minus_reference"] = {k: {"value": d.value, "ci95": d.ci95, "significant": d.significant}
                                            for k, d in diffs.items()}
            section[name] = entry
        out[protocol] = section
    return out


def cell(value: float | None, ci: list[float] | None, signed: bool = False, mark: str = "") -> str:
    if value is None:
        return "-"
    number, bound = ("+.3f", "+.2f") if signed else (".3f", ".2f")
    return f"{value:{number}}" + (f" [{ci[0]:{bound}},{ci[1]:{bound}}]" if ci else "") + mark


def print_comparison(result: dict, reference: str) -> None:
    width = max(len(n) for section in result.values() for n in section) + 2
    for protocol, section in result.items():
        keys = SHOWN[protocol]
        print(f"\n{protocol} (95 % intervals over users)")
        print(f"{'model':<{width}}{'n':>5}" + "".join(f"{k:>22}" for k in keys))
        for name, entry in section.items():
            print(f"{name:<{width}}{entry['n']:>5}" + "".join(f"{cell(entry[k], entry['ci95'][k]):>22}" for k in keys))
        print(f"minus {reference}, paired on the samples both scored (* = includes 0)")
        for name, entry in section.items():
            if name == reference:
                continue
            diffs = entry["minus_reference"]
            print(f"{name:<{width}}{entry['shared_samples']:>5}" + "".join(
                f"{cell(d['value'], d['ci95'], True, '' if d['significant'] else '*'):>22}"
                for d in (diffs[k] for k in keys)))


def run(args: argparse.Namespace) -> int:
    folders = [Path(m) for m in args.models]
    reference = Path(args.reference) if args.reference else folders[0]
    if reference not in folders:
        folders.insert(0, reference)
    names = {str(f): f for f in folders}
    if len(names) < 2:
        raise InputError("compare needs at least two model folders")
    data = Path(args.data) if args.data else find_data(folders[0])
    if not (data / "stats.json").is_file():
        raise InputError("not a prepared data folder (no stats.json)", file=str(data))
    groups = PreparedData(data).stats.groups
    frames = {name: read_predictions(folder) for name, folder in names.items()}
    result = compare(frames, str(reference), groups)
    if not result:
        raise InputError("the reference scored no sample of either protocol", file=str(reference))
    print_comparison(result, str(reference))
    if args.json:
        from behaviorlm.data.types import write_json_atomic

        write_json_atomic({"reference": str(reference), "protocols": result}, Path(args.json))
    return 0
