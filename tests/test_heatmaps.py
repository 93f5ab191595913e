"""Heatmaps: the kernel surface and the per-grid choropleth, pure and over the API with filters and scope."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from conftest import auth_headers

from inspection.heatmap import choropleth, kernel_density

AREA = shapely.box(120.16, 30.23, 120.20, 30.27)


def test_kernel_surface_integrates_to_the_case_count_and_peaks_on_the_cases():
    cases = pd.DataFrame({"lon": [120.175, 120.185, 120.185], "lat": [30.245, 30.255, 30.2551]})
    surface = kernel_density(cases, AREA, bandwidth_m=120, cell_m=10)
    assert surface["density"].sum() * (10 / 1000) ** 2 == pytest.approx(3.0, rel=0.01)
    peak = surface.geometry.iloc[int(surface["density"].argmax())]
    _, _, metres = pyproj.Geod(ellps="WGS84").inv(peak.x, peak.y, 120.185, 30.25505)
    assert metres < 15  # the two nearly coincident cases make the peak
    assert kernel_density(cases.iloc[0:0], AREA).empty


def test_kernel_refuses_bad_sizes():
    from inspection.errors import InspectionError

    with pytest.raises(InspectionError):
        kernel_density(pd.DataFrame({"lon": [120.18], "lat": [30.25]}), AREA, cell_m=0)
    with pytest.raises(InspectionError, match="larger cells"):
        kernel_density(pd.DataFrame({"lon": [120.18], "lat": [30.25]}), shapely.box(110, 20, 130, 40), cell_m=5)


def test_choropleth_counts_and_normalises_by_area():
    grids = gpd.GeoDataFrame({"code": ["a", "b"], "name": ["A", "B"]},
                             geometry=[shapely.box(120.17, 30.24, 120.172, 30.242), shapely.box(120.18, 30.24, 120.181, 30.241)],
                             crs="EPSG:4326")
    out = choropleth(pd.DataFrame({"grid": ["a", "a", "b", None]}), grids).set_index("code")
    assert out.loc["a", "cases"] == 2 and out.loc["b", "cases"] == 1
    area_a, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(grids.geometry.iloc[0])
    assert out.loc["a", "per_ha"] == pytest.approx(2 / (abs(area_a) / 10_000), rel=0.01)


@pytest.fixture
def client(demo_client):
    return demo_client


def _report(client, username, grid, category, dx_m=0.0):
    units = client.app.state.service.units
    p = units[units["code"] == grid].geometry.iloc[0].representative_point()
    body = {"client_id": os.urandom(8).hex(), "category": category, "lon": p.x + dx_m / 96_000, "lat": p.y,
            "observed_at": datetime.now(timezone.utc).isoformat()}
    assert client.post("/reports", data={"report": json.dumps(body)}, headers=auth_headers(client, username)).status_code == 201


def test_heatmaps_over_the_api(client):
    for i, category in enumerate(["event:0502", "event:0101", "event:0102"]):
        _report(client, "worker", "330102901001001", category, dx_m=i)
    _report(client, "gw002001", "330102901002001", "event:0502")
    supervisor = auth_headers(client, "supervisor")
    grids = {f["properties"]["code"]: f["properties"]["cases"]
             for f in client.get("/heatmaps/grids", headers=supervisor).json()["features"]}
    assert len(grids) == 182 and grids["330102901001001"] == 3 and grids["330102901002001"] == 1
    assert sum(grids.values()) == 4
    only = {f["properties"]["code"]: f["properties"]["cases"]
            for f in client.get("/heatmaps/grids", headers=supervisor, params={"category": "event:0502"}).json()["features"]}
    assert only["330102901001001"] == 1 and only["330102901002001"] == 1
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    none = client.get("/heatmaps/grids", headers=supervisor, params={"start": later,
                                                                     "end": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()})
    assert sum(f["properties"]["cases"] for f in none.json()["features"]) == 0
    mine = client.get("/heatmaps/grids", headers=auth_headers(client, "worker")).json()["features"]
    assert {f["properties"]["code"] for f in mine} == set(client.get("/me", headers=auth_headers(client, "worker")).json()["scope"])
    surface = client.get("/heatmaps/density", headers=supervisor, params={"bandwidth_m": 100, "cell_m": 20}).json()
    assert surface["features"] and all(f["properties"]["density"] > 0 for f in surface["features"])
    assert sum(f["properties"]["density"] for f in surface["features"]) * (20 / 1000) ** 2 == pytest.approx(4, rel=0.05)
    assert client.get("/heatmaps/density", headers=supervisor, params={"cell_m": 0}).status_code == 422
    assert client.get("/heatmaps/grids", headers=auth_headers(client, "pipeline")).status_code == 403
    assert client.get("/heatmaps/grids", headers=supervisor, params={"start": later, "end": later}).status_code == 400
    assert np.isfinite([f["properties"]["per_ha"] for f in mine]).all()
