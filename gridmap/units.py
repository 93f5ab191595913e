"""The unit table: one GeoDataFrame schema shared by import, validation, lookup and storage.

Every unit of every level is one row:

=============  ==========  ===========================================================================
column         dtype       meaning
=============  ==========  ===========================================================================
code           str         canonical code (:mod:`gridmap.codes`), unique across all levels
level          str         one of :data:`gridmap.codes.LEVELS`
name           str         display name, e.g. ``东华门街道``; may be empty
parent_code    str         code of the parent unit (a county code for streets)
worker         str|None    responsible grid worker (grids only)
population     Int64       resident population, where known
attributes     dict        any further properties, JSON-serialisable
geometry       Polygon or MultiPolygon in EPSG:4326 (WGS84); never shifted (GCJ-02/BD-09) coordinates
=============  ==========  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable

import geopandas as gpd
import pandas as pd

from gridmap.codes import LEVELS
from gridmap.errors import CRSError, InputError

STORAGE_CRS = "EPSG:4326"
COLUMNS: tuple[str, ...] = ("code", "level", "name", "parent_code", "worker", "population", "attributes", "geometry")


def empty_units() -> gpd.GeoDataFrame:
    """A unit table with no rows and the right columns and CRS."""
    return make_units([])


def make_units(records: Iterable[dict]) -> gpd.GeoDataFrame:
    """Build a unit table from dicts with (at least) ``code``, ``level`` and ``geometry`` in EPSG:4326.

    Missing optional columns are filled (``name`` with ``""``, ``attributes`` with ``{}``).

    Examples
    --------
    >>> from shapely import box
    >>> units = make_units([{"code": "110101001", "level": "street", "parent_code": "110101",
    ...                      "geometry": box(116.39, 39.90, 116.41, 39.92)}])
    >>> units.loc[0, "name"], units.crs.to_string()
    ('', 'EPSG:4326')
    """
    frame = pd.DataFrame(list(records), columns=None)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[list(COLUMNS)]
    frame["name"] = frame["name"].fillna("").astype(str)
    frame["population"] = pd.array(frame["population"], dtype="Int64")
    frame["attributes"] = [a if isinstance(a, dict) else {} for a in frame["attributes"]]
    frame["worker"] = frame["worker"].astype(object).where(frame["worker"].notna(), None)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=STORAGE_CRS)


def check_units(units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Raise if ``units`` is not a unit table in the storage CRS; return it unchanged otherwise."""
    missing = [c for c in COLUMNS if c not in units.columns]
    if missing:
        raise InputError(f"unit table lacks columns {missing}; build it with gridmap.units.make_units")
    if units.crs is None or not units.crs.equals(STORAGE_CRS):
        raise CRSError(f"unit table is in {units.crs}, expected {STORAGE_CRS}: reproject with .to_crs('{STORAGE_CRS}')")
    bad = sorted(set(units["level"]) - set(LEVELS))
    if bad:
        raise InputError(f"unknown levels {bad}: expected one of {', '.join(LEVELS)}")
    return units
