"""What both backends share: batch validation, row <-> unit table conversion, migrations, URLs, messages.

No SQL here. Only the backends talk to a database.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from shapely.geometry.base import BaseGeometry

from gridmap.codes import check_level
from gridmap.errors import CodeError, GeometryError, InputError
from gridmap.units import check_units, make_units
from storage.errors import ChildrenExistError, DuplicateCodeError, ParentNotFoundError, StoreConfigError, StoreError

#: How many codes an error message names before it says "and N more".
SHOW = 5
_POLYGON, _MULTIPOLYGON = 3, 6  # shapely type ids
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an unescaped \u0000 in JSON text
# Chinese text stays readable in the database; NaN is not JSON (and PostgreSQL's jsonb refuses it).
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def listing(items: Iterable[object], show: int = SHOW) -> str:
    """``a, b, c and 4 more``."""
    items = list(items)
    text = ", ".join("<none>" if i is None else str(i) for i in items[:show])
    return text + (f" and {len(items) - show} more" if len(items) > show else "")


def one_line(error: BaseException) -> str:
    """The first non-empty line of a driver's message, for wrapping it into a StoreError."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


# ---------------------------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class Batch:
    """A validated batch, ready to write."""

    #: ``(code, level, name, parent_code, worker, population, attributes_json, wkb)`` per unit.
    rows: list[tuple]
    #: ``(n, 4)`` array of ``minx, miny, maxx, maxy``.
    bounds: np.ndarray
    #: Parents outside the batch (non-street units only) -> codes of the units that need them.
    #: ``None`` collects non-street units without a parent_code.
    needs: dict[str | None, list[str]]

    def __len__(self) -> int:
        return len(self.rows)


def prepare_batch(units: GeoDataFrame) -> Batch:
    """Validate ``units`` for writing and turn it into rows; raise before anything touches a database."""
    check_units(units)
    codes = [_code(value, i) for i, value in enumerate(_values(units["code"]))]
    duplicated = sorted(code for code, n in Counter(codes).items() if n > 1)
    if duplicated:
        raise DuplicateCodeError(
            f"{len(duplicated)} unit code(s) occur more than once in the batch: {listing(duplicated)}",
            codes=duplicated,
        )
    geoms = np.asarray(units.geometry.to_numpy(), dtype=object)
    _check_geometries(geoms, codes)
    wkbs = shapely.to_wkb(geoms)
    bounds = shapely.bounds(geoms)

    levels = [str(v) for v in _values(units["level"])]
    parents = [_optional_text(v) for v in _values(units["parent_code"])]
    names = [_optional_text(v) or "" for v in _values(units["name"])]
    workers = [_optional_text(v) for v in _values(units["worker"])]
    populations = [_population(v, c) for v, c in zip(_values(units["population"]), codes)]
    attributes = [_attributes(v, c) for v, c in zip(_values(units["attributes"]), codes)]
    rows = list(zip(codes, levels, names, parents, workers, populations, attributes, wkbs))
    _check_text(rows)
    needs: dict[str | None, list[str]] = {}
    in_batch = set(codes)
    for code, level, parent in zip(codes, levels, parents):
        if level != "street" and parent not in in_batch:
            needs.setdefault(parent, []).append(code)
    return Batch(rows=rows, bounds=bounds, needs=needs)


def check_parents(batch: Batch, stored: set[str]) -> None:
    """Raise ParentNotFoundError for parents the batch needs that are not among ``stored``."""
    missing = {p: kids for p, kids in batch.needs.items() if p is None or p not in stored}
    if not missing:
        return
    units = sum(len(kids) for kids in missing.values())
    parts = [f"{'<none>' if p is None else p} (needed by {listing(kids, 3)})" for p, kids in list(missing.items())[:SHOW]]
    more = f" and {len(missing) - SHOW} more parents" if len(missing) > SHOW else ""
    raise ParentNotFoundError(
        f"{units} unit(s) have a parent that is neither stored nor in the batch: {', '.join(parts)}{more}",
        missing=missing,
    )


def _code(value: object, row: int) -> str:
    if isinstance(value, str) and value:
        return str(value)
    if _is_na(value) or value == "":
        raise CodeError(f"unit in row {row} has no code")
    raise CodeError(
        f"unit code {value!r} in row {row} is a {type(value).__name__}, not a string: "
        "normalise codes with gridmap.codes.normalise_code"
    )


def _check_geometries(geoms: np.ndarray, codes: Sequence[str]) -> None:
    def fail(mask: np.ndarray, what: str) -> None:
        bad = [codes[i] for i in np.flatnonzero(mask)]
        if bad:
            raise GeometryError(f"{len(bad)} unit(s) {what}: {listing(bad)}")

    missing = shapely.is_missing(geoms)
    fail(missing, "have no geometry")
    types = shapely.get_type_id(geoms)
    fail((types != _POLYGON) & (types != _MULTIPOLYGON), "have a geometry that is not a Polygon or MultiPolygon")
    fail(shapely.is_empty(geoms), "have an empty geometry")
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    bad_rows = np.unique(index[~np.isfinite(coords).all(axis=1)])
    fail(np.isin(np.arange(len(geoms)), bad_rows), "have NaN or infinite coordinates")


def _check_text(rows: list[tuple]) -> None:
    """Refuse NUL characters, which PostgreSQL cannot store in text or jsonb (SQLite could: keep them alike)."""
    for row in rows:
        if any(isinstance(v, str) and "\x00" in v for v in row[:5]) or _JSON_NUL.search(row[6]):
            raise InputError(f"unit {row[0]!r}: text contains a NUL character (\\x00), which cannot be stored")


def _values(column: pd.Series) -> list:
    """A column's values as a plain list (iterating a pandas extension array element-wise is slow)."""
    return column.to_numpy(dtype=object).tolist()


def _is_na(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _optional_text(value: object) -> str | None:
    return None if _is_na(value) else str(value)


def _population(value: object, code: str) -> int | None:
    if _is_na(value):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise InputError(f"unit {code}: population {value!r} is not a whole number")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise InputError(f"unit {code}: population {value!r} is not a whole number")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InputError(f"unit {code}: population {value!r} is out of range")
    return int(value)


def _attributes(value: object, code: str) -> str:
    if _is_na(value):
        return "{}"
    if not isinstance(value, dict):
        raise InputError(f"unit {code}: attributes must be a dict, got {type(value).__name__}")
    if not value:
        return "{}"
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"unit {code}: attributes are not JSON-serialisable: {error}") from None


# ----------------------------------------------------------------------------------------------- reads


def decode_geometries(rows: Sequence[Sequence[object]]) -> np.ndarray:
    """The geometries (from WKB in column 7) of ``rows``."""
    return shapely.from_wkb([bytes(r[7]) for r in rows]) if rows else np.empty(0, dtype=object)


def keep_intersecting(rows: list, query: BaseGeometry) -> tuple[list, np.ndarray]:
    """The rows (and their geometries) whose geometry intersects ``query`` exactly."""
    geoms = decode_geometries(rows)
    if not rows:
        return rows, geoms
    try:
        shapely.prepare(query)
        keep = shapely.intersects(geoms, query)
    except shapely.errors.GEOSException as error:
        raise GeometryError(f"cannot intersect with the query geometry: {error}") from None
    return [r for r, k in zip(rows, keep) if k], geoms[keep]


def to_units(rows: Sequence[Sequence[object]], geoms: np.ndarray | None = None) -> GeoDataFrame:
    """A unit table from ``(code, level, name, parent_code, worker, population, attributes, wkb)`` rows.

    ``attributes`` may be a dict (psycopg2 decodes jsonb) or JSON text (SQLite). ``geoms``: the rows'
    geometries if already decoded.
    """
    if not rows:
        return make_units([])
    if geoms is None:
        geoms = decode_geometries(rows)
    return make_units(
        {
            "code": r[0],
            "level": r[1],
            "name": r[2],
            "parent_code": r[3],
            "worker": r[4],
            "population": r[5],
            "attributes": json.loads(r[6]) if isinstance(r[6], str) else r[6],
            "geometry": g,
        }
        for r, g in zip(rows, geoms)
    )


def children_error(pairs: Sequence[tuple[str, str]]) -> ChildrenExistError:
    """The error for a delete that would orphan ``(parent_code, child_code)`` pairs."""
    children: dict[str, list[str]] = {}
    for parent, child in pairs:
        children.setdefault(parent, []).append(child)
    parts = [f"{p} (parent of {listing(kids, 3)})" for p, kids in list(children.items())[:SHOW]]
    more = f" and {len(children) - SHOW} more" if len(children) > SHOW else ""
    return ChildrenExistError(
        f"cannot delete {len(children)} unit(s) that still have {len(pairs)} child unit(s) not being deleted: "
        f"{', '.join(parts)}{more}; delete the children too or first",
        children=children,
    )


def code_list(codes: Iterable[str] | str) -> list[str]:
    """Distinct codes as strings, in first-seen order; a single string is one code."""
    if isinstance(codes, str):
        return [codes]
    return list(dict.fromkeys(str(c) for c in codes))


def checked_level(level: str | None) -> str | None:
    return None if level is None else check_level(level)


def checked_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"bbox must be four numbers (minx, miny, maxx, maxy), got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) or minx > maxx or miny > maxy:
        raise InputError(f"bbox {bbox!r} is not (minx, miny, maxx, maxy) with min <= max")
    return minx, miny, maxx, maxy


def bbox_geometry(bbox: tuple[float, float, float, float]) -> BaseGeometry:
    """The box as a geometry for an exact intersects test: a Point or LineString when it has no width or
    height (a zero-area polygon is invalid, and GEOS and PostGIS disagree on what it intersects)."""
    minx, miny, maxx, maxy = bbox
    if minx == maxx and miny == maxy:
        return shapely.Point(minx, miny)
    if minx == maxx or miny == maxy:
        return shapely.LineString([(minx, miny), (maxx, maxy)])
    return shapely.box(minx, miny, maxx, maxy)


def checked_geometry(geometry: object) -> BaseGeometry:
    if not isinstance(geometry, BaseGeometry):
        raise InputError(f"expected a shapely geometry in EPSG:4326, got {type(geometry).__name__}")
    return geometry


# ---------------------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file name, e.g. 0001_units.sql
    sql: str


_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


def load_migrations(backend: str) -> list[Migration]:
    """The packaged ``storage/sql/<backend>/NNNN_*.sql`` files, in version order."""
    folder = resources.files("storage") / "sql" / backend
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"two {backend} migrations have version {version}: {found[version].name}, {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    if not found:
        raise StoreError(f"no migrations packaged for {backend} (storage/sql/{backend}/NNNN_*.sql)")
    return [found[v] for v in sorted(found)]


def newer_schema_error(found: int, known: int, where: str) -> StoreConfigError:
    return StoreConfigError(
        f"{where} has schema version {found}, newer than this gridmap knows ({known}): upgrade gridmap"
    )


# ---------------------------------------------------------------------------------------------- URLs


def mask_url(url: str) -> str:
    """``url`` with any password (in the netloc or a ``password=`` query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hostinfo}"
        query = parts.query
        if query and "password" in query.lower():
            query = urlencode(
                [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)],
                safe="*",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)
