"""PolygonLocator must agree exactly with a bare STRtree; UnitLocator must resolve the unit hierarchy."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely import STRtree, box

from gridmap.crs import wgs84_to_gcj02
from gridmap.errors import CRSError, InputError
from gridmap.locate import PolygonLocator, UnitLocator
from gridmap.units import make_units


def strtree_answer(geometries, x, y) -> np.ndarray:
    """The lowest polygon index a bare STRtree finds for each point, -1 for none."""
    which, polygon = STRtree(geometries).query(shapely.points(x, y), predicate="intersects")
    order = np.lexsort((polygon, which))
    which, polygon = which[order], polygon[order]
    first = np.r_[True, which[1:] != which[:-1]] if len(which) else np.zeros(0, dtype=bool)
    answer = np.full(len(x), -1, dtype=np.int64)
    answer[which[first]] = polygon[first]
    return answer


def tricky_points(geometries, locator: PolygonLocator, rng: np.random.Generator, n: int = 20_000):
    """Points where a locator can go wrong: on and a hair off vertices, edges and cell lines."""
    xy = shapely.get_coordinates(geometries)
    a, b = xy[:-1], xy[1:]
    t = rng.uniform(0, 1, (len(a), 1))
    on_edges = np.concatenate([a, (a + b) / 2, a + t * (b - a)])
    hair = np.concatenate([np.nextafter(on_edges, on_edges + d) for d in ([1, 0], [-1, 0], [0, 1], [0, -1])])
    # Level with a vertex, so the crossing ray runs through it (or along a horizontal edge).
    level = np.column_stack([xy[:, 0] + rng.normal(0, 2 * locator.cell_size, len(xy)), xy[:, 1]])
    cols = rng.integers(0, locator.ncols + 1, n)
    rows = rng.integers(0, locator.nrows + 1, n)
    line_x = locator.x0 + cols * locator.cell_size
    line_y = locator.y0 + rows * locator.cell_size
    free_x = rng.uniform(locator.x0, line_x.max(), n)
    free_y = rng.uniform(locator.y0, line_y.max(), n)
    on_lines = np.concatenate(
        [np.column_stack([line_x, free_y]), np.column_stack([free_x, line_y]), np.column_stack([line_x, line_y])]
    )
    odd = np.array([[np.nan, 0.0], [0.0, np.nan], [np.nan, np.nan], [np.inf, 0.0], [-np.inf, np.inf], [1e300, -1e300]])
    points = np.concatenate([on_edges, hair, level, on_lines, odd])
    return points[:, 0], points[:, 1]


def assert_matches_strtree(geometries, locator, rng, n_random=50_000):
    x, y = tricky_points(geometries, locator, rng)
    minx, miny, maxx, maxy = shapely.total_bounds(geometries)
    pad_x, pad_y = 0.1 * (maxx - minx) + 1e-9, 0.1 * (maxy - miny) + 1e-9
    x = np.concatenate([x, rng.uniform(minx - pad_x, maxx + pad_x, n_random)])
    y = np.concatenate([y, rng.uniform(miny - pad_y, maxy + pad_y, n_random)])
    found = locator.locate(x, y)
    expected = strtree_answer(geometries, x, y)
    wrong = np.flatnonzero(found != expected)
    assert not wrong.size, (
        f"{wrong.size} of {len(x)} points differ; first ({x[wrong[0]]!r}, {y[wrong[0]]!r}): "
        f"locate {found[wrong[0]]}, STRtree {expected[wrong[0]]}"
    )


def tessellation(count: int, seed: int) -> np.ndarray:
    """Voronoi cells over 10 x 10 (shared edges identical), bent by a smooth displacement."""
    rng = np.random.default_rng(seed)
    seeds = shapely.multipoints(rng.uniform(0, 10, (count, 2)))
    cells = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(seeds)), box(0, 0, 10, 10))
    cells = shapely.segmentize(cells, 0.3)

    def bend(xy):
        return xy + 0.05 * np.sin(xy[:, ::-1] * 3.0)

    return shapely.transform(cells, bend)


@pytest.mark.parametrize("cells_per_polygon", [2, 16, 256, 2048])
def test_tessellation_matches_strtree(cells_per_polygon):
    rng = np.random.default_rng(cells_per_polygon)
    cells = tessellation(300, seed=1)
    locator = PolygonLocator(cells, cells_per_polygon=cells_per_polygon)
    assert len(locator.edge_cells) > 0
    assert_matches_strtree(cells, locator, rng)


def test_shared_edge_goes_to_lowest_index():
    cells = tessellation(50, seed=2)
    xy = shapely.get_coordinates(cells)
    midpoints = (xy[:-1] + xy[1:]) / 2
    locator = PolygonLocator(cells)
    found = locator.locate(midpoints[:, 0], midpoints[:, 1])
    np.testing.assert_array_equal(found, strtree_answer(cells, midpoints[:, 0], midpoints[:, 1]))
    left, right = box(0, 0, 1, 1), box(1, 0, 2, 1)
    assert PolygonLocator([left, right]).locate(1.0, 0.5) == 0
    assert PolygonLocator([right, left]).locate(1.0, 0.5) == 0


def test_holes_multipolygons_and_overlaps():
    holes = [[(1, 1), (3, 1), (3, 3), (1, 3)], [(4, 4), (5, 4), (4.5, 5)]]
    ring = shapely.Polygon([(0, 0), (6, 0), (6, 6), (0, 6)], holes)
    holed_part = box(8.5, 0.5, 9, 2).difference(box(8.6, 1, 8.8, 1.5))
    geometries = np.array(
        [
            box(4.2, 1.2, 5.2, 2.2),  # inside the ring polygon, lower index
            ring,
            shapely.MultiPolygon([box(1.5, 1.5, 2.5, 2.5), box(7, 0, 8, 1), holed_part]),  # one part in a hole
            # Invalid, as boundary files often are: parts overlapping each other.
            shapely.MultiPolygon([box(7, 2.5, 8, 3.5), box(7.5, 3, 9, 4)]),
            box(5.5, 5.5, 7.5, 7.5),  # overlaps the ring polygon's corner
            box(5.5, 5.5, 7.5, 7.5),  # an exact duplicate
            shapely.Polygon([(0, 7), (3, 9), (0.5, 8), (3, 7.2)]).buffer(0),  # concave after repair
            shapely.Polygon([(2, 3.5), (2.5, 3.5), (2.25, 4)]),  # inside the ring polygon, higher index
        ],
        dtype=object,
    )
    rng = np.random.default_rng(7)
    for cells_per_polygon in (1, 64, 4096):
        locator = PolygonLocator(geometries, cells_per_polygon=cells_per_polygon)
        assert_matches_strtree(geometries, locator, rng)


def test_single_polygon():
    star = shapely.Polygon(
        [(np.cos(a) * r, np.sin(a) * r) for a, r in zip(np.linspace(0, 2 * np.pi, 41)[:-1], [3, 1] * 20)]
    )
    rng = np.random.default_rng(3)
    for cells_per_polygon in (4, 1024):
        locator = PolygonLocator([star], cells_per_polygon=cells_per_polygon)
        assert_matches_strtree(np.array([star]), locator, rng)


@pytest.mark.parametrize("cells_per_polygon, size", [(1, 1.0), (4, 0.5), (16, 0.25)])
def test_axis_aligned_edges_on_cell_lines(cells_per_polygon, size):
    boxes = np.array([box(i, j, i + 1, j + 1) for j in range(10) for i in range(10)], dtype=object)
    locator = PolygonLocator(boxes, cells_per_polygon=cells_per_polygon)
    assert locator.cell_size == size and locator.x0 == -2 * size and locator.y0 == -2 * size
    # Every polygon edge lies on a cell line; try every quarter-cell lattice point and then some.
    grid = np.arange(-1, 11.25, 0.25)
    x, y = (a.ravel() for a in np.meshgrid(grid, grid))
    found = locator.locate(x, y)
    np.testing.assert_array_equal(found, strtree_answer(boxes, x, y))
    assert locator.locate(1.0, 1.0) == 0 and locator.locate(10.0, 10.0) == 99 and locator.locate(10.25, 5) == -1
    assert_matches_strtree(boxes, locator, np.random.default_rng(4))


def test_long_straight_boundaries():
    # Where long axis-aligned boundaries cross, no short ray leaves the edge cells: those cells' points go
    # to the STRtree (white-box check that this path is exercised).
    boxes = shapely.transform(
        np.array([box(i, j, i + 1, j + 1) for j in range(30) for i in range(30)], dtype=object),
        lambda xy: xy * 0.937 + 0.0123,
    )
    locator = PolygonLocator(boxes, cells_per_polygon=64)
    assert (locator._rays[:, 0] == 0).any()
    assert_matches_strtree(boxes, locator, np.random.default_rng(8))


def test_projected_coordinates_far_from_origin():
    # Gauss-Kruger metres: coordinates ~1e6 with 50 m grids, so cell lines fall between float steps.
    cells = shapely.transform(tessellation(200, seed=5), lambda xy: xy * 100 + [500_000.0, 3_400_000.0])
    locator = PolygonLocator(cells, cells_per_polygon=512)
    assert_matches_strtree(cells, locator, np.random.default_rng(5))


def test_max_cells_caps_the_raster():
    cells = tessellation(100, seed=6)
    locator = PolygonLocator(cells, cells_per_polygon=10_000, max_cells=5_000)
    assert locator.nrows * locator.ncols <= 5_000
    assert_matches_strtree(cells, locator, np.random.default_rng(6))


def test_shapes_nan_empty_and_missing():
    geometries = np.array([None, box(0, 0, 1, 1), shapely.Polygon(), box(2, 0, 3, 1)], dtype=object)
    locator = PolygonLocator(geometries)
    assert locator.locate(0.5, 0.5).shape == ()
    assert locator.locate(np.full((2, 3), 2.5), 0.5).tolist() == [[3] * 3] * 2
    assert locator.locate([np.nan, 0.5, np.inf, 0.5], [0.5, np.nan, 0.5, -np.inf]).tolist() == [-1] * 4
    empty = PolygonLocator([])
    assert empty.locate([0.0, 1.0], [0.0, np.nan]).tolist() == [-1, -1]
    assert PolygonLocator([None, shapely.Polygon()]).locate(0.0, 0.0) == -1


# A street of two communities; community 001 holds grids 001 (south) and 002 (north), community 002 holds
# grid 001 (east half, listed first so that index order differs from code order). The street's north
# strip (lat 30.23-30.24) is in no community; courtyard 001 sits in grid 330102901001001.
STREET = "330102901"
WEST, EAST = "330102901001", "330102901002"
SOUTH_GRID, NORTH_GRID, EAST_GRID = "330102901001001", "330102901001002", "330102901002001"


@pytest.fixture(scope="module")
def unit_locator() -> UnitLocator:
    def unit(code, level, parent, bounds, worker=None):
        return {"code": code, "level": level, "parent_code": parent, "worker": worker, "geometry": box(*bounds)}

    units = make_units(
        [
            unit(EAST_GRID, "grid", EAST, (120.12, 30.20, 120.14, 30.23), worker="李强"),
            unit(STREET, "street", "330102", (120.10, 30.20, 120.14, 30.24)),
            unit(WEST, "community", STREET, (120.10, 30.20, 120.12, 30.23)),
            unit(EAST, "community", STREET, (120.12, 30.20, 120.14, 30.23)),
            unit(NORTH_GRID, "grid", WEST, (120.10, 30.215, 120.12, 30.23), worker="张伟"),
            # Drawn a little past its community's edge: the parent chain still names community 001.
            unit(SOUTH_GRID, "grid", WEST, (120.10, 30.20, 120.1205, 30.215)),
            unit(SOUTH_GRID + "001", "courtyard", SOUTH_GRID, (120.105, 30.205, 120.107, 30.207)),
            # Buildings are not located: this one covers everything and must change nothing.
            unit(SOUTH_GRID + "001001", "building", SOUTH_GRID + "001", (120.0, 30.0, 121.0, 31.0)),
        ]
    )
    return UnitLocator(units)


def test_unit_locator_inside_a_grid(unit_locator):
    found = unit_locator.locate_one(120.106, 30.206)
    assert found == {
        "lon": 120.106,
        "lat": 30.206,
        "street": STREET,
        "community": WEST,
        "grid": SOUTH_GRID,
        "courtyard": SOUTH_GRID + "001",
        "worker": None,
        "inside": True,
    }
    assert unit_locator.locate_one(120.13, 30.21)["worker"] == "李强"


def test_unit_locator_shared_edge_takes_lower_code(unit_locator):
    frame = unit_locator.locate([120.11, 120.12, 120.12], [30.215, 30.21, 30.225])
    assert frame["grid"].tolist() == [SOUTH_GRID, SOUTH_GRID, NORTH_GRID]
    assert frame["community"].tolist() == [WEST] * 3
    assert frame["worker"].tolist() == [None, None, "张伟"]


def test_unit_locator_parent_chain_and_fallbacks(unit_locator):
    frame = unit_locator.locate([120.1203, 120.13], [30.205, 30.235])
    # In the south grid where it overhangs community 002: the grid's parent wins over the community layer.
    assert frame.loc[0, ["grid", "community", "street"]].tolist() == [SOUTH_GRID, WEST, STREET]
    # In the street but in no community or grid.
    assert frame.loc[1, ["street", "community", "grid", "worker"]].tolist() == [STREET, None, None, None]
    assert frame["inside"].tolist() == [True, True]


def test_unit_locator_outside(unit_locator):
    frame = unit_locator.locate([120.5, 0.0], [30.21, 0.0])
    assert list(frame.columns) == ["lon", "lat", "street", "community", "grid", "courtyard", "worker", "inside"]
    assert frame[["street", "community", "grid", "courtyard", "worker"]].isna().all().all()
    assert frame[["street", "grid"]].map(lambda v: v is None).all().all()
    assert not frame["inside"].any()


def test_unit_locator_gcj02_input(unit_locator):
    lon, lat = np.array([120.1199, 120.1301]), np.array([30.2149, 30.2251])
    shifted_lon, shifted_lat = wgs84_to_gcj02(lon, lat)
    assert abs(shifted_lon[0] - lon[0]) > 0.001  # hundreds of metres off: in another grid or none
    wgs = unit_locator.locate(lon, lat)
    gcj = unit_locator.locate(shifted_lon, shifted_lat, crs="gcj02")
    assert gcj["grid"].tolist() == wgs["grid"].tolist() == [SOUTH_GRID, EAST_GRID]
    np.testing.assert_allclose(gcj[["lon", "lat"]].to_numpy(), np.column_stack([lon, lat]), atol=1e-9)
    assert unit_locator.locate_one(120.106, 30.206, crs="CGCS2000")["grid"] == SOUTH_GRID


def test_unit_locator_with_empty_levels():
    units = make_units([{"code": STREET, "level": "street", "parent_code": "330102", "geometry": box(0, 0, 1, 1)}])
    found = UnitLocator(units).locate_one(0.5, 0.5)
    assert (found["street"], found["community"], found["grid"], found["worker"]) == (STREET, None, None, None)
    assert found["inside"]


def test_unit_locator_rejects_bad_input(unit_locator):
    with pytest.raises(InputError, match=r"^point 1 \(and 2 more of 4\) has lon=nan, lat=30.2"):
        unit_locator.locate([120.1, np.nan, 200.0, 120.1], [30.2, 30.2, 30.2, -91.0])
    with pytest.raises(InputError, match=r"^point 0 has lon=120.1, lat=95.0"):
        unit_locator.locate_one(120.1, 95.0)
    with pytest.raises(CRSError, match="EPSG:4548"):
        unit_locator.locate([500000.0], [3400000.0], crs="EPSG:4548")
