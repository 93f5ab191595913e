"""Basemaps the pages can draw under our layers, and the datum each one is drawn in.

Our data is WGS84 (EPSG:4326). Tianditu (天地图, the national platform) is CGCS2000, which agrees with WGS84
to centimetres at map scales, so our layers go on it unchanged. Amap (高德) tiles are in GCJ-02, the
obfuscated datum every map published in China must use; drawn on them unshifted, our layers would sit 300–600 m
off. So a basemap carries its ``datum``, and the pages move our layers (and the phone's WGS84 fix) to it at
display time: :func:`api.maps.density_map` on the server, ``gcoord`` in the browser. Positions sent back
(reports) stay in WGS84 whatever is on screen.

``GRIDMAP_BASEMAP`` picks one: ``none`` (the default; a plain background, which works on a closed network and in
the tests), ``tianditu`` (needs a key in ``GRIDMAP_TIANDITU_KEY``), ``amap`` or ``osm``. Whatever is chosen,
the latest drone survey is offered as a basemap too (``/surveys/{id}/tiles``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import folium


@dataclass(frozen=True)
class TileSource:
    url: str
    attribution: str
    subdomains: str = ""
    max_zoom: int = 18


@dataclass(frozen=True)
class Basemap:
    name: str
    title: str
    datum: str  # "wgs84" (incl. CGCS2000) or "gcj02": what our WGS84 layers must be moved to
    layers: tuple[TileSource, ...] = field(default_factory=tuple)

    def as_json(self) -> dict:
        """What the pages' scripts need (``L.tileLayer`` arguments per layer)."""
        return {"name": self.name, "title": self.title, "datum": self.datum,
                "layers": [{"url": s.url, "attribution": s.attribution, "subdomains": s.subdomains,
                            "maxZoom": s.max_zoom} for s in self.layers]}

    def folium_layers(self) -> list[folium.TileLayer]:
        return [folium.TileLayer(tiles=s.url, attr=s.attribution, subdomains=s.subdomains or "abc",
                                 max_zoom=s.max_zoom, name=self.title, overlay=i > 0, control=i == 0)
                for i, s in enumerate(self.layers)]


def _tianditu(key: str) -> Basemap:
    # Web Mercator ("_w") vector map and its labels; the key travels in the URL, as Tianditu requires.
    def wmts(layer: str) -> TileSource:
        return TileSource(f"https://t{{s}}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
                          f"&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={{z}}"
                          f"&TILEROW={{y}}&TILECOL={{x}}&tk={key}", "© 天地图 Tianditu", "01234567")

    return Basemap("tianditu", "天地图", "wgs84", (wmts("vec"), wmts("cva")))


_AMAP = Basemap("amap", "高德地图", "gcj02", (
    TileSource("https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
               "© 高德 AutoNavi", "1234"),))
_OSM = Basemap("osm", "OpenStreetMap", "wgs84", (
    TileSource("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "© OpenStreetMap contributors"),))
_NONE = Basemap("none", "无底图", "wgs84")
NAMES = ("none", "tianditu", "amap", "osm")


def basemap(name: str, *, tianditu_key: str | None = None) -> Basemap:
    """The basemap called ``name``; ``ValueError`` saying what is wrong for an unknown name or a missing key."""
    if name == "tianditu":
        if not tianditu_key:
            raise ValueError("GRIDMAP_BASEMAP=tianditu needs a Tianditu key in GRIDMAP_TIANDITU_KEY")
        return _tianditu(tianditu_key)
    known = {"amap": _AMAP, "osm": _OSM, "none": _NONE}
    if name not in known:
        raise ValueError(f"GRIDMAP_BASEMAP={name!r} is not one of {', '.join(NAMES)}")
    return known[name]
