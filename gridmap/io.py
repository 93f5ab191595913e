"""Reading boundary files into unit tables, refusing what cannot be trusted.

Real boundary files arrive as GeoJSON, GeoPackage or Shapefile, in WGS84, CGCS2000, a projected CRS or a
shifted system (GCJ-02, BD-09) that the file cannot declare. :func:`read_units` turns one or more of them
into a unit table (:mod:`gridmap.units`) in EPSG:4326, or raises one :class:`~gridmap.errors.InputError`
whose message names the file, the unit and the problem. Nothing is half-read: a file either yields a whole
table or an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from gridmap.codes import CODE_LENGTH, PARENT_LEVEL, check_level, normalise_code, parent_code
from gridmap.crs import resolve_crs, to_storage_crs
from gridmap.files import atomic_path
from gridmap.errors import CodeError, CRSError, GeometryError, GridmapError, InputError, TooLargeError
from gridmap.units import COLUMNS, make_units

SUPPORTED_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp")
# Rough extent of China (incl. the South China Sea islands); coordinates outside it are almost always a
# wrong CRS or swapped axes rather than a real unit of a Chinese street office.
CHINA_BOUNDS = (73.0, 3.0, 136.0, 54.0)

FIELD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "code": ("code", "unit_code", "adcode", "gb", "编码", "代码"),
    "name": ("name", "unit_name", "名称"),
    "parent_code": ("parent_code", "parentcode", "parent", "上级编码"),
    "worker": ("worker", "grid_worker", "网格员"),
    "population": ("population", "pop", "人口"),
}


@dataclass(frozen=True)
class ReadLimits:
    """Ceilings that keep a hostile or mistaken file from exhausting the machine."""

    max_bytes: int = 512 * 1024**2
    max_features: int = 500_000
    max_vertices: int = 20_000_000


@dataclass(frozen=True)
class FieldMap:
    """Which source columns hold code, name, parent code, worker and population (``None``: detect)."""

    code: str | None = None
    name: str | None = None
    parent_code: str | None = None
    worker: str | None = None
    population: str | None = None


@dataclass
class ReadResult:
    """A unit table and what was done to get it (repairs, code normalisation)."""

    units: gpd.GeoDataFrame
    notes: list[str] = field(default_factory=list)
    source_crs: str = ""


def read_units(
    paths: str | Path | Sequence[str | Path],
    level: str,
    *,
    crs: object = None,
    fields: FieldMap = FieldMap(),
    repair: bool = False,
    limits: ReadLimits = ReadLimits(),
    progress: Callable[[int, int], None] | None = None,
) -> ReadResult:
    """Read boundary files of one ``level`` into a unit table in EPSG:4326.

    Parameters
    ----------
    paths
        A file, a directory (every GeoJSON/GeoPackage/Shapefile in it) or several of either.
    level
        ``street``, ``community``, ``grid``, ``courtyard`` or ``building``.
    crs
        The coordinates' real system when the file cannot say it (``gcj02``, ``bd09``) or says nothing
        (a Shapefile without ``.prj``); it overrides the file's declaration. See :func:`gridmap.crs.resolve_crs`.
    fields
        Source columns for code, name, parent code, worker and population; detected when not given.
    repair
        Fix invalid geometries with ``make_valid`` (each repair is noted and kept in the unit's
        ``attributes["repaired"]``) instead of refusing the file.

    Raises
    ------
    InputError
        Naming the file, the unit and the problem: unreadable or truncated file, missing CRS, swapped axes,
        coordinates outside China, invalid or non-polygonal geometry, malformed or duplicate codes, a parent
        code that the unit's own code does not extend, more data than ``limits`` allow.
    """
    level = check_level(level)
    files = _expand(paths)
    source = resolve_crs(crs) if crs is not None else None
    frames, notes = [], []
    vertices = 0
    for done, path in enumerate(files):
        if progress:
            progress(done, len(files))
        frame = _read_file(path, source, limits)
        vertices += int(shapely.get_num_coordinates(frame.geometry.values).sum())
        if vertices > limits.max_vertices:
            raise TooLargeError(f"{path.name}: more than {limits.max_vertices:,} vertices in total; split the import")
        frames.append(_to_units(frame, path, level, fields, repair, notes))
    if progress:
        progress(len(files), len(files))
    units = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    _check_duplicates(units, level)
    units = units.sort_values("code", ignore_index=True)
    return ReadResult(units=units, notes=notes, source_crs=source.name if source else "declared by file")


def _expand(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError("no input files given")
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = iter_supported(item)
            if not found:
                raise InputError(f"{item}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
            files.extend(found)
        elif item.is_file():
            if item.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(f"{item.name}: unsupported file type; expected {', '.join(SUPPORTED_SUFFIXES)}")
            files.append(item)
        else:
            raise InputError(f"{item}: no such file or directory")
    return files


def _read_file(path: Path, source, limits: ReadLimits) -> gpd.GeoDataFrame:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise TooLargeError(f"{path.name}: {size / 1024**2:.0f} MB is over the {limits.max_bytes / 1024**2:.0f} MB limit")
    if size == 0:
        raise InputError(f"{path.name}: file is empty")
    try:
        info = pyogrio.read_info(path)
        if info["features"] > limits.max_features:
            raise TooLargeError(f"{path.name}: {info['features']:,} features is over the {limits.max_features:,} limit")
        frame = pyogrio.read_dataframe(path)
    except GridmapError:
        raise
    except Exception as exc:  # GDAL reports truncation, bad JSON, missing sidecars in many exception types
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path.name}: not a readable vector file (truncated or malformed?): {reason}") from None
    if frame.crs is None and source is None:
        hint = " (the .prj sidecar is missing)" if path.suffix.lower() == ".shp" else ""
        raise CRSError(f"{path.name}: the file declares no CRS{hint}; pass --crs wgs84|cgcs2000|gcj02|bd09|EPSG:NNNN")
    if len(frame) == 0:
        raise InputError(f"{path.name}: file holds no features")
    _check_geometry_types(frame, path)
    _check_coordinates_finite(frame, path)
    if (source.crs if source else frame.crs).is_geographic:
        _check_axis_order_and_area(frame, path)  # before reprojection, which would misread swapped axes
    try:
        frame = to_storage_crs(frame, source)
    except GridmapError as exc:
        raise type(exc)(f"{path.name}: {exc}") from None
    _check_axis_order_and_area(frame, path)
    return frame


def _check_geometry_types(frame: gpd.GeoDataFrame, path: Path) -> None:
    geoms = frame.geometry.values
    missing = np.flatnonzero(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if len(missing):
        raise GeometryError(f"{path.name}: feature {missing[0]} has no geometry ({len(missing)} such features)")
    kinds = shapely.get_type_id(geoms)
    wrong = np.flatnonzero(~np.isin(kinds, (3, 6)))  # Polygon, MultiPolygon
    if len(wrong):
        kind = shapely.get_type_id(geoms[wrong[0]])
        names = {0: "Point", 1: "LineString", 2: "LinearRing", 4: "MultiPoint", 5: "MultiLineString", 7: "GeometryCollection"}
        raise GeometryError(
            f"{path.name}: feature {wrong[0]} is a {names.get(kind, kind)}; units must be Polygon or MultiPolygon"
        )


def _check_coordinates_finite(frame: gpd.GeoDataFrame, path: Path) -> None:
    coords = shapely.get_coordinates(frame.geometry.values)
    if not np.isfinite(coords).all():
        raise GeometryError(f"{path.name}: coordinates include NaN or infinity")


def _check_axis_order_and_area(frame: gpd.GeoDataFrame, path: Path) -> None:
    minx, miny, maxx, maxy = frame.total_bounds
    if not np.isfinite([minx, miny, maxx, maxy]).all():
        raise CRSError(f"{path.name}: coordinates do not fit the declared CRS; pass the right --crs")
    inside = _within_china(minx, miny, maxx, maxy)
    if not inside and _within_china(miny, minx, maxy, maxx):
        raise GeometryError(
            f"{path.name}: coordinates look like (lat, lon) instead of (lon, lat): x spans {minx:.4f}..{maxx:.4f}, "
            f"y spans {miny:.4f}..{maxy:.4f}; write longitude first (x) and latitude second (y)"
        )
    if not inside:
        raise GeometryError(
            f"{path.name}: coordinates ({minx:.4f}, {miny:.4f})..({maxx:.4f}, {maxy:.4f}) lie outside China; "
            "is the --crs right?"
        )


def _within_china(minx: float, miny: float, maxx: float, maxy: float) -> bool:
    x0, y0, x1, y1 = CHINA_BOUNDS
    return x0 <= minx and maxx <= x1 and y0 <= miny and maxy <= y1


def _to_units(frame: gpd.GeoDataFrame, path: Path, level: str, fields: FieldMap, repair: bool, notes: list[str]):
    columns = _map_fields(frame, path, fields)
    codes, names = _codes(frame[columns["code"]], path, level), _names(frame, columns.get("name"))
    geometries = _checked_geometries(frame.geometry.values, codes, names, path, repair, notes)
    parents = _parents(frame, columns.get("parent_code"), codes, path, level)
    used = {c for c in columns.values() if c} | {c for c in frame.columns if c.lower() in COLUMNS}
    records = []
    for i in range(len(frame)):
        attributes = {k: _jsonable(v) for k, v in frame.iloc[i].items() if k not in used and k != "geometry"}
        attributes = {k: v for k, v in attributes.items() if v is not None}
        if geometries[i][1]:
            attributes["repaired"] = geometries[i][1]
        records.append(
            {
                "code": codes[i],
                "level": level,
                "name": names[i],
                "parent_code": parents[i],
                "worker": _optional_text(frame[columns["worker"]].iloc[i]) if columns.get("worker") else None,
                "population": _optional_int(frame[columns["population"]].iloc[i], path, codes[i])
                if columns.get("population")
                else None,
                "attributes": attributes,
                "geometry": geometries[i][0],
            }
        )
    return make_units(records)


def _map_fields(frame: gpd.GeoDataFrame, path: Path, fields: FieldMap) -> dict[str, str | None]:
    by_lower = {c.lower(): c for c in frame.columns if c != "geometry"}
    mapping: dict[str, str | None] = {}
    for key, candidates in FIELD_CANDIDATES.items():
        chosen = getattr(fields, key)
        if chosen is not None:
            if chosen not in frame.columns:
                raise InputError(f"{path.name}: no column {chosen!r} for {key}; columns are {sorted(by_lower.values())}")
            mapping[key] = chosen
            continue
        mapping[key] = next((by_lower[c] for c in candidates if c in by_lower), None)
    if mapping["code"] is None:
        raise InputError(
            f"{path.name}: no code column found (looked for {', '.join(FIELD_CANDIDATES['code'])}); "
            f"name it with --code-field; columns are {sorted(by_lower.values())}"
        )
    return mapping


def _codes(raw: pd.Series, path: Path, level: str) -> list[str]:
    codes, bad = [], []
    for i, value in enumerate(raw):
        try:
            codes.append(normalise_code(value, level))
        except CodeError as exc:
            bad.append((i, exc))
    if bad:
        first_index, first_error = bad[0]
        raise CodeError(f"{path.name}: feature {first_index}: {first_error} ({len(bad)} malformed codes in the file)")
    return codes


def _names(frame: gpd.GeoDataFrame, column: str | None) -> list[str]:
    if column is None:
        return [""] * len(frame)
    return ["" if _is_missing(v) else str(v).strip() for v in frame[column]]


def _checked_geometries(geoms, codes, names, path: Path, repair: bool, notes: list[str]):
    out = [(g, None) for g in geoms]
    invalid = np.flatnonzero(~shapely.is_valid(geoms))
    if len(invalid) and not repair:
        i = invalid[0]
        raise GeometryError(
            f"{path.name}: unit {codes[i]} {names[i]}: invalid geometry ({shapely.is_valid_reason(geoms[i])}); "
            f"{len(invalid)} invalid in the file; rerun with --repair to fix them with make_valid"
        )
    for i in invalid:
        reason = shapely.is_valid_reason(geoms[i])
        fixed = _polygonal(shapely.make_valid(geoms[i]))
        if fixed is None:
            raise GeometryError(f"{path.name}: unit {codes[i]} {names[i]}: {reason}, and make_valid left no area")
        notes.append(f"repaired unit {codes[i]} {names[i]}: {reason}")
        out[i] = (fixed, reason)
    return out


def _polygonal(geometry):
    """The polygonal part of a make_valid result (it may add lines or points where rings touched)."""
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    merged = shapely.union_all(parts)
    return merged if not merged.is_empty else None


def _parents(frame: gpd.GeoDataFrame, column: str | None, codes: list[str], path: Path, level: str) -> list[str]:
    derived = [parent_code(c, level) for c in codes]
    if column is None:
        return derived
    parents = []
    for i, (value, expected) in enumerate(zip(frame[column], derived)):
        want_level = "courtyard" if level == "building" and len(expected) == CODE_LENGTH["courtyard"] else PARENT_LEVEL[level]
        if _is_missing(value):
            parents.append(expected)
            continue
        try:
            given = normalise_code(value, want_level)
        except CodeError as exc:
            raise CodeError(f"{path.name}: unit {codes[i]}: parent {exc}") from None
        if given != expected:
            raise CodeError(
                f"{path.name}: unit {codes[i]} names parent {given}, but its code extends {expected}; "
                "codes must extend their parent's code"
            )
        parents.append(given)
    return parents


def _check_duplicates(units: gpd.GeoDataFrame, level: str) -> None:
    dup = units["code"][units["code"].duplicated(keep=False)]
    if len(dup):
        codes = sorted(set(dup))
        raise CodeError(f"duplicate {level} codes: {', '.join(codes[:5])}{' ...' if len(codes) > 5 else ''}")


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _optional_text(value: object) -> str | None:
    return None if _is_missing(value) or str(value).strip() == "" else str(value).strip()


def _optional_int(value: object, path: Path, code: str) -> int | None:
    if _is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path.name}: unit {code}: population {value!r} is not a number") from None
    if not number.is_integer() or number < 0:
        raise InputError(f"{path.name}: unit {code}: population {value!r} is not a whole non-negative number")
    return int(number)


def _jsonable(value: object):
    """Attribute values as plain JSON types; GDAL hands back numpy scalars, lists as JSON strings, dates."""
    if _is_missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        if isinstance(value, str) and value[:1] in "[{":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def iter_supported(directory: Path) -> list[Path]:
    """The boundary files of ``directory`` that :func:`read_units` would read, in order."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)


def write_units(units: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write a unit table as GeoJSON (RFC 7946) or GeoPackage, chosen by the suffix, atomically.

    Attributes become columns (nested values as JSON text) so that :func:`read_units` reads the file
    back into the same table.
    """
    flat = pd.DataFrame([{k: _flat_value(v) for k, v in a.items()} for a in units["attributes"]], index=units.index)
    flat = flat.drop(columns=[c for c in flat.columns if c in units.columns], errors="ignore")
    table = gpd.GeoDataFrame(
        pd.concat([units.drop(columns=["attributes", "geometry"]), flat], axis=1),
        geometry=units.geometry.values,
        crs=units.crs,
    )
    table["population"] = table["population"].astype("float64")  # GDAL has no nullable integer for GeoJSON
    return write_frame(table, path)


def write_findings(findings: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write validation findings (:func:`gridmap.validate.validate_units`) as GeoJSON or GeoPackage."""
    return write_frame(findings, path)


def write_frame(frame: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (.geojson or .gpkg) so that a failure never leaves a partial file."""
    path = Path(path)
    drivers = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}
    driver = drivers.get(path.suffix.lower())
    if driver is None:
        raise InputError(f"{path.name}: cannot write this file type; use .geojson or .gpkg")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    with atomic_path(path) as partial:
        pyogrio.write_dataframe(frame, partial, driver=driver, layer=path.stem if driver == "GPKG" else None)
    return path


def _flat_value(value: object):
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
