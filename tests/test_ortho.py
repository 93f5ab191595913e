"""Orthomosaic ingest, STAC records, tiling and two surveys on one grid (inspection.ortho)."""

from __future__ import annotations

import datetime as dt
import json
import math
import tracemalloc

import cv2
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box, shape

from inspection.errors import RasterError
from inspection.ortho import (
    COG_MEDIA_TYPE,
    GEOTIFF_MEDIA_TYPE,
    MAX_SIDE,
    SurveyPair,
    core_window,
    read_ortho_info,
    stac_item,
    synthetic_pattern,
    tile_windows,
    write_large_synthetic_mosaic,
    write_ortho,
)


@pytest.fixture
def orthophotos(shared_data):
    return shared_data / "drone" / "orthophotos"


def native_area_ratio(info):
    """Footprint area over bounds area, both in the file's own CRS."""
    to_native = pyproj.Transformer.from_crs("EPSG:4326", info.crs, always_xy=True)
    footprint = shapely.transform(info.footprint, to_native.transform, interleaved=False)
    return footprint.area / box(*info.bounds).area


# ---------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name, crs, size, count, resolution, nodata, alpha, lonlat",
    [
        # A WebODM sample over Minnesota (UTM 15N), near Duluth.
        ("webodm-orthophoto.tif", "EPSG:32615", (212, 212), 4, 0.5, None, True, (-91.994, 46.843)),
        # Landsat over the Bahamas (Andros) in UTM 18N.
        ("rasterio-RGB.byte.tif", "EPSG:32618", (791, 718), 3, 300.0, 0.0, False, (-77.77, 24.56)),
        # Web Mercator tile area in Gangwon, South Korea; resolution checked on its own below.
        ("rasterio-cogeo.tif", "EPSG:3857", (1024, 1024), 3, None, None, False, (128.658, 37.669)),
    ],
)
def test_real_orthophotos_ingest(orthophotos, name, crs, size, count, resolution, nodata, alpha, lonlat):
    info = read_ortho_info(orthophotos / name)
    assert info.crs == crs
    assert (info.width, info.height, info.count, info.dtype) == (*size, count, "uint8")
    if resolution is not None:
        # UTM's scale factor (0.9996 at the meridian, ~1.0001 where these are) keeps ground and nominal
        # sizes within 0.1%.
        assert info.resolution_m == pytest.approx(resolution, rel=2e-3)
    assert info.nodata == nodata
    assert info.has_alpha is alpha
    assert info.footprint.is_valid
    assert info.footprint.centroid.distance(shapely.Point(lonlat)) < 0.01
    assert info.bounds == pytest.approx(tuple(rasterio.open(orthophotos / name).bounds))


def test_web_mercator_resolution_is_ground_metres(orthophotos):
    info = read_ortho_info(orthophotos / "rasterio-cogeo.tif")
    # Inverse spherical Mercator at the centre: lat = 2 atan(exp(y / R)) - 90 degrees.
    y = (info.bounds[1] + info.bounds[3]) / 2
    lat = 2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2
    assert math.degrees(lat) == pytest.approx(37.6686, abs=1e-4)
    nominal = 0.5971640348434448
    # 0.597 * cos(37.67 deg) = 0.4727; measured on the ellipsoid it is 0.1% less (0.4723).
    assert info.resolution_m == pytest.approx(nominal * math.cos(lat), rel=2e-3)
    assert info.resolution_m == pytest.approx(0.4723, abs=1e-4)


def test_cog_detection_and_overviews(orthophotos):
    cog = read_ortho_info(orthophotos / "rasterio-cogeo.tif")
    assert cog.is_cog and cog.overviews == [2, 4, 8, 16, 32, 64]
    # Internal mask, every pixel valid: the footprint is the whole image.
    assert cog.has_mask
    assert native_area_ratio(cog) == pytest.approx(1.0, abs=1e-6)
    for name in ("webodm-orthophoto.tif", "rasterio-RGB.byte.tif"):
        striped = read_ortho_info(orthophotos / name)
        assert not striped.is_cog and striped.overviews == []


def test_nodata_edges_shrink_the_footprint(orthophotos):
    info = read_ortho_info(orthophotos / "rasterio-RGB.byte.tif")
    assert info.has_mask
    # Hand-measured: 67.46% of the full-resolution dataset mask is valid (the scene is a tilted
    # rectangle in a north-up frame of zeros).
    assert native_area_ratio(info) == pytest.approx(0.6746, abs=0.005)


def test_alpha_band_is_the_mask(orthophotos):
    info = read_ortho_info(orthophotos / "webodm-orthophoto.tif")
    assert info.has_alpha and info.has_mask
    # Hand-measured: 97.73% of the alpha band is opaque.
    assert native_area_ratio(info) == pytest.approx(0.9773, abs=0.005)


def test_stac_item_of_a_real_cog(orthophotos):
    info = read_ortho_info(orthophotos / "rasterio-cogeo.tif")
    when = dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    item = stac_item(info, survey_id="s-2024-05", datetime=when, href="s3://surveys/cogeo.tif")
    assert json.loads(json.dumps(item)) == item
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0" and item["id"] == "s-2024-05"
    assert any("projection" in url for url in item["stac_extensions"])
    assert shape(item["geometry"]).equals(info.footprint)
    assert item["bbox"] == pytest.approx(list(info.footprint.bounds))
    properties = item["properties"]
    assert properties["datetime"] == "2024-05-01T02:30:00Z"
    assert properties["gsd"] == info.resolution_m
    assert properties["proj:epsg"] == 3857
    assert properties["proj:shape"] == [1024, 1024]
    assert properties["proj:transform"] == pytest.approx(list(info.transform)[:6])
    asset = item["assets"]["image"]
    assert asset == {
        "href": "s3://surveys/cogeo.tif", "type": COG_MEDIA_TYPE, "title": "orthomosaic", "roles": ["data"]
    }


def test_stac_item_needs_a_time(orthophotos):
    info = read_ortho_info(orthophotos / "webodm-orthophoto.tif")
    assert info.datetime is None
    with pytest.raises(RasterError, match="no TIFFTAG_DATETIME; pass the survey's datetime"):
        stac_item(info, survey_id="x")
    item = stac_item(info, survey_id="x", datetime=dt.datetime(2023, 7, 1, 9, 0))
    assert item["properties"]["datetime"] == "2023-07-01T09:00:00Z"
    assert item["assets"]["image"]["type"] == GEOTIFF_MEDIA_TYPE
    assert item["assets"]["image"]["href"] == str(info.path)


# --------------------------------------------------------------------------------------------- bad inputs


def write_raw(path, count=3, crs="EPSG:32650", transform=Affine(0.5, 0, 448000, 0, -0.5, 4418000)):
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": count, "dtype": "uint8"}
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((count, 64, 64), 7, np.uint8))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(RasterError, match="no such file"):
        read_ortho_info(tmp_path / "absent.tif")


def test_text_file_is_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("survey notes, not an image\n")
    with pytest.raises(RasterError, match="not a readable raster") as caught:
        read_ortho_info(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("keep", [0.6, 0.002])
def test_truncated_tif(orthophotos, tmp_path, keep):
    data = (orthophotos / "rasterio-RGB.byte.tif").read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(RasterError, match="not a readable raster or truncated") as caught:
        read_ortho_info(path)
    assert "\n" not in str(caught.value)


def test_geotiff_without_crs(tmp_path):
    with pytest.raises(RasterError, match="has no CRS; assign one with gdal_edit -a_srs"):
        read_ortho_info(write_raw(tmp_path / "nocrs.tif", crs=None))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_tiff_without_georeference(tmp_path):
    with pytest.raises(RasterError, match="has no georeference"):
        read_ortho_info(write_raw(tmp_path / "plain.tif", crs=None, transform=None))


def test_one_band_raster(tmp_path):
    with pytest.raises(RasterError, match=r"has 1 band\(s\); an orthomosaic needs RGB"):
        read_ortho_info(write_raw(tmp_path / "dem.tif", count=1))


def test_absurd_size(tmp_path):
    path = tmp_path / "huge.tif"
    # Sparse: no block is written, so the file stays a few kB whatever its declared size.
    profile = {"driver": "GTiff", "width": MAX_SIDE + 1, "height": 16, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32650", "transform": Affine(0.5, 0, 448000, 0, -0.5, 4418000),
               "tiled": True, "blockxsize": 512, "blockysize": 16, "sparse_ok": True}
    with rasterio.open(path, "w", **profile):
        pass
    assert path.stat().st_size < 100_000
    with pytest.raises(RasterError, match="absurd"):
        read_ortho_info(path)


# --------------------------------------------------------------------------------------------- writing


def test_write_ortho_round_trip(tmp_path):
    rgb = np.zeros((600, 700, 3), np.uint8)
    rgb[..., 0] = np.arange(700) % 256
    nodata = np.zeros((600, 700), bool)
    nodata[:, :350] = True
    when = dt.datetime(2024, 5, 1, 18, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    transform = Affine(0.5, 0, 448000, 0, -0.5, 4418000)
    path = write_ortho(tmp_path / "cog.tif", rgb, transform, "EPSG:32650", nodata_mask=nodata, datetime=when)
    info = read_ortho_info(path)
    assert info.is_cog and info.overviews == [2]
    assert info.datetime == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc)
    assert info.crs == "EPSG:32650" and info.transform == transform
    assert native_area_ratio(info) == pytest.approx(0.5, abs=0.01)
    with rasterio.open(path) as ds:
        assert ds.block_shapes[0] == (512, 512)
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), rgb)
        assert np.array_equal(ds.dataset_mask() == 0, nodata)
    plain = read_ortho_info(write_ortho(tmp_path / "plain.tif", rgb, transform, "EPSG:32650", cog=False))
    assert not plain.is_cog and plain.datetime is None
    jpeg = read_ortho_info(write_ortho(tmp_path / "jpeg.tif", rgb, transform, "EPSG:32650", compress="jpeg"))
    assert jpeg.is_cog


def test_large_synthetic_mosaic_writer_small(tmp_path):
    # The benchmark writes 20000 x 20000; the same code path at 1500 keeps the suite fast.
    path = write_large_synthetic_mosaic(tmp_path / "big.tif", size=1500, border=100)
    info = read_ortho_info(path)
    assert info.is_cog and info.overviews == [2, 4]
    assert (info.width, info.height, info.resolution_m) == (1500, 1500, pytest.approx(0.05, rel=1e-3))
    assert native_area_ratio(info) == pytest.approx((1300 / 1500) ** 2, abs=0.01)
    window = Window(1000, 700, 300, 200)
    with rasterio.open(path) as ds:
        assert np.array_equal(ds.read(window=window), synthetic_pattern(window))
        assert not ds.dataset_mask(window=Window(0, 0, 100, 100)).any()


# --------------------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("width, height, size, overlap", [(1500, 1000, 1024, 64), (1030, 1030, 1024, 64),
                                                          (300, 200, 64, 0), (257, 129, 128, 127), (10, 10, 1024, 64)])
def test_tile_cores_partition_the_image(width, height, size, overlap):
    tiles = tile_windows(width, height, size=size, overlap=overlap)
    counted = np.zeros((height, width), int)
    for tile in tiles:
        core = core_window(tile, width, height, size=size, overlap=overlap)
        assert core.width > 0 and core.height > 0
        # The core lies inside its tile, which adds at most `overlap` on each side.
        assert tile.col_off <= core.col_off and core.col_off + core.width <= tile.col_off + tile.width
        assert tile.row_off <= core.row_off and core.row_off + core.height <= tile.row_off + tile.height
        assert tile.width <= size + 2 * overlap and tile.height <= size + 2 * overlap
        assert tile.col_off >= 0 and tile.col_off + tile.width <= width
        assert tile.row_off >= 0 and tile.row_off + tile.height <= height
        counted[core.toslices()] += 1
    assert (counted == 1).all()
    assert tiles == tile_windows(width, height, size=size, overlap=overlap)
    assert [(t.row_off, t.col_off) for t in tiles] == sorted((t.row_off, t.col_off) for t in tiles)


@pytest.mark.parametrize("extent, size, cores", [(1667, 1024, [834, 833]), (2048, 1024, [1024, 1024]),
                                                 (3000, 1024, [1000, 1000, 1000]), (900, 1024, [900])])
def test_tile_cores_are_as_few_and_as_equal_as_size_allows(extent, size, cores):
    """Equal cores are equal Dask tasks: a 1,667 px detection grid is two cores of 834 and 833, not 1024 and 643."""
    tiles = tile_windows(extent, 10, size=size, overlap=64)
    assert [core_window(t, extent, 10, size=size, overlap=64).width for t in tiles] == cores


def test_tile_windows_rejects_overlap_as_large_as_size():
    with pytest.raises(ValueError, match="size > overlap"):
        tile_windows(100, 100, size=64, overlap=64)


# ------------------------------------------------------------------------------------------ survey pairs

# A 200 m square in Beijing, UTM 50N. Each survey paints the same ground: red = metres east of E0,
# green = metres south of N0, blue = 255 on a 20 m "building" centred 110 m east, 70 m south of the corner.
E0, N0 = 448000.0, 4418000.0
BUILDING = (E0 + 100, N0 - 80, E0 + 120, N0 - 60)
# The after survey is shifted 40 m east and has a hole (a cloud, a failed tile) inside the overlap.
SHIFT = 40.0
HOLE = (E0 + 150, N0 - 180, E0 + 170, N0 - 160)
UTM = "EPSG:32650"


def paint(east, north, hole=None):
    rgb = np.zeros((*east.shape, 3), np.uint8)
    rgb[..., 0] = np.clip(np.round(east - E0), 0, 255)
    rgb[..., 1] = np.clip(np.round(N0 - north), 0, 255)
    rgb[..., 2] = np.where(inside(east, north, BUILDING), 255, 0)
    return rgb, (None if hole is None else inside(east, north, hole))


def inside(east, north, bounds):
    return (east >= bounds[0]) & (east < bounds[2]) & (north >= bounds[1]) & (north < bounds[3])


def centres(transform, height, width):
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return transform @ (cols, rows)


@pytest.fixture(scope="module")
def surveys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("surveys")
    before_transform = Affine(0.5, 0, E0, 0, -0.5, N0)
    rgb, _ = paint(*centres(before_transform, 400, 400))
    before = write_ortho(folder / "before.tif", rgb, before_transform, UTM, datetime=dt.datetime(2023, 5, 1))
    # The after survey in plain longitude/latitude, about 0.5 m pixels, over the shifted square.
    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(E0 + SHIFT, N0 - 200, E0 + 200 + SHIFT, N0)
    step_lon, step_lat = 0.5 / 85_400, 0.5 / 111_000
    width, height = round((east - west) / step_lon), round((north - south) / step_lat)
    after_transform = Affine(step_lon, 0, west, 0, -step_lat, north)
    lon, lat = centres(after_transform, height, width)
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    rgb, hole = paint(*to_utm.transform(lon, lat), hole=HOLE)
    after = write_ortho(folder / "after.tif", rgb, after_transform, "EPSG:4326", nodata_mask=hole)
    return before, after, (west, south, east, north)


def blue_centroid(rgb, valid):
    rows, cols = np.nonzero((rgb[..., 2] > 127) & valid)
    return rows.mean(), cols.mean()


def test_pair_grid_is_the_overlap_in_the_before_crs(surveys):
    before, after, _ = surveys
    pair = SurveyPair(before, after)
    assert pair.crs == UTM
    assert pair.resolution == pytest.approx(0.5, rel=2e-3)
    height, width = pair.shape
    left, top = pair.transform.c, pair.transform.f
    right, bottom = pair.transform @ (width, height)
    # The overlap is E0+40..E0+200 by N0-200..N0; the footprints are traced to within about a pixel and
    # the after survey's lon/lat rectangle is a slightly tilted quadrilateral in UTM (grid convergence).
    assert (left, bottom, right, top) == pytest.approx((E0 + SHIFT, N0 - 200, E0 + 200, N0), abs=2.5)


def test_pair_read_aligns_the_surveys(surveys):
    before, after, _ = surveys
    pair = SurveyPair(before, after)
    height, width = pair.shape
    b, a, valid = pair.read(Window(0, 0, width, height))
    assert b.shape == a.shape == (height, width, 3) and b.dtype == a.dtype == np.uint8
    assert valid.shape == (height, width) and valid.dtype == bool
    # The building: same place in both, within a pixel, and where the ground coordinates say.
    expected_col, expected_row = ~pair.transform @ ((BUILDING[0] + BUILDING[2]) / 2, (BUILDING[1] + BUILDING[3]) / 2)
    (rb, cb), (ra, ca) = blue_centroid(b, valid), blue_centroid(a, valid)
    assert abs(rb - ra) < 1 and abs(cb - ca) < 1
    assert abs(rb + 0.5 - expected_row) < 1 and abs(cb + 0.5 - expected_col) < 1
    # The ramps agree pixel for pixel away from the building's edges.
    calm = valid & (b[..., 2] == 0) & (a[..., 2] == 0)
    assert calm.mean() > 0.8
    assert np.abs(b[..., :2].astype(int) - a[..., :2].astype(int))[calm].max() <= 2


def test_pair_valid_mask_is_the_overlap(surveys):
    before, after, (west, south, east, north) = surveys
    pair = SurveyPair(before, after)
    height, width = pair.shape
    _, _, valid = pair.read(Window(0, 0, width, height))
    x, y = centres(pair.transform, height, width)
    lon, lat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(x, y)
    expected = (
        inside(x, y, (E0, N0 - 200, E0 + 200, N0))
        & (lon >= west) & (lon < east) & (lat >= south) & (lat < north)
        & ~inside(x, y, HOLE)
    )
    assert not valid[inside(x, y, (HOLE[0] + 1, HOLE[1] + 1, HOLE[2] - 1, HOLE[3] - 1))].any()
    # Pixels straddling an edge may go either way under bilinear resampling; nothing else may differ.
    assert (valid != expected).mean() < 0.005
    assert 0.9 < valid.mean() < 0.99


def test_pair_in_a_geographic_crs_uses_gauss_kruger(surveys):
    before, after, _ = surveys
    pair = SurveyPair(after, before)
    # CGCS2000 3-degree Gauss-Kruger CM 117E: Beijing's zone (gridmap.crs.metric_crs).
    assert pair.crs == "EPSG:4548"
    height, width = pair.shape
    a, b, valid = pair.read(Window(0, 0, width, height))
    (ra, ca), (rb, cb) = blue_centroid(a, valid), blue_centroid(b, valid)
    assert abs(ra - rb) < 1 and abs(ca - cb) < 1


def test_web_mercator_is_not_a_pair_grid(orthophotos):
    path = orthophotos / "rasterio-cogeo.tif"
    pair = SurveyPair(path, path)
    # Mercator "metres" are 1/cos(37.7 deg) = 1.26 ground metres, so the grid goes to metric_crs of the
    # centre: Gangwon lies inside the rectangle gridmap.crs treats as China, hence CGCS2000 GK CM 129E,
    # as true a metric grid there as UTM 52N.
    assert pair.crs == "EPSG:4552"
    assert pair.resolution == pytest.approx(0.4723, abs=1e-4)
    before, after, valid = pair.read(Window(100, 100, 64, 32))
    assert before.shape == (32, 64, 3) and valid.all()
    assert np.array_equal(before, after)


def test_pair_window_read_allocates_window_sized_arrays(surveys):
    before, after, _ = surveys
    pair = SurveyPair(before, after)
    window = Window(100, 120, 32, 16)
    full_grid_bytes = pair.shape[0] * pair.shape[1] * 3
    tracemalloc.start()
    try:
        b, a, valid = pair.read(window)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b.shape == a.shape == (16, 32, 3) and valid.shape == (16, 32)
    # numpy reports its buffers to tracemalloc; GDAL's own block cache is for the benchmark to measure.
    # Measured: 13 kB, against 390 kB for the whole grid's images.
    assert peak < 32 * 1024 < full_grid_bytes / 10


def test_pair_without_overlap(surveys, tmp_path):
    before, _, _ = surveys
    far = write_ortho(tmp_path / "far.tif", np.zeros((64, 64, 3), np.uint8),
                      Affine(0.5, 0, E0 + 5000, 0, -0.5, N0), UTM)
    with pytest.raises(RasterError, match=r"surveys do not overlap: before covers \(116\.\d+, 39\.\d+"):
        SurveyPair(before, far)


def test_pair_window_outside_the_grid(surveys):
    before, after, _ = surveys
    pair = SurveyPair(before, after)
    with pytest.raises(ValueError, match="outside"):
        pair.read(Window(pair.shape[1] - 10, 0, 20, 20))


def test_pair_in_the_surveys_own_grid_is_not_resampled(surveys):
    before, _, _ = surveys
    pair = SurveyPair(before, before)
    assert pair.crs == UTM and pair.resolution == 0.5
    # Snapped onto the survey's own pixel edges: grid pixel (r, c) is file pixel (r + dr, c + dc).
    col, row = ~read_ortho_info(before).transform @ (pair.transform.c, pair.transform.f)
    assert col == round(col) and row == round(row)
    window = Window(37, 51, 64, 48)
    b, a, valid = pair.read(window)
    with rasterio.open(before) as ds:
        source = ds.read(window=Window(37 + col, 51 + row, 64, 48))
    assert valid.all()
    assert np.array_equal(b, np.moveaxis(source, 0, -1)) and np.array_equal(a, b)


def test_surveys_already_on_the_grid_read_exactly_as_the_warped_path(tmp_path):
    from affine import Affine
    from rasterio.windows import Window

    from inspection.ortho import SurveyPair, write_ortho

    image = np.random.default_rng(0).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    before = write_ortho(tmp_path / "a.tif", image, Affine(0.2, 0, 500_000, 0, -0.2, 3_350_000), "EPSG:4549")
    after = write_ortho(tmp_path / "b.tif", image[::-1].copy(), Affine(0.2, 0, 500_004, 0, -0.2, 3_349_998), "EPSG:4549")
    pair = SurveyPair(before, after)
    assert pair._placement(pair.before) is not None and pair._placement(pair.after) is not None
    window = Window(5, 7, 100, 90)
    direct = pair.read(window)
    pair._placement = lambda info: None  # force the general path: warp through a VRT
    warped = pair.read(window)
    for fast, slow in zip(direct, warped):
        np.testing.assert_array_equal(fast, slow)


def test_coarser_grid_on_a_gauss_kruger_survey_has_no_empty_edge(tmp_path):
    # A 0.15 m survey in CGCS2000 Gauss-Kruger read at 0.3 m: the overlap's edges come back from WGS84 a
    # hair off the pixel edges, and the grid must not grow a column of no data on any side for it.
    image = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    transform = Affine(0.15, 0, 517209.0, 0, -0.15, 3348148.35)
    before = write_ortho(tmp_path / "a.tif", image, transform, "EPSG:4549")
    after = write_ortho(tmp_path / "b.tif", image, transform, "EPSG:4549")
    native = SurveyPair(before, after)
    pair = SurveyPair(before, after, resolution=native.resolution * 2)
    assert pair.shape == (256, 256)
    assert (pair.transform.c, pair.transform.f) == pytest.approx((517209.0, 3348148.35), abs=1e-6)
    b, _, valid = pair.read(Window(0, 0, 256, 256))
    assert valid.all()
    np.testing.assert_allclose(b[10, 10], image[20:22, 20:22].reshape(-1, 3).mean(axis=0), atol=1)


# ---------------------------------------------------------------------------------- tile decoding fast path


def gdal_level_read(path, window, factor):
    """What GDAL reads for ``window`` (full-resolution pixels) decimated by ``factor``, (h, w, 3)."""
    from rasterio.enums import Resampling

    shape = (int(window.height) // factor, int(window.width) // factor)
    with rasterio.open(path) as ds:
        data = ds.read(indexes=[1, 2, 3], window=window, out_shape=(3, *shape),
                       resampling=Resampling.average if factor > 1 else Resampling.nearest)
    return np.moveaxis(data, 0, -1)


@pytest.mark.parametrize("factor, window", [
    (1, Window(0, 0, 1024, 1024)),
    (1, Window(300, 700, 600, 324)),  # across tile edges, to the image's bottom edge
    (2, Window(0, 0, 1024, 1024)),
    (4, Window(256, 128, 512, 768)),
    (8, Window(0, 512, 1024, 512)),
])
def test_tiles_of_a_real_jpeg_cog_decode_as_gdal_reads_them(orthophotos, factor, window):
    from inspection.ortho import _read_tiles

    path = orthophotos / "rasterio-cogeo.tif"  # JPEG, YCbCr, an internal mask, overviews 2x to 64x
    tiles = _read_tiles(str(path), window, factor)
    assert tiles is not None, "the fast path must take a JPEG COG"
    fast, alpha = tiles
    assert alpha is None  # none asked for, and this file has none
    slow = gdal_level_read(path, window, factor)
    assert fast.shape == slow.shape
    difference = np.abs(fast.astype(int) - slow)
    # Same tiles, two JPEG decoders: they round the odd chroma edge pixel differently, nothing more.
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 8


def test_tiles_of_a_deflate_cog_decode_exactly(tmp_path):
    from inspection.ortho import _read_tiles

    image = np.random.default_rng(3).integers(0, 255, (1100, 900, 3), dtype=np.uint8)
    path = write_ortho(tmp_path / "d.tif", image, Affine(0.1, 0, 500_000, 0, -0.1, 3_350_000), "EPSG:4549")
    for factor, window in ((1, Window(100, 500, 800, 600)), (2, Window(512, 0, 388, 1100))):
        tiles = _read_tiles(str(path), window, factor)
        assert tiles is not None
        np.testing.assert_array_equal(tiles[0], gdal_level_read(path, window, factor))


def test_a_factor_between_overviews_is_read_as_block_means_of_a_finer_one(tmp_path, monkeypatch):
    # A 5 cm survey on a 60 cm grid: 12x, between its 8x and 16x overviews. Its 4x overview's pixels are
    # averaged 3 x 3, rather than GDAL resampling the 8x one by 1.5 at a tenth of the speed.
    from inspection import ortho

    image = cv2.GaussianBlur(np.random.default_rng(11).integers(0, 255, (1200, 1200, 3), dtype=np.uint8), (0, 0), 4)
    path = write_ortho(tmp_path / "m.tif", image, Affine(0.05, 0, 500_000, 0, -0.05, 3_350_000), "EPSG:4549")
    with rasterio.open(path) as ds:
        assert 4 in ds.overviews(1) and 12 not in ds.overviews(1)
    levels, read_tiles = [], ortho._read_tiles
    monkeypatch.setattr(ortho, "_read_tiles", lambda path, source, factor, **kw: levels.append(factor)
                        or read_tiles(path, source, factor, **kw))
    pair = SurveyPair(path, path, resolution=0.6)
    assert pair.unwarped and pair.shape == (100, 100)
    before, after, valid = pair.read(Window(10, 20, 60, 40))
    assert levels == [4, 4] and valid.all() and np.array_equal(before, after)
    level = gdal_level_read(path, Window(120, 240, 720, 480), 4).astype(float)  # (120, 180, 3)
    expected = level.reshape(40, 3, 60, 3, 3).mean(axis=(1, 3))
    assert np.abs(before - expected).max() <= 1  # exact block means, rounded
    monkeypatch.undo()
    gdal = gdal_level_read(path, Window(120, 240, 720, 480), 12).astype(float)  # GDAL, from the 8x overview
    assert np.abs(before - gdal).mean() < 2  # the same ground, averaged a little differently


def test_layouts_the_tile_path_does_not_take_go_to_gdal(orthophotos, tmp_path):
    from inspection.ortho import _read_tiles

    cog = str(orthophotos / "rasterio-cogeo.tif")
    assert _read_tiles(str(orthophotos / "rasterio-RGB.byte.tif"), Window(0, 0, 64, 64), 1) is None  # striped
    assert _read_tiles(cog, Window(0, 0, 960, 960), 3) is None  # no 3x overview
    assert _read_tiles(cog, Window(1, 0, 512, 512), 2) is None  # not on the overview's pixels
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes((orthophotos / "rasterio-cogeo.tif").read_bytes()[:150_000])
    assert _read_tiles(str(truncated), Window(0, 0, 1024, 1024), 1) is None  # GDAL reports the fault


def test_pair_reads_a_jpeg_cog_from_its_overview_tiles(tmp_path):
    from inspection.ortho import _read_tiles

    image = np.random.default_rng(5).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)  # photo-like, so JPEG keeps it close
    transform = Affine(0.15, 0, 517209.0, 0, -0.15, 3348148.35)
    path = write_ortho(tmp_path / "j.tif", image, transform, "EPSG:4549", compress="jpeg")
    pair = SurveyPair(path, path, resolution=0.3)
    assert pair.unwarped and _read_tiles(str(path), Window(0, 0, 1024, 1024), 2) is not None
    before, after, valid = pair.read(Window(64, 128, 300, 200))
    assert valid.all() and np.array_equal(before, after)
    gdal = gdal_level_read(path, Window(128, 256, 602, 402), 2).astype(int)
    error = np.abs(before.astype(int) - gdal[:200, :300]).mean()
    off_by_one = np.abs(before.astype(int) - gdal[1:201, 1:301]).mean()
    assert error < 1 and off_by_one > 2 * error  # GDAL's pixels, as two JPEG decoders give them


def test_an_rgba_cog_gives_pixels_and_validity_from_one_decoding(tmp_path):
    # WebODM's orthophotos are RGBA: validity is the alpha band, decoded with the pixels, not by GDAL again.
    from rasterio.enums import ColorInterp, Resampling

    from inspection.ortho import _read_tiles

    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 255, (4, 1024, 1024), dtype=np.uint8)
    rgba[3] = 255
    rgba[3, :300, :450] = 0  # outside the flight
    path = tmp_path / "rgba.tif"
    profile = {"driver": "GTiff", "width": 1024, "height": 1024, "count": 4, "dtype": "uint8", "crs": "EPSG:4549",
               "transform": Affine(0.1, 0, 517000.0, 0, -0.1, 3348000.0), "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        dst.write(rgba)
        dst.build_overviews([2, 4], Resampling.nearest)
    info = read_ortho_info(path)
    assert info.has_alpha and info.mask_is_alpha
    rgb, alpha = _read_tiles(str(path), Window(256, 0, 512, 512), 1, alpha=True)
    np.testing.assert_array_equal(alpha, rgba[3, :512, 256:768])
    np.testing.assert_array_equal(rgb, np.moveaxis(rgba[:3, :512, 256:768], 0, -1))
    pair = SurveyPair(path, path)
    window = Window(400, 200, 300, 250)
    before, _, valid = pair.read(window)
    with rasterio.open(path) as ds:  # the pair's grid is the file's own: the same window
        expected_valid = ds.dataset_mask(window=window) > 0
        expected = np.moveaxis(ds.read(indexes=[1, 2, 3], window=window), 0, -1)
    np.testing.assert_array_equal(valid, expected_valid)
    assert 0 < valid.mean() < 1
    np.testing.assert_array_equal(before, expected)


def test_real_webodm_orthophoto_validity_is_its_alpha(orthophotos):
    info = read_ortho_info(orthophotos / "webodm-orthophoto.tif")
    assert info.mask_is_alpha
    assert not read_ortho_info(orthophotos / "rasterio-cogeo.tif").mask_is_alpha  # an internal mask
