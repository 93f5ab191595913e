"""Reading boundary files: what is accepted, how it is normalised, and how bad input is refused."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely import Polygon, box

from gridmap.crs import wgs84_to_gcj02
from gridmap.errors import CodeError, CRSError, GeometryError, InputError, TooLargeError
from gridmap.io import FieldMap, ReadLimits, read_units, write_units

STREET = box(120.17, 30.25, 120.19, 30.27)


def write_geojson(path, features, crs=None):
    collection = {"type": "FeatureCollection", "features": features}
    if crs:
        collection["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    return path


def feature(geometry, **properties):
    return {"type": "Feature", "properties": properties, "geometry": shapely.geometry.mapping(geometry)}


def test_reads_codes_names_parents_and_keeps_other_properties(tmp_path):
    path = write_geojson(tmp_path / "s.geojson", [
        feature(STREET, code=330102901000, Name="示范街道", parentCode=330102000000, pinyin="shifan", labelPoint=[30.26, 120.18]),
    ])
    units = read_units(path, "street").units
    row = units.iloc[0]
    assert (row.code, row["name"], row.parent_code, row.level) == ("330102901", "示范街道", "330102", "street")
    assert row.attributes == {"pinyin": "shifan", "labelPoint": [30.26, 120.18]}
    assert row.geometry.equals(STREET)


def test_explicit_field_mapping_and_worker_population(tmp_path):
    grid = box(120.17, 30.25, 120.171, 30.251)
    path = write_geojson(tmp_path / "g.geojson", [feature(grid, 网格编码="330102901001001", 名字="一网格", 网格员="王芳", 人口=812)])
    units = read_units(path, "grid", fields=FieldMap(code="网格编码", name="名字")).units
    row = units.iloc[0]
    assert (row.code, row["name"], row.parent_code, row.worker, row.population) == (
        "330102901001001", "一网格", "330102901001", "王芳", 812)


def test_missing_mapped_column_is_named(tmp_path):
    path = write_geojson(tmp_path / "g.geojson", [feature(STREET, code="330102901")])
    with pytest.raises(InputError, match="no column 'bianma'"):
        read_units(path, "street", fields=FieldMap(code="bianma"))


def test_truncated_geojson_is_refused_with_the_file_name(tmp_path):
    good = write_geojson(tmp_path / "good.geojson", [feature(STREET, code="330102901")])
    broken = tmp_path / "broken.geojson"
    broken.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(InputError, match=r"broken\.geojson: not a readable vector file"):
        read_units(broken, "street")


def test_shapefile_without_prj_needs_crs(tmp_path):
    path = tmp_path / "grids.shp"
    gpd.GeoDataFrame({"code": ["330102901001001"]}, geometry=[box(120.17, 30.25, 120.171, 30.251)], crs=4326).to_file(path)
    path.with_suffix(".prj").unlink()
    with pytest.raises(CRSError, match=r"grids\.shp: the file declares no CRS \(the \.prj sidecar is missing\); pass --crs"):
        read_units(path, "grid")
    units = read_units(path, "grid", crs="cgcs2000").units
    assert shapely.normalize(units.iloc[0].geometry).equals_exact(shapely.normalize(box(120.17, 30.25, 120.171, 30.251)), 1e-9)


def test_swapped_axis_order_is_detected(tmp_path):
    swapped = shapely.transform(STREET, lambda xy: xy[:, ::-1])
    path = write_geojson(tmp_path / "latlon.geojson", [feature(swapped, code="330102901")])
    with pytest.raises(GeometryError, match=r"look like \(lat, lon\) instead of \(lon, lat\)"):
        read_units(path, "street")


def test_coordinates_outside_china_are_refused(tmp_path):
    path = write_geojson(tmp_path / "paris.geojson", [feature(box(2.3, 48.8, 2.4, 48.9), code="330102901")])
    with pytest.raises(GeometryError, match="outside China"):
        read_units(path, "street")


def test_projected_file_is_reprojected(tmp_path):
    path = tmp_path / "gk.gpkg"
    projected = gpd.GeoDataFrame({"code": ["330102901"]}, geometry=[STREET], crs=4326).to_crs(4549)
    projected.to_file(path)
    units = read_units(path, "street").units
    assert units.crs.to_epsg() == 4326
    assert units.iloc[0].geometry.symmetric_difference(STREET).area < 1e-12


def test_gcj02_file_is_unshifted_to_wgs84(tmp_path):
    x, y = shapely.get_coordinates(STREET).T
    gx, gy = wgs84_to_gcj02(x, y)
    shifted = Polygon(np.column_stack([gx, gy]))
    assert shapely.hausdorff_distance(shifted, STREET) > 0.002  # the published shift is hundreds of metres
    path = write_geojson(tmp_path / "amap.geojson", [feature(shifted, code="330102901")])
    units = read_units(path, "street", crs="gcj02").units
    assert shapely.hausdorff_distance(units.iloc[0].geometry, STREET) < 0.5 / 111_000


def test_self_intersecting_ring_is_refused_then_repaired_on_request(tmp_path):
    bowtie = Polygon([(120.17, 30.25), (120.18, 30.26), (120.18, 30.25), (120.17, 30.26)])
    path = write_geojson(tmp_path / "bowtie.geojson", [feature(bowtie, code="330102901", name="蝴蝶")])
    with pytest.raises(GeometryError, match=r"unit 330102901 蝴蝶: invalid geometry \(Self-intersection.*--repair"):
        read_units(path, "street")
    result = read_units(path, "street", repair=True)
    repaired = result.units.iloc[0]
    assert repaired.geometry.is_valid and repaired.geometry.area == pytest.approx(bowtie.buffer(0).area * 2, rel=0.01)
    assert "Self-intersection" in repaired.attributes["repaired"]
    assert any("repaired unit 330102901" in note for note in result.notes)


@pytest.mark.parametrize(
    ("code", "message"),
    [("33010290", "has 8 digits"), ("3301029a1", "only digits"), ("990102901", "not a GB/T 2260 province"),
     ("330102000", "street number is 000"), (None, "missing")],
)
def test_malformed_codes_are_refused(tmp_path, code, message):
    path = write_geojson(tmp_path / "s.geojson", [feature(STREET, code=code)])
    with pytest.raises(CodeError, match=message):
        read_units(path, "street")


def test_duplicate_codes_across_files_are_refused(tmp_path):
    write_geojson(tmp_path / "a.geojson", [feature(STREET, code="330102901")])
    write_geojson(tmp_path / "b.geojson", [feature(box(120.2, 30.25, 120.21, 30.26), code="330102901")])
    with pytest.raises(CodeError, match="duplicate street codes: 330102901"):
        read_units(tmp_path, "street")


def test_parent_that_the_code_does_not_extend_is_refused(tmp_path):
    path = write_geojson(tmp_path / "c.geojson", [feature(STREET, code="330102901001", parent="330102902")])
    with pytest.raises(CodeError, match="names parent 330102902, but its code extends 330102901"):
        read_units(path, "community")


@pytest.mark.parametrize(
    ("geometry", "message"),
    [(shapely.Point(120.18, 30.26), "is a Point"), (shapely.LineString([(120.17, 30.25), (120.18, 30.26)]), "is a LineString")],
)
def test_non_polygon_features_are_refused(tmp_path, geometry, message):
    path = write_geojson(tmp_path / "x.geojson", [feature(geometry, code="330102901")])
    with pytest.raises(GeometryError, match=message):
        read_units(path, "street")


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_units(tmp_path / "nope.geojson", "street")
    (tmp_path / "empty.geojson").write_text("")
    with pytest.raises(InputError, match="file is empty"):
        read_units(tmp_path / "empty.geojson", "street")
    (tmp_path / "x.kml").write_text("<kml/>")
    with pytest.raises(InputError, match="unsupported file type"):
        read_units(tmp_path / "x.kml", "street")


def test_a_million_vertices_are_handled_and_limits_refuse_more(tmp_path):
    angles = np.linspace(0, 2 * np.pi, 1_000_000, endpoint=False)
    ring = np.column_stack([120.18 + 0.01 * np.cos(angles), 30.26 + 0.01 * np.sin(angles)])
    path = write_geojson(tmp_path / "dense.geojson", [feature(Polygon(ring), code="330102901")])
    units = read_units(path, "street").units
    assert shapely.get_num_coordinates(units.geometry.values).sum() == 1_000_001
    with pytest.raises(TooLargeError, match="more than 500,000 vertices"):
        read_units(path, "street", limits=ReadLimits(max_vertices=500_000))
    with pytest.raises(TooLargeError, match="over the 1 MB limit"):
        read_units(path, "street", limits=ReadLimits(max_bytes=1024**2))


def test_export_round_trips_through_import(tmp_path):
    path = write_geojson(tmp_path / "g.geojson", [
        feature(box(120.17, 30.25, 120.171, 30.251), code="330102901001001", name="一网格", worker="王芳", population=812,
                tags=["老旧小区"], built=1987),
        feature(box(120.171, 30.25, 120.172, 30.251), code="330102901001002", name="二网格"),
    ])
    units = read_units(path, "grid").units
    for suffix in (".geojson", ".gpkg"):
        again = read_units(write_units(units, tmp_path / f"out{suffix}"), "grid").units
        assert again.drop(columns="geometry").to_dict("records") == units.drop(columns="geometry").to_dict("records")
        assert all(a.equals_exact(b, 1e-9) for a, b in zip(again.geometry, units.geometry))
