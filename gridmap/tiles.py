"""Mapbox Vector Tiles (MVT 2.1) of the unit layers and cases: tile geometry, what each layer shows at which
zoom, and an encoder for stores without ``ST_AsMVT`` (the embedded one).

Tiles are in Web Mercator (EPSG:3857), XYZ numbering (y down), extent 4096 with a 64-unit buffer: the same
parameters PostGIS's ``ST_AsMVTGeom`` is given, so both stores draw the same tile. Geometry is simplified to
half a screen pixel (:data:`SIMPLIFY_UNITS`), so low zooms stay small, and each layer has a minimum zoom below which it is left out (2,756
buildings at z12 are an unreadable smear and most of the bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mapbox_vector_tile
import numpy as np
import shapely
from geopandas import GeoDataFrame

from gridmap.errors import InputError

EXTENT = 4096
BUFFER = 64
MAX_ZOOM = 22
#: Half the Web Mercator world's side, metres.
ORIGIN = 20037508.342789244


@dataclass(frozen=True)
class Layer:
    """A tile layer: the unit level it shows (None: cases), from which zoom, and its attributes."""

    name: str
    level: str | None
    minzoom: int
    properties: tuple[str, ...]

    def properties_at(self, z: int) -> tuple[str, ...]:
        """The attributes a tile at zoom ``z`` carries: below :data:`DETAIL_ZOOM` only the key (a city's
        40,000 grid names and workers would be most of a z10 tile, and nobody reads them at that scale)."""
        return self.properties if z >= DETAIL_ZOOM else self.properties[:1]


DETAIL_ZOOM = 13
UNIT_PROPERTIES = ("code", "name", "parent_code", "worker")
CASE_PROPERTIES = ("id", "category", "source", "state", "grid", "assignee", "reported_at", "deadline_at")
LAYERS: dict[str, Layer] = {layer.name: layer for layer in (
    Layer("streets", "street", 8, UNIT_PROPERTIES),
    Layer("communities", "community", 10, UNIT_PROPERTIES),
    Layer("grids", "grid", 10, UNIT_PROPERTIES),
    Layer("courtyards", "courtyard", 14, UNIT_PROPERTIES),
    Layer("buildings", "building", 15, UNIT_PROPERTIES),
    Layer("cases", None, 10, CASE_PROPERTIES),
)}


def check_tile(z: int, x: int, y: int) -> None:
    """Raise :class:`InputError` unless ``z/x/y`` is a tile of the XYZ pyramid (z up to :data:`MAX_ZOOM`)."""
    if not 0 <= z <= MAX_ZOOM:
        raise InputError(f"zoom {z} is outside 0..{MAX_ZOOM}")
    side = 1 << z
    if not (0 <= x < side and 0 <= y < side):
        raise InputError(f"tile {z}/{x}/{y} does not exist: x and y run from 0 to {side - 1} at zoom {z}")


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The tile's (minx, miny, maxx, maxy) in EPSG:3857 metres.

    >>> [round(v) for v in tile_bounds(1, 0, 0)]
    [-20037508, 0, 0, 20037508]
    """
    check_tile(z, x, y)
    size = 2 * ORIGIN / (1 << z)
    minx = -ORIGIN + x * size
    maxy = ORIGIN - y * size
    return minx, maxy - size, minx + size, maxy


def lonlat_bounds(z: int, x: int, y: int, *, margin: float = BUFFER / EXTENT) -> tuple[float, float, float, float]:
    """The tile's bounds (plus ``margin`` of its side) in lon/lat, for prefiltering stored features."""
    minx, miny, maxx, maxy = tile_bounds(z, x, y)
    pad = (maxx - minx) * margin
    lon = lambda v: math.degrees(v / 6378137.0)  # noqa: E731
    lat = lambda v: math.degrees(2 * math.atan(math.exp(max(min(v, ORIGIN), -ORIGIN) / 6378137.0)) - math.pi / 2)  # noqa: E731
    return lon(minx - pad), lat(miny - pad), lon(maxx + pad), lat(maxy + pad)


#: Simplification tolerance in tile units: half a pixel of a tile drawn 512 px wide (4096 / 512 / 2 = 4),
#: invisible on any screen and what keeps low-zoom tiles small.
SIMPLIFY_UNITS = 4


def unit_size(z: int) -> float:
    """Metres per tile unit at zoom ``z``."""
    return 2 * ORIGIN / (1 << z) / EXTENT


def tolerance(z: int) -> float:
    """Simplification tolerance at zoom ``z``, metres (:data:`SIMPLIFY_UNITS` tile units)."""
    return SIMPLIFY_UNITS * unit_size(z)


def encode_tile(layers: dict[str, GeoDataFrame], z: int, x: int, y: int) -> bytes:
    """An MVT tile of ``layers`` (name -> features in EPSG:3857, the layer's properties as columns): clipped to
    the tile plus its buffer, simplified to a tile unit, quantised to :data:`EXTENT`. Empty layers are left out."""
    minx, miny, maxx, maxy = tile_bounds(z, x, y)
    pad = (maxx - minx) * BUFFER / EXTENT
    clip = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
    tol = tolerance(z)
    encoded = []
    for name, frame in layers.items():
        if frame is None or not len(frame):
            continue
        geometry = shapely.simplify(shapely.intersection(frame.geometry.to_numpy(), clip), tol)
        keep = ~shapely.is_empty(geometry)
        columns = [c for c in frame.columns if c != frame.geometry.name]
        features = []
        for geom, row in zip(geometry[keep], frame.loc[keep, columns].itertuples(index=False)):
            properties = {k: _plain(v) for k, v in zip(columns, row) if _plain(v) is not None}
            features.append({"geometry": geom, "properties": properties})
        if features:
            encoded.append({"name": name, "features": features})
    if not encoded:
        return b""
    return mapbox_vector_tile.encode(encoded, default_options={
        "quantize_bounds": (minx, miny, maxx, maxy), "extents": EXTENT,
        "on_invalid_geometry": mapbox_vector_tile.encoder.on_invalid_geometry_make_valid})


def _plain(value):
    """A property value MVT can carry (str, int, float, bool), or None to leave it out."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
