"""Convert a vector file between coordinate systems and formats, changing only the coordinates.

Reads whatever pyogrio (GDAL) reads, plus CSV files of points with longitude/latitude columns, which
are read here rather than by GDAL so that every cell stays the exact text it was (codes keep their
leading zeros) and GB18030/GBK files from Chinese Excel read too. Writes by extension:

===================  ================================================================================
extension            output
===================  ================================================================================
.geojson, .json      GeoJSON per RFC 7946: always tagged EPSG:4326, coordinates rounded to 7 decimals
                     (1 cm); for ``dst`` gcj02/bd09 the coordinates are the shifted values asked for
.gpkg                GeoPackage, one layer named after the file
.shp                 Shapefile (UTF-8 attributes, with a .cpg saying so)
.csv                 points only; UTF-8 with a byte-order mark so that Excel shows Chinese
===================  ================================================================================

The output is written next to ``dst_path`` under a temporary name and moved into place when complete,
so a failed conversion never leaves a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError

from gridmap.crs import SourceCRS, source_crs_of, resolve_crs, transform_geometries
from gridmap.errors import CRSError, InputError

Progress = Callable[[int, int], None]

_DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".csv": "CSV"}
# Looked up case-insensitively, in this order of preference.
_LON_NAMES = ("lon", "lng", "longitude", "x", "经度")
_LAT_NAMES = ("lat", "latitude", "y", "纬度")
# Small enough for a progress bar to move on a 100k-feature file, large enough to stay vectorised.
_CHUNK = 10_000
# RFC 7946 allows WGS84 longitude/latitude only; CGCS2000 coordinates are the same numbers to within 1 m.
_GEOJSON_DESTINATIONS = ("wgs84", "cgcs2000", "gcj02", "bd09")


def convert_file(
    src_path: str | os.PathLike,
    dst_path: str | os.PathLike,
    *,
    src,
    dst,
    layer: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Convert ``src_path`` from CRS ``src`` to ``dst_path`` in CRS ``dst``; return the features written.

    Parameters
    ----------
    src_path, dst_path
        Input and output files; the output format follows ``dst_path``'s extension and an existing
        output is replaced whole.
    src
        What the input is in, as :func:`gridmap.crs.resolve_crs` accepts; it wins over the CRS the file
        declares (GCJ-02/BD-09 files declare EPSG:4326). ``None`` uses the file's own CRS, and is an error
        for a file without one, such as a CSV.
    dst
        What to write, as :func:`gridmap.crs.resolve_crs` accepts. The output is tagged EPSG:4326 for
        wgs84, gcj02 and bd09, and with ``dst``'s own CRS otherwise.
    layer
        Layer to read from a multi-layer input (GeoPackage); the first layer by default.
    progress
        Called as ``progress(done, total)`` with ``done == 0`` before converting, after each chunk of
        features, and with ``done == total`` once the output is in place.

    Raises
    ------
    gridmap.errors.InputError
        Missing or unreadable input, CSV without longitude/latitude columns, unsupported output extension.
    gridmap.errors.CRSError
        Unknown CRS, a file with no CRS and no ``src``, or a ``dst`` GeoJSON cannot hold.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "shops.csv").write_text("name,lng,lat\\n东华门,116.41024449916938,39.91640428150164\\n")
    >>> convert_file(folder / "shops.csv", folder / "shops.geojson", src="gcj02", dst="wgs84")
    1
    >>> shop = gpd.read_file(folder / "shops.geojson")
    >>> shop.loc[0, "name"], round(shop.geometry[0].x, 6), round(shop.geometry[0].y, 6)
    ('东华门', 116.404, 39.915)
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    driver = _DRIVERS.get(dst_path.suffix.lower())
    if driver is None:
        raise InputError(f"cannot write {dst_path.name}: unsupported extension; use one of {', '.join(_DRIVERS)}")
    # Resolve both names before reading, so a typo fails at once rather than after a long read.
    declared = None if src is None else resolve_crs(src)
    target = resolve_crs(dst)
    if driver == "GeoJSON" and target.name not in _GEOJSON_DESTINATIONS:
        raise CRSError(
            f"cannot write {dst_path.name} in {target.name}: GeoJSON holds WGS84 longitude/latitude only "
            f"(RFC 7946); write .gpkg or .shp instead"
        )
    if not dst_path.parent.is_dir():
        raise InputError(f"cannot write {dst_path}: folder {dst_path.parent} does not exist")
    frame, xy_columns = _read(src_path, layer)
    source = source_crs_of(frame, declared)
    report = progress or (lambda done, total: None)
    total = len(frame)
    report(0, total)
    geometries = frame.geometry.to_numpy()
    moved = np.empty(total, dtype=object)
    for start in range(0, total, _CHUNK):
        end = min(start + _CHUNK, total)
        moved[start:end] = transform_geometries(geometries[start:end], source, target)
        if end < total:
            report(end, total)
    out = frame.copy()
    out[frame.geometry.name] = gpd.GeoSeries(moved, index=frame.index)
    out = out.set_crs(_output_crs(target, driver), allow_override=True)
    _write_atomically(out, dst_path, driver, xy_columns, target)
    report(total, total)
    return total


def _read(path: Path, layer: str | None) -> tuple[gpd.GeoDataFrame, tuple[str, str] | None]:
    """The file's features, and for a CSV the names of its longitude and latitude columns."""
    if not path.exists():
        raise InputError(f"cannot read {path}: no such file")
    if path.suffix.lower() == ".csv":
        if layer is not None:
            raise InputError(f"cannot read layer {layer!r} of {path.name}: a CSV file has no layers")
        return _read_csv(path)
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except (DataSourceError, DataLayerError) as error:
        raise InputError(f"cannot read {path.name}: {_reason(error, path)}") from None
    if not isinstance(frame, gpd.GeoDataFrame):
        raise InputError(f"cannot read {path.name}: the layer has no geometry")
    return frame, None


def _read_csv(path: Path) -> tuple[gpd.GeoDataFrame, tuple[str, str]]:
    table = None
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
            break
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise InputError(f"cannot read {path.name}: {_reason(error, path)}") from None
    if table is None:
        raise InputError(f"cannot read {path.name}: text is neither UTF-8 nor GB18030")
    by_name = {str(column).strip().lower(): column for column in table.columns}
    lon = next((by_name[name] for name in _LON_NAMES if name in by_name), None)
    lat = next((by_name[name] for name in _LAT_NAMES if name in by_name), None)
    if lon is None or lat is None:
        raise InputError(
            f"cannot read {path.name}: no longitude/latitude columns (expected one of {', '.join(_LON_NAMES)} "
            f"and one of {', '.join(_LAT_NAMES)}; found {', '.join(map(str, table.columns))})"
        )
    xs, ys = (pd.to_numeric(table[column].str.strip(), errors="coerce").to_numpy(np.float64) for column in (lon, lat))
    bad = np.flatnonzero(np.isnan(xs) | np.isnan(ys))
    if bad.size:
        row = int(bad[0])
        raise InputError(
            f"cannot read {path.name}: data row {row + 1} has {lon}={table[lon].iloc[row]!r}, "
            f"{lat}={table[lat].iloc[row]!r}; both must be numbers ({bad.size} such rows)"
        )
    return gpd.GeoDataFrame(table, geometry=shapely.points(xs, ys)), (lon, lat)


def _output_crs(target: SourceCRS, driver: str):
    # RFC 7946 GeoJSON is EPSG:4326 by definition; CGCS2000 output gets that tag as the same numbers
    # rather than a reprojection by GDAL, which for CGCS2000 would be the null transform anyway.
    return "EPSG:4326" if driver == "GeoJSON" else target.crs


def _write_atomically(
    frame: gpd.GeoDataFrame, path: Path, driver: str, xy_columns: tuple[str, str] | None, target: SourceCRS
) -> None:
    # A folder rather than a file, because a shapefile is several files.
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = folder / path.name
        if driver == "CSV":
            _write_csv(frame, staged, xy_columns, target)
        else:
            _write_vector(frame, staged, driver, xy_columns)
        # The main file last, so that readers never find a .shp whose .dbf is still the old one.
        for part in sorted(folder.iterdir(), key=lambda part: part.name == path.name):
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_vector(frame: gpd.GeoDataFrame, path: Path, driver: str, xy_columns: tuple[str, str] | None) -> None:
    if xy_columns is not None:
        # Stale once the points have moved; the geometry carries the new coordinates.
        frame = frame.drop(columns=list(xy_columns))
    options = {"RFC7946": "YES"} if driver == "GeoJSON" else {}
    try:
        pyogrio.write_dataframe(frame, path, driver=driver, layer=path.stem, layer_options=options)
    except (DataSourceError, DataLayerError) as error:
        raise InputError(f"cannot write {path.name}: {_reason(error, path)}") from None


def _write_csv(frame: gpd.GeoDataFrame, path: Path, xy_columns: tuple[str, str] | None, target: SourceCRS) -> None:
    geometries = frame.geometry.to_numpy()
    present = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    kinds = set(shapely.get_type_id(geometries[present]).tolist())
    if kinds - {shapely.GeometryType.POINT}:
        raise InputError(f"cannot write {path.name}: CSV holds points only; write .geojson, .gpkg or .shp instead")
    if xy_columns is None:
        xy_columns = ("lon", "lat") if target.crs.is_geographic else ("x", "y")
    table = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    x = np.full(len(frame), np.nan)
    y = np.full(len(frame), np.nan)
    x[present], y[present] = shapely.get_x(geometries[present]), shapely.get_y(geometries[present])
    table[xy_columns[0]], table[xy_columns[1]] = x, y
    table.to_csv(path, index=False, encoding="utf-8-sig")


def _reason(error: Exception, path: Path) -> str:
    """GDAL's or pandas' message on one line, without GDAL's generic hint and with the bare file name."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0].split("; It might help")[0].replace(str(path), path.name)
