"""End to end: two synthetic surveys of the demo street through the pipeline on a real two-process cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from distributed import Client

from gridmap.demo import generate_demo_street
from inspection.candidates import MATCH_REGISTERED
from inspection.pipeline import CANDIDATE_COLUMNS, FINAL_NAME, STAGES, WORKER_ENVIRON, local_cluster, run_pipeline
from inspection.synthetic import survey_pair

GRIDS_FILE = Path(__file__).resolve().parent.parent / "data" / "boundaries" / "demo-grids.geojson"
LEVELS = ("street", "community", "grid", "courtyard")


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def run(tmp_path_factory, client):
    units = generate_demo_street()
    # 200 m x 200 m at 0.2 m: 1000 x 1000 px; the learned detector halves its input, so it reads the surveys
    # at 0.4 m: 500 x 500 px, four 256 px tiles, so regions cross tile borders. Chips are cut at 0.2 m.
    before, after, truth = survey_pair(tmp_path_factory.mktemp("surveys"), seed=0, size_m=200, resolution=0.2,
                                       units=units)
    table = gpd.GeoDataFrame(pd.concat([units[level] for level in LEVELS], ignore_index=True), crs="EPSG:4326")
    workdir = tmp_path_factory.mktemp("work")
    calls = []

    def again():
        return run_pipeline(before, after, workdir=workdir, buildings=units["building"], units=table,
                            tile_size=256, overlap=32, client=client, progress=lambda *a: calls.append(a))

    found = again()
    return {"found": found, "truth": truth, "units": units, "workdir": workdir, "again": again, "calls": calls}


def _overlaps(candidates: gpd.GeoDataFrame, geometry) -> gpd.GeoDataFrame:
    """Candidates covering at least half of ``geometry`` (metric areas)."""
    metric = candidates.to_crs("EPSG:4549")
    target = gpd.GeoSeries([geometry], crs="EPSG:4326").to_crs("EPSG:4549").iloc[0]
    share = metric.geometry.intersection(target).area / target.area
    return candidates[share.to_numpy() >= 0.5]


def test_new_structures_are_found(run):
    found, truth = run["found"], run["truth"]
    new = truth[truth["kind"].isin(["shed", "rooftop"])]
    hits = [len(_overlaps(found, g)) > 0 for g in new.geometry]
    assert sum(hits) / len(new) >= 0.8, f"recall {sum(hits)}/{len(new)}"
    sheds = truth[truth["kind"] == "shed"]
    for shed in sheds.itertuples():
        match = _overlaps(found, shed.geometry)
        if len(match):
            assert (match["match"] == "new").all()
            assert match["colour_steel"].all()


def test_candidates_are_located_to_the_grid_that_contains_them(run):
    found, truth = run["found"], run["truth"]
    grids = gpd.read_file(GRIDS_FILE)
    checked = 0
    for change in truth.itertuples():
        for candidate in _overlaps(found, change.geometry).itertuples():
            point = candidate.geometry.representative_point()
            containing = grids[grids.geometry.contains(point)]["code"].tolist()
            assert containing == [candidate.grid]
            # The truth's own grid too: the candidate is where the change is.
            assert shapely.contains(grids.set_index("code").geometry[candidate.grid],
                                    change.geometry.representative_point())
            checked += 1
    assert checked >= 0.8 * len(truth)


def test_rebuilt_building_is_a_change_to_it(run):
    found, truth = run["found"], run["truth"]
    rebuilt = truth[truth["kind"] == "rebuilt"].iloc[0]
    match = _overlaps(found, rebuilt.geometry)
    assert len(match) >= 1
    assert (match["match"] == MATCH_REGISTERED).all()
    assert set(match["building_code"]) == {rebuilt["building_code"]}
    assert match["building_share"].max() > 0.5


def test_nothing_on_unchanged_registered_buildings(run):
    found, truth, units = run["found"], run["truth"], run["units"]
    changed = set(truth["building_code"].dropna())
    registered = found[found["match"] == MATCH_REGISTERED]
    assert set(registered["building_code"]) <= changed
    unchanged = units["building"][~units["building"]["code"].isin(changed)].to_crs("EPSG:4549")
    metric = found.to_crs("EPSG:4549")
    hit, building = unchanged.sindex.query(metric.geometry, predicate="intersects")
    overlap = metric.geometry.iloc[hit].intersection(unchanged.geometry.iloc[building], align=False).area.to_numpy()
    # A candidate may graze an unchanged neighbour's edge, never lie on it.
    assert (overlap < 0.2 * metric.geometry.iloc[hit].area.to_numpy()).all()
    # And few false alarms at all: every candidate but two at most is one of the inserted changes.
    explained = [any(shapely.intersects(g, t) for t in truth.geometry) for g in found.geometry]
    assert explained.count(False) <= 2


def test_outputs_and_progress(run):
    found = run["found"]
    root = Path(found.attrs["path"]).parent
    assert [s for s in STAGES if (root / s / "done.json").exists()] == list(STAGES)
    assert len(list((root / "detect").glob("tile_*.npz"))) == 4
    for relative in list(found["chip_before"]) + list(found["chip_after"]):
        assert (root / relative).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    assert found["id"].is_unique
    assert list(found.columns) == [*CANDIDATE_COLUMNS, "geometry"]
    # compared as pandas reads the names ("str" is object on pandas 2)
    assert found.drop(columns="geometry").dtypes.to_dict() == {
        name: pd.Series([], dtype=dtype).dtype for name, dtype in CANDIDATE_COLUMNS.items()}
    stages = [c[0] for c in run["calls"]]
    assert ("detect", 4, 4) in run["calls"] and set(stages) == set(STAGES)


def test_second_run_adds_nothing(run):
    workdir = run["workdir"]

    def listing():
        return {p: p.stat().st_mtime_ns for p in sorted(Path(workdir).rglob("*"))}

    first = listing()
    again = run["again"]()
    assert listing() == first
    assert again["id"].tolist() == run["found"]["id"].tolist()
    pd.testing.assert_frame_equal(pd.DataFrame(again.drop(columns="geometry")),
                                  pd.DataFrame(run["found"].drop(columns="geometry")))


def test_chips_read_once_per_tile_equal_chips_read_one_by_one(run, tmp_path, monkeypatch):
    import inspection.pipeline as pipeline
    from inspection.ortho import SurveyPair

    found = run["found"]
    root = Path(found.attrs["path"]).parent
    before, after = (root / "ingest" / f"{name}.json" for name in ("before", "after"))
    surveys = [json.loads(p.read_text())["assets"]["image"]["href"] for p in (before, after)]
    grid = json.loads((root / "check" / "grid.json").read_text())
    pair = SurveyPair(*surveys, resolution=grid["chip_resolution"])
    ratio = grid["resolution"] / grid["chip_resolution"]
    assert ratio == pytest.approx(2)  # detection at 0.4 m, chips at 0.2 m
    shift = json.loads((root / "align" / "shift.json").read_text())
    shift = (shift["dx"] * ratio, shift["dy"] * ratio)
    outlines = pipeline.transform_geometries(found.geometry.to_numpy(), found.crs, pair.crs)
    batch = max(pipeline._chip_batches(found, 256), key=len)  # a tile with several candidates
    assert len(batch) >= 2
    items = pipeline._chip_items(found, batch, outlines, pair)
    for (_, box, _), i in zip(items, batch, strict=True):  # the detection grid's box, twice as fine
        detection_box = [found.at[i, c] for c in ("col0", "row0", "col1", "row1")]
        assert np.abs(np.subtract(box, np.multiply(detection_box, 2))).max() <= 1
    shared, single = tmp_path / "shared", tmp_path / "single"
    shared.mkdir(), single.mkdir()
    read, windows = pipeline.SurveyPair.read, []
    monkeypatch.setattr(pipeline.SurveyPair, "read", lambda self, window: windows.append(window) or read(self, window))
    edge = pipeline._steel_edge_px(pair)
    flags_shared = pipeline._chip_task(pair, items, shift, str(shared),
                                       shared_read_px=pipeline.CHIP_SHARED_READ_TILES * 512**2, steel_edge_px=edge)
    assert len(windows) == 1
    monkeypatch.setattr(pipeline.SurveyPair, "read", _no_wide_reads(read))
    flags_single = pipeline._chip_task(pair, items, shift, str(single), shared_read_px=0,
                                       steel_edge_px=edge)
    assert flags_shared == flags_single
    for path in shared.iterdir():
        assert path.read_bytes() == (single / path.name).read_bytes()
    assert len(list(shared.iterdir())) == 2 * len(items)


def _no_wide_reads(read):
    def checked(self, window):
        assert window.width * window.height < 512 * 512, "a one-by-one read covered a whole tile"
        return read(self, window)

    return checked


def test_an_unchanged_pair_gives_no_candidates_and_every_column(run, client, tmp_path):
    """The same survey twice: nothing found, as the same table without rows (GeoJSON keeps no columns
    without a feature), on a first run and on one that resumes after the vectorise stage."""
    before, _, _ = survey_pair(tmp_path / "surveys", seed=2, size_m=100, resolution=0.4, units=run["units"])
    for resume in (False, True):
        if resume:  # the last two stages read what vectorise wrote: a GeoJSON without features or columns
            for stage in ("match", "locate"):
                shutil.rmtree(root / stage)
            (root / FINAL_NAME).unlink()
        found = run_pipeline(before, before, workdir=tmp_path / "work", buildings=run["units"]["building"],
                             tile_size=256, client=client)
        root = Path(found.attrs["path"]).parent
        assert len(found) == 0 and list(found.columns) == [*CANDIDATE_COLUMNS, "geometry"]
        assert found.crs == "EPSG:4326"


def test_a_pair_sharing_too_few_grid_pixels_is_refused_with_the_reason(client, tmp_path):
    from affine import Affine

    from inspection.errors import RasterError
    from inspection.ortho import write_ortho

    rng = np.random.default_rng(0)
    fine = write_ortho(tmp_path / "fine.tif", rng.integers(0, 255, (500, 500, 3), dtype=np.uint8),
                       Affine(0.2, 0, 517200.0, 0, -0.2, 3348100.0), "EPSG:4549")
    coarse = write_ortho(tmp_path / "coarse.tif", rng.integers(0, 255, (10, 10, 3), dtype=np.uint8),
                         Affine(30.0, 0, 517100.0, 0, -30.0, 3348200.0), "EPSG:4549")
    with pytest.raises(RasterError, match=r"share only 2 x 2 px of the 60.00 m grid .* too small, or one survey "
                                          r"too coarse"):
        run_pipeline(fine, coarse, workdir=tmp_path / "work", client=client)


def test_candidate_pixels_are_those_whose_centre_is_inside_as_gdal_burns_them():
    import rasterio.features
    from affine import Affine

    from inspection.pipeline import _pixels_inside

    # A projected grid of 0.3 m pixels far from the origin, a ring with a hole and a slanted edge, and a box
    # that cuts through the outline: the pixels are those GDAL burns (centre inside), box-relative.
    transform = Affine(0.3, 0, 500_000.0, 0, -0.3, 4_400_000.0)
    outline = shapely.Polygon(
        [(500_003.1, 4_399_996.9), (500_012.2, 4_399_995.1), (500_010.9, 4_399_984.3), (500_002.7, 4_399_986.2)],
        holes=[[(500_005.2, 4_399_992.9), (500_008.1, 4_399_992.9), (500_008.1, 4_399_989.8),
                (500_005.2, 4_399_989.8)]],
    )
    box = (12, 8, 38, 50)  # col0, row0, col1, row1
    inside = _pixels_inside(outline, transform, box)
    burnt = rasterio.features.rasterize([(outline, 1)], out_shape=(box[3] - box[1], box[2] - box[0]),
                                        transform=transform @ Affine.translation(box[0], box[1])) == 1
    assert inside.shape == burnt.shape == (42, 26)
    assert 300 < inside.sum() < inside.size  # the box holds part of the ring, not all of it
    assert (inside == burnt).all()


def test_working_grid_is_an_overview_of_a_cog_pair(tmp_path):
    from affine import Affine

    from inspection.ortho import write_ortho
    from inspection.pipeline import _working_pair

    image = np.random.default_rng(0).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)

    def surveys(pixel, cog=True):
        transform = Affine(pixel, 0, 517209.0, 0, -pixel, 3348148.35)
        return [write_ortho(tmp_path / f"{name}-{pixel}-{cog}.tif", image, transform, "EPSG:4549", cog=cog)
                for name in ("a", "b")]

    # 5.8 cm COGs with 2x and 4x overviews, asked for 0.3 m (5.17x): read from the 4x overview as it is.
    pair = _working_pair(*surveys(0.058), 0.3)
    assert pair.resolution == pytest.approx(0.232) and pair.shape == (512, 512) and pair.unwarped
    # 3 cm: the 4x overview would be 6x the pixels of 0.3 m; resample to the 10x multiple instead.
    assert _working_pair(*surveys(0.03), 0.3).resolution == pytest.approx(0.3)
    # Striped GeoTIFFs have no overviews: the whole multiple below 0.3 m; so do a COG and a striped file.
    striped = surveys(0.058, cog=False)
    assert _working_pair(*striped, 0.3).resolution == pytest.approx(0.29)
    assert _working_pair(surveys(0.058)[0], striped[1], 0.3).resolution == pytest.approx(0.29)


def test_local_cluster_workers_get_the_tile_memory_settings(client):
    """Without them Dask's default turns every tile's arrays into fresh page faults (see WORKER_ENVIRON)."""
    import os

    expected = {name: str(value) for name, value in WORKER_ENVIRON.items()}
    seen = client.run(lambda: {name: os.environ.get(name) for name in expected})
    assert len(seen) == 2 and all(environ == expected for environ in seen.values())


def test_a_task_window_of_one_detector_tile_and_its_margins_is_one_network_pass():
    from inspection.change import get_detector
    from inspection.pipeline import _grid_detector

    learned = get_detector("default")
    assert learned.input_step == 2
    one_pass = _grid_detector("default", learned.tile + 2 * learned.margin)
    assert (one_pass.step, one_pass.tile) == (1, learned.tile + 2 * learned.margin)
    assert _grid_detector("default", learned.tile + 2 * learned.margin + 1).tile == learned.tile  # memory stays bounded
    assert _grid_detector("default", 512).tile == learned.tile
    assert _grid_detector("baseline", 1152) == get_detector("baseline")
