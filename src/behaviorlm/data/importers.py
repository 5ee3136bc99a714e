"""Importers: an event log in one of the supported formats -> the canonical event table.

``load_events(config)`` dispatches on ``config.format``:

- ``canonical``: columns ``user_id, timestamp, location, behavior`` (+ optional ``behavior_group``), in CSV,
  TSV, Parquet or JSONL. This is what ``behaviorlm simulate`` writes.
- ``generic``: any such file, with the columns named by ``user_col``/``time_col``/``behavior_col``
  (+ optional ``location_col``, ``group_col``). ``canonical`` is ``generic`` with the default names.
- ``llmob``: the LLMob Tokyo check-ins (``user_id,date,weekday,time,category,top_category,place_id``).
- ``tsinghua``: the Tsinghua App Usage trace (``user timestamp base_station app_id traffic``) with its
  ``App2Category.txt`` and ``Categorys.txt``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from behaviorlm.config import DataConfig
from behaviorlm.data.events import GROUP_COLUMN, ImportReport, canonicalize, decode_utf8, read_bytes, read_table
from behaviorlm.errors import InputError

TSINGHUA_COLUMNS = ["user", "timestamp", "base_station", "app_id", "traffic"]


def load_events(config: DataConfig) -> tuple[pd.DataFrame, ImportReport]:
    """Read, validate and canonicalize ``config.events``; see :mod:`behaviorlm.data.events` for the checks."""
    if config.events is None:
        raise InputError("no event file given (set data.events or pass --events)")
    importer = {"canonical": import_mapped, "generic": import_mapped, "llmob": import_llmob,
                "tsinghua": import_tsinghua}[config.format]
    return importer(config)


def import_mapped(config: DataConfig) -> tuple[pd.DataFrame, ImportReport]:
    """A table whose columns are named by the config (canonical names by default).

    The location column is optional unless it was named explicitly: a log without places is still usable
    (every place is then "" = unknown). A ``behavior_group`` column is kept when present.
    """
    path = str(config.events)
    raw = read_table(path)
    location_col = config.location_col
    if location_col is not None and location_col not in raw.columns and "location_col" not in config.model_fields_set:
        location_col = None
    group_col = config.group_col or (GROUP_COLUMN if GROUP_COLUMN in raw.columns else None)
    return canonicalize(
        raw, file=path, user_col=config.user_col, time_col=config.time_col, behavior_col=config.behavior_col,
        location_col=location_col, group_col=group_col, time_format=config.time_format, dayfirst=config.dayfirst,
        min_events_per_user=config.min_events_per_user,
    )


def import_llmob(config: DataConfig) -> tuple[pd.DataFrame, ImportReport]:
    """The LLMob Tokyo check-ins: behavior = ``category``, timestamp = ``date`` + ``time``, group = ``top_category``.

    Location: LLMob has no place field independent of the behavior. ``place_id`` is numbered within each
    category and ``top_category`` is a function of the category, so either one used as the place would hand
    the answer to the model (the next event's place is part of the prompt). The location is therefore ""
    (unknown) by default; ``top_category`` is kept only as the behavior group for the vocabulary fold.
    Naming ``location_col`` explicitly overrides this (knowingly accepting that leakage).
    """
    path = str(config.events)
    raw = read_table(path)
    for column, role in (("user_id", "user id"), ("date", "date"), ("time", "time"), ("category", "behavior")):
        if column not in raw.columns:
            raise InputError(f"column missing ({role}); is this the LLMob events.csv?", file=path, field=column)
    date, time = raw["date"].str.strip(), raw["time"].str.strip()
    raw["_timestamp"] = (date + " " + time).where((date != "") & (time != ""), "")
    location_col = config.location_col if "location_col" in config.model_fields_set else None
    group_col = config.group_col or ("top_category" if "top_category" in raw.columns else None)
    return canonicalize(
        raw, file=path, user_col="user_id", time_col="_timestamp", time_field="date+time", behavior_col="category",
        location_col=location_col, group_col=group_col, time_format=config.time_format, dayfirst=config.dayfirst,
        min_events_per_user=config.min_events_per_user,
    )


# ---------------------------------------------------------------------------------------------- Tsinghua


def read_app_categories(path: str | Path) -> dict[str, str]:
    """``App2Category.txt``: ``app_id category_id`` per line (whitespace-separated) -> {app_id: category_id}."""
    file = str(path)
    text = decode_utf8(read_bytes(path), file, header=False, delimiter=None, names=["app_id", "category_id"])
    mapping = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise InputError(f"expected 'app_id category_id', got {line.strip()!r}", file=file, row=line_no)
        mapping[parts[0]] = parts[1]
    return mapping


def clean_category_name(name: str) -> str:
    """``'Social\\_Networking'`` -> ``Social Networking``: quotes, escapes and padding off, underscores as spaces."""
    return " ".join(name.replace("\\", "").strip().strip("'\"").replace("_", " ").split())


def read_category_names(path: str | Path) -> dict[str, str]:
    """``Categorys.txt``: ``id<TAB>'Name'`` per line -> {id: name}.

    The official file carries stray annotation lines without a tab (e.g. ``'wechat','linkedin','weibo'``);
    they are not categories and are skipped.
    """
    file = str(path)
    text = decode_utf8(read_bytes(path), file, header=False, delimiter="\t", names=["category_id", "name"])
    names = {}
    for line in text.splitlines():
        if "\t" not in line:
            continue
        cat_id, name = line.split("\t", 1)
        if cat_id.strip() and clean_category_name(name):
            names[cat_id.strip()] = clean_category_name(name)
    if not names:
        raise InputError("no 'id<TAB>name' lines found", file=file)
    return names


def read_base_poi(path: str | Path) -> dict[str, str]:
    """``base_poi.txt`` (tab-separated, header ``BaseID`` + POI-type counts) -> {station: dominant POI type}.

    Stations with no POI around them are left out (their events keep the "station <id>" place).
    """
    file = str(path)
    text = decode_utf8(read_bytes(path), file, header=True, delimiter="\t")
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise InputError(f"malformed table ({exc})", file=file) from None
    if "BaseID" not in table.columns:
        raise InputError("column missing (station id)", file=file, field="BaseID")
    counts = table.drop(columns="BaseID").apply(pd.to_numeric, errors="coerce").fillna(0)
    has_poi = counts.sum(axis=1) > 0
    dominant = counts[has_poi].idxmax(axis=1)
    return dict(zip(table.loc[has_poi, "BaseID"].str.strip(), dominant.str.strip()))


def import_tsinghua(config: DataConfig) -> tuple[pd.DataFrame, ImportReport]:
    """The Tsinghua App Usage trace: ``user timestamp(YYYYMMDDhhmmss) base_station app_id traffic`` per line.

    behavior = the app's category name (``App2Category.txt`` + ``Categorys.txt``, beside the trace unless
    ``app_categories`` names it); location = the base station's dominant POI type when ``base_poi`` is given,
    else "station <id>". The trace logs traffic records, many per app session, so consecutive records of
    the same category at the same station within 30 minutes are merged into one event. Rows whose app has
    no category are dropped and counted.
    """
    path = Path(str(config.events))
    file = str(path)
    app_file = Path(config.app_categories) if config.app_categories else path.parent / "App2Category.txt"
    if not app_file.is_file():
        raise InputError("file not found; pass the App2Category.txt path with --app-categories", file=str(app_file))
    categories_file = app_file.parent / "Categorys.txt"
    if not categories_file.is_file():
        raise InputError("file not found; Categorys.txt must sit beside App2Category.txt", file=str(categories_file))
    app_to_cat = read_app_categories(app_file)
    cat_names = read_category_names(categories_file)
    stations = read_base_poi(config.base_poi) if config.base_poi else {}

    text = decode_utf8(read_bytes(path), file, header=False, delimiter=None, names=TSINGHUA_COLUMNS)
    try:
        raw = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, names=TSINGHUA_COLUMNS, dtype=str,
                          keep_default_na=False, skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        raise InputError(f"malformed row: expected 5 whitespace-separated fields ({exc})", file=file) from None
    raw.index = pd.RangeIndex(1, len(raw) + 1)
    raw = raw[raw.ne("").any(axis=1)]  # blank lines
    if raw.empty:
        raise InputError("empty file: no events", file=file)
    for column in ("base_station", "app_id"):
        blank = raw[column].str.strip() == ""
        if blank.any():
            raise InputError(f"{column} is missing (expected 5 fields per line)", file=file, row=int(blank.idxmax()),
                             field=column)

    report = ImportReport(file=file, rows=len(raw))
    category = raw["app_id"].map(app_to_cat)
    raw["behavior"] = category.map(cat_names)
    known = raw["behavior"].notna()
    report.unmapped = int((~known).sum())
    raw = raw[known]
    if raw.empty:
        raise InputError(f"no app in the trace has a category in {app_file.name}", file=file, field="app_id")
    raw["location"] = [stations.get(s, f"station {s}") for s in raw["base_station"]]
    return canonicalize(
        raw, file=file, user_col="user", time_col="timestamp", behavior_col="behavior", location_col="location",
        time_format=config.time_format or "%Y%m%d%H%M%S", min_events_per_user=config.min_events_per_user,
        collapse_repeats=True, report=report,
    )
