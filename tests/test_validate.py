"""Validation on small hand-made hierarchies whose faults are known by construction."""

import pyproj
import pytest
import shapely
from shapely import Polygon, box

from gridmap.units import make_units
from gridmap.validate import Tolerances, summarise, validate_units

# Degrees per metre near 30.26°N, for building faults of a known size in metres.
M_LAT = 1 / 110_850
M_LON = 1 / 96_190
GEOD = pyproj.Geod(ellps="WGS84")


def unit(code, level, geometry, parent=None, **extra):
    from gridmap.codes import parent_code

    return {"code": code, "level": level, "parent_code": parent or parent_code(code, level), "geometry": geometry, **extra}


def street_with_communities(*communities):
    return make_units([unit("330102901", "street", box(120.17, 30.25, 120.19, 30.27)), *communities])


def kinds(findings):
    return sorted(findings["kind"])


def geodesic_area(geometry):
    return abs(GEOD.geometry_area_perimeter(geometry)[0])


def test_a_clean_partition_has_no_findings():
    units = street_with_communities(
        unit("330102901001", "community", box(120.17, 30.25, 120.18, 30.27)),
        unit("330102901002", "community", box(120.18, 30.25, 120.19, 30.27)),
    )
    assert validate_units(units).empty


def test_overlap_between_siblings_with_area_and_location():
    overlap = 20 * M_LON  # 20 m wide strip
    units = street_with_communities(
        unit("330102901001", "community", box(120.17, 30.25, 120.18 + overlap, 30.27)),
        unit("330102901002", "community", box(120.18, 30.25, 120.19, 30.27)),
    )
    findings = validate_units(units)
    assert kinds(findings) == ["overlap"]
    row = findings.iloc[0]
    strip = box(120.18, 30.25, 120.18 + overlap, 30.27)
    assert (row.code, row.other_code) == ("330102901001", "330102901002")
    assert row.area_m2 == pytest.approx(geodesic_area(strip), rel=0.002)
    assert row.width_m == pytest.approx(20, rel=0.05)
    assert row.message.startswith("overlap:")  # wider than the 5 m sliver width
    assert row.geometry.symmetric_difference(strip).area < 1e-12


def test_thin_overlap_is_called_a_sliver():
    units = street_with_communities(
        unit("330102901001", "community", box(120.17, 30.25, 120.18 + 1 * M_LON, 30.27)),
        unit("330102901002", "community", box(120.18, 30.25, 120.19, 30.27)),
    )
    row = validate_units(units).iloc[0]
    assert row.message.startswith("sliver overlap:") and row.width_m < 5


def test_unit_wholly_inside_a_level_mate_is_an_overlap():
    units = make_units([
        unit("330102901", "street", box(120.17, 30.25, 120.19, 30.27)),
        unit("330102902", "street", box(120.175, 30.255, 120.176, 30.256)),
    ])
    findings = validate_units(units)
    assert kinds(findings) == ["overlap"]
    assert findings.iloc[0].area_m2 == pytest.approx(geodesic_area(box(120.175, 30.255, 120.176, 30.256)), rel=0.002)


def test_gap_inside_the_parent_names_its_neighbours():
    units = street_with_communities(
        unit("330102901001", "community", box(120.17, 30.25, 120.1795, 30.27)),
        unit("330102901002", "community", box(120.18, 30.25, 120.19, 30.27)),
    )
    findings = validate_units(units)
    assert kinds(findings) == ["gap"]
    row = findings.iloc[0]
    assert row.code == "330102901" and row.other_code == "330102901001,330102901002"
    assert row.area_m2 == pytest.approx(geodesic_area(box(120.1795, 30.25, 120.18, 30.27)), rel=0.002)


def test_without_parent_geometry_a_gap_is_an_enclosed_hole():
    ring = box(120.17, 30.25, 120.19, 30.27)
    hole = box(120.179, 30.259, 120.181, 30.261)
    units = make_units([
        unit("330102901", "street", box(120.17, 30.25, 120.18, 30.27).difference(hole)),
        unit("330102902", "street", box(120.18, 30.25, 120.19, 30.27).difference(hole)),
    ])
    findings = validate_units(units)
    assert kinds(findings) == ["gap"]
    assert findings.iloc[0].area_m2 == pytest.approx(geodesic_area(hole), rel=0.002)
    assert ring.contains(findings.iloc[0].geometry)


def test_child_outside_parent_beyond_tolerance():
    street = box(120.17, 30.25, 120.19, 30.27)
    inside = box(120.171, 30.251, 120.172, 30.252)
    grazing = box(120.172, 30.25 - 0.5 * M_LAT, 120.173, 30.251)  # 0.5 m over the edge: within tolerance
    sticking_out = box(120.18, 30.25 - 30 * M_LAT, 120.181, 30.251)
    units = make_units([
        unit("330102901", "street", street),
        unit("330102901001", "community", street),
        unit("330102901001001", "grid", inside),
        unit("330102901001002", "grid", grazing),
        unit("330102901001003", "grid", sticking_out),
    ])
    findings = validate_units(units, tolerances=Tolerances(min_area_m2=1))
    outside = findings[findings.kind == "outside_parent"]
    assert list(outside.code) == ["330102901001003"]
    assert outside.iloc[0].area_m2 == pytest.approx(geodesic_area(box(120.18, 30.25 - 30 * M_LAT, 120.181, 30.25)), rel=0.01)


def test_code_and_parent_faults_are_errors():
    grid = box(120.17, 30.25, 120.171, 30.251)
    units = make_units([
        unit("330102901", "street", box(120.17, 30.25, 120.19, 30.27)),
        unit("330102901001", "community", box(120.17, 30.25, 120.19, 30.27)),
        unit("330102901001001", "grid", grid, parent="330102901002"),
        unit("330102901009001", "grid", box(120.18, 30.26, 120.181, 30.261)),
        unit("33010290100100", "grid", box(120.185, 30.26, 120.186, 30.261), parent="330102901001"),
    ])
    findings = validate_units(units)
    by_kind = dict(zip(findings.kind, findings.code))
    assert by_kind["parent_mismatch"] == "330102901001001"
    assert by_kind["missing_parent"] == "330102901009001"
    assert by_kind["malformed_code"] == "33010290100100"
    assert set(findings.loc[findings.kind.isin(["parent_mismatch", "missing_parent", "malformed_code"]), "severity"]) == {"error"}


def test_invalid_and_multipart_geometry():
    bowtie = Polygon([(120.17, 30.25), (120.18, 30.26), (120.18, 30.25), (120.17, 30.26)])
    two_parts = shapely.MultiPolygon([box(120.181, 30.251, 120.182, 30.252), box(120.185, 30.255, 120.186, 30.256)])
    units = make_units([
        unit("330102901", "street", box(120.17, 30.25, 120.19, 30.27)),
        unit("330102901001", "community", box(120.17, 30.25, 120.19, 30.27)),
        unit("330102901001001", "grid", bowtie),
        unit("330102901001002", "grid", two_parts),
    ])
    findings = validate_units(units)
    invalid = findings[findings.kind == "invalid_geometry"].iloc[0]
    assert invalid.code == "330102901001001" and "Self-intersection" in invalid.message
    # where the ring crosses itself (to a few cm: segments are straight in the projection, not in lon/lat)
    assert invalid.geometry.distance(shapely.Point(120.175, 30.255)) < 1e-6
    assert findings[findings.kind == "multipart"].code.tolist() == ["330102901001002"]


def test_summary_lists_counts_and_worst_first():
    units = street_with_communities(
        unit("330102901001", "community", box(120.17, 30.25, 120.1795, 30.27)),
        unit("330102901002", "community", box(120.18, 30.25, 120.19, 30.27)),
        unit("330102901003", "community", box(120.181, 30.26, 120.182, 30.261), parent="330102902"),
    )
    text = summarise(validate_units(units))
    assert text.splitlines()[0] == "errors: 1 parent_mismatch"
    assert "warnings: 1 gap, 1 overlap" in text
    assert text.index("ERROR") < text.index("WARNING")
