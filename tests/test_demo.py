"""The demo street: the committed files in data/boundaries/ and the generator that writes them.

Topology is checked on the committed files as read back by geopandas, in metres (EPSG:4549), so a file
that drifted from the generator or broke in rounding fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from geopandas.testing import assert_geodataframe_equal
from pyproj import CRS

from gridmap import demo
from gridmap.codes import CODE_LENGTH, normalise_code, parent_code

BOUNDARIES = Path(__file__).resolve().parents[1] / "data" / "boundaries"
TOLERANCE = 0.05  # m: how far a child may stick out of its parent after rounding to 7 decimals


@pytest.fixture(scope="module")
def committed() -> dict[str, gpd.GeoDataFrame]:
    return {level: gpd.read_file(BOUNDARIES / name) for level, name in demo.FILE_NAMES.items()}


@pytest.fixture(scope="module")
def metric(committed) -> dict[str, gpd.GeoDataFrame]:
    return {level: frame.to_crs(demo.METRIC_CRS).set_index("code", drop=False) for level, frame in committed.items()}


@pytest.fixture(scope="module")
def generated() -> dict[str, gpd.GeoDataFrame]:
    return demo.generate_demo_street()


def _overlap_area(geometries: gpd.GeoSeries) -> float:
    """Total area shared by distinct pairs of ``geometries``."""
    left, right = geometries.sindex.query(geometries.values, predicate="intersects")
    pairs = left < right
    values = geometries.values
    return float(shapely.area(shapely.intersection(values[left[pairs]], values[right[pairs]])).sum())


def test_metric_crs_is_cgcs2000_gauss_kruger_120e():
    crs = CRS(demo.METRIC_CRS)
    assert crs.name == "CGCS2000 / 3-degree Gauss-Kruger CM 120E"
    parameters = {p.name: p.value for p in crs.coordinate_operation.params}
    assert parameters["Longitude of natural origin"] == 120 and crs.axis_info[0].unit_name == "metre"


def test_counts(committed):
    counts = {level: len(frame) for level, frame in committed.items()}
    assert counts["street"] == 1
    assert 5 <= counts["community"] <= 7
    assert counts["grid"] == 182
    assert counts["courtyard"] == 356
    assert 2_000 <= counts["building"] <= 5_000, counts


def test_grid_areas_are_one_to_three_hectares(metric):
    hectares = metric["grid"].area / 10_000
    spread = f"grid areas min {hectares.min():.2f} / median {hectares.median():.2f} / max {hectares.max():.2f} ha"
    assert hectares.between(1, 3).mean() >= 0.95, spread
    assert hectares.min() >= 0.5 and hectares.max() <= 5, spread


def test_street_is_an_irregular_few_square_kilometres(metric):
    street = metric["street"].geometry.iloc[0]
    assert 3.0e6 <= street.area <= 5.5e6
    assert street.area < 0.9 * street.minimum_rotated_rectangle.area  # not a rectangle
    assert len(street.exterior.coords) > 50
    assert not street.interiors


def test_location_is_in_hangzhou(committed):
    # Shapely's centroid in degrees is good enough at this scale.
    centroid = committed["street"].geometry.iloc[0].centroid
    assert 120.0 < centroid.x < 120.4 and 30.1 < centroid.y < 30.4
    assert committed["street"].crs.to_epsg() == 4326


def test_geometries_are_valid_polygons(committed):
    for level, frame in committed.items():
        assert frame.geom_type.eq("Polygon").all(), level
        assert frame.is_valid.all() and not frame.is_empty.any(), level


@pytest.mark.parametrize("level", ["grid", "community"])
def test_shared_edges_match_vertex_for_vertex(committed, level):
    # In degrees, as written. Gaps narrower than gap_width (about 1 m) count, so a vertex 1 cm off fails.
    assert shapely.coverage_is_valid(committed[level].geometry.values, gap_width=1e-5)


def test_grids_tile_their_community_and_communities_tile_the_street(metric):
    for child, parent in (("grid", "community"), ("community", "street")):
        pieces = metric[child].groupby("parent_code").geometry.apply(lambda g: shapely.union_all(g.values))
        assert set(pieces.index) == set(metric[parent].index)
        for code, union in pieces.items():
            assert union.symmetric_difference(metric[parent].geometry[code]).area < 1.0, code


@pytest.mark.parametrize("level", ["community", "grid", "courtyard", "building"])
def test_siblings_do_not_overlap(metric, level):
    assert _overlap_area(metric[level].geometry) < 1.0


def test_courtyards_and_buildings_stand_apart(metric):
    # Lanes at least 5 m wide run between courtyards; buildings never touch each other.
    for level, gap in (("courtyard", 4.9), ("building", 1.0)):
        geometries = metric[level].geometry
        left, right = geometries.sindex.query(geometries.values, predicate="dwithin", distance=gap)
        assert (left == right).all(), level


def _within(children: gpd.GeoDataFrame, parents: gpd.GeoDataFrame, parent_codes) -> bool:
    outer = shapely.buffer(parents.geometry[parent_codes].values, TOLERANCE)
    return bool(shapely.within(children.geometry.values, outer).all())


def test_children_lie_within_their_parents(metric):
    assert _within(metric["grid"], metric["community"], metric["grid"]["parent_code"])
    for level in ("courtyard", "building"):
        assert _within(metric[level], metric["grid"], metric[level]["code"].str[:15]), level
    buildings = metric["building"]
    walled = buildings[buildings["code"].str[15:18] != "000"]
    assert _within(walled, metric["courtyard"], walled["parent_code"])


def test_roads_run_along_every_grid_edge(metric):
    # A building keeps at least half a road's width (5 m) plus a margin away from its grid's edge.
    buildings = metric["building"]
    edges = metric["grid"].geometry[buildings["code"].str[:15]].boundary.values
    assert shapely.distance(buildings.geometry.values, edges).min() >= 5.0


def test_codes_are_canonical_unique_and_nested(committed):
    everything = []
    for level, frame in committed.items():
        for code, parent in zip(frame["code"], frame["parent_code"], strict=True):
            assert isinstance(code, str) and normalise_code(code, level) == code
            assert parent == parent_code(code, level)
        everything.extend(frame["code"])
    assert len(everything) == len(set(everything))
    known = set(everything) | {demo.COUNTY_CODE}
    for level, frame in committed.items():
        assert frame["parent_code"].isin(known).all(), level
    assert committed["street"]["code"].tolist() == [demo.STREET_CODE]
    assert committed["street"]["name"].tolist() == [demo.STREET_NAME]


def test_files_are_rfc7946_with_string_codes_and_seven_decimals():
    for level, name in demo.FILE_NAMES.items():
        text = (BOUNDARIES / name).read_text(encoding="utf-8")
        collection = json.loads(text)
        assert collection["type"] == "FeatureCollection" and "crs" not in collection
        for feature in collection["features"]:
            properties = feature["properties"]
            assert isinstance(properties["code"], str) and len(properties["code"]) == CODE_LENGTH[level]
            assert isinstance(properties["parent_code"], str) and properties["level"] == level
            assert shapely.is_ccw(shapely.geometry.shape(feature["geometry"]).exterior)
        assert not re.search(r"\d\.\d{8,}", text), f"{name} has coordinates finer than 7 decimals"


def test_buildings_are_plausible(metric):
    buildings = metric["building"]
    assert buildings.area.between(100, 2_000).all()
    assert buildings["floors"].between(1, 40).all()
    assert set(buildings["use"]) == {"住宅", "商业", "公共"}
    in_courtyards = (buildings["code"].str[15:18] != "000").mean()
    assert 0.5 < in_courtyards < 1.0  # most, not all, stand in a courtyard
    assert (buildings.geometry.apply(lambda g: len(g.exterior.coords)) == 7).any()  # some L-shapes
    assert metric["courtyard"]["code"].isin(buildings["parent_code"]).all()  # no empty courtyard


def test_people_add_up(committed):
    buildings, grids = committed["building"], committed["grid"]
    per_grid = buildings.groupby(buildings["code"].str[:15])["population"].sum()
    assert per_grid.reindex(grids["code"], fill_value=0).tolist() == grids["population"].tolist()
    for child, parent in (("grid", "community"), ("community", "street")):
        sums = committed[child].groupby("parent_code")["population"].sum()
        assert sums[committed[parent]["code"]].tolist() == committed[parent]["population"].tolist()
    assert grids["population"].gt(0).all()
    assert grids["worker"].str.fullmatch(r"[\u4e00-\u9fff]{2,3}").all() and grids["worker"].is_unique
    assert all(frame["worker"].isna().all() for level, frame in committed.items() if level != "grid")
    assert grids["name"].is_unique and committed["courtyard"]["name"].is_unique


def test_generation_is_deterministic(generated):
    again = demo.generate_demo_street()
    for level in generated:
        assert_geodataframe_equal(generated[level], again[level])


def test_other_seeds_keep_the_counts(generated):
    other = demo.generate_demo_street(seed=7)
    assert [len(other[level]) for level in ("street", "grid", "courtyard")] == [1, 182, 356]
    assert not other["grid"].geometry.equals(generated["grid"].geometry)


def test_readme_counts_match_the_files(committed):
    readme = (BOUNDARIES / "README.md").read_text(encoding="utf-8")
    for level, name in demo.FILE_NAMES.items():
        row = re.search(rf"^\| `{re.escape(name)}` +\| {level} +\| ([\d ]+?) +\|", readme, flags=re.M)
        assert row, name
        assert int(row.group(1).replace(" ", "")) == len(committed[level]), name


def test_committed_files_are_what_the_generator_writes(tmp_path):
    assert demo.main([str(tmp_path)]) == 0
    for name in demo.FILE_NAMES.values():
        assert (tmp_path / name).read_bytes() == (BOUNDARIES / name).read_bytes(), (
            f"{name} drifted from gridmap.demo: run `python -m gridmap.demo data/boundaries`"
        )
