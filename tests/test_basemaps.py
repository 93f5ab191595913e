"""Basemaps: the settings refuse what cannot be drawn, and a GCJ-02 basemap moves our WGS84 layers onto it."""

from __future__ import annotations

import re

import geopandas as gpd
import pytest
import shapely

from api.basemaps import basemap
from api.maps import density_map
from api.settings import Settings, SettingsError
from gridmap.crs import wgs84_to_gcj02


@pytest.mark.parametrize(("environ", "message"), [
    ({"GRIDMAP_BASEMAP": "google"}, "is not one of none, tianditu, amap, osm"),
    ({"GRIDMAP_BASEMAP": "tianditu"}, "needs a Tianditu key in GRIDMAP_TIANDITU_KEY"),
])
def test_settings_refuse_unknown_basemaps_and_tianditu_without_key(environ, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_settings_take_a_basemap():
    settings = Settings.from_env({"GRIDMAP_BASEMAP": "Tianditu", "GRIDMAP_TIANDITU_KEY": "k123"})
    chosen = basemap(settings.basemap, tianditu_key=settings.tianditu_key)
    assert chosen.datum == "wgs84" and all("tk=k123" in layer.url for layer in chosen.layers)
    assert basemap("amap").datum == "gcj02" and basemap("none").layers == ()


def _grid_coordinates(html: str) -> list[float]:
    """The first ring's first coordinate of the grids layer folium wrote into the page."""
    ring = re.search(r'"coordinates":\s*\[\[\[\s*([-\d.]+),\s*([-\d.]+)', html)
    return [float(ring.group(1)), float(ring.group(2))]


@pytest.mark.parametrize("name", ["none", "amap"])
def test_density_map_draws_our_layers_in_the_basemaps_datum(name):
    grid = shapely.box(120.17, 30.25, 120.18, 30.26)
    grids = gpd.GeoDataFrame({"code": ["g1"], "name": ["一网格"], "cases": [3], "per_ha": [0.3]}, geometry=[grid],
                             crs=4326)
    density = gpd.GeoDataFrame({"density": [5.0]}, geometry=[shapely.Point(120.175, 30.255)], crs=4326)
    html = density_map(density, grids, grids.geometry, basemap(name))
    first = list(shapely.get_coordinates(grid)[0])
    expected = first if name == "none" else [float(v[0]) for v in wgs84_to_gcj02([first[0]], [first[1]])]
    assert _grid_coordinates(html) == pytest.approx(expected, abs=1e-7)
    if name == "amap":
        assert abs(expected[0] - first[0]) > 0.003  # a shift of hundreds of metres, not rounding
        assert "webrd0" in html
    assert "cdn.jsdelivr" not in html and "code.jquery" not in html and "/vendor/leaflet/leaflet.js" in html
