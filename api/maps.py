"""The supervisor's density map drawn with folium, with every script and style served by this app.

folium writes pages that load Leaflet, jQuery, Bootstrap and Font Awesome from public CDNs; a street office's
intranet often cannot reach them, and a page that half-loads is worse than none. :func:`density_map` keeps
only what a heatmap and a choropleth need (Leaflet and Leaflet.heat) and points them at ``/vendor``, where
the app serves the copies ``npm ci`` installed (see :mod:`api.routes.pages`).
"""

from __future__ import annotations

import folium
import geopandas as gpd
from folium.plugins import HeatMap

from api.basemaps import Basemap
from gridmap.crs import transform_geometries

VENDOR = "/vendor"
_JS = [("leaflet", f"{VENDOR}/leaflet/leaflet.js")]
_CSS = [("leaflet_css", f"{VENDOR}/leaflet/leaflet.css")]
_HEAT_JS = [("leaflet-heat.js", f"{VENDOR}/leaflet.heat/leaflet-heat.js")]
#: Colours of the choropleth by cases per hectare: light to dark, read at a glance on a projector.
_RAMP = ("#fff5eb", "#fdd0a2", "#fd8d3c", "#d94801", "#7f2704")


def density_map(density: gpd.GeoDataFrame, grids: gpd.GeoDataFrame, area: gpd.GeoSeries,
                basemap: Basemap) -> str:
    """A whole HTML page: the kernel surface (``density`` on cell centres) as a heat layer, and the grids
    coloured by ``per_ha`` with their counts in a tooltip, on ``basemap``; fitted to ``area``."""
    if basemap.datum != "wgs84":
        density, grids, area = (_moved(frame, basemap.datum) for frame in (density, grids, area))
    minx, miny, maxx, maxy = area.total_bounds
    fmap = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], tiles=None)
    fmap.default_js, fmap.default_css = _JS, _CSS
    for layer in basemap.folium_layers():
        layer.add_to(fmap)
    top = float(grids["per_ha"].max()) if len(grids) else 0.0

    def style(feature):
        value = feature["properties"]["per_ha"]
        step = 0 if top <= 0 else min(int(value / top * (len(_RAMP) - 1) + 0.5), len(_RAMP) - 1)
        return {"fillColor": _RAMP[step], "color": "#555", "weight": 1, "fillOpacity": 0.55}

    if len(grids):
        folium.GeoJson(grids.to_json(), name="网格案件密度 cases per grid", style_function=style,
                       tooltip=folium.GeoJsonTooltip(["name", "code", "cases", "per_ha"],
                                                     aliases=["网格", "编码", "案件数", "每公顷"])).add_to(fmap)
    if len(density):
        peak = float(density["density"].max())
        points = [[pt.y, pt.x, float(value) / peak] for pt, value in zip(density.geometry, density["density"], strict=True)]
        heat = HeatMap(points, name="案件热力 case density", radius=18, blur=14, min_opacity=0.25)
        heat.default_js = _HEAT_JS
        heat.add_to(fmap)
    folium.LayerControl(collapsed=True).add_to(fmap)
    fmap.fit_bounds([[miny, minx], [maxy, maxx]])
    return fmap.get_root().render()


def _moved(frame, datum: str):
    """``frame`` (a GeoDataFrame or GeoSeries in WGS84) with its coordinates moved to ``datum``, for display."""
    if not len(frame):
        return frame
    moved = gpd.GeoSeries(transform_geometries(frame.geometry.values, "wgs84", datum), index=frame.index,
                          crs=frame.crs)
    return moved if isinstance(frame, gpd.GeoSeries) else frame.set_geometry(moved)
