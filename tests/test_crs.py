import dataclasses

import geopandas as gpd
import numpy as np
import pyproj
import pytest
from shapely import MultiPolygon, Point, Polygon, box

from gridmap.crs import (
    SourceCRS,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    metric_crs,
    out_of_china,
    resolve_crs,
    to_storage_crs,
    transform_geometries,
    transform_xy,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from gridmap.errors import CRSError, GeometryError

GEOD = pyproj.Geod(ellps="WGS84")
SIX = (wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02, wgs84_to_bd09, bd09_to_wgs84)
FORWARD_INVERSE = [(wgs84_to_gcj02, gcj02_to_wgs84), (wgs84_to_bd09, bd09_to_wgs84), (gcj02_to_bd09, bd09_to_gcj02)]


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


@pytest.fixture(scope="module")
def china_lattice():
    """Every 0.25 degrees over the rectangle the shifts apply to: about 57 000 points."""
    lon, lat = np.meshgrid(np.arange(72.0, 138.0, 0.25), np.arange(0.75, 56.0, 0.25))
    lon, lat = lon.ravel(), lat.ravel()
    inside = ~out_of_china(lon, lat)
    return lon[inside], lat[inside]


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("forward, inverse", FORWARD_INVERSE[:2], ids=["gcj02", "bd09"])
def test_wgs84_round_trip_is_within_half_a_metre_everywhere_in_china(china_lattice, forward, inverse):
    lon, lat = china_lattice
    shifted = forward(lon, lat)
    shift = metres(lon, lat, *shifted)
    assert shift.min() > 1 and np.median(shift) > 100  # the shift really happened everywhere
    back_lon, back_lat = inverse(*shifted)
    error = metres(lon, lat, back_lon, back_lat)
    assert error.max() < 0.5
    # What the iteration promises, and what the published one-step inverse (metres off) would fail.
    assert np.abs(back_lon - lon).max() < 1e-9
    assert np.abs(back_lat - lat).max() < 1e-9


@pytest.mark.parametrize("forward, inverse", FORWARD_INVERSE, ids=["gcj02", "bd09", "gcj02-bd09"])
def test_shifted_round_trip_is_within_half_a_metre_everywhere_in_china(china_lattice, forward, inverse):
    lon, lat = china_lattice
    again = forward(*inverse(lon, lat))
    assert metres(lon, lat, *again).max() < 0.5
    assert np.abs(again[0] - lon).max() < 1e-9
    assert np.abs(again[1] - lat).max() < 1e-9


@pytest.mark.parametrize("point", [(137.83, 50.0), (120.0, 55.826)])
def test_round_trip_holds_for_chinese_points_shifted_across_the_rectangle_edge(point):
    shifted = wgs84_to_gcj02(*point)
    assert out_of_china(*shifted)
    assert metres(*point, *gcj02_to_wgs84(*shifted)) < 1e-3
    assert metres(*point, *bd09_to_wgs84(*wgs84_to_bd09(*point))) < 1e-3


def test_inverse_prefers_the_chinese_point_whose_shift_lands_outside_the_rectangle():
    # (137.8375, 50.0021) is outside the rectangle, so never shifted itself, but it is also where
    # (137.83, 50) is shifted to; the inverse returns the Chinese point, as GCJ-02 data means it.
    outside = wgs84_to_gcj02(137.83, 50.0)
    assert wgs84_to_gcj02(*outside) == outside
    assert metres(137.83, 50.0, *gcj02_to_wgs84(*outside)) < 1e-3


# --- reference values --------------------------------------------------------------------------------


def test_gcj02_matches_coordtransform_published_values():
    # wandergis/coordtransform, test/app.js: wgs84togcj02 and gcj02tobd09 of (116.404, 39.915).
    assert np.allclose(wgs84_to_gcj02(116.404, 39.915), (116.41024449916938, 39.91640428150164), rtol=0, atol=1e-9)
    assert np.allclose(gcj02_to_bd09(116.404, 39.915), (116.41036949371029, 39.92133699351021), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "wgs_lat, wgs_lon, gcj_lat, gcj_lon",
    [
        # googollee/eviltransform test vectors (wgsLat, wgsLng, gcjLat, gcjLng), also in its PHP port's tests.
        (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
        (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
        (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
    ],
)
def test_gcj02_matches_eviltransform_test_vectors(wgs_lat, wgs_lon, gcj_lat, gcj_lon):
    assert np.allclose(wgs84_to_gcj02(wgs_lon, wgs_lat), (gcj_lon, gcj_lat), rtol=0, atol=1e-9)
    assert np.allclose(gcj02_to_wgs84(gcj_lon, gcj_lat), (wgs_lon, wgs_lat), rtol=0, atol=1e-9)


def test_inverses_agree_with_the_published_one_step_inverses_to_their_accuracy():
    # coordtransform's gcj02towgs84 and bd09togcj02 of (116.404, 39.915) are one-step approximations,
    # good to a metre or so; ours are exact, so they differ slightly, and forward maps them back exactly.
    lon, lat = gcj02_to_wgs84(116.404, 39.915)
    assert np.allclose((lon, lat), (116.39775550083061, 39.91359571849836), rtol=0, atol=1e-5)
    assert not np.allclose((lon, lat), (116.39775550083061, 39.91359571849836), rtol=0, atol=1e-8)
    assert np.allclose(wgs84_to_gcj02(lon, lat), (116.404, 39.915), rtol=0, atol=1e-11)
    lon, lat = bd09_to_gcj02(116.404, 39.915)
    assert np.allclose((lon, lat), (116.39762729119315, 39.90865673957631), rtol=0, atol=1e-5)
    assert np.allclose(gcj02_to_bd09(lon, lat), (116.404, 39.915), rtol=0, atol=1e-11)


def test_beijing_shift_has_the_published_size():
    lon, lat = wgs84_to_gcj02(116.39, 39.9)
    assert 0.005 < lon - 116.39 < 0.007  # about 0.006 degrees east
    assert 0.001 < lat - 39.9 < 0.002  # about 0.0013 degrees north
    assert 100 < metres(116.39, 39.9, lon, lat) < 700
    # BD-09 adds Baidu's own offset of roughly 0.0065, 0.006 degrees on top.
    bd_lon, bd_lat = wgs84_to_bd09(116.39, 39.9)
    assert 0.005 < bd_lon - lon < 0.008
    assert 0.005 < bd_lat - lat < 0.008


# --- outside China, NaN, shapes ----------------------------------------------------------------------

OUTSIDE = np.array([[139.7, 35.7], [2.35, 48.86], [-74.0, 40.7], [151.2, -33.9], [0.0, 0.0], [137.9, 40.0]])


@pytest.mark.parametrize("function", SIX, ids=lambda f: f.__name__)
def test_points_outside_china_are_unchanged_bit_for_bit(function):
    lon, lat = function(OUTSIDE[:, 0], OUTSIDE[:, 1])
    assert lon.tobytes() == OUTSIDE[:, 0].tobytes()
    assert lat.tobytes() == OUTSIDE[:, 1].tobytes()


@pytest.mark.parametrize("function", SIX, ids=lambda f: f.__name__)
def test_nan_passes_through_and_shapes_are_kept(function):
    lon, lat = function(np.array([[116.4, np.nan], [np.nan, 121.5]]), np.array([[39.9, 39.9], [np.nan, 31.2]]))
    assert lon.shape == lat.shape == (2, 2)
    assert lon.dtype == lat.dtype == np.float64
    assert np.isnan(lon[0, 1]) and np.isnan(lon[1, 0]) and np.isnan(lat[1, 0])
    assert np.isfinite(lon[0, 0]) and np.isfinite(lon[1, 1])
    scalar = function(116.4, 39.9)
    # Bit for bit: each point's iteration stops on its own, whatever else is in the batch.
    assert scalar[0].shape == () and scalar[0] == lon[0, 0] and scalar[1] == lat[0, 0]


@pytest.mark.parametrize("function", SIX, ids=lambda f: f.__name__)
def test_vectorised_equals_pointwise(function, china_lattice):
    lon, lat = (a[::997] for a in china_lattice)
    vector = function(lon, lat)
    pointwise = np.array([function(x, y) for x, y in zip(lon, lat, strict=True)], dtype=np.float64)
    assert np.array_equal(vector[0], pointwise[:, 0])
    assert np.array_equal(vector[1], pointwise[:, 1])


def test_out_of_china_uses_the_published_rectangle_with_its_edges_inside():
    lon = [72.004, 72.0039, 137.8347, 137.8348, 100, 100, 100, 100, np.nan]
    lat = [30, 30, 30, 30, 0.8293, 0.8292, 55.8271, 55.8272, 30]
    assert out_of_china(lon, lat).tolist() == [False, True, False, True, False, True, False, True, True]


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, name, shift",
    [
        ("wgs84", "wgs84", None),
        ("WGS84", "wgs84", None),
        ("wgs-84", "wgs84", None),
        ("EPSG:4326", "wgs84", None),
        (4326, "wgs84", None),
        (pyproj.CRS("OGC:CRS84"), "wgs84", None),
        ("cgcs2000", "cgcs2000", None),
        ("CGCS2000", "cgcs2000", None),
        ("EPSG:4490", "cgcs2000", None),
        ("gcj02", "gcj02", "gcj02"),
        ("gcj-02", "gcj02", "gcj02"),
        ("GCJ02", "gcj02", "gcj02"),
        ("bd09", "bd09", "bd09"),
        ("bd-09", "bd09", "bd09"),
        ("BD09", "bd09", "bd09"),
        ("EPSG:4548", "EPSG:4548", None),
        ("epsg:32650", "EPSG:32650", None),
        ("4548", "EPSG:4548", None),
        (np.int64(4548), "EPSG:4548", None),
        (pyproj.CRS.from_epsg(3857), "EPSG:3857", None),
    ],
)
def test_resolve_crs_accepts(value, name, shift):
    resolved = resolve_crs(value)
    assert (resolved.name, resolved.shift) == (name, shift)
    assert isinstance(resolved.crs, pyproj.CRS)
    assert resolve_crs(resolved) is resolved


def test_shifted_systems_are_based_on_epsg_4326():
    assert resolve_crs("gcj02").crs.to_epsg() == 4326
    assert resolve_crs("bd09").crs.to_epsg() == 4326
    assert resolve_crs("cgcs2000").crs.to_epsg() == 4490


@pytest.mark.parametrize("value", ["mars", "gcj", "wgs", "EPSG:", "EPSG:99999", 99999, "", None, True, 4326.0])
def test_resolve_crs_rejects_with_a_one_line_message(value):
    with pytest.raises(CRSError) as caught:
        resolve_crs(value)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(value) in message


def test_resolve_crs_message_lists_the_accepted_names():
    with pytest.raises(CRSError, match=r"wgs84, cgcs2000, gcj02, bd09 or EPSG:NNNN"):
        resolve_crs("mars")


def test_resolve_crs_rejects_a_vertical_crs():
    with pytest.raises(CRSError, match="not a horizontal"):
        resolve_crs("EPSG:5773")


def test_source_crs_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve_crs("gcj02").shift = None
    assert SourceCRS("gcj02", pyproj.CRS.from_epsg(4326), "gcj02") == resolve_crs("gcj02")


# --- transform_xy and geometries ---------------------------------------------------------------------


def test_transform_xy_uses_proj_for_epsg_codes():
    lon, lat = np.array([116.4, 121.5]), np.array([39.9, 31.2])
    expected = pyproj.Transformer.from_crs(4326, 4548, always_xy=True).transform(lon, lat)
    assert np.allclose(transform_xy(lon, lat, "wgs84", "EPSG:4548"), expected, rtol=0, atol=1e-6)
    back = transform_xy(*expected, 4548, "wgs84")
    assert np.allclose(back, (lon, lat), rtol=0, atol=1e-9)


def test_transform_xy_unshifts_before_reprojecting_and_shifts_after():
    lon, lat = np.array([116.4, 121.5]), np.array([39.9, 31.2])
    to_4548 = pyproj.Transformer.from_crs(4326, 4548, always_xy=True)
    assert np.allclose(
        transform_xy(lon, lat, "gcj02", "EPSG:4548"), to_4548.transform(*gcj02_to_wgs84(lon, lat)), rtol=0, atol=1e-6
    )
    east, north = to_4548.transform(lon, lat)
    assert np.allclose(transform_xy(east, north, 4548, "bd09"), wgs84_to_bd09(lon, lat), rtol=0, atol=1e-9)
    assert np.allclose(transform_xy(lon, lat, "bd09", "gcj02"), bd09_to_gcj02(lon, lat), rtol=0, atol=0)
    assert np.allclose(transform_xy(lon, lat, "gcj02", "bd09"), gcj02_to_bd09(lon, lat), rtol=0, atol=0)


def test_transform_xy_between_cgcs2000_and_wgs84_is_the_null_transform():
    x, y = transform_xy([116.4], [39.9], "cgcs2000", "wgs84")
    assert metres(116.4, 39.9, x[0], y[0]) < 1.0


def test_transform_xy_within_one_system_is_identity_and_returns_new_arrays():
    lon = np.array([116.4])
    x, y = transform_xy(lon, [39.9], "gcj-02", "GCJ02")
    assert x.tolist() == [116.4] and y.tolist() == [39.9]
    assert x is not lon


def test_transform_geometries_moves_every_vertex_and_keeps_z_and_missing():
    polygon = box(116.39, 39.90, 116.41, 39.92)
    multi = MultiPolygon([box(121.4, 31.2, 121.5, 31.3), box(121.6, 31.2, 121.7, 31.3)])
    holed = Polygon(polygon.exterior.coords, [box(116.395, 39.905, 116.40, 39.91).exterior.coords])
    out = transform_geometries([polygon, multi, holed, Point(116.4, 39.9, 50.0), None, Point()], "wgs84", "gcj02")
    assert isinstance(out, np.ndarray) and out.shape == (6,)
    coords = np.array(polygon.exterior.coords)
    assert np.allclose(np.array(out[0].exterior.coords), np.column_stack(wgs84_to_gcj02(coords[:, 0], coords[:, 1])))
    assert out[1].geom_type == "MultiPolygon" and len(out[1].geoms) == 2
    assert len(out[2].interiors) == 1
    assert out[3].has_z and out[3].z == 50.0
    assert out[4] is None and out[5].is_empty
    assert metres(116.4, 39.9, out[3].x, out[3].y) > 100


def test_transform_geometries_accepts_a_geoseries():
    series = gpd.GeoSeries([Point(116.4, 39.9)], crs="EPSG:4326")
    back = transform_geometries(transform_geometries(series, "wgs84", "bd09"), "bd09", "wgs84")
    assert metres(116.4, 39.9, back[0].x, back[0].y) < 1e-3


# --- to_storage_crs ----------------------------------------------------------------------------------


def _frame(geometry, crs):
    return gpd.GeoDataFrame({"name": ["东华门街道", "b"], "code": ["110101001", "0101"]}, geometry=geometry, crs=crs)


def test_to_storage_crs_unshifts_a_declared_gcj02_file_and_keeps_attributes():
    gcj = wgs84_to_gcj02([116.4, 121.5], [39.9, 31.2])
    frame = _frame([Point(x, y) for x, y in zip(*gcj, strict=True)], "EPSG:4326").set_index(np.array([7, 9]))
    out = to_storage_crs(frame, "gcj02")
    assert out.crs.to_epsg() == 4326
    assert list(out.index) == [7, 9] and list(out["code"]) == ["110101001", "0101"]
    assert metres([116.4, 121.5], [39.9, 31.2], out.geometry.x, out.geometry.y).max() < 1e-3
    assert frame.geometry.iloc[0].x == gcj[0][0]  # the input is left alone


def test_to_storage_crs_honours_the_files_crs_when_no_source_is_given():
    east, north = pyproj.Transformer.from_crs(4326, 4548, always_xy=True).transform(116.4, 39.9)
    out = to_storage_crs(_frame([Point(east, north), None], "EPSG:4548"))
    assert out.crs.to_epsg() == 4326
    assert metres(116.4, 39.9, out.geometry.iloc[0].x, out.geometry.iloc[0].y) < 1e-3
    assert out.geometry.iloc[1] is None


def test_to_storage_crs_follows_the_user_over_the_files_declaration():
    frame = _frame([Point(116.41024449916938, 39.91640428150164), Point(1, 1)], "EPSG:4490")
    out = to_storage_crs(frame, "gcj02")
    assert metres(116.404, 39.915, out.geometry.iloc[0].x, out.geometry.iloc[0].y) < 1e-3


def test_to_storage_crs_without_any_crs_says_how_to_declare_one():
    with pytest.raises(CRSError) as caught:
        to_storage_crs(_frame([Point(116.4, 39.9), Point(1, 1)], None))
    assert str(caught.value) == "no CRS: the file declares none; pass --crs wgs84|cgcs2000|gcj02|bd09|EPSG:NNNN"


def test_to_storage_crs_rejects_projected_coordinates_declared_as_degrees():
    with pytest.raises(CRSError, match=r"coordinates reach \(500000, 4400000\).*projected"):
        to_storage_crs(_frame([Point(500000, 4400000), Point(1, 1)], "EPSG:4548"), "gcj02")


# --- metric_crs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [
        (117.0, 39.0, 4548), (116.4, 39.9, 4548), (118.49, 32.0, 4548), (121.4, 31.2, 4549), (121.6, 31.2, 4550),
        (75.0, 39.0, 4534), (72.1, 39.0, 4534), (135.0, 48.0, 4554), (137.8, 45.0, 4554), (87.6, 43.8, 4538),
    ],
)
def test_metric_crs_in_china_is_the_nearest_cgcs2000_gauss_kruger_zone(lon, lat, epsg):
    crs = metric_crs(lon, lat)
    assert crs.to_epsg() == epsg
    assert crs.is_projected and crs.axis_info[0].unit_name == "metre"


def test_gauss_kruger_epsg_codes_have_the_central_meridians_we_assume():
    for zone in range(21):
        meridian = 75 + 3 * zone
        crs = pyproj.CRS.from_epsg(4534 + zone)
        assert crs.name == f"CGCS2000 / 3-degree Gauss-Kruger CM {meridian}E"
        assert metric_crs(meridian, 30.0) == crs


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [(2.35, 48.86, 32631), (139.7, 35.7, 32654), (151.2, -33.9, 32756), (-74.0, 40.7, 32618), (180.0, 0.0, 32660),
     (-180.0, -1.0, 32701)],
)
def test_metric_crs_outside_china_is_the_utm_zone(lon, lat, epsg):
    assert metric_crs(lon, lat).to_epsg() == epsg


@pytest.mark.parametrize("lon, lat", [(np.nan, 39.9), (116.4, np.inf), (200.0, 10.0), (10.0, 91.0)])
def test_metric_crs_needs_a_real_point(lon, lat):
    with pytest.raises(GeometryError, match="not a longitude/latitude point"):
        metric_crs(lon, lat)
