"""Coordinate reference systems: naming them, shifting to and from GCJ-02/BD-09, reprojecting.

We store WGS84 (EPSG:4326) only. Files arrive in other systems:

=========  ==========================================================================================
name       what it is
=========  ==========================================================================================
wgs84      EPSG:4326, GPS and the storage CRS
cgcs2000   EPSG:4490, China's legal datum; within about 1 m of WGS84, so PROJ's null "ballpark"
           transform between the two is intended
gcj02      WGS84 plus the published nonlinear obfuscation offset (Chinese phones, Amap, Tencent);
           100-700 m off in most of China
bd09       GCJ-02 plus Baidu's further transform (Baidu Maps)
EPSG:NNNN  anything else PROJ knows, e.g. EPSG:4548 (CGCS2000 3-degree Gauss-Kruger CM 117E)
=========  ==========================================================================================

A GCJ-02 or BD-09 file cannot say so (it declares EPSG:4326, the base it is shifted from), so the user
declares it and :func:`to_storage_crs` un-shifts it.

The shifts apply inside the published rectangle of :func:`out_of_china` only, as the published
algorithms do, and that holds for BD-09 too. Whether a point is in China is decided on the less-shifted
end of each pair (the WGS84 point for WGS84<->GCJ-02 and WGS84<->BD-09, the GCJ-02 point for
GCJ-02<->BD-09), so each forward function and its inverse undo each other (to a micrometre) for every
point whose less-shifted end is in China, including points shifted across the rectangle's edge. The
price is at that edge: a point just outside the rectangle that is also where some Chinese point is
shifted to is un-shifted to the Chinese point. The inverses have no closed form; they iterate on the
forward transform to within 1e-11 degrees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from pyproj.exceptions import CRSError as ProjCRSError

from gridmap.errors import CRSError, GeometryError
from gridmap.units import STORAGE_CRS

_Shift = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# Krasovsky 1940 ellipsoid as used by the published GCJ-02 algorithm.
_A = 6378245.0
_EE = 0.00669342162296594323
# Baidu's constant, spelled as in the published algorithm so results match it to the last bit.
_X_PI = math.pi * 3000.0 / 180.0
_CHINA_LON = (72.004, 137.8347)
_CHINA_LAT = (0.8293, 55.8271)
# Both shifts together stay under 0.02 degrees; a point farther than this from the rectangle cannot be
# the shifted image of a Chinese point, so the inverses leave it alone without iterating.
_SOLVE_MARGIN = 1.0
_MAX_ITERATIONS = 30
# Far below the 1e-9 degrees promised and well above float64 resolution at 180 degrees (3e-14).
_TOLERANCE = 1e-12
_ACCEPTED = "wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN"
_EPSG = re.compile(r"^(?:epsg:)?([0-9]+)$")
_GK_CM75_EPSG = 4534  # CGCS2000 / 3-degree Gauss-Kruger CM 75E; CM 78E is 4535, ... CM 135E is 4554


@dataclass(frozen=True)
class SourceCRS:
    """A coordinate system a file can be in.

    Attributes
    ----------
    name : str
        ``"wgs84"``, ``"cgcs2000"``, ``"gcj02"``, ``"bd09"``, ``"EPSG:NNNN"``, or the PROJ name of a CRS
        that has no EPSG code.
    crs : pyproj.CRS
        The CRS the coordinates are in; EPSG:4326 for ``gcj02`` and ``bd09``, the base they are shifted from.
    shift : str or None
        ``"gcj02"`` or ``"bd09"`` for shifted systems, else ``None``.
    """

    name: str
    crs: pyproj.CRS
    shift: str | None = None


_WGS84_CRS = pyproj.CRS.from_epsg(4326)
_CGCS2000_CRS = pyproj.CRS.from_epsg(4490)
WGS84 = SourceCRS("wgs84", _WGS84_CRS)
CGCS2000 = SourceCRS("cgcs2000", _CGCS2000_CRS)
GCJ02 = SourceCRS("gcj02", _WGS84_CRS, "gcj02")
BD09 = SourceCRS("bd09", _WGS84_CRS, "bd09")
# Keys are lower-cased with "-", "_" and spaces removed, so "WGS-84" and "gcj_02" resolve too.
_NAMED = {"wgs84": WGS84, "cgcs2000": CGCS2000, "gcj02": GCJ02, "bd09": BD09}


def resolve_crs(value: object) -> SourceCRS:
    """The :class:`SourceCRS` a user or a file means by ``value``.

    Accepts the names ``wgs84``, ``cgcs2000``, ``gcj02``, ``bd09`` (any case, with or without ``-``),
    ``"EPSG:NNNN"`` or ``"NNNN"`` strings, integer EPSG codes, a :class:`pyproj.CRS` (as read from a file)
    and a :class:`SourceCRS`. EPSG:4326 (and OGC:CRS84) resolve to ``wgs84``, EPSG:4490 to ``cgcs2000``.

    Examples
    --------
    >>> resolve_crs("GCJ-02").name, resolve_crs("GCJ-02").crs.to_epsg()
    ('gcj02', 4326)
    >>> resolve_crs(4490).name, resolve_crs("epsg:4548").name
    ('cgcs2000', 'EPSG:4548')
    >>> resolve_crs("mars")
    Traceback (most recent call last):
    ...
    gridmap.errors.CRSError: unknown CRS 'mars': expected wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN
    """
    if isinstance(value, SourceCRS):
        return value
    if isinstance(value, pyproj.CRS):
        return _from_pyproj(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return _from_epsg(int(value), value)
    if isinstance(value, str):
        key = re.sub(r"[-_\s]", "", value.lower())
        if key in _NAMED:
            return _NAMED[key]
        match = _EPSG.match(key)
        if match:
            return _from_epsg(int(match.group(1)), value)
    raise CRSError(f"unknown CRS {value!r}: expected {_ACCEPTED}")


def out_of_china(lon, lat) -> np.ndarray:
    """Whether each point lies outside the rectangle the published GCJ-02 algorithm shifts.

    The rectangle is lon 72.004-137.8347, lat 0.8293-55.8271, edges included; NaN is outside.

    Examples
    --------
    >>> out_of_china([116.4, 139.7, np.nan], [39.9, 35.7, 39.9])
    array([False,  True,  True])
    """
    lon, lat = _as_xy(lon, lat)
    inside = (lon >= _CHINA_LON[0]) & (lon <= _CHINA_LON[1]) & (lat >= _CHINA_LAT[0]) & (lat <= _CHINA_LAT[1])
    return ~inside


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Shift WGS84 points to GCJ-02 with the published algorithm; points outside China are unchanged.

    Examples
    --------
    >>> lon, lat = wgs84_to_gcj02(116.404, 39.915)
    >>> print(f"{lon:.8f} {lat:.8f}")
    116.41024450 39.91640428
    >>> wgs84_to_gcj02([139.7], [35.7])
    (array([139.7]), array([35.7]))
    """
    return _shift_inside(*_as_xy(lon, lat), _gcj02_shift)


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Un-shift GCJ-02 points to WGS84 by iterating :func:`wgs84_to_gcj02`.

    Returns the point in China that :func:`wgs84_to_gcj02` sends to the input (to 1e-11 degrees), or
    the input unchanged when there is none; NaN stays NaN.

    Examples
    --------
    >>> lon, lat = gcj02_to_wgs84(116.41024449916938, 39.91640428150164)
    >>> print(f"{lon:.9f} {lat:.9f}")
    116.404000000 39.915000000
    """
    return _unshift_inside(*_as_xy(lon, lat), _gcj02_shift)


def gcj02_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Shift GCJ-02 points to BD-09 with the published algorithm; points outside China are unchanged.

    The published formula has no such test; leaving points outside China alone is our choice, so that
    foreign points never move whatever system they are declared in.

    Examples
    --------
    >>> lon, lat = gcj02_to_bd09(116.404, 39.915)
    >>> print(f"{lon:.8f} {lat:.8f}")
    116.41036949 39.92133699
    """
    return _shift_inside(*_as_xy(lon, lat), _bd09_shift)


def bd09_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Un-shift BD-09 points to GCJ-02 by iterating :func:`gcj02_to_bd09`.

    More exact than the published one-step formula, which is off by up to 2e-6 degrees (20 cm).

    Examples
    --------
    >>> lon, lat = bd09_to_gcj02(116.41036949371029, 39.92133699351021)
    >>> print(f"{lon:.9f} {lat:.9f}")
    116.404000000 39.915000000
    """
    return _unshift_inside(*_as_xy(lon, lat), _bd09_shift)


def wgs84_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Shift WGS84 points to BD-09 (GCJ-02 then Baidu's transform); points outside China are unchanged.

    Examples
    --------
    >>> lon, lat = wgs84_to_bd09(116.404, 39.915)
    >>> print(f"{lon:.6f} {lat:.6f}")
    116.416627 39.922700
    """
    return _shift_inside(*_as_xy(lon, lat), _wgs84_to_bd09_shift)


def bd09_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Un-shift BD-09 points to WGS84 by iterating :func:`wgs84_to_bd09`; see :func:`gcj02_to_wgs84`.

    Examples
    --------
    >>> lon, lat = bd09_to_wgs84(*wgs84_to_bd09(121.5272106, 31.1774276))
    >>> print(f"{lon:.9f} {lat:.9f}")
    121.527210600 31.177427600
    """
    return _unshift_inside(*_as_xy(lon, lat), _wgs84_to_bd09_shift)


def transform_xy(lon, lat, src, dst) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinates between any two systems :func:`resolve_crs` accepts.

    Shifted systems go through WGS84, except GCJ-02<->BD-09, which use the direct pair of functions;
    everything else goes through PROJ (``always_xy``: longitude/easting first).

    Examples
    --------
    >>> x, y = transform_xy([117.0], [39.0], "gcj02", "EPSG:4548")
    >>> [round(v) for v in (x[0], y[0])]
    [499473, 4318405]
    """
    source, target = resolve_crs(src), resolve_crs(dst)
    x, y = _as_xy(lon, lat)
    if source == target:
        return x, y
    direct = _DIRECT.get((source.shift, target.shift))
    if direct is not None:
        return direct(x, y)
    if source.shift is not None:
        x, y = _UNSHIFT[source.shift](x, y)
    if not source.crs.equals(target.crs):
        x, y = _reproject(x, y, source.crs, target.crs)
    if target.shift is not None:
        x, y = _SHIFT[target.shift](x, y)
    return x, y


def transform_geometries(geoms, src, dst) -> np.ndarray:
    """Transform an array-like of shapely geometries with :func:`transform_xy`; Z values are kept.

    Examples
    --------
    >>> from shapely import Point, box
    >>> out = transform_geometries([Point(139.7, 35.7), box(116.39, 39.90, 116.41, 39.92)], "wgs84", "gcj02")
    >>> out[0].wkt, [round(v, 4) for v in out[1].bounds]
    ('POINT (139.7 35.7)', [116.3962, 39.9014, 116.4162, 39.9214])
    """
    source, target = resolve_crs(src), resolve_crs(dst)

    def transform(x, y, *z):
        return (*transform_xy(x, y, source, target), *z)

    # include_z=None keeps each geometry's dimension, so 3D survey data does not lose its heights.
    return np.asarray(shapely.transform(geoms, transform, include_z=None, interleaved=False))


def to_storage_crs(gdf: gpd.GeoDataFrame, src=None) -> gpd.GeoDataFrame:
    """A copy of ``gdf`` in the storage CRS, EPSG:4326, with GCJ-02/BD-09 coordinates un-shifted.

    ``src`` is what the user declares the file to be in; when given it wins over the CRS the file
    declares, since shifted files declare EPSG:4326 and files with a wrong ``.prj`` are common. When
    ``src`` is None the file's own CRS is used, and a file without one is an error. Coordinates that
    cannot be degrees (beyond +-180/+-90) in a geographic ``src`` are an error, not silently stored.

    Examples
    --------
    >>> from shapely import Point
    >>> gdf = gpd.GeoDataFrame({"name": ["a"]}, geometry=[Point(116.41024449916938, 39.91640428150164)],
    ...                        crs="EPSG:4326")
    >>> out = to_storage_crs(gdf, "gcj02")
    >>> out.crs.to_string(), round(out.geometry[0].x, 9), out.loc[0, "name"]
    ('EPSG:4326', 116.404, 'a')
    >>> to_storage_crs(gdf.set_crs(None, allow_override=True))
    Traceback (most recent call last):
    ...
    gridmap.errors.CRSError: no CRS: the file declares none; pass --crs wgs84|cgcs2000|gcj02|bd09|EPSG:NNNN
    """
    source = source_crs_of(gdf, src)
    moved = transform_geometries(gdf.geometry.array, source, WGS84)
    out = gdf.copy()
    out[gdf.geometry.name] = gpd.GeoSeries(moved, index=gdf.index, crs=STORAGE_CRS)
    return out.set_crs(STORAGE_CRS, allow_override=True)


def metric_crs(lon: float, lat: float) -> pyproj.CRS:
    """A projected CRS in metres for areas and distances around (``lon``, ``lat``), e.g. a centroid.

    In China (:func:`out_of_china` is False) the CGCS2000 3-degree Gauss-Kruger zone whose central
    meridian is nearest, EPSG:4534 (CM 75E) to EPSG:4554 (CM 135E); elsewhere the WGS84 UTM zone.

    Examples
    --------
    >>> metric_crs(116.4, 39.9).to_epsg(), metric_crs(2.35, 48.86).to_epsg(), metric_crs(151.2, -33.9).to_epsg()
    (4548, 32631, 32756)
    """
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
        raise GeometryError(f"no metric CRS for ({lon}, {lat}): not a longitude/latitude point")
    if not out_of_china(lon, lat):
        zone = min(max(math.floor((lon - 75.0) / 3.0 + 0.5), 0), 20)
        return _crs_of(_GK_CM75_EPSG + zone)
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)
    return _crs_of((32600 if lat >= 0 else 32700) + zone)


def source_crs_of(gdf: gpd.GeoDataFrame, src) -> SourceCRS:
    """The system ``gdf``'s coordinates are in: ``src`` if given, else the file's own CRS."""
    if src is None and gdf.crs is None:
        raise CRSError("no CRS: the file declares none; pass --crs wgs84|cgcs2000|gcj02|bd09|EPSG:NNNN")
    source = resolve_crs(gdf.crs if src is None else src)
    if source.crs.is_geographic and len(gdf):
        minx, miny, maxx, maxy = gdf.total_bounds
        # Bounds are NaN when every geometry is empty; NaN compares False, which is right here.
        if max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90:
            raise CRSError(
                f"coordinates reach ({max(abs(minx), abs(maxx)):.0f}, {max(abs(miny), abs(maxy)):.0f}), "
                f"impossible in {source.name} (degrees): the file is projected; pass its EPSG code as the CRS"
            )
    return source


def _from_epsg(code: int, value: object) -> SourceCRS:
    try:
        crs = _crs_of(code)
    except ProjCRSError:
        raise CRSError(f"unknown CRS {value!r}: EPSG:{code} is not in the EPSG database") from None
    return _from_pyproj(crs)


def _from_pyproj(crs: pyproj.CRS) -> SourceCRS:
    for named in (WGS84, CGCS2000):
        if crs.equals(named.crs, ignore_axis_order=True):
            return named
    if not (crs.is_geographic or crs.is_projected):
        raise CRSError(f"CRS {crs.name!r} is not a horizontal (geographic or projected) CRS")
    code = crs.to_epsg()
    return SourceCRS(f"EPSG:{code}" if code is not None else crs.name, crs)


@cache
def _crs_of(code: int) -> pyproj.CRS:
    return pyproj.CRS.from_epsg(code)


# Shared by the service's threads: pyproj Transformers are thread-safe since pyproj 3.1.
@lru_cache(maxsize=64)
def transformer(src, dst) -> pyproj.Transformer:
    """A cached lon/lat-ordered (``always_xy``) transformer between two CRSs (anything pyproj takes that
    hashes: ``"EPSG:4326"``, a :class:`pyproj.CRS`); building one costs tens of milliseconds."""
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def _reproject(x: np.ndarray, y: np.ndarray, src: pyproj.CRS, dst: pyproj.CRS) -> tuple[np.ndarray, np.ndarray]:
    # PROJ flattens its input and hands 0-d arrays back as Python floats; keep the caller's shape.
    nx, ny = transformer(src, dst).transform(x.ravel(), y.ravel())
    return np.asarray(nx, dtype=np.float64).reshape(x.shape), np.asarray(ny, dtype=np.float64).reshape(y.shape)


def _as_xy(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return x.copy(), y.copy()


def _shift_inside(lon: np.ndarray, lat: np.ndarray, shift: _Shift) -> tuple[np.ndarray, np.ndarray]:
    inside = ~out_of_china(lon, lat)
    x, y = lon.copy(), lat.copy()
    x[inside], y[inside] = shift(lon[inside], lat[inside])
    return x, y


def _unshift_inside(lon: np.ndarray, lat: np.ndarray, shift: _Shift) -> tuple[np.ndarray, np.ndarray]:
    near = (
        (lon >= _CHINA_LON[0] - _SOLVE_MARGIN)
        & (lon <= _CHINA_LON[1] + _SOLVE_MARGIN)
        & (lat >= _CHINA_LAT[0] - _SOLVE_MARGIN)
        & (lat <= _CHINA_LAT[1] + _SOLVE_MARGIN)
    )
    tx, ty = lon[near], lat[near]
    sx, sy = _solve(shift, tx, ty)
    # A solution outside China is not what the shift did to this point: the point was never shifted.
    solved = ~out_of_china(sx, sy)
    x, y = lon.copy(), lat.copy()
    x[near], y[near] = np.where(solved, sx, tx), np.where(solved, sy, ty)
    return x, y


def _solve(shift: _Shift, tx: np.ndarray, ty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points that ``shift`` sends to (``tx``, ``ty``), by fixed-point iteration.

    The shifts move points by at most 0.02 degrees and vary slowly (their Jacobian is within ~0.02 of
    the identity), so each step gains two or more digits and 5-8 steps reach the tolerance. The one
    exception is GCJ-02's sqrt(|lon - 105|) term, whose slope is unbounded at 105E: there the error
    stalls near 3e-12 degrees while the step keeps shrinking, still far inside the 1e-9 promised.
    Starting from the target, the first step is the published one-step inverse.
    """
    x, y = tx.copy(), ty.copy()
    # Each point stops on its own, so its result does not depend on the other points in the batch.
    active = np.ones(tx.shape, dtype=bool)
    for _ in range(_MAX_ITERATIONS):
        fx, fy = shift(x[active], y[active])
        dx, dy = fx - tx[active], fy - ty[active]
        x[active] -= dx
        y[active] -= dy
        active[active] = (np.abs(dx) >= _TOLERANCE) | (np.abs(dy) >= _TOLERANCE)
        if not active.any():
            break
    return x, y


def _gcj02_shift(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Term by term and in the published order of operations, so results match reference values bit for bit.
    x, y = lon - 105.0, lat - 35.0
    wave = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    dlat += wave
    dlat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    dlon += wave
    dlon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    radlat = lat / 180.0 * np.pi
    magic = np.sin(radlat)
    magic = 1 - _EE * magic * magic
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * np.pi)
    return lon + dlon, lat + dlat


def _bd09_shift(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _wgs84_to_bd09_shift(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _bd09_shift(*_gcj02_shift(lon, lat))


_SHIFT: dict[str, _Shift] = {"gcj02": wgs84_to_gcj02, "bd09": wgs84_to_bd09}
_UNSHIFT: dict[str, _Shift] = {"gcj02": gcj02_to_wgs84, "bd09": bd09_to_wgs84}
_DIRECT: dict[tuple[str | None, str | None], _Shift] = {
    ("gcj02", "bd09"): gcj02_to_bd09,
    ("bd09", "gcj02"): bd09_to_gcj02,
}
