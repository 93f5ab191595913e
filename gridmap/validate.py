"""Validation of a unit hierarchy: the faults real boundary files have.

Boundary files of street offices are traced by hand from different base maps, so neighbours rarely share
their edges exactly: thin slivers where two units overlap, gaps nobody answers for, children drawn past
their parent's edge. :func:`validate_units` finds these, with area in m² and a location for each, and also
checks codes, parents, geometry validity and multi-part units. Areas and widths are measured in a metric
projection (:func:`gridmap.crs.metric_crs`); the findings' geometries are in EPSG:4326.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from gridmap.codes import LEVELS, normalise_code, parent_code
from gridmap.crs import metric_crs
from gridmap.errors import CodeError
from gridmap.units import STORAGE_CRS, check_units

FINDING_COLUMNS = (
    "kind", "severity", "level", "code", "name", "other_code", "other_name", "area_m2", "width_m", "message",
)
SEVERITIES = ("error", "warning", "info")
# Streets and communities may have exclaves; a grid, courtyard or building in two pieces is a drawing error.
MULTIPART_LEVELS = frozenset({"street", "community"})
# Levels whose units should cover their parent completely, so that a gap is a fault.
TESSELLATING_LEVELS = frozenset({"street", "community", "grid"})


@dataclass(frozen=True)
class Tolerances:
    """How much disagreement between neighbours is noise rather than a finding.

    Attributes
    ----------
    min_area_m2
        Overlaps, gaps and outside parts smaller than this are ignored (floating-point noise).
    outside_parent_m
        A child may stray this far outside its parent's edge without being reported.
    sliver_width_m
        Overlaps and gaps whose mean width (2·area/perimeter) is below this are labelled slivers:
        misdrawn shared edges rather than disputed land.
    """

    min_area_m2: float = 1.0
    outside_parent_m: float = 1.0
    sliver_width_m: float = 5.0


def validate_units(
    units: gpd.GeoDataFrame,
    *,
    parents: gpd.GeoDataFrame | None = None,
    tolerances: Tolerances = Tolerances(),
    progress: Callable[[str], None] | None = None,
) -> gpd.GeoDataFrame:
    """Find what is wrong with ``units``.

    Parameters
    ----------
    units
        A unit table (:mod:`gridmap.units`), any mix of levels.
    parents
        Units that are not being validated but may be parents of ``units`` (e.g. the stored street when
        validating a file of communities).
    tolerances
        See :class:`Tolerances`.
    progress
        Called with the name of each check as it starts.

    Returns
    -------
    GeoDataFrame
        One row per finding with columns :data:`FINDING_COLUMNS` and the problem's location in EPSG:4326,
        errors first, then by decreasing area.

    Examples
    --------
    >>> from shapely import box
    >>> from gridmap.units import make_units
    >>> units = make_units([
    ...     {"code": "330102901", "level": "street", "parent_code": "330102", "geometry": box(120.17, 30.25, 120.19, 30.27)},
    ...     {"code": "330102901001", "level": "community", "parent_code": "330102901", "geometry": box(120.17, 30.25, 120.18, 30.27)},
    ...     {"code": "330102901002", "level": "community", "parent_code": "330102901", "geometry": box(120.1799, 30.25, 120.19, 30.27)},
    ... ])
    >>> findings = validate_units(units)
    >>> findings[["kind", "code", "other_code"]].values.tolist()
    [['overlap', '330102901001', '330102901002']]
    >>> round(float(findings.area_m2.iloc[0]) / 1000)  # 0.0001° × 0.02° near 30°N is about 21,400 m²
    21
    """
    check_units(units)
    known = units if parents is None or parents.empty else pd.concat([units, parents], ignore_index=True)
    context = _Context(units, known, _Metric(units), tolerances)
    checks = (
        ("codes", _check_codes),
        ("parents", _check_parents),
        ("geometry", _check_geometry),
        ("outside parent", _check_outside_parent),
        ("overlaps", _check_overlaps),
        ("gaps", _check_gaps),
    )
    rows: list[dict] = []
    for name, check in checks:
        if progress:
            progress(name)
        rows.extend(check(context))
    return _findings_frame(rows)


class _Metric:
    """Measures lon/lat geometries in metres.

    Topology (unions, intersections, differences) is computed in lon/lat, where edges are straight lines
    as RFC 7946 defines them; only the resulting pieces are projected, densified first, to measure them.
    Projecting the inputs instead would bow long edges and open phantom gaps of a few centimetres between
    neighbours whose vertices differ.
    """

    DENSIFY_DEGREES = 0.0005  # about 50 m

    def __init__(self, units: gpd.GeoDataFrame):
        minx, miny, maxx, maxy = units.total_bounds if len(units) else (np.nan,) * 4
        if not np.isfinite([minx, miny, maxx, maxy]).all():
            minx = maxx = 116.4  # an empty table: any metric CRS will do
            miny = maxy = 39.9
        self.crs = metric_crs((minx + maxx) / 2, (miny + maxy) / 2)
        self._transformer = Transformer.from_crs(STORAGE_CRS, self.crs, always_xy=True)

    def project(self, geometry):
        # segmentize "repairs" some invalid rings; leave those alone so they stay visibly invalid
        if shapely.is_valid(geometry):
            geometry = shapely.segmentize(geometry, self.DENSIFY_DEGREES)
        return shapely.transform(geometry, lambda xy: np.column_stack(self._transformer.transform(xy[:, 0], xy[:, 1])))

    def area_and_width(self, geometry) -> tuple[float, float]:
        """Area in m² and mean width (2·area/perimeter) in m."""
        projected = self.project(geometry)
        area, perimeter = shapely.area(projected), shapely.length(projected)
        return float(area), float(2 * area / perimeter) if perimeter else 0.0


@dataclass
class _Context:
    units: gpd.GeoDataFrame
    known: gpd.GeoDataFrame
    metric: _Metric
    tolerances: Tolerances

    def __post_init__(self) -> None:
        self.geometries = np.asarray(self.units.geometry.values)
        self.valid = shapely.is_valid(self.geometries) & ~shapely.is_empty(self.geometries)
        self.levels = self.units["level"].to_numpy()
        # the first occurrence wins where a code repeats; duplicates are reported separately
        self.index_of = {c: i for i, c in reversed(list(enumerate(self.known["code"])))}

    def describe(self, i: int) -> str:
        name = self.units["name"].iat[i]
        return f"{self.units['code'].iat[i]}{' ' + name if name else ''}"


def _finding(context: _Context, i: int, kind: str, severity: str, message: str, geometry=None, **extra) -> dict:
    units = context.units
    if geometry is None:
        geometry = shapely.point_on_surface(context.geometries[i]) if context.valid[i] else shapely.Point()
    return {
        "kind": kind,
        "severity": severity,
        "level": units["level"].iat[i],
        "code": units["code"].iat[i],
        "name": units["name"].iat[i],
        "message": message,
        "geometry": geometry,
        **extra,
    }


def _check_codes(context: _Context):
    units = context.units
    for i, (code, level) in enumerate(zip(units["code"], units["level"])):
        try:
            if normalise_code(code, level) != code:
                raise CodeError(f"{level} code {code!r} is zero-padded; store it as {normalise_code(code, level)}")
        except CodeError as exc:
            yield _finding(context, i, "malformed_code", "error", str(exc))
    duplicated = units["code"].duplicated(keep="first")
    for i in np.flatnonzero(duplicated.to_numpy()):
        yield _finding(context, i, "duplicate_code", "error", f"code {units['code'].iat[i]} is used more than once")


def _check_parents(context: _Context):
    units = context.units
    for i, (code, level, parent) in enumerate(zip(units["code"], units["level"], units["parent_code"])):
        try:
            expected = parent_code(code, level)
        except CodeError:
            continue  # reported as a malformed code
        if parent != expected:
            yield _finding(
                context, i, "parent_mismatch", "error",
                f"{context.describe(i)} names parent {parent}, but its code extends {expected}",
            )
        elif level != "street" and parent not in context.index_of:
            yield _finding(context, i, "missing_parent", "error", f"{context.describe(i)}: parent {parent} does not exist")


def _check_geometry(context: _Context):
    units = context.units
    for i, geometry in enumerate(context.geometries):
        if geometry is None or shapely.is_empty(geometry):
            yield _finding(context, i, "empty_geometry", "error", f"{context.describe(i)} has no geometry")
            continue
        if not context.valid[i]:
            reason = shapely.is_valid_reason(geometry)
            yield _finding(context, i, "invalid_geometry", "error", f"{context.describe(i)}: {reason}", _reason_point(reason))
        repaired = units["attributes"].iat[i].get("repaired")
        if repaired:
            yield _finding(context, i, "repaired_geometry", "info", f"{context.describe(i)} was repaired on import: {repaired}")
        parts = shapely.get_num_geometries(geometry)
        if parts > 1 and context.levels[i] not in MULTIPART_LEVELS:
            yield _finding(
                context, i, "multipart", "warning",
                f"{context.describe(i)} is in {parts} separate parts; a {context.levels[i]} should be one",
            )


def _reason_point(reason: str):
    """The location GEOS gives in an invalidity reason, e.g. ``Self-intersection[116.4 39.9]``."""
    match = re.search(r"\[(-?[\d.eE+-]+) (-?[\d.eE+-]+)", reason)
    return shapely.Point(float(match.group(1)), float(match.group(2))) if match else None


def _check_outside_parent(context: _Context):
    tolerances, units, metric = context.tolerances, context.units, context.metric
    parent_geometries = np.asarray(context.known.geometry.values)
    buffered: dict[int, object] = {}
    for i, (level, parent) in enumerate(zip(context.levels, units["parent_code"])):
        j = context.index_of.get(parent)
        if level == "street" or j is None or not context.valid[i]:
            continue
        parent_geometry = parent_geometries[j]
        if not shapely.is_valid(parent_geometry) or shapely.is_empty(parent_geometry):
            continue
        shapely.prepare(parent_geometry)
        if shapely.covers(parent_geometry, context.geometries[i]):
            continue
        outside = shapely.difference(context.geometries[i], parent_geometry)
        area, width = metric.area_and_width(outside)
        if area < tolerances.min_area_m2:
            continue
        if j not in buffered:
            buffered[j] = shapely.buffer(metric.project(parent_geometry), tolerances.outside_parent_m)
        if shapely.difference(metric.project(outside), buffered[j]).is_empty:
            continue  # strays no further than the tolerance
        yield _finding(
            context, i, "outside_parent", "warning",
            f"{context.describe(i)}: {area:,.0f} m² lies outside its parent {parent}",
            outside, other_code=parent, other_name=context.known["name"].iat[j], area_m2=area, width_m=width,
        )


def _check_overlaps(context: _Context):
    units, tolerances = context.units, context.tolerances
    for level in LEVELS:
        rows = np.flatnonzero((context.levels == level) & context.valid)
        if len(rows) < 2:
            continue
        geoms = context.geometries[rows]
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = left < right
        left, right = rows[left[keep]], rows[right[keep]]
        overlaps = shapely.intersection(context.geometries[left], context.geometries[right])
        # neighbours that merely touch, the normal case, intersect in lines of no area
        shares_area = shapely.area(overlaps) > 0
        for i, j, overlap in zip(left[shares_area], right[shares_area], overlaps[shares_area]):
            area, width = context.metric.area_and_width(overlap)
            if area < tolerances.min_area_m2:
                continue
            kind = "sliver overlap" if width < tolerances.sliver_width_m else "overlap"
            siblings = units["parent_code"].iat[i] == units["parent_code"].iat[j]
            yield _finding(
                context, i, "overlap", "warning",
                f"{kind}: {context.describe(i)} and {context.describe(j)} overlap by {area:,.0f} m² "
                f"(mean width {width:.1f} m{'' if siblings else ', different parents'})",
                overlap, other_code=units["code"].iat[j], other_name=units["name"].iat[j], area_m2=area, width_m=width,
            )


def _check_gaps(context: _Context):
    units = context.units
    parent_geometries = np.asarray(context.known.geometry.values)
    for level in TESSELLATING_LEVELS:
        at_level = (context.levels == level) & context.valid
        if not at_level.any():
            continue
        tree = shapely.STRtree(context.geometries[at_level])
        codes = units["code"].to_numpy()[at_level]
        groups = pd.Series(np.flatnonzero(at_level)).groupby(units["parent_code"].to_numpy()[at_level]).agg(list)
        orphans: list[int] = []
        for parent, rows in groups.items():
            j = context.index_of.get(parent)
            if j is None or not shapely.is_valid(parent_geometries[j]):
                orphans.extend(rows)
                continue
            gaps = shapely.difference(parent_geometries[j], shapely.union_all(context.geometries[rows]))
            yield from _gap_findings(context, level, parent, context.known["name"].iat[j], gaps, tree, codes)
        if orphans:
            # no parent geometry to compare with: a gap is then a hole enclosed by the units themselves
            covered = shapely.union_all(context.geometries[orphans])
            holes = [shapely.Polygon(ring) for part in shapely.get_parts(covered) for ring in part.interiors]
            yield from _gap_findings(context, level, None, "", shapely.MultiPolygon(holes), tree, codes)


def _gap_findings(context: _Context, level: str, parent: str | None, parent_name: str, gaps, tree, codes):
    for gap in shapely.get_parts(gaps):
        if gap.geom_type != "Polygon":
            continue
        area, width = context.metric.area_and_width(gap)
        if area < context.tolerances.min_area_m2:
            continue
        kind = "sliver gap" if width < context.tolerances.sliver_width_m else "gap"
        where = f"inside {parent}{' ' + parent_name if parent_name else ''}" if parent else "enclosed by its neighbours"
        neighbours = sorted(codes[tree.query(gap, predicate="intersects")])  # whose edges disagree
        yield {
            "kind": "gap",
            "severity": "warning",
            "level": level,
            "code": parent,
            "name": parent_name,
            "message": f"{kind} of {area:,.0f} m² (mean width {width:.1f} m) between {level} units, {where}",
            "geometry": gap,
            "area_m2": area,
            "width_m": width,
            "other_code": ",".join(neighbours),
        }


def _findings_frame(rows: list[dict]) -> gpd.GeoDataFrame:
    frame = pd.DataFrame(rows, columns=[*FINDING_COLUMNS, "geometry"])
    frame["severity_rank"] = frame["severity"].map({s: k for k, s in enumerate(SEVERITIES)})
    frame = frame.sort_values(["severity_rank", "area_m2", "code"], ascending=[True, False, True], na_position="last")
    frame = frame.drop(columns="severity_rank").reset_index(drop=True)
    return gpd.GeoDataFrame(frame, geometry=frame.pop("geometry").to_numpy(), crs=STORAGE_CRS)


def summarise(findings: gpd.GeoDataFrame, *, limit: int = 20) -> str:
    """A human report: counts by kind and severity, then the ``limit`` most serious findings with location."""
    if findings.empty:
        return "no problems found"
    lines = []
    counts = findings.groupby(["severity", "kind"]).size()
    for severity in SEVERITIES:
        if severity in counts.index.get_level_values(0):
            parts = ", ".join(f"{n} {kind}" for kind, n in counts[severity].items())
            lines.append(f"{severity}s: {parts}")
    areas = findings.groupby("kind")["area_m2"].sum(min_count=1).dropna()
    if len(areas):
        lines.append("total area: " + ", ".join(f"{kind} {area:,.0f} m²" for kind, area in areas.items()))
    lines.append("")
    points = shapely.point_on_surface(findings.geometry.values)
    for k, row in enumerate(findings.head(limit).itertuples()):
        where = f" at {points[k].x:.5f}E {points[k].y:.5f}N" if points[k] is not None and not points[k].is_empty else ""
        lines.append(f"{row.severity.upper():7} {row.message}{where}")
    if len(findings) > limit:
        lines.append(f"... and {len(findings) - limit} more (write them all with --output problems.geojson)")
    return "\n".join(lines)
