"""``behaviorlm predict``: every user's next behavior (top-k with probabilities) from an event log.

    behaviorlm predict --run runs/demo --events new_events.csv --out predictions.jsonl --k 5

The events file goes through the project's importers (``--format`` and column options as in ``prepare``;
by default the run's own data settings), so it is validated the same way as training data. Only each
user's latest L events are kept (L = the model's history length), users are then ranked in chunks and
their predictions written as they come, so memory beyond the importer's table is bounded by
users x L. The output (one row per user and rank: ``user_id, rank, behavior, probability``) is JSONL or
CSV by the extension of ``--out``, and appears only when complete (written to a temporary file, then renamed).

The prediction is for the moment of each user's last event at its place, unless ``--at`` gives a time.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from behaviorlm.config import DataConfig
from behaviorlm.data.types import Event
from behaviorlm.errors import InputError, check_destination
from behaviorlm.files import commit, temporary

if TYPE_CHECKING:
    from behaviorlm.serving.api import Predictor

OUTPUT_SUFFIXES = (".jsonl", ".csv")
OUTPUT_COLUMNS = ("user_id", "rank", "behavior", "probability")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder (uses its tuned model) or prepared dataset folder (base model, zero-shot)")
    parser.add_argument("--events", required=True, help="event log: CSV/TSV, Parquet or JSONL (optionally .gz)")
    parser.add_argument("--out", required=True, help="predictions file: .jsonl or .csv (columns user_id, rank, behavior, probability)")
    parser.add_argument("--k", type=int, default=5, help="how many behaviors to return per user, most probable first")
    parser.add_argument("--model", default=None, help="run folder: which RUN/<model> (default behaviorlm, else a tuned one); dataset folder: base model name or path")
    parser.add_argument("--format", default=None, choices=["canonical", "generic", "llmob", "tsinghua"], help="event log format (default: the run's data.format, else canonical)")
    parser.add_argument("--user-col", default=None, help="user id column (generic format)")
    parser.add_argument("--time-col", default=None, help="timestamp column (generic format)")
    parser.add_argument("--behavior-col", default=None, help="behavior column (generic format)")
    parser.add_argument("--location-col", default=None, help="location column (generic format)")
    parser.add_argument("--time-format", default=None, help="strftime format of the timestamps, or 'unix' (default: inferred)")
    parser.add_argument("--dayfirst", action=argparse.BooleanOptionalAction, default=None, help="numeric dates with the year last: --dayfirst reads 06/05/2024 as 6 May, --no-dayfirst as June 5 (default: the run's data.dayfirst; dates that could be read either way are refused)")
    parser.add_argument("--app-categories", default=None, help="Tsinghua format: path to App2Category.txt")
    parser.add_argument("--at", default=None, help="predict for this time (ISO 8601) for every user instead of at each user's last event (users whose last event is later keep their own time)")
    parser.add_argument("--chunk-users", type=int, default=64, help="users ranked per model call batch (bounds memory)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per forward pass (default: the run's eval.batch_size, else 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--int8", action="store_true", help="CPU only: dynamic int8 linear layers, faster; predictions may differ slightly (`behaviorlm bench` measures both)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: torch's choice); 1 is faster when other jobs share the cores")
    add_trust_options(parser)


def add_trust_options(parser: argparse.ArgumentParser) -> None:
    """What a run folder cannot decide for itself (shared by predict and serve)."""
    parser.add_argument("--trust-remote-code", action="store_true", help="let the model run Python code that comes with it (a Hugging Face model with custom code); a run folder's model.trust_remote_code is refused without this flag")
    parser.add_argument("--base-model", default=None, help="load this base model (name or folder) instead of the one the run names; needed when the run names a folder outside itself")
    parser.add_argument("--adapter", default=None, help="load this PEFT adapter folder instead of the one the run's model.json names; needed when that lies outside the run folder")


def run(args: argparse.Namespace) -> int:
    from behaviorlm.serving.api import Predictor, parse_time, set_threads

    out = Path(args.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"unsupported output type {out.suffix or '(none)'!r}; use .jsonl or .csv", file=str(out))
    check_destination(out)
    if args.k < 1:
        raise InputError(f"--k must be at least 1, got {args.k}")
    for name in ("chunk_users", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    at = None
    if args.at is not None:
        try:
            at = parse_time(args.at)
        except ValueError as exc:
            raise InputError(f"--at: {exc}") from None
    config = data_config(args)
    events = read_events(config)  # before loading the model: bad input fails fast
    set_threads(args.threads)
    predictor = Predictor.from_run(args.run, args.model, args.device, batch_size=args.batch_size, int8=args.int8,
                                   trust_remote_code=args.trust_remote_code, base_model=args.base_model,
                                   adapter=args.adapter)
    check_behaviors(events, predictor, config)
    if args.k > len(predictor.candidates):
        raise InputError(f"--k must be at most the number of behaviors ({len(predictor.candidates)}), got {args.k}")
    written = predict_file(predictor, events, out, k=args.k, at=at, chunk_users=args.chunk_users)
    print(f"wrote {out} ({written} users, top-{args.k}, model {predictor.name})")
    return 0


def data_config(args: argparse.Namespace) -> DataConfig:
    """The importer settings: the run's data section (if RUN/config.yaml exists), overridden by the options."""
    from behaviorlm.config import allowed_remote_code, load_config

    run_config = Path(args.run) / "config.yaml"
    base = DataConfig()
    if run_config.is_file():
        loaded = load_config(run_config)
        allowed_remote_code(loaded.model, args.trust_remote_code, run_config)  # refused before any work
        base = loaded.data
    overrides = {
        "format": args.format, "user_col": args.user_col, "time_col": args.time_col,
        "behavior_col": args.behavior_col, "location_col": args.location_col, "time_format": args.time_format,
        "app_categories": args.app_categories, "dayfirst": args.dayfirst,
    }
    settings = {k: v for k, v in base.model_dump().items() if k in base.model_fields_set}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings.update(events=str(args.events), min_events_per_user=1)  # every user with an event gets a prediction
    return DataConfig(**settings)


def read_events(config: DataConfig) -> pd.DataFrame:
    """The canonical event table (user_id, timestamp, location, behavior), sorted by user and time."""
    from behaviorlm.data.importers import load_events

    events, _report = load_events(config)
    return events


def check_behaviors(events: pd.DataFrame, predictor: Predictor, config: DataConfig) -> None:
    """Every behavior must be one the model was trained to predict; else name the first offending row."""
    unknown = sorted(b for b in events["behavior"].unique() if not predictor.knows(b))
    if not unknown:
        return
    row, field = locate(config, set(unknown))
    others = f" (and {len(unknown) - 1} other unknown behaviors)" if len(unknown) > 1 else ""
    value = unknown[0] if row is None else row[1]
    raise InputError(
        f"unknown behavior {value!r}{others}; the model knows {len(predictor.candidates)} behaviors "
        "(its run's data/stats.json)",
        file=str(config.events), row=row[0] if row else None, field=field,
    )


def locate(config: DataConfig, values: set[str]) -> tuple[tuple[int, str] | None, str]:
    """(row number, value) of the first row holding one of ``values``, and the field name; only on the error path."""
    from behaviorlm.data.events import read_table

    column = {"llmob": "category", "tsinghua": "app_id"}.get(config.format, config.behavior_col)
    if config.format == "tsinghua":  # behaviors come from the app-category tables: no single row to blame
        return None, column
    raw = read_table(str(config.events))
    if column not in raw.columns:
        return None, column
    hits = raw[column].astype(str).str.strip().isin(values)
    if not hits.any():
        return None, column
    row = hits.idxmax()
    return (int(row), str(raw.at[row, column]).strip()), column


def user_histories(events: pd.DataFrame, history_len: int) -> tuple[pd.DataFrame, int]:
    """Only each user's latest ``history_len`` events, and the number of users."""
    events = events.sort_values(["user_id", "timestamp"], kind="stable")
    latest = events.groupby("user_id", sort=False).tail(history_len).reset_index(drop=True)
    return latest, int(latest["user_id"].nunique())


def iter_user_chunks(latest: pd.DataFrame, chunk_users: int) -> Iterator[list[tuple[str, list[Event]]]]:
    chunk: list[tuple[str, list[Event]]] = []
    for user, group in latest.groupby("user_id", sort=False):
        history = [
            Event(ts.to_pydatetime(), place, behavior)
            for ts, place, behavior in zip(group["timestamp"], group["location"], group["behavior"])
        ]
        chunk.append((str(user), history))
        if len(chunk) == chunk_users:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RowWriter:
    """Writes prediction rows as JSONL or CSV to a temporary file; ``commit`` renames it into place."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = temporary(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.tmp, "w", newline="", encoding="utf-8")
        self.csv = None
        if path.suffix.lower() == ".csv":
            self.csv = csv.writer(self.handle)
            self.csv.writerow(OUTPUT_COLUMNS)

    def write(self, row: dict[str, Any]) -> None:
        if self.csv is not None:
            self.csv.writerow([row[c] for c in OUTPUT_COLUMNS])
        else:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        self.handle.close()
        commit(self.tmp, self.path)

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def predict_file(predictor: Predictor, events: pd.DataFrame, out: Path, k: int = 5, at=None, chunk_users: int = 64) -> int:
    """Rank every user's next behavior and write the rows; returns the number of users."""
    from tqdm.auto import tqdm

    latest, n_users = user_histories(events, predictor.history_len)
    writer = RowWriter(out)
    try:
        with tqdm(total=n_users, unit="user", desc="predict") as progress:
            for chunk in iter_user_chunks(latest, chunk_users):
                context = None
                requests = []
                for _user, history in chunk:
                    if at is not None:
                        context = {"time": max(at, history[-1].time), "place": history[-1].place}
                    requests.append((history, context))
                ranked = predictor.predict_batch(requests, k=k)
                for (user, _history), rows in zip(chunk, ranked):
                    for rank, item in enumerate(rows, start=1):
                        writer.write({"user_id": user, "rank": rank, "behavior": item["behavior"],
                                      "probability": round(item["probability"], 6)})
                progress.update(len(chunk))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return n_users
