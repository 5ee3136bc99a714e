"""A new event log prepared the way a run was (``prepare --like RUN``, ``evaluate --run RUN --events NEW``).

A run's models were tuned on one vocabulary: its classes, the fold map that turned rare behaviors into
"Other <group>" classes, the head/medium/tail groups and anchors of its training log, and the candidate list
built from them. A new log (a new month, new users) is scored against exactly those, never re-derived from it:

- a behavior the run knows keeps its name; one the run folded goes to the class the run folded it into;
- a behavior the run never saw goes to its "Other <group>" class (the group it carries most often in the new
  log, else plain "Other") when the run folded and has that class; otherwise its events are left out and counted;
- every user of the new log is a test user (no split): ``test`` holds all their samples (next-behavior protocol)
  and ``balanced_test`` up to ``balanced_per_behavior`` of each of the run's behaviors (long-tail protocol);
  ``train`` and ``valid`` are empty.

The importer settings are the run's (format, columns, history length, date order, ...), and options given on
the command line replace them. What was mapped or left out is in ``stats.json`` under ``settings.new_log``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from behaviorlm.config import DataConfig
from behaviorlm.data.events import GROUP_COLUMN, warn
from behaviorlm.data.types import PreparedData, Stats, read_stats
from behaviorlm.errors import InputError


@dataclass(frozen=True)
class Reference:
    """What a new log is prepared like: a run folder (``RUN/data``) or a prepared dataset folder."""

    root: Path
    stats: Stats
    data: DataConfig
    """The settings the reference's own log was prepared with (its stats.json)."""

    @property
    def fold_map(self) -> dict[str, str]:
        return dict((self.stats.settings.get("vocabulary") or {}).get("fold_map") or {})


def reference(path: str | Path) -> Reference:
    root = Path(path)
    if (root / "stats.json").is_file():
        stats_path = root / "stats.json"
    elif (root / "data" / "stats.json").is_file():
        stats_path = root / "data" / "stats.json"
    else:
        raise InputError("not a run folder (no data/stats.json) nor a prepared dataset (no stats.json)",
                         file=str(root))
    stats = read_stats(stats_path)
    fields = {k: v for k, v in stats.settings.items() if k in DataConfig.model_fields and k != "events"}
    try:
        data = DataConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"settings.{'.'.join(map(str, first['loc']))}: {first['msg']}", file=str(stats_path)) from None
    return Reference(root, stats, data)


def like_config(ref: Reference, events: str, **options) -> DataConfig:
    """The reference's data settings (those that differ from the defaults, so importers can tell a choice from a
    default), then the ``options`` that are not None, for the log ``events``."""
    defaults = DataConfig()
    values = {k: v for k, v in ref.data.model_dump().items() if k != "events" and v != getattr(defaults, k)}
    values.update({k: v for k, v in options.items() if v is not None})
    values["events"] = str(events)
    try:
        return DataConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def to_run_vocabulary(events: pd.DataFrame, ref: Reference, file: str = "<events>") -> tuple[pd.DataFrame, dict]:
    """The events relabelled into the reference's classes (module docstring); those without a class left out.
    Returns the events without the group column and what was done (``settings.new_log``)."""
    names = set(ref.stats.names)
    fold_map = ref.fold_map
    counts = events["behavior"].value_counts()
    group_of = _main_group(events)
    mapping: dict[str, str] = {}
    mapped_unseen: dict[str, str] = {}
    left_out: dict[str, int] = {}
    for behavior in sorted(counts.index):
        if behavior in names:
            continue
        if fold_map.get(behavior) in names:
            mapping[behavior] = fold_map[behavior]
            continue
        group = group_of.get(behavior)
        other = next((c for c in ([f"Other {group}"] if group else []) + ["Other"] if c in names), None)
        if fold_map and other is not None:
            mapping[behavior] = mapped_unseen[behavior] = other
        else:
            left_out[behavior] = int(counts[behavior])
    out = events[[c for c in events.columns if c != GROUP_COLUMN]]
    out = out[~out["behavior"].isin(left_out)].copy()
    out["behavior"] = out["behavior"].map(lambda b: mapping.get(b, b)).astype(str)
    out = out.reset_index(drop=True)
    classes = out["behavior"].value_counts()
    report = {
        "behaviors_in_log": len(counts),
        "classes": len(ref.stats.names),
        "classes_present": len(classes),
        "class_counts": {name: int(classes.get(name, 0)) for name in ref.stats.names},
        "folded_by_run": len(mapping) - len(mapped_unseen),
        "unseen_mapped": mapped_unseen,
        "unseen_left_out": left_out,
        "events_left_out": sum(left_out.values()),
    }
    if mapped_unseen:
        warn(f"{file}: {len(mapped_unseen)} behaviors the run never saw were mapped to its 'Other' classes")
    if left_out:
        why = "it has no 'Other' class for them" if fold_map else "the run folded nothing, so it has no 'Other' class"
        warn(f"{file}: left out {report['events_left_out']} events of {len(left_out)} behaviors the run never saw "
             f"({why}), e.g. {next(iter(left_out))!r}")
    if out.empty:
        raise InputError(f"none of the log's {len(counts)} behaviors is one the run knows "
                         f"({len(names)} classes, e.g. {sorted(names)[0]!r})", file=file)
    return out, report


def _main_group(events: pd.DataFrame) -> dict[str, str]:
    """Each behavior's most frequent group (ties by name), as ``samples.fold_vocabulary`` chooses it."""
    if GROUP_COLUMN not in events.columns:
        return {}
    pairs = events[["behavior", GROUP_COLUMN]].value_counts().reset_index(name="n")
    pairs = pairs[pairs[GROUP_COLUMN] != ""].sort_values(["behavior", "n", GROUP_COLUMN],
                                                        ascending=[True, False, True])
    return pairs.drop_duplicates("behavior").set_index("behavior")[GROUP_COLUMN].to_dict()


def prepare_like(ref: Reference, config: DataConfig, out_dir: str | Path, events: pd.DataFrame | None = None,
                 progress: bool = True) -> PreparedData:
    """Import ``config.events`` (or take the canonical ``events``), relabel it into the reference's classes, take
    every user as a test user and write the prepared dataset (the reference's behaviors, groups and anchors)."""
    from behaviorlm.data.importers import load_events
    from behaviorlm.data.prepare import _validated, check_replaceable, write_dataset
    from behaviorlm.data.samples import balanced_test, window_index

    out_dir = check_replaceable(out_dir)
    started = time.perf_counter()
    if events is not None:
        events, report = _validated(events, config, "<events>")
    else:
        events, report = load_events(config)
    events, new_log = to_run_vocabulary(events, ref, report.file)
    names = ref.stats.names
    index = window_index(events, config.history_len, max_samples_per_user=config.max_samples_per_user,
                         seed=config.seed, progress=progress)
    if len(index) == 0:
        raise InputError(f"no samples: no user has more than history_len={config.history_len} events of the run's "
                         "behaviors", file=report.file)
    splits = {"train": index.iloc[:0], "valid": index.iloc[:0], "test": index,
              "balanced_test": balanced_test(index, names, config.balanced_per_behavior, config.seed)}
    balanced_counts = splits["balanced_test"]["label"].value_counts()
    users = int(index["user_id"].nunique())
    settings = {
        **config.model_dump(mode="json"),
        "like": str(ref.root.resolve()),
        "import": report.to_json(),
        "vocabulary": ref.stats.settings.get("vocabulary") or {"classes": len(names), "fold_map": {}},
        "new_log": new_log,
        "users": {"train": 0, "valid": 0, "test": users},
        "users_without_samples": int(events["user_id"].nunique() - users),
        "balanced_test_counts": {b: int(balanced_counts.get(b, 0)) for b in names},
    }
    stats = Stats(behaviors=list(ref.stats.behaviors), samples={k: len(v) for k, v in splits.items()},
                  settings=settings)
    return write_dataset(out_dir, events, splits, stats, config.history_len, started, progress)
