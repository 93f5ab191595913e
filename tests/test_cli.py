"""The gridmap command end to end, on the embedded store and on PostGIS."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from api.cli import main
from gridmap.crs import wgs84_to_gcj02
from storage import open_store


@pytest.fixture
def run(tmp_path):
    """Run ``gridmap ARGS`` against a fresh store (SQLite unless a test passes ``url``)."""

    def invoke(*args, url=None):
        env = {"GRIDMAP_DATABASE_URL": url or f"sqlite:///{tmp_path / 'gridmap.db'}",
               "GRIDMAP_DATA_DIR": str(tmp_path / "data")}
        return CliRunner(env=env).invoke(main, [str(a) for a in args])

    invoke.url = f"sqlite:///{tmp_path / 'gridmap.db'}"
    return invoke


def stored_counts(url):
    with open_store(url) as store:
        return store.count_units()


def test_every_command_has_help(run):
    for command in ("import", "validate", "locate", "convert", "export", "demo"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage: main " + command in result.output


def test_usage_errors_exit_2_with_usage(run, tmp_path):
    for args in (("validate", tmp_path / "x.geojson"), ("locate", "120.18"), ("import", tmp_path, "--level", "town")):
        result = run(*args)
        assert result.exit_code == 2 and "Usage:" in result.output and "internal error" not in result.output


def test_locate_refuses_impossible_coordinates(run, tmp_path):
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n120.18,30.26\n30.26,120.18\n")
    run("demo", "--dir", tmp_path)
    one_line_error(run("locate", "--input", points), "point 1", "lat=120.18")


def test_beijing_import_and_validate(run, shared_data, tmp_path):
    result = run("import", shared_data / "boundaries" / "beijing-subdistricts", "--level", "street")
    assert result.exit_code == 0, result.output
    assert "imported 343 street units" in result.output
    problems = tmp_path / "problems.geojson"
    result = run("validate", "--output", problems)
    assert result.exit_code == 0, result.output  # overlaps and gaps are warnings
    assert "warnings: " in result.output and "文景街道" in result.output
    written = gpd.read_file(problems)
    assert len(written) > 300 and {"overlap", "gap"} == set(written["kind"])
    assert run("validate", "--strict").exit_code == 1


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridmap: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_files_change_nothing(run, tmp_path):
    street = {"type": "Feature", "properties": {"code": "330102901", "name": "示范街道"},
              "geometry": shapely.geometry.mapping(shapely.box(120.17, 30.25, 120.19, 30.27))}
    good = tmp_path / "street.geojson"
    good.write_text(json.dumps({"type": "FeatureCollection", "features": [street]}, ensure_ascii=False))
    assert run("import", good, "--level", "street").exit_code == 0
    before = stored_counts(run.url)

    truncated = tmp_path / "truncated.geojson"
    truncated.write_bytes(good.read_bytes()[:-30])
    one_line_error(run("import", truncated, "--level", "street"), "truncated.geojson", "not a readable vector file")

    orphan = dict(street, properties={"code": "330102902001", "name": "孤儿社区"})
    orphans = tmp_path / "orphans.geojson"
    orphans.write_text(json.dumps({"type": "FeatureCollection", "features": [orphan]}, ensure_ascii=False))
    one_line_error(run("import", orphans, "--level", "community"), "330102902")

    bowtie = dict(street, geometry={"type": "Polygon", "coordinates": [
        [[120.17, 30.25], [120.18, 30.26], [120.18, 30.25], [120.17, 30.26], [120.17, 30.25]]]})
    bowties = tmp_path / "bowtie.geojson"
    bowties.write_text(json.dumps({"type": "FeatureCollection", "features": [bowtie]}))
    one_line_error(run("import", bowties, "--level", "street"), "Self-intersection", "--repair")

    one_line_error(run("import", tmp_path / "missing.geojson", "--level", "street"), "no such file")
    assert stored_counts(run.url) == before


def test_import_refuses_everything_when_one_parent_is_missing(run, tmp_path):
    features = [
        {"type": "Feature", "properties": {"code": code},
         "geometry": shapely.geometry.mapping(shapely.box(120.17 + k * 0.01, 30.25, 120.18 + k * 0.01, 30.26))}
        for k, code in enumerate(["330102901", "330102902"])
    ]
    streets = tmp_path / "streets.geojson"
    streets.write_text(json.dumps({"type": "FeatureCollection", "features": features[:1]}))
    assert run("import", streets, "--level", "street").exit_code == 0
    communities = tmp_path / "communities.geojson"
    features[0]["properties"]["code"], features[1]["properties"]["code"] = "330102901001", "330102902001"
    communities.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    one_line_error(run("import", communities, "--level", "community"), "330102902")
    assert stored_counts(run.url)["community"] == 0


def test_convert_gcj02_file_to_wgs84(run, tmp_path):
    lon, lat = np.array([120.18, 116.39]), np.array([30.26, 39.91])
    glon, glat = wgs84_to_gcj02(lon, lat)
    source = tmp_path / "amap.csv"
    source.write_text("name,lng,lat\n" + "".join(f"p{i},{float(x)!r},{float(y)!r}\n" for i, (x, y) in enumerate(zip(glon, glat))))
    result = run("convert", source, tmp_path / "out.geojson", "--from", "gcj02", "--to", "wgs84")
    assert result.exit_code == 0, result.output
    out = gpd.read_file(tmp_path / "out.geojson")
    assert np.abs(out.geometry.x.to_numpy() - lon).max() < 1e-7
    assert np.abs(out.geometry.y.to_numpy() - lat).max() < 1e-7


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{directory / 'gridmap.db'}"
    env = {"GRIDMAP_DATABASE_URL": url, "GRIDMAP_DATA_DIR": str(directory / "data")}
    result = CliRunner(env=env).invoke(main, ["demo", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    return url, directory, result.output


def test_demo_imports_and_validates_the_street(demo_store):
    url, _, output = demo_store
    counts = stored_counts(url)
    assert (counts["street"], counts["grid"], counts["courtyard"]) == (1, 182, 356)
    assert "validation: no problems found" in output


def locate(url, *points, crs="wgs84"):
    args = ["locate", "--crs", crs, *[f"{v!r}" for p in points for v in p]]
    result = CliRunner(env={"GRIDMAP_DATABASE_URL": url}).invoke(main, args)
    assert result.exit_code == 0, result.output
    if len(points) == 1:
        return [json.loads(result.output)]
    lines = result.output.strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def test_locate_on_the_demo_street(demo_store):
    url, directory, _ = demo_store
    grids = gpd.read_file(directory / "demo-grids.geojson").sort_values("code", ignore_index=True)
    inside = [grids.geometry[k].representative_point() for k in (0, 90, 181)]
    rows = locate(url, *[(p.x, p.y) for p in inside])
    assert [r["grid"] for r in rows] == [grids.code[0], grids.code[90], grids.code[181]]
    assert [r["community"] for r in rows] == [c[:12] for c in (grids.code[0], grids.code[90], grids.code[181])]
    assert rows[0]["worker"] == grids.worker[0]

    # a point on an edge shared by two grids resolves to the lower code, whichever way it is asked
    a, b = next((i, j) for i, j in zip(*shapely.STRtree(grids.geometry.values).query(grids.geometry.values,
                predicate="touches")) if i < j and grids.geometry[i].intersection(grids.geometry[j]).length > 0)
    shared = grids.geometry[a].intersection(grids.geometry[b])
    on_edge = shared.interpolate(0.5, normalized=True)
    assert locate(url, (on_edge.x, on_edge.y))[0]["grid"] == min(grids.code[a], grids.code[b])

    # the same place sent by a phone in GCJ-02 lands in the same grid
    gx, gy = wgs84_to_gcj02(inside[1].x, inside[1].y)
    assert locate(url, (float(gx), float(gy)), crs="gcj02")[0]["grid"] == grids.code[90]

    outside = locate(url, (121.0, 31.0))[0]
    assert outside["inside"] is False and outside["grid"] is None and outside["street"] is None


def test_export_writes_what_is_stored(demo_store, tmp_path):
    url, _, _ = demo_store
    result = CliRunner(env={"GRIDMAP_DATABASE_URL": url}).invoke(main, ["export", str(tmp_path / "grids.gpkg"), "--level", "grid"])
    assert result.exit_code == 0, result.output
    assert len(gpd.read_file(tmp_path / "grids.gpkg")) == 182


@pytest.mark.postgis
def test_beijing_import_into_postgis(postgis_url, shared_data, run):
    result = run("import", shared_data / "boundaries" / "beijing-subdistricts", "--level", "street", url=postgis_url)
    assert result.exit_code == 0, result.output
    assert stored_counts(postgis_url)["street"] == 343
    result = run("validate", url=postgis_url)
    assert result.exit_code == 0 and "文景街道" in result.output


def test_change_mask_writes_a_binary_png_of_the_input_size(run, shared_data, tmp_path):
    import cv2

    pair = shared_data / "changes" / "levir-256"
    name = sorted(p.name for p in (pair / "A").iterdir())[0]
    result = run("change-mask", pair / "A" / name, pair / "B" / name, "-o", tmp_path / "mask.png", "--detector", "baseline")
    assert result.exit_code == 0, result.output
    mask = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == cv2.imread(str(pair / "A" / name)).shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    big = next((shared_data / "changes" / "whu-1024" / "A").iterdir())
    one_line_error(run("change-mask", pair / "A" / name, big, "-o", tmp_path / "x.png"))
    one_line_error(run("change-mask", pair / "A" / name, pair / "B" / name, "-o", tmp_path / "y.png", "--detector", "magic"),
                   "magic")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_change_eval_scores_per_set_and_pooled(run, shared_data, tmp_path):
    result = run("change-eval", shared_data / "changes", "-o", tmp_path / "figures.csv")
    assert result.exit_code == 0, result.output
    figures = __import__("pandas").read_csv(tmp_path / "figures.csv")
    assert set(figures["set"]) == {"levir-256", "dsifn-256", "whu-1024", "pooled"}
    pooled = figures[figures["set"] == "pooled"].set_index("detector")
    assert (pooled.loc[["baseline", "default", "building-cva"], "pairs"] == 17).all()
    assert pooled.loc["default", "pixel_f1"] > pooled.loc["baseline", "pixel_f1"]
    bad = run("change-eval", shared_data / "changes", "--detector", "magic")
    assert bad.exit_code != 0 and "unknown detector 'magic'" in bad.output and "Traceback" not in bad.output


def test_ortho_info_and_stac(run, shared_data, tmp_path):
    cog = shared_data / "drone" / "orthophotos" / "rasterio-cogeo.tif"
    result = run("ortho-info", cog, "--stac", tmp_path / "item.json", "--datetime", "2026-11-20")
    assert result.exit_code == 0, result.output
    assert "EPSG:3857" in result.output and "COG" in result.output
    item = json.loads((tmp_path / "item.json").read_text())
    assert item["properties"]["datetime"] == "2026-11-20T00:00:00Z"
    (tmp_path / "fake.tif").write_text("not a tiff")
    one_line_error(run("ortho-info", tmp_path / "fake.tif"), "fake.tif")


def test_photos_batch_keeps_good_frames_and_gives_reasons(run, shared_data, tmp_path):
    toledo = shared_data / "drone" / "odm-toledo-2015"
    result = run("photos", toledo, "--height", "120", "-o", tmp_path / "photos.geojson")
    assert result.exit_code == 0, result.output
    assert "20 of 21 photos accepted" in result.output
    assert "rejected gcp_list.txt: not an image" in result.output
    rows = gpd.read_file(tmp_path / "photos.geojson")
    accepted = rows[rows["status"] == "accepted"]
    assert len(accepted) == 20 and accepted.geometry.notna().all()


def test_detect_finds_new_sheds_and_a_rerun_adds_nothing(demo_store, tmp_path):
    from gridmap.demo import generate_demo_street
    from inspection.synthetic import survey_pair

    url, _, _ = demo_store
    before, after, truth = survey_pair(tmp_path / "surveys", seed=1, size_m=150, resolution=0.25,
                                       units=generate_demo_street())
    args = ["detect", str(before), str(after), "--workdir", str(tmp_path / "work"), "--workers", "1",
            "--tile", "512", "-o", str(tmp_path / "candidates.geojson")]
    runner = CliRunner(env={"GRIDMAP_DATABASE_URL": url})
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    found = gpd.read_file(tmp_path / "candidates.geojson")
    sheds = truth[truth["kind"] == "shed"]
    hit = [found.geometry.intersects(shed).any() for shed in sheds.geometry]
    assert sum(hit) >= 0.8 * len(sheds)
    assert found.loc[found["match"] == "new", "grid"].str.len().eq(15).all()  # located with the stored grids
    second = runner.invoke(main, args)
    assert second.exit_code == 0 and second.output == first.output
    unchanged = runner.invoke(main, [*args[:2], str(before), *args[3:]])  # the same survey twice
    assert unchanged.exit_code == 0, unchanged.output
    assert unchanged.output.startswith("0 candidates (0 new construction)"), unchanged.output
