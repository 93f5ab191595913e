"""Synthetic drone surveys of the demo street, with known changes, for tests and benchmarks.

:func:`render_survey` draws a georeferenced RGB orthophoto of part of the demo street
(:func:`gridmap.demo.generate_demo_street`) from its unit and building footprints: asphalt roads, paved
courtyards with patches of vegetation, and roofs in plausible colours with a ridge, a parapet line and
texture. :func:`survey_pair` renders the same place twice and writes both as COGs:

* the *after* survey is another day: global gain, offset and colour cast, fresh sensor noise and a
  sub-metre georeferencing offset, as between two real flights;
* it adds blue and white colour-steel sheds (6-40 m²) in courtyards, rooftop additions on a few
  buildings, and rebuilds one registered building (another roof colour and shape on its footprint);
* every other building is unchanged.

The changes come back as a truth table. Everything is drawn in EPSG:4549 (CGCS2000 Gauss-Krüger
CM 120E), the demo street's metric CRS, on a grid whose origin is a multiple of the resolution, so
:class:`inspection.ortho.SurveyPair` reads it without resampling.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from shapely import Polygon

from gridmap.demo import CENTRE, METRIC_CRS, generate_demo_street
from inspection.ortho import write_ortho

STORAGE_CRS = "EPSG:4326"
BEFORE_DATE = dt.datetime(2025, 4, 2, 10, 30, tzinfo=dt.timezone.utc)
AFTER_DATE = dt.datetime(2025, 10, 14, 14, 10, tzinfo=dt.timezone.utc)
# Roof colours of registered buildings (RGB): tiles, concrete, tar, brick. Colour-steel blue and white
# are left for the changes, so that the steel flag can be checked against the truth.
ROOF_COLOURS = np.array(
    [(164, 84, 62), (140, 139, 133), (88, 88, 92), (122, 96, 76), (186, 174, 150), (108, 122, 112), (150, 110, 90)],
    dtype=np.float32,
)
STEEL_COLOURS = {"blue": (48, 104, 186), "white": (236, 236, 232)}
ASPHALT = (92, 92, 97)
PAVING = (158, 152, 142)
VEGETATION = (72, 108, 58)
# fillPoly's fixed-point sub-pixel bits: vertices to 1/16 px, so a 0.4 m offset is drawn as such.
_SHIFT = 4


@dataclass
class Scene:
    """What is drawn: footprints and colours in the metric CRS, and the grid they are drawn on."""

    transform: Affine
    shape: tuple[int, int]
    courtyards: np.ndarray
    vegetation: np.ndarray
    buildings: gpd.GeoDataFrame  # code, geometry (metric), colour index
    extras: list[tuple[Polygon, tuple[float, float, float], float]] = field(default_factory=list)
    erased: list[Polygon] = field(default_factory=list)
    recoloured: dict[str, tuple[Polygon, np.ndarray]] = field(default_factory=dict)


def demo_scene(
    *,
    seed: int = 0,
    centre: tuple[float, float] = CENTRE,
    size_m: float = 300.0,
    resolution: float = 0.15,
    units: dict[str, gpd.GeoDataFrame] | None = None,
) -> Scene:
    """The unchanged scene: a ``size_m`` square of the demo street around ``centre`` (lon, lat).

    ``units`` is :func:`gridmap.demo.generate_demo_street`'s output (generated when not given).
    """
    units = units or generate_demo_street()
    rng = np.random.default_rng([seed, 1])
    x, y = gpd.GeoSeries(shapely.points([centre]), crs=STORAGE_CRS).to_crs(METRIC_CRS).iloc[0].coords[0]
    side = int(round(size_m / resolution))
    left = np.floor((x - size_m / 2) / resolution) * resolution
    top = np.ceil((y + size_m / 2) / resolution) * resolution
    transform = Affine(resolution, 0.0, left, 0.0, -resolution, top)
    area = shapely.box(left, top - side * resolution, left + side * resolution, top)

    def clip(level: str) -> gpd.GeoDataFrame:
        frame = units[level].to_crs(METRIC_CRS)
        return frame[frame.intersects(area)].reset_index(drop=True)

    courtyards = clip("courtyard").geometry.to_numpy()
    buildings = clip("building")[["code", "geometry"]].copy()
    buildings["colour"] = rng.integers(0, len(ROOF_COLOURS), len(buildings))
    # Trees and lawns: a few blobs per courtyard, away from nothing in particular (buildings cover them).
    blobs = []
    for court in courtyards:
        minx, miny, maxx, maxy = court.bounds
        for _ in range(rng.integers(1, 4)):
            point = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            if court.contains(point):
                blobs.append(point.buffer(rng.uniform(2.0, 6.0), quad_segs=6))
    return Scene(transform, (side, side), courtyards, np.array(blobs, dtype=object), buildings)


def render_survey(scene: Scene, *, seed: int = 0, texture_seed: int = 0) -> np.ndarray:
    """The scene as an RGB uint8 image (H x W x 3) on ``scene.transform``.

    ``texture_seed`` fixes the ground and roof texture (the same place looks the same in both surveys);
    ``seed`` fixes the sensor noise (it does not).
    """
    height, width = scene.shape
    texture = _texture(scene.shape, texture_seed)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = ASPHALT
    image *= (1.0 + 0.08 * texture)[..., None]
    for court in scene.courtyards:
        _fill(image, scene.transform, court, PAVING, texture, 0.06)
    for blob in scene.vegetation:
        _fill(image, scene.transform, blob, VEGETATION, texture, 0.25)
    for code, footprint, colour in scene.buildings[["code", "geometry", "colour"]].itertuples(index=False):
        if code in scene.recoloured:
            footprint, rgb = scene.recoloured[code]
            _roof(image, scene.transform, footprint, rgb, texture)
        else:
            _roof(image, scene.transform, footprint, ROOF_COLOURS[colour], texture)
    for erased in scene.erased:
        _fill(image, scene.transform, erased, PAVING, texture, 0.06)
    for shape, rgb, ridge in scene.extras:
        _roof(image, scene.transform, shape, np.asarray(rgb, dtype=np.float32), texture, ridge=ridge)
    image += np.random.default_rng([seed, 2]).normal(0.0, 2.5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def survey_pair(
    directory: str | Path,
    *,
    seed: int = 0,
    centre: tuple[float, float] = CENTRE,
    size_m: float = 300.0,
    resolution: float = 0.15,
    sheds: int = 8,
    rooftops: int = 3,
    offset_m: tuple[float, float] = (0.4, -0.25),
    compress: str = "deflate",
    units: dict[str, gpd.GeoDataFrame] | None = None,
) -> tuple[Path, Path, gpd.GeoDataFrame]:
    """Write a before and an after survey of the demo street with known new structures.

    Parameters
    ----------
    directory : path-like
        Where ``before.tif`` and ``after.tif`` are written (created if needed).
    seed : int
        Everything random: which buildings change, where sheds go, noise.
    centre, size_m, resolution
        The square rendered: centre (lon, lat), side in metres, metres per pixel.
    sheds, rooftops : int
        How many colour-steel sheds and rooftop additions to add (fewer if there is no room).
    offset_m : (float, float)
        Georeferencing error of the after survey, east and north in metres.
    compress : str
        ``"deflate"`` or ``"jpeg"`` (see :func:`inspection.ortho.write_ortho`).
    units : dict, optional
        :func:`gridmap.demo.generate_demo_street` output, to save generating it again.

    Returns
    -------
    before_path, after_path : pathlib.Path
    truth : GeoDataFrame
        One row per inserted change: ``kind`` (``"shed"``, ``"rooftop"`` or ``"rebuilt"``),
        ``building_code`` (the registered building changed, or None), ``colour`` (``"blue"``,
        ``"white"`` or None), ``area_m2``, geometry in EPSG:4326.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scene = demo_scene(seed=seed, centre=centre, size_m=size_m, resolution=resolution, units=units)
    before = render_survey(scene, seed=seed * 2, texture_seed=seed)
    truth = _add_changes(scene, np.random.default_rng([seed, 3]), sheds=sheds, rooftops=rooftops)
    after = render_survey(scene, seed=seed * 2 + 1, texture_seed=seed)
    after = _another_day(after, offset_m, resolution)
    before_path = write_ortho(
        directory / "before.tif", before, scene.transform, METRIC_CRS, datetime=BEFORE_DATE, compress=compress
    )
    after_path = write_ortho(
        directory / "after.tif", after, scene.transform, METRIC_CRS, datetime=AFTER_DATE, compress=compress
    )
    return before_path, after_path, truth


def _add_changes(scene: Scene, rng: np.random.Generator, *, sheds: int, rooftops: int) -> gpd.GeoDataFrame:
    """Put the after survey's changes into ``scene``; return them as the truth table."""
    left, top = scene.transform.c, scene.transform.f
    height, width = scene.shape
    res = scene.transform.a
    inner = shapely.box(left, top - height * res, left + width * res, top).buffer(-5.0)
    footprints = scene.buildings.geometry.to_numpy()
    inside = shapely.contains(inner, footprints)
    areas = shapely.area(footprints)
    rows: list[dict] = []

    # One rebuilt building: a mid-sized one, redrawn as a smaller rectangle of another colour.
    choices = np.flatnonzero(inside & (areas >= 200) & (areas <= 900))
    rebuilt = int(rng.choice(choices))
    code, footprint, colour = scene.buildings.iloc[rebuilt][["code", "geometry", "colour"]]
    new_shape = shapely.affinity.scale(shapely.oriented_envelope(footprint), 0.8, 0.8).intersection(footprint)
    other = int(np.argmax(np.linalg.norm(ROOF_COLOURS - ROOF_COLOURS[colour], axis=1)))
    scene.erased.append(footprint)
    scene.extras.append((new_shape, tuple(ROOF_COLOURS[other]), 0.9))
    rows.append({"kind": "rebuilt", "building_code": code, "colour": None, "geometry": footprint})

    # Rooftop additions: a box over one end of a roof, in a colour far from the roof's.
    order = rng.permutation(np.flatnonzero(inside & (areas >= 150)))
    for b in order[order != rebuilt][:rooftops]:
        code, footprint, colour = scene.buildings.iloc[b][["code", "geometry", "colour"]]
        centre, long_axis, short_axis, length, depth = _axes(footprint)
        along = rng.uniform(0.25, 0.4) * length
        across = rng.uniform(0.5, 0.7) * depth
        end = centre + long_axis * (length / 2 - along / 2 - 1.0)
        box = _rectangle(end, long_axis, short_axis, along, across).intersection(footprint.buffer(-0.8))
        if box.area < 8.0:
            continue
        kind = str(rng.choice(["blue", "white", "red"]))
        rgb = STEEL_COLOURS.get(kind, (196, 60, 48))
        scene.extras.append((box, rgb, 1.0))
        rows.append({"kind": "rooftop", "building_code": code, "colour": kind if kind != "red" else None, "geometry": box})

    # Sheds in courtyards, clear of buildings and of each other.
    blocked = shapely.union_all(shapely.buffer(footprints, 1.5))
    placed = 0
    for _ in range(400 * max(sheds, 1)):
        if placed >= sheds:
            break
        court = scene.courtyards[rng.integers(len(scene.courtyards))]
        minx, miny, maxx, maxy = court.bounds
        centre = np.array([rng.uniform(minx, maxx), rng.uniform(miny, maxy)])
        area = rng.uniform(6.0, 40.0)
        across = rng.uniform(2.2, min(5.5, np.sqrt(area)))
        angle = rng.uniform(0, np.pi)
        long_axis = np.array([np.cos(angle), np.sin(angle)])
        shed = _rectangle(centre, long_axis, np.array([-long_axis[1], long_axis[0]]), area / across, across)
        if not (court.buffer(-0.5).contains(shed) and inner.contains(shed)) or shed.intersects(blocked):
            continue
        kind = "blue" if placed % 2 == 0 else "white"
        scene.extras.append((shed, STEEL_COLOURS[kind], 0.92))
        rows.append({"kind": "shed", "building_code": None, "colour": kind, "geometry": shed})
        blocked = blocked.union(shed.buffer(2.0))
        placed += 1

    truth = gpd.GeoDataFrame(rows, geometry="geometry", crs=METRIC_CRS)
    truth["area_m2"] = truth.geometry.area
    return truth.to_crs(STORAGE_CRS)[["kind", "building_code", "colour", "area_m2", "geometry"]]


def _another_day(image: np.ndarray, offset_m: tuple[float, float], resolution: float) -> np.ndarray:
    """Another flight: shifted by a georeferencing error, other light and another camera's colours."""
    dx, dy = offset_m[0] / resolution, -offset_m[1] / resolution
    moved = cv2.warpAffine(
        image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    lit = moved.astype(np.float32) * 1.12 - 6.0 + np.float32([7.0, 1.0, -6.0])
    return np.clip(lit, 0, 255).astype(np.uint8)


def _texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Zero-mean texture of about unit spread: coarse blotches plus fine grain."""
    rng = np.random.default_rng([seed, 4])
    height, width = shape
    coarse = cv2.resize(rng.normal(0, 1, (height // 32 + 2, width // 32 + 2)).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 1.2) * 2.0
    return 0.6 * coarse + 0.4 * fine


def _pixels(transform: Affine, polygon: Polygon) -> list[np.ndarray]:
    inverse = ~transform
    rings = [polygon.exterior, *polygon.interiors]
    out = []
    for ring in rings:
        xy = np.asarray(ring.coords)
        col, row = inverse @ (xy[:, 0], xy[:, 1])
        out.append(np.round(np.column_stack([col, row]) * (1 << _SHIFT)).astype(np.int32))
    return out


def _polygons(geometry) -> list[Polygon]:
    return [g for g in shapely.get_parts(geometry) if isinstance(g, Polygon) and not g.is_empty]


def _fill(image: np.ndarray, transform: Affine, geometry, rgb, texture: np.ndarray, grain: float) -> None:
    for polygon in _polygons(geometry):
        crop, mask = _mask(image.shape[:2], transform, polygon)
        if crop is None:
            continue
        colour = np.asarray(rgb, dtype=np.float32) * (1.0 + grain * texture[crop])[..., None]
        image[crop][mask] = colour[mask]


def _roof(image: np.ndarray, transform: Affine, geometry, rgb: np.ndarray, texture: np.ndarray, *,
          ridge: float = 0.84) -> None:
    """A roof: two slopes either side of the long axis (one ``ridge`` times darker), grain, a dark rim."""
    for polygon in _polygons(geometry):
        crop, mask = _mask(image.shape[:2], transform, polygon)
        if crop is None:
            continue
        centre, long_axis, short_axis, *_ = _axes(polygon)
        rows, cols = np.mgrid[crop[0], crop[1]]
        x, y = transform @ (cols + 0.5, rows + 0.5)
        side = (x - centre[0]) * short_axis[0] + (y - centre[1]) * short_axis[1] > 0
        shade = np.where(side, ridge, 1.0).astype(np.float32) * (1.0 + 0.05 * texture[crop])
        colour = np.asarray(rgb, dtype=np.float32) * shade[..., None]
        view = image[crop]
        view[mask] = colour[mask]
        rim = np.zeros(mask.shape, dtype=np.uint8)
        offset = np.array([crop[1].start, crop[0].start]) << _SHIFT
        cv2.polylines(rim, [p - offset for p in _pixels(transform, polygon)], True, 1, 2, cv2.LINE_8, _SHIFT)
        view[(rim > 0) & mask] *= 0.7


def _mask(shape: tuple[int, int], transform: Affine, polygon: Polygon):
    inverse = ~transform
    minx, miny, maxx, maxy = polygon.bounds
    (c0, r0), (c1, r1) = inverse @ (minx, maxy), inverse @ (maxx, miny)
    r0, c0 = max(int(np.floor(min(r0, r1))) - 1, 0), max(int(np.floor(min(c0, c1))) - 1, 0)
    r1, c1 = min(int(np.ceil(max(r0, r1))) + 2, shape[0]), min(int(np.ceil(max(c0, c1))) + 2, shape[1])
    if r1 <= r0 or c1 <= c0:
        return None, None
    mask = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
    offset = np.array([c0, r0]) << _SHIFT
    cv2.fillPoly(mask, [p - offset for p in _pixels(transform, polygon)], 1, cv2.LINE_8, _SHIFT)
    return (slice(r0, r1), slice(c0, c1)), mask > 0


def _axes(polygon: Polygon):
    """Centre, unit long and short axes, length and depth of the polygon's oriented envelope."""
    corners = np.asarray(shapely.oriented_envelope(polygon).exterior.coords)[:4]
    edges = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    lengths = np.linalg.norm(edges, axis=1)
    k = int(np.argmax(lengths[:2]))
    long_axis = edges[k] / lengths[k]
    short_axis = np.array([-long_axis[1], long_axis[0]])
    return corners.mean(axis=0), long_axis, short_axis, lengths[k], lengths[1 - k]


def _rectangle(centre: np.ndarray, long_axis: np.ndarray, short_axis: np.ndarray, length: float, depth: float) -> Polygon:
    half_l, half_d = long_axis * length / 2, short_axis * depth / 2
    return Polygon([centre - half_l - half_d, centre + half_l - half_d, centre + half_l + half_d, centre - half_l + half_d])
