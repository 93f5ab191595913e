"""Candidates from change masks: areas, filters, roof flag, chips, building matching, units, ids."""

from __future__ import annotations

import cv2
import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from shapely import box

from gridmap.demo import generate_demo_street
from gridmap.locate import UnitLocator
from inspection.candidates import (
    MATCH_NEW,
    MATCH_REGISTERED,
    chips,
    colour_steel_flag,
    join_building_changes,
    locate_candidates,
    mask_components,
    match_buildings,
    measure,
    merge_pieces,
    vectorise,
    Pieces,
)

CRS = "EPSG:4549"  # CGCS2000 / 3-degree Gauss-Kruger CM 120E, metres
# 0.1 m pixels at the demo street: one pixel is 0.01 m².
TRANSFORM = Affine(0.1, 0.0, 517_400.0, 0.0, -0.1, 3_347_900.0)


def rectangles(*boxes, shape=(300, 300)):
    mask = np.zeros(shape, dtype=bool)
    for row0, col0, row1, col1 in boxes:
        mask[row0:row1, col0:col1] = True
    return mask


def test_vectorise_areas_by_hand():
    # 40 x 60 px = 4 m x 6 m = 24 m²; 30 x 30 px = 9 m²; 10 x 10 px = 1 m², below the 4 m² minimum.
    mask = rectangles((10, 20, 50, 80), (100, 100, 130, 130), (200, 200, 210, 210))
    score = np.where(mask, 0.8, 0.1).astype(np.float32)
    score[10:50, 20:50] = 0.4  # left half of the first rectangle less sure: mean 0.6
    found = vectorise(mask, score, TRANSFORM, CRS, min_area_m2=4.0, min_width_m=0)
    found = found.sort_values("area_m2").reset_index(drop=True)
    assert found.crs.to_string() == "EPSG:4326"
    assert found["area_m2"].tolist() == pytest.approx([9.0, 24.0])
    assert found["width_m"].tolist() == pytest.approx([3.0, 4.0])
    assert found["confidence"].tolist() == pytest.approx([0.8, 0.6])
    assert found.loc[1, ["col0", "row0", "col1", "row1"]].tolist() == [20, 10, 80, 50]
    # The outline lands where the transform puts it, in metres of the source CRS.
    back = found.to_crs(CRS).geometry[1]
    assert back.area == pytest.approx(24.0, rel=1e-6)
    assert back.bounds == pytest.approx((517_402.0, 3_347_895.0, 517_408.0, 3_347_899.0), abs=1e-4)


def test_vectorise_drops_thin_regions_and_slivers():
    # A 0.5 m x 20 m line (10 m², thin) and a 4 m x 4 m block with a 0.4 m x 6 m sliver hanging off it.
    mask = rectangles((20, 10, 25, 210), (100, 100, 140, 140), (118, 140, 122, 200))
    score = mask.astype(np.float32)
    found = vectorise(mask, score, TRANSFORM, CRS, min_area_m2=4.0, min_width_m=1.0)
    assert len(found) == 1
    # The block keeps its area but for the corners the 1 m disc rounds off (about 2 %).
    assert found.loc[0, "area_m2"] == pytest.approx(16.0, rel=0.025)
    assert found.loc[0, "col1"] == 140  # the sliver is gone
    unfiltered = vectorise(mask, score, TRANSFORM, CRS, min_area_m2=4.0, min_width_m=0)
    assert sorted(unfiltered["area_m2"].round(2)) == [10.0, 18.4]


def test_pieces_cut_by_tiles_merge_back():
    mask = rectangles((50, 80, 90, 170), (200, 10, 230, 40))
    score = mask.astype(np.float32) * 0.5
    whole = vectorise(mask, score, TRANSFORM, CRS, min_width_m=0)
    # Two tiles side by side with cores split at column 128; 16 px of overlap.
    left = mask_components(mask[:, :144], score[:, :144], core=(0, 0, 300, 128), open_edges=(False, False, False, True))
    right = mask_components(mask[:, 112:], score[:, 112:], core=(0, 16, 300, 188), offset=(0, 128),
                            open_edges=(False, True, False, False))
    # The 0.8 m² cut piece on the right is kept for merging, though it is below the minimum area.
    merged = merge_pieces(Pieces.concat([left, right]))
    tiled = measure(merged, TRANSFORM, CRS)
    assert tiled["id"].tolist() == whole["id"].tolist()
    assert tiled["area_m2"].tolist() == pytest.approx(whole["area_m2"].tolist())


def test_ids_are_deterministic():
    mask = rectangles((10, 20, 50, 80))
    score = mask.astype(np.float32)
    first = vectorise(mask, score, TRANSFORM, CRS, pair_id="pair-a")
    again = vectorise(mask.copy(), score.copy(), TRANSFORM, CRS, pair_id="pair-a")
    other = vectorise(mask, score, TRANSFORM, CRS, pair_id="pair-b")
    assert first["id"].tolist() == again["id"].tolist()
    assert first["id"][0] != other["id"][0]
    assert len(first["id"][0]) == 16


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [((48, 104, 186), True), ((236, 236, 232), True), ((30, 60, 120), True), ((196, 60, 48), False),
     ((140, 139, 133), False), ((72, 108, 58), False)],
    ids=["blue", "white", "shaded-blue", "red", "concrete", "vegetation"],
)
def test_colour_steel_flag(rgb, expected):
    rng = np.random.default_rng(0)
    patch = np.clip(np.array(rgb, dtype=np.float32) + rng.normal(0, 4, (40, 40, 3)), 0, 255).astype(np.uint8)
    region = np.zeros((40, 40), dtype=bool)
    region[5:35, 5:35] = True
    assert colour_steel_flag(patch, region) is expected


def test_colour_steel_flag_counts_only_the_region():
    patch = np.full((20, 20, 3), (196, 60, 48), dtype=np.uint8)
    patch[:, :10] = (48, 104, 186)
    region = np.zeros((20, 20), dtype=bool)
    region[:, :12] = True  # 10 of 12 columns blue
    assert colour_steel_flag(patch, region)
    assert not colour_steel_flag(patch, ~region)
    assert not colour_steel_flag(patch, np.zeros((20, 20), dtype=bool))


def test_chips_are_jpegs_of_the_padded_box():
    before = np.zeros((100, 200, 3), dtype=np.uint8)
    after = before.copy()
    after[40:60, 50:90] = (48, 104, 186)
    before_jpeg, after_jpeg = chips(before, after, (50, 40, 90, 60), pad=10, size=120)
    assert before_jpeg[:3] == after_jpeg[:3] == b"\xff\xd8\xff"
    decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in (before_jpeg, after_jpeg)]
    # 60 x 40 px with the padding, scaled so the long side is 120.
    assert [d.shape for d in decoded] == [(80, 120, 3), (80, 120, 3)]
    assert decoded[0].max() <= 2
    # BGR in the decoded JPEG: RGB was kept (within JPEG's error on a flat patch)
    np.testing.assert_allclose(decoded[1][40, 60], (186, 104, 48), atol=4)
    # At the image edge the padding is clipped.
    edge, _ = chips(before, after, (0, 0, 10, 10), pad=8, size=36)
    assert cv2.imdecode(np.frombuffer(edge, np.uint8), cv2.IMREAD_COLOR).shape == (36, 36, 3)


def _metric_frame(geometries, **columns):
    return gpd.GeoDataFrame(columns, geometry=list(geometries), crs=CRS).to_crs("EPSG:4326")


def test_match_buildings_joins_pieces_cut_at_tile_edges():
    x, y = 517_400.0, 3_347_800.0
    # One 20 m x 10 m building arriving as two pieces cut at x + 12 (a vector-tile edge), and another.
    buildings = _metric_frame(
        [box(x, y, x + 12, y + 10), box(x + 12, y, x + 20, y + 10), box(x + 40, y, x + 50, y + 10)],
        code=["A-west", "A-east", "B"],
    )
    candidates = _metric_frame(
        [
            box(x + 2, y + 1, x + 19, y + 9),  # rebuilt A: 41 % on A-east, 59 % on A-west: only the join covers it
            box(x + 41, y + 6, x + 45, y + 9),  # rooftop box on B
            box(x + 25, y, x + 31, y + 4),  # a shed between them
            box(x + 47, y + 2, x + 53, y + 8),  # half on B: new
        ],
        id=["a", "b", "c", "d"],
    )
    out = match_buildings(candidates, buildings, covered_fraction=0.6)
    assert out["match"].tolist() == [MATCH_REGISTERED, MATCH_REGISTERED, MATCH_NEW, MATCH_NEW]
    assert out["building_code"].tolist() == ["A-west", "B", None, None]
    assert out["covered"].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.5], abs=1e-6)
    assert out["building_share"][0] == pytest.approx(17 * 8 / 200, rel=1e-3)
    assert out["building_share"][1] == pytest.approx(12 / 100, rel=1e-3)
    assert np.isnan(out["building_share"][2])
    # The candidates themselves are untouched.
    assert out.geometry.equals(candidates.geometry)


def test_parts_of_one_changed_building_side_by_side_become_one_candidate():
    x, y = 517_400.0, 3_347_800.0
    buildings = _metric_frame([box(x, y, x + 30, y + 10), box(x + 40, y, x + 50, y + 10)], code=["A", "B"])
    parts = [
        box(x + 1, y + 1, x + 15, y + 9),  # a rebuilt A cut in two by a detector: 0.4 m apart
        box(x + 15.4, y + 1, x + 21, y + 9),
        box(x + 26, y + 6, x + 29, y + 9),  # a rooftop addition on A, 5 m away: its own change
        box(x + 41, y + 1, x + 49, y + 4.8),  # two new sheds side by side off any building: two cases
        box(x + 52, y + 1, x + 56, y + 4.8),
        box(x + 52.4, y + 5, x + 56, y + 9),
    ]
    candidates = _metric_frame(
        parts, id=list("abcdef"), area_m2=[p.area for p in parts], width_m=[8.0, 5.6, 3.0, 3.8, 3.8, 3.6],
        compactness=0.5, confidence=[0.9, 0.6, 0.8, 0.7, 0.7, 0.7], col0=[10, 154, 260, 410, 520, 524],
        row0=[10, 10, 10, 52, 52, 10], col1=[150, 210, 290, 490, 560, 560], row1=[90, 90, 40, 90, 90, 50],
        colour_steel=[False, True, False, True, True, True],
    )
    matched = match_buildings(candidates, buildings)
    assert matched["match"].tolist() == [MATCH_REGISTERED] * 4 + [MATCH_NEW] * 2
    out = join_building_changes(matched).set_index("id")
    assert sorted(out.index) == ["a", "c", "d", "e", "f"]
    joined = out.loc["a"]
    metric = gpd.GeoSeries([joined.geometry], crs="EPSG:4326").to_crs(CRS).iloc[0]
    assert metric.geom_type == "Polygon"
    assert metric.area == pytest.approx(20 * 8, rel=0.01)  # the union, the 0.4 m gap closed
    assert joined["area_m2"] == pytest.approx(14 * 8 + 5.6 * 8, rel=1e-6)
    assert joined["building_share"] == pytest.approx((14 * 8 + 5.6 * 8) / 300, rel=1e-3)
    assert joined["confidence"] == pytest.approx((0.9 * 14 + 0.6 * 5.6) / 19.6, rel=1e-6)
    assert (joined["col0"], joined["row0"], joined["col1"], joined["row1"]) == (10, 10, 210, 90)
    assert joined["colour_steel"] and joined["width_m"] == 8.0
    assert out.loc["c", "area_m2"] == pytest.approx(9.0, rel=1e-6)
    # Nothing on a building, or alone on one, is touched.
    for key in "cdef":
        assert out.loc[key].geometry.equals(matched.set_index("id").loc[key].geometry)


def test_match_buildings_with_real_tile_cut_buildings(shared_data):
    buildings = gpd.read_file(shared_data / "buildings" / "wuhan-osm.geojson")
    # Candidates: each building's own outline, shrunk a little (a rebuilt roof), must match a building.
    metric = buildings.to_crs(CRS)
    shrunk = _metric_frame(metric.geometry.buffer(-0.5).to_numpy(), id=[str(i) for i in range(len(metric))])
    shrunk = shrunk[~shrunk.geometry.is_empty]
    out = match_buildings(shrunk, buildings)
    assert (out["match"] == MATCH_REGISTERED).all()
    assert set(out["building_code"]) <= set(buildings["osm_id"].astype(str))


@pytest.fixture(scope="module")
def demo_units():
    return generate_demo_street()


def test_locate_candidates_on_the_demo_street(demo_units):
    courtyards = demo_units["courtyard"].iloc[[0, 100, 300]]
    points = courtyards.geometry.representative_point()
    candidates = gpd.GeoDataFrame(
        {"id": ["x", "y", "z"]}, geometry=points.to_crs(CRS).buffer(2.0).to_crs("EPSG:4326").to_numpy(), crs="EPSG:4326"
    )
    units = gpd.GeoDataFrame(
        gpd.pd.concat([demo_units[level] for level in ("street", "community", "grid", "courtyard")], ignore_index=True),
        crs="EPSG:4326",
    )
    out = locate_candidates(candidates, UnitLocator(units))
    assert out["courtyard"].tolist() == courtyards["code"].tolist()
    assert out["grid"].tolist() == courtyards["parent_code"].tolist()
    assert (out["street"] == "330102901").all()
    grids = demo_units["grid"].set_index("code")
    assert out["worker"].tolist() == grids.loc[out["grid"], "worker"].tolist()
    assert out["community"].tolist() == [g[:12] for g in out["grid"]]


def test_empty_mask_gives_empty_table():
    found = vectorise(np.zeros((50, 50), bool), np.zeros((50, 50), np.float32), TRANSFORM, CRS)
    assert len(found) == 0 and found.crs.to_string() == "EPSG:4326"
    assert {"id", "area_m2", "confidence"} <= set(found.columns)
    assert shapely.is_empty(found.geometry.to_numpy()).all()


def test_colour_steel_flag_leaves_out_the_rim_an_outline_spills_onto():
    patch = np.full((40, 40, 3), (150, 140, 120), dtype=np.uint8)  # bare ground
    patch[12:28, 16:24] = (236, 236, 232)  # a white sheet roof, 16 x 8 px
    region = np.zeros((40, 40), dtype=bool)
    region[9:31, 13:27] = True  # the detector's outline, 3 px wider all round: 128 of 308 px are roof
    assert not colour_steel_flag(patch, region)
    assert colour_steel_flag(patch, region, edge_px=3)
    tiny = np.zeros((40, 40), dtype=bool)
    tiny[19:21, 19:21] = True  # nothing is left after the erosion: the whole region is judged
    assert colour_steel_flag(patch, tiny, edge_px=3)
