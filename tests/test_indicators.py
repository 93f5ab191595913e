"""Indicators on a hand-built case table; every expected figure is worked out by hand in the comments."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from inspection.errors import InspectionError
from inspection.indicators import indicators, repeat_flags

START = pd.Timestamp("2025-05-01", tz="UTC")
END = pd.Timestamp("2025-06-01", tz="UTC")
LON = 116.40
# At latitude 39.9 one thousandth of a degree of latitude is about 111 m, so 0.0003 degrees is about 33 m
# (within 50 m) and 0.0006 degrees about 67 m (beyond).
COLUMNS = [
    "id", "category", "source", "state", "grid", "community", "assignee", "reported_at", "dispatched_at",
    "handled_at", "verified_at", "closed_at", "deadline_at", "lat",
]
ROWS = [
    # H1: before the period; 106 days before case 1 (Jan 15 -> May 1), so too old to make it a repeat.
    ("H1", "event:0304", "drone", "closed", "g1", "c1", "wang", "2025-01-15 00:00", "2025-01-15 02:00",
     "2025-01-16 00:00", "2025-01-16 02:00", "2025-01-16 03:00", "2025-01-18 02:00", 39.9000),
    # H2: before the period, where case 6 is 35 days later.
    ("H2", "event:0101", "grid_worker", "closed", "g3", "c2", "zhao", "2025-04-20 00:00", "2025-04-20 01:00",
     "2025-04-21 00:00", "2025-04-21 01:00", "2025-04-21 02:00", "2025-04-23 01:00", 39.9500),
    # 1: at the start (included). Dispatch 2 h; verify May 1 02:00 -> May 2 06:00 = 28 h; handled before deadline.
    ("1", "event:0304", "drone", "closed", "g1", "c1", "wang", "2025-05-01 00:00", "2025-05-01 02:00",
     "2025-05-02 00:00", "2025-05-02 06:00", "2025-05-02 08:00", "2025-05-04 02:00", 39.9000),
    # 2: 33 m from case 1, 9 days later, same category: a repeat. Dispatch 4 h; verify May 10 04:00 ->
    # May 15 12:00 = 128 h; handled May 15, after the May 13 deadline: late.
    ("2", "event:0304", "grid_worker", "closed", "g1", "c1", "wang", "2025-05-10 00:00", "2025-05-10 04:00",
     "2025-05-15 00:00", "2025-05-15 12:00", "2025-05-16 00:00", "2025-05-13 04:00", 39.9003),
    # 3: where case 1 was, but another category: not a repeat. Dispatch 1 h.
    ("3", "event:0502", "hotline", "dispatched", "g1", "c1", "wang", "2025-05-12 00:00", "2025-05-12 01:00",
     None, None, None, "2025-05-12 03:00", 39.9000),
    # 4: cancelled, far from everything.
    ("4", "event:0304", "grid_worker", "cancelled", "g2", "c1", None, "2025-05-20 00:00", None,
     None, None, None, None, 39.9100),
    # 5: 22 m from case 4 and 5 days later, but 4 was cancelled: not a repeat.
    ("5", "event:0304", "drone", "reported", "g2", "c1", None, "2025-05-25 00:00", None,
     None, None, None, None, 39.9102),
    # 6: where H2 was, 35 days later: a repeat of a case from before the period. Dispatch 6 h; verify
    # May 25 06:00 -> May 26 06:00 = 24 h.
    ("6", "event:0101", "hotline", "verified", "g3", "c2", "zhao", "2025-05-25 00:00", "2025-05-25 06:00",
     "2025-05-26 00:00", "2025-05-26 06:00", None, "2025-05-28 06:00", 39.9500),
    # 7: reported exactly at the end: outside the period.
    ("7", "event:0304", "drone", "closed", "g1", "c1", "wang", "2025-06-01 00:00", "2025-06-01 01:00",
     "2025-06-01 02:00", "2025-06-01 03:00", "2025-06-01 04:00", "2025-06-04 01:00", 39.9003),
    # 8: closed without a deadline (cannot be on time); no location. Dispatch 3 h; verify 03:00 -> 09:00 = 6 h.
    ("8", "event:0102", "grid_worker", "closed", "g3", "c2", "zhao", "2025-05-03 00:00", "2025-05-03 03:00",
     "2025-05-03 05:00", "2025-05-03 09:00", "2025-05-03 10:00", None, None),
]


def case_table():
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    for column in ("reported_at", "dispatched_at", "handled_at", "verified_at", "closed_at", "deadline_at"):
        frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC")
    frame["lon"] = [LON if lat is not None else math.nan for lat in frame["lat"]]
    frame["lat"] = frame["lat"].astype(float)
    return frame


def by_key(table):
    return {row["key"]: row for row in table.to_dict("records")}


def test_by_grid():
    table = indicators(case_table(), by="grid", start=START, end=END)
    assert list(table["key"]) == ["g1", "g2", "g3"]
    rows = by_key(table)

    g1 = rows["g1"]  # cases 1, 2, 3
    assert g1["cases"] == 3
    assert g1["by_category"] == {"event:0304": 2, "event:0502": 1}
    assert g1["by_source"] == {"drone": 1, "grid_worker": 1, "hotline": 1}
    assert (g1["cancelled"], g1["closed"], g1["closed_on_time"]) == (0, 2, 1)
    assert g1["closure_rate"] == pytest.approx(2 / 3)
    assert g1["on_time_rate"] == 0.5
    assert g1["median_hours_to_dispatch"] == 2.0  # 2, 4, 1
    assert g1["median_hours_to_verify"] == 78.0  # (28 + 128) / 2
    assert g1["repeat_cases"] == 1  # case 2

    g2 = rows["g2"]  # cases 4 (cancelled), 5 (reported)
    assert (g2["cases"], g2["cancelled"], g2["closed"], g2["closed_on_time"]) == (2, 1, 0, 0)
    assert g2["closure_rate"] == 0.0  # 0 closed of 2 - 1
    assert g2["on_time_rate"] is None  # nothing closed
    assert g2["median_hours_to_dispatch"] is None and g2["median_hours_to_verify"] is None
    assert g2["repeat_cases"] == 0

    g3 = rows["g3"]  # cases 6, 8
    assert g3["by_category"] == {"event:0101": 1, "event:0102": 1}
    assert (g3["cases"], g3["closed"], g3["closed_on_time"]) == (2, 1, 0)
    assert (g3["closure_rate"], g3["on_time_rate"]) == (0.5, 0.0)
    assert g3["median_hours_to_dispatch"] == 4.5  # 6, 3
    assert g3["median_hours_to_verify"] == 15.0  # 24, 6
    assert g3["repeat_cases"] == 1  # case 6


def test_whole_street():
    [row] = indicators(case_table(), by="street", start=START, end=END).to_dict("records")
    assert row["key"] == "street"
    assert row["cases"] == 7  # 1, 2, 3, 4, 5, 6, 8
    assert row["by_category"] == {"event:0101": 1, "event:0102": 1, "event:0304": 4, "event:0502": 1}
    assert row["by_source"] == {"drone": 2, "grid_worker": 3, "hotline": 2}
    assert (row["cancelled"], row["closed"], row["closed_on_time"]) == (1, 3, 1)
    assert row["closure_rate"] == 0.5  # 3 / (7 - 1)
    assert row["on_time_rate"] == pytest.approx(1 / 3)
    assert row["median_hours_to_dispatch"] == 3.0  # 1, 2, 3, 4, 6
    assert row["median_hours_to_verify"] == 26.0  # 6, 24, 28, 128
    assert row["repeat_cases"] == 2


def test_by_assignee_keeps_unassigned_cases_last():
    table = indicators(case_table(), by="assignee", start=START, end=END)
    assert list(table["key"]) == ["wang", "zhao", None]
    assert list(table["cases"]) == [3, 2, 2]


def test_by_community_and_category():
    communities = by_key(indicators(case_table(), by="community", start=START, end=END))
    assert {key: row["cases"] for key, row in communities.items()} == {"c1": 5, "c2": 2}
    assert communities["c1"]["repeat_cases"] == 1 and communities["c2"]["repeat_cases"] == 1
    categories = by_key(indicators(case_table(), by="category", start=START, end=END))
    assert {key: row["cases"] for key, row in categories.items()} == {
        "event:0101": 1,
        "event:0102": 1,
        "event:0304": 4,
        "event:0502": 1,
    }
    assert categories["event:0304"]["repeat_cases"] == 1
    assert categories["event:0304"]["closure_rate"] == pytest.approx(2 / 3)  # 1, 2 closed of 1, 2, 5


def test_repeat_radius_and_window():
    narrow = by_key(indicators(case_table(), by="grid", start=START, end=END, repeat_radius_m=20))
    assert (narrow["g1"]["repeat_cases"], narrow["g3"]["repeat_cases"]) == (0, 1)  # 33 m > 20 m; 0 m stays
    short = by_key(indicators(case_table(), by="grid", start=START, end=END, repeat_window_days=5))
    assert (short["g1"]["repeat_cases"], short["g3"]["repeat_cases"]) == (0, 0)  # 9 and 35 days > 5
    long = by_key(indicators(case_table(), by="grid", start=START, end=END, repeat_window_days=120))
    assert long["g1"]["repeat_cases"] == 2  # case 1 now repeats H1 (106 days)


def test_period_bounds():
    # Only May 1 00:00 (case 1) and May 3 (case 8) fall in [May 1, May 4).
    [row] = indicators(case_table(), by="street", start=START, end=START + timedelta(days=3)).to_dict("records")
    assert row["cases"] == 2
    assert indicators(case_table(), by="grid", start=START + timedelta(minutes=1), end=END)["cases"].sum() == 6


def test_empty_period():
    start, end = pd.Timestamp("2030-01-01", tz="UTC"), pd.Timestamp("2030-02-01", tz="UTC")
    table = indicators(case_table(), by="grid", start=start, end=end)
    assert table.empty
    assert list(table.columns)[:4] == ["key", "cases", "by_category", "by_source"]


def test_times_in_other_zones_and_python_datetimes():
    frame = case_table()
    beijing = timezone(timedelta(hours=8))
    # Case 1 reported at 08:00 Beijing time is 00:00 UTC, the first instant of the period.
    frame["reported_at"] = frame["reported_at"].astype(object)
    frame.loc[frame["id"] == "1", "reported_at"] = datetime(2025, 5, 1, 8, 0, tzinfo=beijing)
    [row] = indicators(frame, by="street", start=START, end=END).to_dict("records")
    assert row["cases"] == 7


def test_naive_times_are_refused():
    frame = case_table()
    frame["closed_at"] = frame["closed_at"].dt.tz_localize(None)
    with pytest.raises(InspectionError, match="closed_at holds naive times"):
        indicators(frame, by="grid", start=START, end=END)
    with pytest.raises(InspectionError, match="start is a naive datetime"):
        indicators(case_table(), by="grid", start=datetime(2025, 5, 1), end=END)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"by": "district"}, "unknown grouping 'district'"),
        ({"start": END, "end": START}, "empty period"),
        ({"repeat_radius_m": -1}, "repeat_radius_m must be 0 or more"),
        ({"repeat_window_days": 0}, "repeat_window_days must be positive"),
    ],
)
def test_bad_arguments(arguments, message):
    call = {"by": "grid", "start": START, "end": END, **arguments}
    with pytest.raises(InspectionError, match=message):
        indicators(case_table(), **call)


def test_missing_columns():
    with pytest.raises(InspectionError, match="lack column.*source"):
        indicators(case_table().drop(columns="source"), by="grid", start=START, end=END)


def test_repeat_flags_edge_cases():
    times = pd.Series(pd.to_datetime(["2025-05-01", "2025-05-01", "2025-05-02", "2025-05-03", "2025-05-04"], utc=True))
    flags = repeat_flags(
        pd.Series(["a", "a", "a", "a", None]),
        times,
        pd.Series([LON] * 5),
        pd.Series([39.9] * 5),
        cancelled=pd.Series([False, False, True, False, False]),
        radius_m=50,
        window=pd.Timedelta(days=90),
    )
    # 0 and 1 at the same instant: neither is earlier. 2 would repeat them but is cancelled. 3 repeats 0 and 1.
    # 4 has no category.
    assert flags.tolist() == [False, False, False, True, False]


def test_repeat_flags_refuse_projected_coordinates():
    with pytest.raises(InspectionError, match="not WGS84 degrees"):
        repeat_flags(
            pd.Series(["a", "a"]),
            pd.Series(pd.to_datetime(["2025-05-01", "2025-05-02"], utc=True)),
            pd.Series([440_000.0, 440_010.0]),
            pd.Series([4_417_000.0, 4_417_000.0]),
            cancelled=pd.Series([False, False]),
            radius_m=50,
            window=pd.Timedelta(days=90),
        )
