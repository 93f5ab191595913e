"""The indicators a street office's supervisors are judged by, per grid, worker, community, category or street.

Every definition is in :func:`indicators`' docstring, because a supervisor's assessment rests on them: the
numbers must be reproducible by hand from the case table.

Pure: takes the case table, returns a table.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import shapely
from shapely import STRtree

from gridmap.crs import WGS84, metric_crs, transform_xy
from inspection.cases import as_utc
from inspection.errors import InspectionError

GROUPINGS = ("grid", "assignee", "community", "street", "category")
STREET_KEY = "street"
TIME_COLUMNS = ("reported_at", "dispatched_at", "handled_at", "verified_at", "closed_at", "deadline_at")
INPUT_COLUMNS = ("id", "category", "source", "state", "grid", "community", "assignee", *TIME_COLUMNS, "lon", "lat")
OUTPUT_COLUMNS = (
    "key",
    "cases",
    "by_category",
    "by_source",
    "cancelled",
    "closed",
    "closure_rate",
    "closed_on_time",
    "on_time_rate",
    "median_hours_to_dispatch",
    "median_hours_to_verify",
    "repeat_cases",
)
_OBJECT_COLUMNS = ("key", "closure_rate", "on_time_rate", "median_hours_to_dispatch", "median_hours_to_verify")
_HOUR = pd.Timedelta(hours=1)


def indicators(
    cases: pd.DataFrame,
    *,
    by: str,
    start: datetime,
    end: datetime,
    repeat_radius_m: float = 50.0,
    repeat_window_days: float = 90,
) -> pd.DataFrame:
    """Case indicators per group over the cases reported in ``[start, end)``.

    Parameters
    ----------
    cases : DataFrame
        Columns ``id, category, source, state, grid, community, assignee, reported_at, dispatched_at,
        handled_at, verified_at, closed_at, deadline_at, lon, lat``; times timezone-aware (or NaT), lon/lat
        WGS84 degrees (or NaN). Include earlier history: it is what repeats are found against.
    by : {"grid", "assignee", "community", "street", "category"}
        The grouping; ``"street"`` is every case in one group keyed ``"street"``. Cases whose grouping value
        is missing (say, not yet assigned) form their own group keyed ``None``, listed last.
    start, end : datetime
        Timezone-aware; a case counts when its ``reported_at`` is in ``[start, end)``.
    repeat_radius_m, repeat_window_days : float
        What "the same place" and "recently" mean for repeats.

    Returns
    -------
    DataFrame
        One row per group, sorted by key, with columns:

        - ``cases``: cases reported in the period.
        - ``by_category``, ``by_source``: ``{value: count}`` of those cases.
        - ``cancelled``: of those, how many are now 作废 (never a case to close).
        - ``closed``: of those, how many are now 结案 (in the table's current state, whenever closed).
        - ``closure_rate`` (结案率): ``closed / (cases - cancelled)``. Cases still waiting to be registered
          count against it: the backlog of unregistered reports is the supervisor's too.
        - ``closed_on_time``: closed cases whose ``handled_at <= deadline_at`` (handled within the 处置时限;
          ``handled_at`` is the last handling, so rework after a rejection that ends late is late). A
          closed case lacking either time cannot be shown on time and is not.
        - ``on_time_rate`` (按期结案率): ``closed_on_time / closed``.
        - ``median_hours_to_dispatch``: median of ``dispatched_at - reported_at`` in hours, over the cases
          with both (``dispatched_at`` should be the first dispatch).
        - ``median_hours_to_verify``: median of ``verified_at - dispatched_at`` in hours, over the cases
          with both.
        - ``repeat_cases``: cases that repeat an earlier one: there is a case of the same category, not
          cancelled, reported strictly earlier by at most ``repeat_window_days`` (it may be from before
          ``start``), within ``repeat_radius_m`` metres (inclusive, measured in :func:`gridmap.crs.metric_crs`
          of the cases' extent). Cancelled cases and cases without a location neither repeat nor are
          repeated.

        Rates and medians are ``None`` when there is nothing to divide or take the median of.

    Examples
    --------
    >>> utc = lambda text: pd.Timestamp(text, tz="UTC")
    >>> cases = pd.DataFrame({
    ...     "id": [1, 2], "category": ["event:0304", "event:0304"], "source": ["drone", "grid_worker"],
    ...     "state": ["closed", "dispatched"], "grid": ["g1", "g1"], "community": ["c1", "c1"],
    ...     "assignee": ["wang", "wang"], "reported_at": [utc("2025-05-01 08:00"), utc("2025-05-03 08:00")],
    ...     "dispatched_at": [utc("2025-05-01 10:00"), utc("2025-05-03 12:00")],
    ...     "handled_at": [utc("2025-05-02 10:00"), pd.NaT], "verified_at": [utc("2025-05-02 16:00"), pd.NaT],
    ...     "closed_at": [utc("2025-05-02 18:00"), pd.NaT],
    ...     "deadline_at": [utc("2025-05-04 10:00"), utc("2025-05-06 12:00")],
    ...     "lon": [116.4, 116.4002], "lat": [39.9, 39.9]})
    >>> [row] = indicators(cases, by="grid", start=utc("2025-05-01"), end=utc("2025-06-01")).to_dict("records")
    >>> row["cases"], row["closure_rate"], row["on_time_rate"], row["median_hours_to_dispatch"], row["repeat_cases"]
    (2, 0.5, 1.0, 3.0, 1)
    >>> row["median_hours_to_verify"], row["by_source"]
    (30.0, {'drone': 1, 'grid_worker': 1})
    """
    if by not in GROUPINGS:
        raise InspectionError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    start, end = _utc_bound(start, "start"), _utc_bound(end, "end")
    if start >= end:
        raise InspectionError(f"empty period: start {start.isoformat()} is not before end {end.isoformat()}")
    if not repeat_radius_m >= 0:
        raise InspectionError(f"repeat_radius_m must be 0 or more metres, not {repeat_radius_m}")
    if not repeat_window_days > 0:
        raise InspectionError(f"repeat_window_days must be positive, not {repeat_window_days}")
    missing = [column for column in INPUT_COLUMNS if column not in cases.columns]
    if missing:
        raise InspectionError(f"cases lack column(s) {', '.join(missing)}")

    frame = cases.reset_index(drop=True)
    times = {column: as_utc(frame[column], column) for column in TIME_COLUMNS}
    repeats = repeat_flags(
        frame["category"],
        times["reported_at"],
        frame["lon"],
        frame["lat"],
        cancelled=frame["state"] == "cancelled",
        radius_m=repeat_radius_m,
        window=pd.Timedelta(days=repeat_window_days),
    )
    reported = times["reported_at"]
    chosen = (reported.notna() & (reported >= start) & (reported < end)).to_numpy()
    keys = pd.Series(STREET_KEY, index=frame.index) if by == "street" else frame[by]
    # Groups are integer codes in key order, a missing key last: fast, and NaN-safe to group by.
    codes, labels = pd.factorize(keys[chosen], sort=True)
    labels = list(labels)
    if (codes < 0).any():
        codes = np.where(codes < 0, len(labels), codes)
        labels.append(None)

    state = frame["state"][chosen]
    closed = state == "closed"
    handled, due = times["handled_at"][chosen], times["deadline_at"][chosen]
    per_case = pd.DataFrame(
        {
            "cases": 1,
            "cancelled": state == "cancelled",
            "closed": closed,
            "closed_on_time": closed & handled.notna() & due.notna() & (handled <= due),
            "repeat_cases": repeats[chosen],
            "to_dispatch": (times["dispatched_at"] - reported)[chosen] / _HOUR,
            "to_verify": (times["verified_at"] - times["dispatched_at"])[chosen] / _HOUR,
        }
    ).reset_index(drop=True)
    grouped = per_case.groupby(codes, sort=True)
    counts = grouped[["cases", "cancelled", "closed", "closed_on_time", "repeat_cases"]].sum()
    medians = grouped[["to_dispatch", "to_verify"]].median()
    by_category = _counts_per_group(codes, frame["category"][chosen], len(labels))
    by_source = _counts_per_group(codes, frame["source"][chosen], len(labels))

    rows = []
    for code, count in counts.iterrows():
        reported_n, cancelled_n, closed_n, on_time_n = (
            int(count[column]) for column in ("cases", "cancelled", "closed", "closed_on_time")
        )
        rows.append(
            {
                "key": labels[code],
                "cases": reported_n,
                "by_category": by_category[code],
                "by_source": by_source[code],
                "cancelled": cancelled_n,
                "closed": closed_n,
                "closure_rate": _rate(closed_n, reported_n - cancelled_n),
                "closed_on_time": on_time_n,
                "on_time_rate": _rate(on_time_n, closed_n),
                "median_hours_to_dispatch": _optional(medians.at[code, "to_dispatch"]),
                "median_hours_to_verify": _optional(medians.at[code, "to_verify"]),
                "repeat_cases": int(count["repeat_cases"]),
            }
        )
    table = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    # Object columns keep None as None: float and string columns would turn it into NaN, which JSON cannot carry.
    for column in _OBJECT_COLUMNS:
        table[column] = pd.Series([row[column] for row in rows], index=table.index, dtype=object)
    return table


def repeat_flags(
    category: pd.Series,
    reported_at: pd.Series,
    lon: pd.Series,
    lat: pd.Series,
    *,
    cancelled: pd.Series,
    radius_m: float,
    window: pd.Timedelta,
) -> np.ndarray:
    """Whether each case repeats an earlier one (see ``repeat_cases`` in :func:`indicators`).

    Vectorised: the located cases are projected to one metric CRS, an STRtree gives every pair within
    ``radius_m``, and the pairs are kept when of the same category with the other case reported
    ``(0, window]`` earlier. All series share one index, in the same order.

    Examples
    --------
    >>> flags = repeat_flags(pd.Series(["a", "a", "b"]), pd.Series(pd.to_datetime(
    ...     ["2025-01-01", "2025-01-05", "2025-01-06"], utc=True)), pd.Series([116.4, 116.4, 116.4]),
    ...     pd.Series([39.9, 39.9, 39.9]), cancelled=pd.Series([False] * 3), radius_m=50,
    ...     window=pd.Timedelta(days=90))
    >>> flags.tolist()
    [False, True, False]
    """
    lon_values = pd.to_numeric(lon, errors="coerce").to_numpy(dtype=np.float64)
    lat_values = pd.to_numeric(lat, errors="coerce").to_numpy(dtype=np.float64)
    located = np.isfinite(lon_values) & np.isfinite(lat_values)
    bad = located & ((np.abs(lon_values) > 180) | (np.abs(lat_values) > 90))
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise InspectionError(
            f"case at row {position} has lon/lat ({lon_values[position]}, {lat_values[position]}), not WGS84 degrees"
        )
    eligible = located & category.notna().to_numpy() & reported_at.notna().to_numpy() & ~cancelled.to_numpy(dtype=bool)
    flags = np.zeros(len(category), dtype=bool)
    rows = np.flatnonzero(eligible)
    if len(rows) < 2:
        return flags
    x, y = lon_values[rows], lat_values[rows]
    crs = metric_crs((x.min() + x.max()) / 2, (y.min() + y.max()) / 2)
    points = shapely.points(*transform_xy(x, y, WGS84, crs))
    later, earlier = STRtree(points).query(points, predicate="dwithin", distance=radius_m)
    stamps = as_utc(reported_at, "reported_at").dt.tz_localize(None).to_numpy()[rows]
    gap = stamps[later] - stamps[earlier]
    codes = category.to_numpy()[rows]
    hit = (codes[later] == codes[earlier]) & (gap > np.timedelta64(0)) & (gap <= window.to_timedelta64())
    flags[rows[later[hit]]] = True
    return flags


def _utc_bound(value: datetime, name: str) -> pd.Timestamp:
    if not isinstance(value, datetime):
        raise InspectionError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InspectionError(f"{name} is a naive datetime ({value.isoformat()}); give a timezone-aware UTC time")
    return pd.Timestamp(value).tz_convert("UTC")


def _counts_per_group(codes: np.ndarray, values: pd.Series, groups: int) -> list[dict]:
    """``{value: count}`` per group code, values sorted; missing values are not counted."""
    counts: list[dict] = [{} for _ in range(groups)]
    pairs = pd.Series(1, index=range(len(codes))).groupby([codes, values.to_numpy()], sort=True).size()
    for (code, value), count in pairs.items():
        counts[code][value] = int(count)
    return counts


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _optional(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
