"""Numeric day/month dates are read one way per file, as the user says; timestamps stay in a range pandas holds."""

from __future__ import annotations

import pandas as pd
import pytest

from behaviorlm.data.events import parse_timestamps
from behaviorlm.errors import InputError


def series(values: list[str]) -> pd.Series:
    return pd.Series(values, index=pd.RangeIndex(1, len(values) + 1))


def test_dayfirst_and_monthfirst_read_every_row_the_same_way():
    days = series([f"{d:02d}/05/2024 08:00" for d in range(6, 16)])
    read = parse_timestamps(days, dayfirst=True)
    assert read.tolist() == [pd.Timestamp(f"2024-05-{d:02d} 08:00") for d in range(6, 16)]
    months = series(["05/06/2024", "05/13/2024", "12/31/2024"])
    assert parse_timestamps(months, dayfirst=False).tolist() == [
        pd.Timestamp("2024-05-06"), pd.Timestamp("2024-05-13"), pd.Timestamp("2024-12-31")]
    # in the other order they are impossible: NaT, for the caller to report as unparseable
    assert parse_timestamps(months, dayfirst=True).isna().tolist() == [False, True, True]


def test_without_a_choice_ambiguous_dates_are_refused():
    with pytest.raises(InputError, match="row 1: t: '06/05/2024' can be read day-first or month-first.*--dayfirst.*"
                                         r"\(row 8, '13/05/2024', can only be day-first\)"):
        parse_timestamps(series([f"{d:02d}/05/2024" for d in range(6, 14)]), file="f.csv", field="t")
    with pytest.raises(InputError, match="row 3: t: '05/13/2024' can only be month-first, but '13/05/2024' "
                                         r"\(row 1\) can only be the other way"):
        parse_timestamps(series(["13/05/2024", "14/05/2024", "05/13/2024"]), file="f.csv", field="t")


def test_dates_that_settle_themselves_and_other_formats_need_no_choice():
    assert parse_timestamps(series(["13/05/2024", "31.12.24 23:59"])).tolist() == [
        pd.Timestamp("2024-05-13"), pd.Timestamp("2024-12-31 23:59")]
    assert parse_timestamps(series(["05/05/2024", "2024-05-06T08:10"])).tolist() == [
        pd.Timestamp("2024-05-05"), pd.Timestamp("2024-05-06 08:10")]  # same day and month: one reading
    assert parse_timestamps(series(["06/05/2024"]), "%d/%m/%Y").iloc[0] == pd.Timestamp("2024-05-06")
    assert parse_timestamps(series(["2024/05/06 07:00"])).iloc[0] == pd.Timestamp("2024-05-06 07:00")


@pytest.mark.parametrize("value", ["1500-03-04 07:00", "2300-01-01", "0099-01-01T00:00"])
def test_timestamps_outside_the_supported_years(value):
    with pytest.raises(InputError, match="row 2: timestamp: .* is outside the supported years 1678-2261"):
        parse_timestamps(series(["2024-03-04", value]), file="f.csv", field="timestamp")


def test_a_parquet_datetime_column_outside_the_range():
    values = pd.Series(pd.to_datetime(["2024-03-04", "1500-01-01"]).as_unit("s"), index=pd.RangeIndex(1, 3))
    with pytest.raises(InputError, match="row 2: .*outside the supported years"):
        parse_timestamps(values)
