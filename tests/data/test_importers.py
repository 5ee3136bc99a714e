"""Readers (CSV/TSV/Parquet/JSONL, column mapping) and the LLMob, Tsinghua and generic importers."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.config import DataConfig
from behaviorlm.data.events import parse_timestamps, write_events
from behaviorlm.data.importers import (
    clean_category_name,
    load_events,
    read_app_categories,
    read_base_poi,
    read_category_names,
)
from behaviorlm.data.types import EVENT_COLUMNS
from behaviorlm.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".csv.gz"])
def test_round_trip_every_format(tmp_path, tiny_events, suffix):
    path = write_events(tiny_events, tmp_path / f"events{suffix}")
    events, report = load_events(DataConfig(events=str(path), min_events_per_user=1))
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events["timestamp"].dtype == "datetime64[ns]"
    pd.testing.assert_frame_equal(events, tiny_events.sort_values(["user_id", "timestamp"]).reset_index(drop=True),
                                  check_dtype=False)
    assert report.events == len(tiny_events) and report.users == 3


def test_generic_mapping_and_optional_location(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("who,when,what,extra\n" + "".join(f"7,2024-03-0{d} 1{d}:30,Gaming,x\n" for d in range(1, 7)))
    config = DataConfig(events=str(path), format="generic", user_col="who", time_col="when", behavior_col="what")
    events, _ = load_events(config)
    assert events["user_id"].unique().tolist() == ["7"]
    assert (events["location"] == "").all()  # no location column and none was named: unknown places
    assert events["timestamp"].iloc[0] == pd.Timestamp("2024-03-01 11:30")


def test_behavior_names_are_stripped_and_group_column_kept(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,timestamp,behavior,behavior_group\n"
                    + "".join(f"u,2024-03-04 0{i}:00,  Gaming ,Fun\n" for i in range(5)))
    events, _ = load_events(DataConfig(events=str(path)))
    assert events["behavior"].unique().tolist() == ["Gaming"]
    assert events["behavior_group"].unique().tolist() == ["Fun"]


def test_timestamps_formats_and_time_zones():
    values = pd.Series(["2024-03-04T07:05:00+09:00", "2024-03-04T08:00:00+09:00"])
    assert parse_timestamps(values).tolist() == [pd.Timestamp("2024-03-04 07:05"), pd.Timestamp("2024-03-04 08:00")]
    mixed = pd.Series(["2024-03-04 07:05", "March 5 2024 8pm"])
    assert parse_timestamps(mixed).iloc[1] == pd.Timestamp("2024-03-05 20:00")
    compact = parse_timestamps(pd.Series(["20160421080102"]), "%Y%m%d%H%M%S")
    assert compact.iloc[0] == pd.Timestamp("2016-04-21 08:01:02")
    assert parse_timestamps(pd.Series(["0", "3600"]), "unix").tolist() == [pd.Timestamp("1970-01-01"),
                                                                        pd.Timestamp("1970-01-01 01:00")]
    assert parse_timestamps(pd.Series(["nonsense"])).isna().all()


def test_gzip_jsonl_with_blank_lines_reports_file_line(tmp_path):
    path = tmp_path / "log.jsonl.gz"
    lines = ['{"user_id": 1, "timestamp": "2024-03-04 07:00", "behavior": "Gaming"}', "",
             '{"user_id": 1, "timestamp": "later", "behavior": "Gaming"}']
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(InputError, match=r"row 3: timestamp: cannot parse timestamp 'later'"):
        load_events(DataConfig(events=str(path)))


def write_llmob(path: Path) -> None:
    rows = ["user_id,date,weekday,time,category,top_category,place_id"]
    cats = [("Park", "Outdoors & Recreation"), ("Ramen Restaurant", "Food"), ("Platform", "Travel & Transport")]
    for user in (13, 14):
        for i in range(6):
            cat, top = cats[i % 3]
            rows.append(f"{user},2019-01-0{i + 1},Mon,1{i}:10,{cat},{top},{100 + i}")
    path.write_text("\n".join(rows) + "\n")


def test_llmob_importer(tmp_path):
    path = tmp_path / "events.csv"
    write_llmob(path)
    events, report = load_events(DataConfig(events=str(path), format="llmob"))
    assert report.events == 12 and report.users == 2
    assert events["timestamp"].iloc[0] == pd.Timestamp("2019-01-01 10:10")
    assert set(events["behavior"]) == {"Park", "Ramen Restaurant", "Platform"}
    assert (events["location"] == "").all()  # place_id/top_category would leak the behavior
    assert events.loc[events["behavior"] == "Park", "behavior_group"].unique().tolist() == ["Outdoors & Recreation"]


def test_llmob_missing_date_names_both_columns(tmp_path):
    path = tmp_path / "events.csv"
    write_llmob(path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("2019-01-03", "")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"row 3: date\+time: timestamp is missing"):
        load_events(DataConfig(events=str(path), format="llmob"))


def test_tsinghua_metadata_parsers():
    names = read_category_names(FIXTURES / "tsinghua" / "Categorys.txt")
    assert names == {"0": "Utilities", "1": "Games", "2": "Social Networking", "3": "Navigation", "4": "Music",
                     "5": "Shopping"}  # the stray "'wechat','qq'" line is skipped
    assert read_app_categories(FIXTURES / "tsinghua" / "App2Category.txt")["16"] == "2"
    assert read_base_poi(FIXTURES / "tsinghua" / "base_poi.txt") == {"7": "Residence", "8": "Business affairs"}
    assert clean_category_name("'Lifestyle '") == "Lifestyle"


def test_tsinghua_importer_on_official_format_fixture():
    trace = FIXTURES / "tsinghua" / "App_usage_trace.txt"
    config = DataConfig(events=str(trace), format="tsinghua", base_poi=str(FIXTURES / "tsinghua" / "base_poi.txt"),
                        min_events_per_user=3)
    events, report = load_events(config)
    assert report.rows == 18
    assert report.unmapped == 1  # app 99 has no category
    # user 1: 08:01:02 and 08:01:30 (app 12) and 08:02:12 (app 16) are all Social Networking at station 7;
    # user 2: 07:00 and 07:10 Music at station 7.
    assert report.repeats_collapsed == 3
    assert report.users_skipped == 1  # user 3 has 2 events
    user1 = events[events["user_id"] == "1"]
    assert user1["behavior"].tolist() == ["Social Networking", "Navigation", "Games", "Shopping", "Music",
                                          "Social Networking"]
    assert user1["location"].tolist() == ["Residence", "Business affairs", "Business affairs", "station 9",
                                          "station 9", "Residence"]
    assert user1["timestamp"].iloc[0] == pd.Timestamp("2016-04-21 08:01:02")


def test_tsinghua_without_base_poi_uses_station_ids():
    trace = FIXTURES / "tsinghua" / "App_usage_trace.txt"
    events, _ = load_events(DataConfig(events=str(trace), format="tsinghua", min_events_per_user=3))
    assert events["location"].iloc[0] == "station 7"


def test_tsinghua_short_row_and_missing_categories(tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text("1 20160421080102 7 12 1024\n1 20160421080102 7\n")
    with pytest.raises(InputError, match="file not found; pass the App2Category.txt path"):
        load_events(DataConfig(events=str(trace), format="tsinghua"))
    config = DataConfig(events=str(trace), format="tsinghua",
                        app_categories=str(FIXTURES / "tsinghua" / "App2Category.txt"))
    with pytest.raises(InputError, match=r"trace.txt: row 2: app_id: app_id is missing"):
        load_events(config)


@pytest.mark.skipif(not (SHARED / "tsinghua_app_usage_meta").is_dir(), reason="shared Tsinghua metadata absent")
def test_real_tsinghua_metadata():
    meta = SHARED / "tsinghua_app_usage_meta"
    names = read_category_names(meta / "Categorys.txt")
    assert len(names) == 20
    assert names["4"] == "Social Networking" and names["9"] == "Lifestyle"
    apps = read_app_categories(meta / "App2Category.txt")
    assert len(apps) == 1696 and set(apps.values()) <= set(names)
    stations = read_base_poi(meta / "base_poi.txt")
    assert len(stations) > 9000 and "Residence" in set(stations.values())


@pytest.mark.skipif(not (SHARED / "llmob_tokyo_checkins").is_dir(), reason="shared LLMob data absent")
def test_real_llmob_import():
    events, report = load_events(DataConfig(events=str(SHARED / "llmob_tokyo_checkins" / "events.csv"),
                                            format="llmob"))
    assert report.users == 94 and report.events == 81689 and report.duplicates == 0
    assert events["behavior"].nunique() == 527
    assert events["behavior_group"].nunique() == 10
