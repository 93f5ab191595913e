import itertools
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import pytest
from shapely import MultiPolygon, Point, box
from shapely.geometry import shape

from gridmap.convert import convert_file
from gridmap.crs import gcj02_to_wgs84, wgs84_to_bd09, wgs84_to_gcj02
from gridmap.errors import CRSError, InputError

GEOD = pyproj.Geod(ellps="WGS84")


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def vertices(geometries) -> np.ndarray:
    return gpd.GeoSeries(list(geometries)).get_coordinates().to_numpy()


@pytest.fixture
def streets() -> gpd.GeoDataFrame:
    """Two street polygons in Beijing and Shanghai, in WGS84, with text and numeric attributes."""
    return gpd.GeoDataFrame(
        {
            "code": ["110101001", "310101002"],
            "name": ["东华门街道", "南京东路街道"],
            "population": [52000, 61000],
        },
        geometry=[
            box(116.39, 39.90, 116.42, 39.93),
            MultiPolygon([box(121.47, 31.23, 121.49, 31.25), box(121.50, 31.23, 121.51, 31.24)]),
        ],
        crs="EPSG:4326",
    )


def same_vertices(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    """Equal vertex sets: GeoJSON (RFC 7946) and shapefiles rewind rings, so sequences may differ."""
    gaps = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    return a.shape == b.shape and gaps.min(axis=0).max() < atol and gaps.min(axis=1).max() < atol


def files_in(folder) -> set[str]:
    return {path.name for path in folder.iterdir()}


# --- round trips -------------------------------------------------------------------------------------


def test_geojson_round_trip_through_gcj02(tmp_path, streets):
    streets.to_file(tmp_path / "wgs.geojson")
    written = convert_file(tmp_path / "wgs.geojson", tmp_path / "gcj.geojson", src=None, dst="gcj02")
    assert written == 2
    gcj = gpd.read_file(tmp_path / "gcj.geojson")
    assert gcj.crs.to_epsg() == 4326
    expected = vertices(streets.geometry)
    shifted = vertices(gcj.geometry)
    assert same_vertices(shifted, np.column_stack(wgs84_to_gcj02(*expected.T)), atol=1e-6)

    assert convert_file(tmp_path / "gcj.geojson", tmp_path / "back.geojson", src="gcj02", dst="wgs84") == 2
    back = gpd.read_file(tmp_path / "back.geojson")
    assert list(back["code"]) == ["110101001", "310101002"]
    assert list(back["name"]) == ["东华门街道", "南京东路街道"]
    assert list(back["population"]) == [52000, 61000]
    assert back.geometry.iloc[1].geom_type == "MultiPolygon"
    for before, after in zip(streets.geometry, back.geometry, strict=True):
        # Every vertex within 0.5 m (it is about 1 cm: RFC 7946 keeps 7 decimals).
        assert before.buffer(0.5 / 111_000).contains(after) and after.buffer(0.5 / 111_000).contains(before)
    assert files_in(tmp_path) == {"wgs.geojson", "gcj.geojson", "back.geojson"}


def test_geojson_output_is_rfc7946(tmp_path, streets):
    streets.to_crs(4548).to_file(tmp_path / "gk.gpkg")
    convert_file(tmp_path / "gk.gpkg", tmp_path / "out.json", src=None, dst="cgcs2000")
    document = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert "crs" not in document  # RFC 7946: WGS84 longitude/latitude, no crs member
    west, south, east, north = shape(document["features"][0]["geometry"]).bounds
    assert np.allclose((west, south, east, north), (116.39, 39.90, 116.42, 39.93), atol=1e-6)


def test_geopackage_round_trip_through_a_projected_crs(tmp_path, streets):
    streets.to_file(tmp_path / "in.gpkg", layer="streets")
    assert convert_file(tmp_path / "in.gpkg", tmp_path / "gk.gpkg", src="wgs84", dst="EPSG:4548") == 2
    assert pyogrio.list_layers(tmp_path / "gk.gpkg")[:, 0].tolist() == ["gk"]
    gk = gpd.read_file(tmp_path / "gk.gpkg")
    assert gk.crs.to_epsg() == 4548
    expected = pyproj.Transformer.from_crs(4326, 4548, always_xy=True).transform(*vertices(streets.geometry).T)
    assert np.allclose(vertices(gk.geometry), np.column_stack(expected), atol=1e-3)

    assert convert_file(tmp_path / "gk.gpkg", tmp_path / "bd.gpkg", src=None, dst="bd09") == 2
    bd = gpd.read_file(tmp_path / "bd.gpkg")
    assert bd.crs.to_epsg() == 4326
    assert np.allclose(vertices(bd.geometry), np.column_stack(wgs84_to_bd09(*vertices(streets.geometry).T)),
                       atol=1e-8)
    assert list(bd["name"]) == ["东华门街道", "南京东路街道"]


def test_named_layer_of_a_multi_layer_geopackage(tmp_path, streets):
    streets.iloc[:1].to_file(tmp_path / "many.gpkg", layer="first")
    streets.to_file(tmp_path / "many.gpkg", layer="second")
    assert convert_file(tmp_path / "many.gpkg", tmp_path / "out.gpkg", src=None, dst="wgs84", layer="second") == 2


def test_shapefile_output_with_chinese_attributes(tmp_path, streets):
    streets.to_file(tmp_path / "in.geojson")
    assert convert_file(tmp_path / "in.geojson", tmp_path / "out.shp", src="gcj02", dst="wgs84") == 2
    assert {"out.shp", "out.shx", "out.dbf", "out.prj", "out.cpg"} <= files_in(tmp_path)
    out = gpd.read_file(tmp_path / "out.shp")
    assert out.crs.to_epsg() == 4326
    assert list(out["name"]) == ["东华门街道", "南京东路街道"]
    expected = np.column_stack(gcj02_to_wgs84(*vertices(streets.geometry).T))
    assert same_vertices(vertices(out.geometry), expected, atol=1e-6)


def test_csv_round_trip_keeps_columns_text_and_order(tmp_path):
    lon, lat = wgs84_to_gcj02([116.4, 121.5, 113.9], [39.9, 31.2, 22.5])
    rows = "".join(f"{code},{float(x)!r},{name},{float(y)!r}\n" for code, x, name, y in
                   zip(["0101", "110101001000", "X-1"], lon, ["东华门", "外滩", "深圳湾"], lat, strict=True))
    (tmp_path / "shops.csv").write_text("code,Lng,name,LATITUDE\n" + rows, encoding="utf-8")
    assert convert_file(tmp_path / "shops.csv", tmp_path / "wgs.csv", src="gcj02", dst="wgs84") == 3
    out = pd.read_csv(tmp_path / "wgs.csv", dtype=str, encoding="utf-8-sig")
    assert list(out.columns) == ["code", "Lng", "name", "LATITUDE"]
    assert list(out["code"]) == ["0101", "110101001000", "X-1"]
    assert list(out["name"]) == ["东华门", "外滩", "深圳湾"]
    assert metres([116.4, 121.5, 113.9], [39.9, 31.2, 22.5], out["Lng"].astype(float), out["LATITUDE"].astype(float)
                  ).max() < 1e-3
    assert (tmp_path / "wgs.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # BOM, so Excel reads UTF-8

    assert convert_file(tmp_path / "wgs.csv", tmp_path / "gcj.csv", src="wgs84", dst="gcj02") == 3
    again = pd.read_csv(tmp_path / "gcj.csv", encoding="utf-8-sig")
    assert np.allclose(again["Lng"], lon, atol=1e-9) and np.allclose(again["LATITUDE"], lat, atol=1e-9)


def test_csv_to_geopackage_drops_the_stale_coordinate_columns(tmp_path):
    (tmp_path / "p.csv").write_text("id,x,y\n1,116.404,39.915\n", encoding="utf-8")
    convert_file(tmp_path / "p.csv", tmp_path / "p.gpkg", src="wgs84", dst="gcj02")
    out = gpd.read_file(tmp_path / "p.gpkg")
    assert list(out.columns) == ["id", "geometry"]
    assert np.allclose((out.geometry.x[0], out.geometry.y[0]), (116.41024449916938, 39.91640428150164), atol=1e-9)


def test_gb18030_csv_from_excel_is_read(tmp_path):
    (tmp_path / "gbk.csv").write_bytes("名称,经度,纬度\n东华门,116.404,39.915\n".encode("gb18030"))
    convert_file(tmp_path / "gbk.csv", tmp_path / "out.geojson", src="wgs84", dst="wgs84")
    out = gpd.read_file(tmp_path / "out.geojson")
    assert out.loc[0, "名称"] == "东华门"
    assert (out.geometry.x[0], out.geometry.y[0]) == (116.404, 39.915)


def test_points_to_csv_from_a_vector_file_get_lon_lat_columns(tmp_path):
    gpd.GeoDataFrame({"n": [1]}, geometry=[Point(116.404, 39.915)], crs=4326).to_file(tmp_path / "p.gpkg")
    convert_file(tmp_path / "p.gpkg", tmp_path / "p.csv", src=None, dst="gcj02")
    out = pd.read_csv(tmp_path / "p.csv", encoding="utf-8-sig")
    assert list(out.columns) == ["n", "lon", "lat"]
    assert np.allclose((out["lon"][0], out["lat"][0]), (116.41024449916938, 39.91640428150164), atol=1e-9)


def test_progress_runs_from_zero_to_total(tmp_path):
    rng = np.random.default_rng(7)
    n = 25_000
    table = pd.DataFrame({"id": np.arange(n), "lon": rng.uniform(116, 117, n), "lat": rng.uniform(39, 40, n)})
    table.to_csv(tmp_path / "many.csv", index=False)
    calls = []
    written = convert_file(tmp_path / "many.csv", tmp_path / "out.csv", src="bd09", dst="wgs84",
                           progress=lambda done, total: calls.append((done, total)))
    assert written == n
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    assert len(calls) > 2 and all(a[0] < b[0] for a, b in itertools.pairwise(calls))


def test_an_existing_output_is_replaced_whole(tmp_path, streets):
    streets.to_file(tmp_path / "in.gpkg")
    gpd.GeoDataFrame({"old": [1]}, geometry=[Point(0, 0)], crs=4326).to_file(tmp_path / "out.gpkg", layer="old")
    convert_file(tmp_path / "in.gpkg", tmp_path / "out.gpkg", src=None, dst="wgs84")
    assert pyogrio.list_layers(tmp_path / "out.gpkg")[:, 0].tolist() == ["out"]
    assert files_in(tmp_path) == {"in.gpkg", "out.gpkg"}


# --- bad input ---------------------------------------------------------------------------------------


def _fails(tmp_path, error, match, src_name, dst_name, **kwargs):
    """Run a conversion that must fail, and check it left nothing behind."""
    before = files_in(tmp_path)
    with pytest.raises(error, match=match) as caught:
        convert_file(tmp_path / src_name, tmp_path / dst_name, **{"src": "wgs84", "dst": "wgs84", **kwargs})
    assert "\n" not in str(caught.value)
    assert files_in(tmp_path) == before
    return str(caught.value)


def test_missing_file(tmp_path):
    _fails(tmp_path, InputError, r"cannot read .*nowhere\.geojson: no such file", "nowhere.geojson", "out.geojson")


def test_truncated_geojson(tmp_path, streets):
    streets.to_file(tmp_path / "full.geojson")
    text = (tmp_path / "full.geojson").read_text(encoding="utf-8")
    (tmp_path / "cut.geojson").write_text(text[: len(text) // 2], encoding="utf-8")
    message = _fails(tmp_path, InputError, r"^cannot read cut\.geojson: ", "cut.geojson", "out.gpkg")
    assert "It might help" not in message


def test_garbage_geopackage(tmp_path):
    (tmp_path / "junk.gpkg").write_bytes(bytes(range(256)) * 4)
    _fails(tmp_path, InputError, r"^cannot read junk\.gpkg: .*not recognized", "junk.gpkg", "out.geojson")


def test_missing_layer(tmp_path, streets):
    streets.to_file(tmp_path / "in.gpkg", layer="streets")
    _fails(tmp_path, InputError, r"cannot read in\.gpkg: .*nope", "in.gpkg", "out.gpkg", layer="nope")


def test_csv_without_coordinate_columns(tmp_path):
    (tmp_path / "p.csv").write_text("name,east,north\na,116.4,39.9\n", encoding="utf-8")
    message = _fails(tmp_path, InputError, r"^cannot read p\.csv: no longitude/latitude columns", "p.csv", "o.csv")
    assert "lng" in message and "found name, east, north" in message


def test_csv_with_a_bad_coordinate(tmp_path):
    (tmp_path / "p.csv").write_text("name,lon,lat\na,116.4,39.9\nb,116.5,\nc,abc,39.9\n", encoding="utf-8")
    _fails(tmp_path, InputError, r"data row 2 has lon='116.5', lat=''.*\(2 such rows\)", "p.csv", "o.geojson")


def test_empty_csv(tmp_path):
    (tmp_path / "p.csv").write_bytes(b"")
    _fails(tmp_path, InputError, r"^cannot read p\.csv: ", "p.csv", "o.geojson")


def test_csv_without_crs_must_be_declared(tmp_path):
    (tmp_path / "p.csv").write_text("lon,lat\n116.4,39.9\n", encoding="utf-8")
    _fails(tmp_path, CRSError, r"^no CRS: the file declares none; pass --crs", "p.csv", "o.geojson", src=None)


@pytest.mark.parametrize("which", ["src", "dst"])
def test_unknown_crs(tmp_path, streets, which):
    streets.to_file(tmp_path / "in.geojson")
    _fails(tmp_path, CRSError, r"unknown CRS 'mars'", "in.geojson", "out.geojson", **{which: "mars"})


def test_unsupported_output_extension(tmp_path, streets):
    streets.to_file(tmp_path / "in.geojson")
    _fails(tmp_path, InputError, r"cannot write out\.kml: unsupported extension; use one of \.geojson", "in.geojson",
           "out.kml")


def test_geojson_cannot_hold_a_projected_crs(tmp_path, streets):
    streets.to_file(tmp_path / "in.geojson")
    _fails(tmp_path, CRSError, r"GeoJSON holds WGS84 longitude/latitude only", "in.geojson", "out.geojson",
           dst="EPSG:4548")


def test_missing_output_folder(tmp_path, streets):
    streets.to_file(tmp_path / "in.geojson")
    _fails(tmp_path, InputError, r"folder .* does not exist", "in.geojson", "no/such/out.gpkg")


def test_polygons_to_csv_fail_without_touching_the_existing_output(tmp_path, streets):
    streets.to_file(tmp_path / "in.geojson")
    (tmp_path / "out.csv").write_text("keep me\n", encoding="utf-8")
    _fails(tmp_path, InputError, r"cannot write out\.csv: CSV holds points only", "in.geojson", "out.csv")
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "keep me\n"


def test_failed_shapefile_write_leaves_no_parts(tmp_path):
    mixed = gpd.GeoDataFrame({"n": [1, 2]}, geometry=[box(116, 39, 116.1, 39.1), Point(116, 39)], crs=4326)
    mixed.to_file(tmp_path / "mixed.geojson")
    _fails(tmp_path, InputError, r"^cannot write out\.shp: ", "mixed.geojson", "out.shp")


def test_projected_file_declared_as_gcj02(tmp_path, streets):
    streets.to_crs(4548).to_file(tmp_path / "gk.gpkg")
    _fails(tmp_path, CRSError, r"impossible in gcj02 \(degrees\)", "gk.gpkg", "out.geojson", src="gcj02")
