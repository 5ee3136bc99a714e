"""The canonical event table, the file readers behind every importer, and input validation.

Canonical events (``EVENT_COLUMNS``): ``user_id`` (str), ``timestamp`` (naive local datetime64), ``location``
(str, "" if unknown) and ``behavior`` (str), sorted by (user_id, timestamp). An importer may keep one extra
column, ``behavior_group`` (a coarse group per behavior, e.g. LLMob's top-level venue category), which the
vocabulary fold uses to name its "Other <group>" classes.

Limits (``TEXT_LIMITS``): a user id, a place, a behavior and a behavior group are at most 200 characters; a
timestamp lies in the years 1678-2261; a numeric date with the year last (06/05/2024) that could be read
day-first or month-first is read only as ``dayfirst`` (``--dayfirst``/``--no-dayfirst``) or ``time_format`` says,
and a file never both ways (13/05/2024 and 05/13/2024 in one file are refused).

Errors a user can fix raise :class:`InputError` naming the file, the row and the field. Rows are numbered
as records in the file: row 1 is the first data row (in a CSV, the line after the header; in JSONL, the
first line). Problems that can be repaired without guessing (duplicate rows, out-of-order rows, users with
too few events) are repaired, counted in an :class:`ImportReport` and announced as one warning line each on
stderr, so a prepared dataset records exactly what was done to its input.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from behaviorlm.data.types import EVENT_COLUMNS
from behaviorlm.errors import InputError
from behaviorlm.files import atomic_path

GROUP_COLUMN = "behavior_group"
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
REPEAT_GAP = pd.Timedelta(minutes=30)
"""Consecutive records of the same behavior at the same place closer than this are one event (when merging)."""
TEXT_LIMIT = 200
"""Longest user id, place, behavior or behavior group accepted, in characters: every one of them is repeated in
prompts, stats.json and every sample's history, so one runaway value (a whole document pasted into a cell) would
multiply into every file and every prompt."""
NUMERIC_DATE = re.compile(r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?=$|[\sT])")
"""A date with the year last and the day and month as numbers, in either order: 06/05/2024, 6.5.24, 06-05-2024."""


@dataclass
class ImportReport:
    """What the import repaired or dropped; stored in the prepared dataset's stats.json."""

    file: str
    rows: int = 0
    """Data rows read from the file."""
    duplicates: int = 0
    """Exact duplicate events dropped (the first one is kept)."""
    unsorted: int = 0
    """Rows earlier than the same user's previous row in the file (the table was sorted)."""
    repeats_collapsed: int = 0
    """Consecutive repeats of a user's behavior at the same place merged into one event (Tsinghua traces)."""
    unmapped: int = 0
    """Rows whose app has no category (Tsinghua traces), dropped."""
    users_skipped: int = 0
    """Users with fewer than ``min_events_per_user`` events, dropped."""
    events_skipped: int = 0
    """Events of the skipped users."""
    users: int = 0
    events: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def warn(message: str) -> None:
    print(f"behaviorlm: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- reading


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"not a readable gzip file ({exc})", file=str(path)) from None
    if not data.strip():
        raise InputError("empty file: no events", file=str(path))
    return data


def decode_utf8(
    data: bytes, file: str, *, header: bool, delimiter: str | None = ",", names: list[str] | None = None
) -> str:
    """Strict UTF-8 (a BOM is allowed); bad bytes are reported with their row and, when it can be told, field.

    ``header``: whether line 1 is a header (then data row N is line N + 1). ``delimiter`` (None = runs of
    whitespace) and ``names`` let the error name the field that holds the bad bytes.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        bad_byte = data[exc.start:exc.start + 1].hex()
        lines = data.split(b"\n")
        if header and line_no == 1:
            raise InputError(f"header is not valid UTF-8 (byte 0x{bad_byte})", file=file, row=None) from None
        field = None
        text_line = lines[line_no - 1].decode("utf-8", errors="replace")
        if header and names is None:
            names = next(csv.reader([lines[0].decode("utf-8-sig", errors="replace")], delimiter=delimiter or ","))
        values = text_line.split() if delimiter is None else next(csv.reader([text_line], delimiter=delimiter), [])
        for i, value in enumerate(values if names else []):  # without column names, the row has to do
            if "\ufffd" in value:
                field = names[i] if i < len(names) else f"column {i + 1}"
                break
        row = line_no - 1 if header else line_no
        raise InputError(f"not valid UTF-8 (byte 0x{bad_byte}); re-save the file as UTF-8", file=file, row=row,
                         field=field) from None


def _as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every non-datetime column as str, missing values as ""."""
    out = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            out[name] = col
        else:
            text = col.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
            out[name] = text.astype(object)
    return pd.DataFrame(out, index=frame.index)


def _parser_error(exc: Exception, file: str, *, header: bool) -> InputError:
    match = re.search(r"line (\d+)", str(exc))
    row = None
    if match:
        row = int(match.group(1)) - (1 if header else 0)
    return InputError(f"malformed row ({str(exc).strip().splitlines()[-1]})", file=file, row=row)


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV/TSV, Parquet or JSONL file (optionally .gz) as a frame of str columns.

    The index is the 1-based row number a user sees (see module docstring), so every later check can
    name the row. Datetime columns of a Parquet file stay datetimes; everything else is text.
    """
    path = Path(path)
    file = str(path)
    suffix = _suffix(path)
    if suffix in PARQUET_SUFFIXES:
        if not path.is_file():
            raise InputError("file not found", file=file)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise InputError(f"not a readable Parquet file ({type(exc).__name__})", file=file) from None
        frame = _as_text_frame(frame)
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    elif suffix in TEXT_SUFFIXES:
        sep = TEXT_SUFFIXES[suffix]
        text = decode_utf8(read_bytes(path), file, header=True, delimiter=sep)
        try:
            frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise InputError("empty file: no events", file=file) from None
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, file, header=True) from None
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    elif suffix in JSON_SUFFIXES:
        frame = _read_json_records(decode_utf8(read_bytes(path), file, header=False, delimiter=None), file)
    else:
        raise InputError(f"unsupported file type {suffix or '(none)'!r}; expected .csv, .tsv, .parquet or .jsonl "
                         "(optionally .gz)", file=file)
    if frame.empty:
        raise InputError("empty file: no events (only a header)", file=file)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _read_json_records(text: str, file: str) -> pd.DataFrame:
    if text.lstrip().startswith("["):  # a JSON array of records
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", file=file, row=None) from None
        rows = list(range(1, len(records) + 1))
    else:
        records, rows = [], []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON ({exc.msg})", file=file, row=line_no) from None
            if not isinstance(record, dict):
                raise InputError("expected a JSON object per line", file=file, row=line_no)
            records.append(record)
            rows.append(line_no)
    for row, record in zip(rows, records):
        if not isinstance(record, dict):
            raise InputError("expected a JSON object per record", file=file, row=row)
    frame = pd.DataFrame.from_records(records, index=pd.Index(rows)) if records else pd.DataFrame()
    return _as_text_frame(frame)


def write_events(events: pd.DataFrame, path: str | Path) -> Path:
    """Write an event table as CSV, Parquet or JSONL (chosen by extension), atomically."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in (*TEXT_SUFFIXES, *PARQUET_SUFFIXES, ".jsonl", ".ndjson"):
        raise InputError(f"unsupported output type {suffix or '(none)'!r}; use .csv, .parquet or .jsonl",
                         file=str(path))
    frame = events.copy()
    with atomic_path(path) as tmp:
        if suffix in PARQUET_SUFFIXES:
            frame.to_parquet(tmp, index=False)
        else:
            frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
            compression = "gzip" if path.suffix.lower() == ".gz" else None
            if suffix in TEXT_SUFFIXES:
                frame.to_csv(tmp, index=False, sep=TEXT_SUFFIXES[suffix], compression=compression)
            else:
                frame.to_json(tmp, orient="records", lines=True, force_ascii=False, compression=compression)
    return path


# ---------------------------------------------------------------------------------------------- validation


def parse_timestamps(values: pd.Series, time_format: str | None = None, dayfirst: bool | None = None, *,
                     file: str | None = None, field: str | None = None) -> pd.Series:
    """Text (or datetimes) -> naive datetime64[ns]; unparseable values become NaT for the caller to report.

    Time zones are dropped keeping the wall-clock time: daily routines live in local time. Without
    ``time_format``, numeric dates with the year last are read in one order for the whole file (``dayfirst``, or
    the order the file settles); a file that does not settle it, or settles it both ways, is refused. A date
    outside 1678-2261 is refused. ``file`` and ``field`` name the column in those errors.
    """
    invalid = None
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif time_format == "unix":
        parsed = pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s", errors="coerce")
    else:
        text = values.astype(str).str.strip()
        if time_format is None:
            text, invalid = _numeric_dates_as_iso(text, dayfirst, file, field)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": handled below
            try:
                parsed = pd.to_datetime(text, format=time_format, errors="coerce")
            except (ValueError, TypeError):  # e.g. mixed UTC offsets
                parsed = pd.Series([_parse_one(v, time_format) for v in text], index=text.index)
            if time_format is None:
                retry = parsed.isna() & (text != "")
                if retry.any():
                    parsed = parsed.astype(object)
                    parsed[retry] = [_parse_one(v, None) for v in text[retry]]
    parsed = pd.Series(parsed, index=values.index)
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        parsed = pd.to_datetime(parsed.map(_naive), errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    if invalid is not None and invalid.any():
        parsed = parsed.where(~invalid, pd.NaT)
    outside = parsed.notna() & ((parsed < FIRST_TIME) | (parsed > LAST_TIME))
    if outside.any():
        row = outside.idxmax()
        raise InputError(f"{parsed[row]} is outside the supported years {FIRST_TIME.year + 1}-{LAST_TIME.year - 1}",
                         file=file, row=int(row), field=field)
    return parsed.astype("datetime64[ns]")


FIRST_TIME, LAST_TIME = pd.Timestamp.min, pd.Timestamp.max
"""What a nanosecond timestamp holds (1677-09-21 to 2262-04-11)."""


def _naive(value):
    """Mixed offsets leave an object column of Timestamps: keep each one's wall clock."""
    if isinstance(value, pd.Timestamp) and value.tzinfo is not None:
        return value.tz_localize(None)
    return value


def _numeric_dates_as_iso(text: pd.Series, dayfirst: bool | None, file: str | None, field: str | None
                          ) -> tuple[pd.Series, pd.Series | None]:
    """Rewrite 06/05/2024-style dates as ISO (2024-05-06) in the one order that holds for the whole column.

    Returns the text and a mask of values impossible in that order (month 13): NaT, reported as unparseable.
    """
    found = text.str.extract(NUMERIC_DATE)
    has = found[0].notna()
    if not has.any():
        return text, None
    first, second = found.loc[has, 0].astype(int), found.loc[has, 2].astype(int)
    if dayfirst is None:
        either = (first <= 12) & (second <= 12) & (first != second)
        day_first, month_first = (first > 12) & (second <= 12), (second > 12) & (first <= 12)  # 13/45: neither
        if day_first.any() and month_first.any():
            a, b = sorted((day_first.idxmax(), month_first.idxmax()))
            order = "day-first" if day_first[b] else "month-first"
            raise InputError(
                f"{text[b]!r} can only be {order}, but {text[a]!r} (row {a}) can only be the other way; a file "
                "must write its dates in one order (or give --time-format)", file=file, row=int(b), field=field)
        if either.any():
            row = either.idxmax()
            settled = day_first if day_first.any() else month_first if month_first.any() else None
            seen = "" if settled is None else (
                f" (row {settled.idxmax()}, {text[settled.idxmax()]!r}, can only be "
                f"{'day' if settled is day_first else 'month'}-first)")
            raise InputError(
                f"{text[row]!r} can be read day-first or month-first; say which with --dayfirst (06/05 = 6 May), "
                f"--no-dayfirst (06/05 = June 5) or --time-format (data.dayfirst or data.time_format in a "
                f"config){seen}", file=file, row=int(row), field=field)
        dayfirst = bool(day_first.any())
    day, month = (first, second) if dayfirst else (second, first)
    year = found.loc[has, 3].astype(int)
    year = year.where(found.loc[has, 3].str.len() == 4, year + 2000 - 100 * (year >= 69))  # strptime's %y pivot
    rest = text[has].str.replace(NUMERIC_DATE, "", n=1, regex=True)
    iso = (year.astype(str).str.zfill(4) + "-" + month.astype(str).str.zfill(2) + "-"
           + day.astype(str).str.zfill(2) + rest)
    out = text.copy()
    out[has] = iso
    invalid = pd.Series(False, index=text.index)
    invalid[has] = (month > 12) | (month < 1) | (day < 1) | (day > 31)
    return out, invalid


def _parse_one(value: str, time_format: str | None):
    try:
        ts = pd.Timestamp(pd.to_datetime(value, format=time_format))
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def _require(frame: pd.DataFrame, column: str, file: str, role: str, option: str) -> None:
    if column not in frame.columns:
        found = ", ".join(map(str, frame.columns[:12])) + (", ..." if len(frame.columns) > 12 else "")
        raise InputError(f"column missing ({role}); the file has: {found}; name yours with {option}",
                         file=file, field=column)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _check_length(values: pd.Series, file: str, field: str, role: str) -> None:
    lengths = values.str.len()
    too_long = lengths > TEXT_LIMIT
    if too_long.any():
        row = too_long.idxmax()
        raise InputError(f"{role} is {lengths[row]:,} characters long ({_clip(values[row], 40)!r}); at most "
                         f"{TEXT_LIMIT} are allowed", file=file, row=int(row), field=field)


def _first_blank(values: pd.Series) -> int | None:
    blank = values.str.strip() == ""
    return int(blank.idxmax()) if blank.any() else None


def canonicalize(
    raw: pd.DataFrame,
    *,
    file: str,
    user_col: str = "user_id",
    time_col: str = "timestamp",
    behavior_col: str = "behavior",
    location_col: str | None = None,
    group_col: str | None = None,
    time_format: str | None = None,
    dayfirst: bool | None = None,
    time_field: str | None = None,
    min_events_per_user: int = 1,
    collapse_repeats: bool = False,
    report: ImportReport | None = None,
) -> tuple[pd.DataFrame, ImportReport]:
    """Validate a raw frame (from :func:`read_table`) and turn it into the canonical event table.

    ``raw``'s index must be the row numbers to report. ``time_field`` names the timestamp in messages when
    it was built from several columns (LLMob: "date+time"). Raises InputError on the first bad row.
    """
    report = report or ImportReport(file=file)
    report.rows = report.rows or len(raw)
    if raw.empty:
        raise InputError("empty file: no events", file=file)
    _require(raw, user_col, file, "user id", "--user-col")
    _require(raw, time_col, file, "timestamp", "--time-col")
    _require(raw, behavior_col, file, "behavior", "--behavior-col")
    if location_col is not None:
        _require(raw, location_col, file, "location", "--location-col")
    if group_col is not None:
        _require(raw, group_col, file, "behavior group", "--group-col")

    users = raw[user_col].astype(str).str.strip()
    if (row := _first_blank(users)) is not None:
        raise InputError("user id is empty", file=file, row=row, field=user_col)
    _check_length(users, file, user_col, "user id")
    behaviors = raw[behavior_col].astype(str).str.strip()
    if (row := _first_blank(behaviors)) is not None:
        raise InputError("behavior is empty or only whitespace", file=file, row=row, field=behavior_col)
    _check_length(behaviors, file, behavior_col, "behavior")
    locations = raw[location_col].astype(str).str.strip() if location_col else None
    if locations is not None:
        _check_length(locations, file, location_col, "place")
    groups = raw[group_col].astype(str).str.strip() if group_col is not None else None
    if groups is not None:
        _check_length(groups, file, group_col, "behavior group")

    field = time_field or time_col
    times = parse_timestamps(raw[time_col], time_format, dayfirst, file=file, field=field)
    if times.isna().any():
        row = int(times.isna().idxmax())
        value = raw.at[row, time_col]
        if pd.isna(value) or not str(value).strip():
            raise InputError("timestamp is missing", file=file, row=row, field=field)
        if time_format:
            hint = f" with format {time_format!r}"
        elif dayfirst is not None and NUMERIC_DATE.match(str(value).strip()):
            hint = f" as a {'day' if dayfirst else 'month'}-first date ({'--dayfirst' if dayfirst else '--no-dayfirst'})"
        else:
            hint = " (use --time-format to give the format)"
        raise InputError(f"cannot parse timestamp {_clip(str(value).strip())!r}{hint}", file=file, row=row,
                         field=field)

    events = pd.DataFrame({
        "user_id": users,
        "timestamp": times,
        "location": locations if locations is not None else "",
        "behavior": behaviors,
    }, index=raw.index)
    columns = list(EVENT_COLUMNS)
    if groups is not None:
        events[GROUP_COLUMN] = groups
        columns.append(GROUP_COLUMN)
    return tidy(events[columns], report, min_events_per_user=min_events_per_user, collapse_repeats=collapse_repeats)


def tidy(
    events: pd.DataFrame, report: ImportReport, *, min_events_per_user: int = 1, collapse_repeats: bool = False
) -> tuple[pd.DataFrame, ImportReport]:
    """Dedupe, sort, optionally merge consecutive repeats, drop thin users; count and announce each repair."""
    file = report.file
    duplicated = events.duplicated(keep="first")
    report.duplicates = int(duplicated.sum())
    events = events[~duplicated]

    went_back = events.groupby("user_id", sort=False)["timestamp"].diff() < pd.Timedelta(0)
    report.unsorted = int(went_back.sum())
    events = events.sort_values(["user_id", "timestamp"], kind="stable")

    if collapse_repeats:
        same = ["user_id", "behavior", "location"]
        close = (events["timestamp"] - events["timestamp"].shift()) <= REPEAT_GAP
        repeat = (events[same] == events[same].shift()).all(axis=1) & close
        report.repeats_collapsed = int(repeat.sum())
        events = events[~repeat]

    counts = events.groupby("user_id")["user_id"].transform("size")
    thin = counts < min_events_per_user
    report.users_skipped = int(events.loc[thin, "user_id"].nunique())
    report.events_skipped = int(thin.sum())
    events = events[~thin].reset_index(drop=True)
    if events.empty:
        raise InputError(f"no user has at least {min_events_per_user} events (min_events_per_user)", file=file)
    report.users = int(events["user_id"].nunique())
    report.events = len(events)

    if report.duplicates:
        warn(f"{file}: dropped {report.duplicates} duplicate rows")
    if report.unsorted:
        warn(f"{file}: {report.unsorted} rows were out of time order; sorted by user and time")
    if report.repeats_collapsed:
        warn(f"{file}: merged {report.repeats_collapsed} consecutive repeats of the same behavior")
    if report.unmapped:
        warn(f"{file}: dropped {report.unmapped} rows whose app has no category")
    if report.users_skipped:
        warn(f"{file}: skipped {report.users_skipped} users with fewer than {min_events_per_user} events "
             f"({report.events_skipped} events)")
    return events, report
