"""Every bad input of the event pipeline, through the CLI: one line on stderr naming file/row/field, exit 2,
nothing written; and the repairable problems: fixed, counted in stats.json and warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behaviorlm.cli import main

HEADER = "user_id,timestamp,location,behavior\n"


def good_rows(user: str = "u1", n: int = 6) -> str:
    return "".join(f"{user},2024-03-04 0{i}:00:00,home,Watching video clip\n" for i in range(n))


def run_prepare(capsys, events: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["prepare", "--events", str(events), "--out", str(out), "--history-len", "2", *extra])
    return code, capsys.readouterr().err


BAD = {
    # name: (file name, content, expected row, expected field, words in the message)
    "missing column": ("e.csv", "user_id,timestamp,behavior_name\nu1,2024-03-04 07:00,Gaming\n",
                       None, "behavior", "column missing"),
    "unparseable timestamp": ("e.csv", HEADER + good_rows() + "u1,yesterday,home,Gaming\n",
                              7, "timestamp", "cannot parse timestamp 'yesterday'"),
    "missing timestamp": ("e.csv", HEADER + good_rows() + "u1,,home,Gaming\n", 7, "timestamp", "missing"),
    "empty file": ("e.csv", "", None, None, "empty file"),
    "header only": ("e.csv", HEADER, None, None, "empty file"),
    "empty jsonl": ("e.jsonl", "\n\n", None, None, "empty file"),
    "empty behavior": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,\n", 7, "behavior", "empty"),
    "whitespace behavior": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,   \n", 7, "behavior",
                            "only whitespace"),
    "empty user": ("e.csv", HEADER + good_rows() + ",2024-03-05 07:00,home,Gaming\n", 7, "user_id", "user id"),
    "extra field": ("e.csv", HEADER + good_rows() + "u1,2024-03-05 07:00,home,Gaming,surprise\n", 7, None,
                    "Expected 4 fields"),
    "bad jsonl line": ("e.jsonl", '{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n{oops\n',
                       2, None, "not valid JSON"),
    "jsonl bad timestamp": ("e.jsonl", '{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n'
                            '{"user_id": "u1", "timestamp": "13/45/2024 99:00", "behavior": "x"}\n',
                            2, "timestamp", "cannot parse"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    name, content, row, field, words = BAD[case]
    events = tmp_path / name
    events.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("behaviorlm prepare: error: ")
    assert str(events) in line
    assert words in line
    if row is not None:
        assert f"row {row}:" in line
    if field is not None:
        assert f": {field}:" in line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary leftovers either


def test_non_utf8_bytes_name_row_and_field(tmp_path, capsys):
    events = tmp_path / "latin1.csv"
    events.write_bytes((HEADER + good_rows()).encode() + "u1,2024-03-05 07:00,café,Gaming\n".encode("latin-1"))
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert f"{events}: row 7: location: not valid UTF-8 (byte 0xe9)" in err
    assert not out.exists()


def test_missing_column_with_mapping_names_the_mapped_column(tmp_path, capsys):
    events = tmp_path / "log.csv"
    events.write_text("uid,ts,act\nu1,2024-03-04 07:00,Gaming\n")
    code, err = run_prepare(capsys, events, tmp_path / "out", "--format", "generic", "--user-col", "uid",
                            "--time-col", "ts", "--behavior-col", "action")
    assert code == 2
    assert f"{events}: action: column missing (behavior)" in err
    assert "uid, ts, act" in err


def test_explicit_location_column_must_exist(tmp_path, capsys):
    events = tmp_path / "log.csv"
    events.write_text("user_id,timestamp,behavior\n" + "u1,2024-03-04 07:00,Gaming\n" * 3)
    code, err = run_prepare(capsys, events, tmp_path / "out", "--location-col", "place")
    assert code == 2 and "place: column missing (location)" in err


def test_missing_file(tmp_path, capsys):
    code, err = run_prepare(capsys, tmp_path / "nope.csv", tmp_path / "out")
    assert code == 2 and "nope.csv: file not found" in err


def test_unsupported_extension(tmp_path, capsys):
    events = tmp_path / "log.xlsx"
    events.write_bytes(b"PK\x03\x04")
    code, err = run_prepare(capsys, events, tmp_path / "out")
    assert code == 2 and "unsupported file type '.xlsx'" in err


def test_no_user_with_enough_events(tmp_path, capsys):
    events = tmp_path / "e.csv"
    events.write_text(HEADER + good_rows("u1", 3) + good_rows("u2", 2))
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 2 and "no user has at least 5 events" in err
    assert not out.exists()


def test_repairable_problems_are_fixed_counted_and_warned(tmp_path, capsys):
    rows = good_rows("u1", 8)
    shuffled = "".join(reversed(rows.splitlines(keepends=True)))  # 7 rows go back in time
    duplicates = "u2,2024-03-05 01:00:00,home,Gaming\n" * 3
    thin = good_rows("u3", 2)
    events = tmp_path / "e.csv"
    events.write_text(HEADER + shuffled + good_rows("u2", 6) + duplicates + thin)
    out = tmp_path / "out"
    code, err = run_prepare(capsys, events, out)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert any("dropped 2 duplicate rows" in w for w in warnings)
    assert any("7 rows were out of time order" in w for w in warnings)
    assert any("skipped 1 users with fewer than 5 events (2 events)" in w for w in warnings)
    report = json.loads((out / "stats.json").read_text())["settings"]["import"]
    assert report["duplicates"] == 2 and report["unsorted"] == 7
    assert report["users_skipped"] == 1 and report["events_skipped"] == 2
    assert report["users"] == 2 and report["events"] == 8 + 7


def test_non_utf8_jsonl_and_tsinghua_trace_name_the_row(tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    events.write_bytes(b'{"user_id": "u1", "timestamp": "2024-03-04", "behavior": "x"}\n'
                       b'{"user_id": "u1", "timestamp": "2024-03-05", "behavior": "caf\xe9"}\n')
    code, err = run_prepare(capsys, events, tmp_path / "out")
    assert code == 2 and f"{events}: row 2: not valid UTF-8 (byte 0xe9)" in err
    trace = tmp_path / "trace.txt"
    trace.write_bytes(b"1 20160421080102 7 12 1024\n1 20160421080102 \xff 12 1024\n")
    fixtures = Path(__file__).parent / "fixtures" / "tsinghua"
    code, err = run_prepare(capsys, trace, tmp_path / "out", "--format", "tsinghua", "--app-categories",
                            str(fixtures / "App2Category.txt"))
    assert code == 2 and f"{trace}: row 2: base_station: not valid UTF-8 (byte 0xff)" in err
    assert not (tmp_path / "out").exists()
