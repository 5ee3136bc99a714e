"""``behaviorlm prepare``: an event log (or the simulator) -> a prepared dataset folder.

The folder (see :mod:`behaviorlm.data.types`) holds ``stats.json`` and the four splits. It is built in a
temporary folder beside the destination and renamed into place only when complete, so an interrupted or
failed run never leaves half a dataset; bad input is reported before anything is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from pydantic import ValidationError
from tqdm import tqdm

from behaviorlm.config import DataConfig, SimulatorConfig
from behaviorlm.data.events import ImportReport, canonicalize
from behaviorlm.data.importers import load_events
from behaviorlm.data.samples import behavior_stats, build_splits, fold_vocabulary, resolve_top_k, sample_table
from behaviorlm.data.simulate import simulate_config
from behaviorlm.data.types import SPLITS, PreparedData, Stats, write_json_atomic
from behaviorlm.errors import InputError, check_destination
from behaviorlm.files import atomic_path, remove_stale


def _validated(events: pd.DataFrame, config: DataConfig, source: str) -> tuple[pd.DataFrame, ImportReport]:
    """An in-memory event table through the same checks and repairs as a file."""
    raw = events.copy()
    raw.index = pd.RangeIndex(1, len(raw) + 1)
    group = "behavior_group" if "behavior_group" in raw.columns else None
    location = "location" if "location" in raw.columns else None
    return canonicalize(raw, file=source, location_col=location, group_col=group,
                        min_events_per_user=config.min_events_per_user)


def prepare_dataset(
    config: DataConfig,
    out_dir: str | Path,
    events: pd.DataFrame | None = None,
    simulator: SimulatorConfig | None = None,
    progress: bool = True,
) -> PreparedData:
    """Import (or simulate), fold, window, split and write a prepared dataset to ``out_dir``.

    ``events`` (a canonical table) skips the import; otherwise ``config.events`` is imported, or, when that
    is None, the simulator runs with ``simulator`` (default :class:`SimulatorConfig`). An existing
    ``out_dir`` is replaced only if it is empty or a prepared dataset.
    """
    out_dir = check_replaceable(out_dir)
    started = time.perf_counter()
    source: dict = {}
    if events is not None:
        events, report = _validated(events, config, "<events>")
    elif config.events is not None:
        events, report = load_events(config)
    else:
        simulator = simulator or SimulatorConfig()
        events, report = _validated(simulate_config(simulator), config, "<simulator>")
        source["simulator"] = simulator.model_dump(mode="json")

    n_raw = int(events["behavior"].nunique())
    top_k = resolve_top_k(config.vocab_top_k, n_raw)
    events, folded = fold_vocabulary(events, top_k)
    behaviors = behavior_stats(events, config)
    splits, facts = build_splits(events, config, [b.name for b in behaviors], progress=progress)
    if len(splits["train"]) == 0:
        raise InputError(f"no samples: no user has more than history_len={config.history_len} events "
                         "(lower --history-len or give a longer log)", file=report.file)

    settings = {
        **config.model_dump(mode="json"),
        **source,
        "import": report.to_json(),
        "vocabulary": {"behaviors_in_log": n_raw, "top_k": top_k, "classes": len(behaviors),
                       "folded": len(folded), "fold_map": folded},
        **facts,
    }
    stats = Stats(behaviors=behaviors, samples={name: len(splits[name]) for name in SPLITS}, settings=settings)
    return write_dataset(out_dir, events, splits, stats, config.history_len, started, progress)


def check_replaceable(out_dir: str | Path) -> Path:
    """``out_dir`` if it is free, empty or a prepared dataset (which a new one replaces); else InputError."""
    out_dir = Path(out_dir)
    replaceable = out_dir.is_dir() and ((out_dir / "stats.json").exists() or not any(out_dir.iterdir()))
    if out_dir.exists() and not replaceable:
        raise InputError("exists and is not a prepared dataset; choose another --out", file=str(out_dir))
    return out_dir


def write_dataset(out_dir: Path, events: pd.DataFrame, splits: dict[str, pd.DataFrame], stats: Stats,
                  history_len: int, started: float, progress: bool = True) -> PreparedData:
    """The splits (sample indexes into ``events``) and stats.json, built beside ``out_dir`` and renamed into place."""
    remove_stale(out_dir.parent, only=out_dir.name)  # left by a prepare that was killed
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        bar = tqdm(SPLITS, desc="writing splits", unit="split", disable=None if progress else True, leave=False)
        for name in bar:
            pq.write_table(sample_table(events, splits[name], history_len), tmp / f"{name}.parquet")
        stats.settings["seconds"] = round(time.perf_counter() - started, 3)
        write_json_atomic(stats.to_json(), tmp / "stats.json")
    return PreparedData(out_dir)



def summary(data: PreparedData) -> str:
    """A short table: classes and share per group, anchors, samples per split."""
    stats = data.stats
    lines = [f"{'group':<8} {'classes':>7} {'share':>7}"]
    for group in ("head", "medium", "tail"):
        members = [b for b in stats.behaviors if b.group == group]
        lines.append(f"{group:<8} {len(members):>7} {sum(b.share for b in members):7.1%}")
    lines.append(f"{'all':<8} {len(stats.behaviors):>7}  ({len(stats.anchors)} anchors)")
    lines.append("samples: " + ", ".join(f"{k} {v}" for k, v in stats.samples.items()))
    counts = stats.settings.get("balanced_test_counts", {})
    short = [name for name, n in counts.items() if n < stats.settings.get("balanced_per_behavior", 0)]
    if short:
        lines.append(f"balanced_test: {len(short)} behaviors have fewer than "
                     f"{stats.settings['balanced_per_behavior']} held-out samples (kept all they have)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI

OPTIONS = {  # flag -> (DataConfig field, type, help)
    "--format": ("format", str, "input format: canonical (user_id,timestamp,location,behavior), llmob, tsinghua, "
                 "or generic (name the columns with --user-col etc.)"),
    "--user-col": ("user_col", str, "column holding the user id (generic/canonical)"),
    "--time-col": ("time_col", str, "column holding the timestamp (generic/canonical)"),
    "--behavior-col": ("behavior_col", str, "column holding the behavior (generic/canonical)"),
    "--location-col": ("location_col", str, "column holding the place (optional; places are unknown without it)"),
    "--group-col": ("group_col", str, "column grouping behaviors, names the folded 'Other <group>' classes"),
    "--time-format": ("time_format", str, "timestamp format, e.g. '%%Y%%m%%d%%H%%M%%S', or 'unix' (default: infer)"),
    "--app-categories": ("app_categories", str, "tsinghua: App2Category.txt (Categorys.txt beside it); "
                         "default: beside the trace"),
    "--base-poi": ("base_poi", str, "tsinghua: base_poi.txt, to name each station by its dominant POI type"),
    "--history-len": ("history_len", int, "L: events of history per sample (default 20)"),
    "--min-events": ("min_events_per_user", int, "skip users with fewer events (default 5)"),
    "--vocab-top-k": ("vocab_top_k", int, "keep the K most frequent behaviors, fold the rest into 'Other <group>' "
                      "(default: 30 when there are more than 40 behaviors; 0 = never fold)"),
    "--balanced-per-behavior": ("balanced_per_behavior", int, "samples per behavior in the balanced (long-tail) "
                                "test set, capped by availability (default 500)"),
    "--max-samples-per-user": ("max_samples_per_user", int, "keep at most this many random samples per user"),
    "--anchor-threshold": ("anchor_threshold", float, "share above which a behavior is an anchor (default 0.01)"),
    "--head-threshold": ("head_threshold", float, "share above which a behavior is head (default 0.05)"),
    "--medium-threshold": ("medium_threshold", float, "share above which a behavior is medium (default 0.01)"),
    "--seed": ("seed", int, "seed of the user split, the per-user cap and the balanced test (default 0)"),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", help="event log (.csv, .tsv, .parquet, .jsonl; a Tsinghua trace is whitespace "
                        "text); omit to prepare simulated data")
    parser.add_argument("--out", required=True, help="folder to write the prepared dataset to")
    parser.add_argument("--like", metavar="RUN", help="prepare --events the way a run (or prepared dataset) was: its "
                        "importer settings, vocabulary, fold map, groups and candidates; every user a test user")
    for flag, (field, kind, help_text) in OPTIONS.items():
        extra = {"choices": ["canonical", "llmob", "tsinghua", "generic"]} if field == "format" else {}
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_text, **extra)
    add_dayfirst_option(parser)
    sim = SimulatorConfig()
    parser.add_argument("--users", type=int, default=sim.users, help="simulator: number of users (without --events)")
    parser.add_argument("--days", type=int, default=sim.days, help="simulator: days per user (without --events)")
    parser.add_argument("--sim-seed", type=int, default=sim.seed, help="simulator: random seed (without --events)")


def add_dayfirst_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dayfirst", action=argparse.BooleanOptionalAction, default=None,
                        help="numeric dates with the year last: --dayfirst reads 06/05/2024 as 6 May, --no-dayfirst as "
                             "June 5 (default: refuse dates that could be read either way)")


def config_from_args(args: argparse.Namespace) -> DataConfig:
    """Only the options given on the command line are set, so importers can tell defaults from choices."""
    values = {field: getattr(args, field) for field, *_ in OPTIONS.values() if getattr(args, field) is not None}
    if args.dayfirst is not None:
        values["dayfirst"] = args.dayfirst
    if args.events:
        values["events"] = args.events
    try:
        return DataConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


LIKE_FIXED = ("vocab_top_k", "anchor_threshold", "head_threshold", "medium_threshold")
"""Options that --like takes from the run: its classes and groups are what its models were tuned on."""


def run(args: argparse.Namespace) -> int:
    check_destination(args.out, directory=True)
    if args.like:
        return run_like(args)
    config = config_from_args(args)
    simulator = None if config.events else SimulatorConfig(users=args.users, days=args.days, seed=args.sim_seed)
    data = prepare_dataset(config, args.out, simulator=simulator)
    seconds = data.stats.settings.get("seconds")
    print(f"prepared {data.root} in {seconds:.1f}s from {config.events or 'the simulator'}")
    print(summary(data))
    return 0


def run_like(args: argparse.Namespace) -> int:
    from behaviorlm.data.like import like_config, prepare_like, reference

    if not args.events:
        raise InputError("--like needs --events: the new log to prepare the way the run was")
    fixed = [f for f in LIKE_FIXED if getattr(args, f) is not None]
    if fixed:
        flag = next(k for k, v in OPTIONS.items() if v[0] == fixed[0])
        raise InputError(f"{flag}: with --like the vocabulary and groups are the run's; drop the option")
    ref = reference(args.like)
    options = {field: getattr(args, field) for field, *_ in OPTIONS.values()}
    config = like_config(ref, args.events, dayfirst=args.dayfirst, **options)
    data = prepare_like(ref, config, args.out)
    print(f"prepared {data.root} like {args.like} from {config.events}: every user a test user")
    print(like_summary(data))
    return 0


def like_summary(data: PreparedData) -> str:
    """Users, samples and how the new log's behaviors met the run's classes."""
    stats = data.stats
    new_log = stats.settings["new_log"]
    lines = [f"users {stats.settings['users']['test']}; samples: test {stats.samples['test']}, balanced_test "
             f"{stats.samples['balanced_test']}",
             f"behaviors in the log {new_log['behaviors_in_log']}; run classes present {new_log['classes_present']} "
             f"of {new_log['classes']}; folded by the run's map {new_log['folded_by_run']}; unseen and mapped to "
             f"'Other' {len(new_log['unseen_mapped'])}; unseen and left out {len(new_log['unseen_left_out'])} "
             f"({new_log['events_left_out']} events)"]
    return "\n".join(lines)
