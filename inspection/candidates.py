"""Change masks to inspection candidates: polygons with area, confidence, roof flag, chips, match and units.

A *candidate* is one connected region of a change mask that an inspector should look at: a polygon in
EPSG:4326 with its area in m², a confidence, whether its after-survey roof looks like colour-steel sheet
(彩钢瓦, the usual material of illegal sheds), before/after image chips, whether it lies on a registered
building, and the street, community, grid, courtyard and grid worker it falls in.

The steps are separate functions so that the pipeline (:mod:`inspection.pipeline`) can run the pixel work
per tile on workers and the vector work once:

- :func:`mask_components` (per tile, pixels) -> pieces in global pixel coordinates;
- :func:`merge_pieces` (once) joins pieces that touch across tile borders;
- :func:`measure` (once) turns pixel polygons into a candidate table;
- :func:`match_buildings` and :func:`join_building_changes` relate candidates to registered buildings;
- :func:`vectorise` is the three together for one mask held in memory.

Pure library code: no I/O.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio.features
import shapely
from affine import Affine
from shapely import STRtree

from gridmap.crs import metric_crs, transform_geometries, transformer
from gridmap.locate import LOCATE_LEVELS, UnitLocator
from inspection.errors import InspectionError

STORAGE_CRS = "EPSG:4326"
MATCH_NEW = "new"
MATCH_REGISTERED = "registered_building_changed"
# Douglas-Peucker tolerance, in pixels, for the published outline and the width estimate: a pixel
# staircase along a slanted edge deviates at most 0.71 px from the true edge, so one pixel removes it and
# moves no true corner by more than a pixel.
SIMPLIFY_PX = 1.0
# Candidate ids hash coordinates rounded to 1e-7 degrees (about 1 cm), the precision of the unit files.
ID_PRECISION = 1e-7
# Colour-steel sheet in OpenCV's 8-bit HSV (H in 0-179 = degrees / 2, S and V in 0-255). Blue sheet is a
# saturated blue of hue 190-250 degrees; white sheet is bright and nearly grey. Concrete and tiles are
# darker than the white threshold, and painted blue is rare on anything else seen from above.
BLUE_HUE = (95, 125)
BLUE_MIN_SATURATION = 90  # 0.35
BLUE_MIN_VALUE = 64  # 0.25: blue sheet in shade is still blue
WHITE_MAX_SATURATION = 40  # 0.16
WHITE_MIN_VALUE = 200  # 0.78
# Share of a region's pixels that must look like sheet: half, so that a shed with a shadow on it, or a
# region whose outline spills onto the ground around it, still counts.
STEEL_FRACTION = 0.5
# Width of a region's rim left out when judging its material (see colour_steel_flag): about how far a
# detector's outline spills past a roof's edge.
STEEL_EDGE_M = 0.5
# Pieces of one building cut at vector-tile edges share an edge up to the tiles' coordinate quantisation.
BUILDING_JOIN_M = 0.05
# Candidates on one registered building closer than this are one change to it: the learned detector can cut
# a rebuilt L-shaped building between the cores it sees, leaving a line a pixel or two wide.
CHANGE_JOIN_M = 1.0


@dataclass
class Pieces:
    """Connected change regions of a mask, in global pixel coordinates (x = column, y = row).

    Attributes
    ----------
    geometry : ndarray of shapely Polygon
        Exact pixel outlines (integer vertices).
    pixels : ndarray of int64
        Pixel count of each region.
    score_sum : ndarray of float64
        Sum of the detector score over the region's pixels; with ``pixels`` it gives the mean score of
        regions merged across tiles.
    """

    geometry: np.ndarray
    pixels: np.ndarray
    score_sum: np.ndarray

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        """All pieces of ``parts`` in one object."""
        if not parts:
            return cls(np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0))
        return cls(
            np.concatenate([p.geometry for p in parts]),
            np.concatenate([p.pixels for p in parts]),
            np.concatenate([p.score_sum for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.geometry)


def opening_px(transform: Affine, crs, min_width_m: float) -> int:
    """Side in pixels of the opening kernel that removes regions thinner than ``min_width_m``."""
    return int(round(min_width_m / pixel_size_m(transform, crs))) if min_width_m > 0 else 0


def mask_components(
    mask: np.ndarray,
    score: np.ndarray,
    *,
    open_px: int = 0,
    min_pixels: int = 0,
    core: tuple[int, int, int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> Pieces:
    """Connected regions of ``mask`` after removing its thin parts, as pixel polygons.

    Parameters
    ----------
    mask : ndarray of bool, H x W
    score : ndarray of float, H x W
        Detector score in [0, 1].
    open_px : int
        Side of the elliptical opening kernel: parts of the mask narrower than this disappear (thin
        slivers along edges from a residual misregistration, wires, kerbs) while the rest keeps its
        outline except for rounded corners. Below 2, no opening.
    min_pixels : int
        Regions with fewer pixels are dropped, unless they touch an open edge.
    core : (row0, col0, row1, col1), optional
        The part of the arrays that is kept, after the opening: a tile's core without its overlap, which
        the opening needed as context so that regions are cut identically on both sides of a tile border.
    offset : (row, col)
        Global pixel position of the kept part's first pixel.
    open_edges : (top, left, bottom, right)
        Edges of the kept part where the region may go on in a neighbouring tile: a region touching one
        is kept whatever its size, to be merged with its other part (:func:`merge_pieces`).
    """
    if mask.shape != score.shape[:2]:
        raise InspectionError(f"mask {mask.shape} and score {score.shape} differ in size")
    eight = mask.astype(np.uint8)
    if open_px >= 2:
        # An odd side centres the kernel on its anchor, so the opening shifts nothing by half a pixel.
        side = open_px | 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
        eight = cv2.morphologyEx(eight, cv2.MORPH_OPEN, kernel)
    if core is not None:
        r0, c0, r1, c1 = core
        eight, score = eight[r0:r1, c0:c1], score[r0:r1, c0:c1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(eight, connectivity=4, ltype=cv2.CV_32S)
    if count <= 1:
        return Pieces.concat([])
    height, width = eight.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    touches = np.zeros(count, dtype=bool)
    for is_open, hit in zip(open_edges, (top == 0, left == 0, bottom == height, right == width), strict=True):
        if is_open:
            touches |= hit
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_pixels) | touches
    keep[0] = False
    if not keep[1:].any():
        return Pieces.concat([])
    labels[~keep[labels]] = 0
    sums = np.bincount(labels.ravel(), weights=score.ravel().astype(np.float64), minlength=count)
    row, col = offset
    shapes = rasterio.features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.translation(col, row)
    )
    geometry, label = [], []
    for geojson, value in shapes:
        geometry.append(shapely.geometry.shape(geojson))
        label.append(int(value))
    label = np.asarray(label, dtype=np.int64)
    return Pieces(
        np.asarray(geometry, dtype=object),
        stats[label, cv2.CC_STAT_AREA].astype(np.int64),
        sums[label],
    )


def merge_pieces(pieces: Pieces) -> Pieces:
    """Join pieces that share an edge, as parts of one region cut by tile borders.

    Pieces from one mask never share an edge (they are different 4-connected regions), so only pieces
    of neighbouring tiles are joined; their vertices lie on the one global pixel lattice, so the union is
    exact. Pieces meeting only at a corner stay apart, as 4-connectivity wants.
    """
    n = len(pieces)
    if n == 0:
        return pieces
    tree = STRtree(pieces.geometry)
    left, right = tree.query(pieces.geometry, predicate="touches")
    pair = left < right
    left, right = left[pair], right[pair]
    if len(left):
        shared = shapely.length(shapely.intersection(pieces.geometry[left], pieces.geometry[right])) > 0
        left, right = left[shared], right[shared]
    group = _components(n, left, right)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    geometry, pixels, sums = [], [], []
    for members in np.split(order, starts[1:]):
        parts = pieces.geometry[members]
        geometry.append(parts[0] if len(parts) == 1 else shapely.union_all(parts))
        pixels.append(pieces.pixels[members].sum())
        sums.append(pieces.score_sum[members].sum())
    return Pieces(np.asarray(geometry, dtype=object), np.asarray(pixels, dtype=np.int64), np.asarray(sums))


def measure(
    pieces: Pieces,
    transform: Affine,
    crs,
    *,
    min_area_m2: float = 4.0,
    pair_id: str = "",
) -> gpd.GeoDataFrame:
    """The candidate table of pixel regions: outline, size, confidence and id; small regions dropped.

    Columns
    -------
    id : str
        :func:`candidate_id` of ``pair_id`` and the outline.
    area_m2 : float
        Area of the region's exact pixel outline, in a metric CRS (the mask's own when it is projected in
        metres, else :func:`gridmap.crs.metric_crs` at the region).
    width_m : float
        Mean width: the short side of the rectangle with the region's area and perimeter,
        ``P/4 - sqrt(P²/16 - A)`` (the side of the square when that has no real solution), measured on
        the simplified outline so that pixel staircases do not inflate the perimeter.
    compactness : float
        ``4 pi A / P²``: 1 for a disc, about 0.79 for a square, small for ragged or thin shapes.
    confidence : float
        Mean detector score over the region's pixels. It is deliberately not scaled by size or shape, so
        that it means the same for every detector and a small shed is not ranked below a large shadow;
        ``area_m2`` and ``compactness`` are there to rank by as well.
    col0, row0, col1, row1 : int
        Bounding box in pixels of the mask (end exclusive), for reading chips.
    geometry
        The outline simplified by :data:`SIMPLIFY_PX`, in EPSG:4326.
    """
    crs = pyproj.CRS.from_user_input(crs)
    if len(pieces) == 0:
        return _empty_candidates()
    exact = _apply_affine(pieces.geometry, transform)
    simple = _apply_affine(shapely.simplify(pieces.geometry, SIMPLIFY_PX, preserve_topology=True), transform)
    metric, metric_simple = _to_metric(exact, crs), _to_metric(simple, crs)
    area = shapely.area(metric)
    perimeter = shapely.length(metric_simple)
    simple_area = shapely.area(metric_simple)
    width = np.where(
        perimeter**2 / 16.0 >= simple_area,
        perimeter / 4.0 - np.sqrt(np.maximum(perimeter**2 / 16.0 - simple_area, 0.0)),
        np.sqrt(simple_area),
    )
    compactness = np.divide(4.0 * math.pi * simple_area, perimeter**2, out=np.zeros_like(area), where=perimeter > 0)
    bounds = shapely.bounds(pieces.geometry).astype(np.int64)
    geometry = shapely.normalize(_to_storage(simple, crs))
    frame = gpd.GeoDataFrame(
        {
            "id": candidate_ids(pair_id, geometry),
            "area_m2": area,
            "width_m": width,
            "compactness": compactness,
            "confidence": pieces.score_sum / np.maximum(pieces.pixels, 1),
            "col0": bounds[:, 0],
            "row0": bounds[:, 1],
            "col1": bounds[:, 2],
            "row1": bounds[:, 3],
        },
        geometry=geometry,
        crs=STORAGE_CRS,
    )
    frame = frame[frame["area_m2"] >= min_area_m2]
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def vectorise(
    mask: np.ndarray,
    score: np.ndarray,
    transform: Affine,
    crs,
    *,
    min_area_m2: float = 4.0,
    min_width_m: float = 1.0,
    pair_id: str = "",
) -> gpd.GeoDataFrame:
    """Candidate polygons of one change mask, in EPSG:4326, with area, width and confidence.

    Parts of the mask narrower than ``min_width_m`` are removed by a morphological opening with a disc of
    that diameter (so a thin sliver is dropped even when it hangs off a real region), then regions
    smaller than ``min_area_m2`` are dropped. See :func:`measure` for the columns.

    Parameters
    ----------
    mask : ndarray of bool, H x W
    score : ndarray of float32, H x W, in [0, 1]
    transform : affine.Affine
        Pixel to map coordinates of ``crs``, as in rasterio.
    crs
        Anything :class:`pyproj.CRS` accepts.
    min_area_m2, min_width_m : float
    pair_id : str
        Survey pair the mask comes from; part of every candidate id.

    Examples
    --------
    >>> from affine import Affine
    >>> mask = np.zeros((100, 100), dtype=bool); mask[10:50, 20:80] = True   # 40 x 60 px
    >>> score = mask.astype(np.float32) * 0.8
    >>> found = vectorise(mask, score, Affine(0.1, 0, 500000, 0, -0.1, 3350000), "EPSG:4549", min_width_m=0)
    >>> [round(float(found.loc[0, c]), 3) for c in ("area_m2", "width_m", "confidence")]
    [24.0, 4.0, 0.8]
    """
    open_px = opening_px(transform, crs, min_width_m)
    pieces = mask_components(mask, score, open_px=open_px)
    return measure(pieces, transform, crs, min_area_m2=min_area_m2, pair_id=pair_id)


def candidate_ids(pair_id: str, geometry) -> np.ndarray:
    """Deterministic ids: the first 16 hex digits of SHA-1 over the pair id and the outline's WKB.

    Coordinates are rounded to :data:`ID_PRECISION` degrees first, so that the same outline computed
    again (on another machine, with another GEOS) gets the same id.
    """
    # normalize: the same outline built another way (merged from tile pieces) may start its rings elsewhere.
    rounded = shapely.normalize(shapely.set_precision(np.asarray(geometry, dtype=object), ID_PRECISION))
    return np.array(
        [hashlib.sha1(pair_id.encode() + b"\0" + shapely.to_wkb(g)).hexdigest()[:16] for g in rounded], dtype=object
    )


def colour_steel_flag(after_rgb_patch: np.ndarray, region_mask: np.ndarray, *, edge_px: int = 0) -> bool:
    """Whether a region's after-survey pixels look like blue or white colour-steel sheet roofing.

    A pixel is *blue sheet* when its hue is 190-250 degrees with saturation at least 0.35 and value at
    least 0.25, and *white sheet* when its saturation is at most 0.16 and value at least 0.78 (concrete
    and grey tiles are darker). The region is flagged when at least :data:`STEEL_FRACTION` of its pixels
    are either.

    Parameters
    ----------
    after_rgb_patch : ndarray of uint8, H x W x 3 (RGB)
    region_mask : ndarray of bool, H x W
    edge_px : int
        Pixels this close to the region's border are not judged (unless nothing else is left): a
        detector's outline spills onto the ground and shadow around a roof, and on a small shed that
        ring can outweigh the roof.
    """
    region = np.asarray(region_mask, dtype=bool)
    if region.shape != after_rgb_patch.shape[:2]:
        raise InspectionError(f"region mask {region.shape} and patch {after_rgb_patch.shape[:2]} differ in size")
    if edge_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge_px + 1, 2 * edge_px + 1))
        inner = cv2.erode(region.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        region = inner if inner.any() else region
    total = int(region.sum())
    if total == 0:
        return False
    hsv = cv2.cvtColor(np.ascontiguousarray(after_rgb_patch), cv2.COLOR_RGB2HSV)[region]
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    blue = (h >= BLUE_HUE[0]) & (h <= BLUE_HUE[1]) & (s >= BLUE_MIN_SATURATION) & (v >= BLUE_MIN_VALUE)
    white = (s <= WHITE_MAX_SATURATION) & (v >= WHITE_MIN_VALUE)
    return bool((blue | white).sum() >= STEEL_FRACTION * total)


#: JPEG quality of image chips.
CHIP_QUALITY = 88


def chips(
    before_rgb: np.ndarray,
    after_rgb: np.ndarray,
    pixel_bbox: tuple[int, int, int, int],
    *,
    pad: int = 8,
    size: int = 256,
) -> tuple[bytes, bytes]:
    """JPEG image chips of a region in both surveys, for an inspector to compare at a glance.

    JPEG (quality :data:`CHIP_QUALITY`), not PNG: aerial photographs compress five to ten times smaller at no
    visible loss, which counts on a grid worker's phone, and encode four times faster.

    Parameters
    ----------
    before_rgb, after_rgb : ndarray of uint8, H x W x 3 (RGB), on one pixel grid
    pixel_bbox : (col0, row0, col1, row1)
        The region in the arrays' pixels, end exclusive.
    pad : int
        Pixels of context around the box (clipped at the arrays' edges).
    size : int
        The longer side of the chips; the aspect ratio is kept, so small sheds are enlarged.

    Returns
    -------
    (before_jpeg, after_jpeg) : bytes
    """
    if before_rgb.shape != after_rgb.shape:
        raise InspectionError(f"before {before_rgb.shape} and after {after_rgb.shape} differ in size")
    height, width = before_rgb.shape[:2]
    col0, row0, col1, row1 = (int(v) for v in pixel_bbox)
    col0, row0 = max(col0 - pad, 0), max(row0 - pad, 0)
    col1, row1 = min(col1 + pad, width), min(row1 + pad, height)
    if col1 <= col0 or row1 <= row0:
        raise InspectionError(f"pixel box {tuple(pixel_bbox)} is outside the {width} x {height} image")
    scale = size / max(col1 - col0, row1 - row0)
    out_size = (max(1, round((col1 - col0) * scale)), max(1, round((row1 - row0) * scale)))
    # INTER_AREA averages when shrinking; enlarging small regions, INTER_NEAREST keeps pixel edges honest.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    encoded = []
    for image in (before_rgb, after_rgb):
        crop = cv2.resize(image[row0:row1, col0:col1], out_size, interpolation=interpolation)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, CHIP_QUALITY])
        if not ok:  # pragma: no cover - imencode fails only on invalid input, excluded above
            raise InspectionError("JPEG encoding of a chip failed")
        encoded.append(jpeg.tobytes())
    return encoded[0], encoded[1]


def dissolve_buildings(buildings: gpd.GeoDataFrame, *, code_column: str | None = None) -> gpd.GeoDataFrame:
    """Registered footprints with pieces cut at vector-tile edges joined into one polygon per building.

    Pieces within :data:`BUILDING_JOIN_M` of each other (in a metric CRS) are one building. Returns
    columns ``codes`` (tuple of the pieces' codes, see :func:`match_buildings`), ``piece_geometries``
    (the pieces, to tell which piece a candidate lies on) and the joined ``geometry`` in the metric CRS.
    """
    if buildings.crs is None:
        raise InspectionError("the building layer has no CRS")
    codes = _building_codes(buildings, code_column)
    geometry = buildings.geometry.to_numpy()
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    codes, geometry = codes[present], geometry[present]
    if not len(geometry):
        return gpd.GeoDataFrame({"codes": [], "piece_geometries": []}, geometry=[], crs=buildings.crs)
    lon, lat = _centre_lonlat(gpd.GeoSeries(geometry, crs=buildings.crs))
    crs = metric_crs(lon, lat)
    metric = transform_geometries(geometry, buildings.crs, crs)
    metric = shapely.make_valid(metric)
    left, right = STRtree(metric).query(metric, predicate="dwithin", distance=BUILDING_JOIN_M)
    group = _components(len(metric), left, right)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    rows_codes, rows_pieces, rows_geometry = [], [], []
    for members in np.split(order, starts[1:]):
        rows_codes.append(tuple(codes[members]))
        rows_pieces.append(tuple(metric[members]))
        rows_geometry.append(metric[members[0]] if len(members) == 1 else shapely.union_all(metric[members]))
    return gpd.GeoDataFrame(
        {"codes": rows_codes, "piece_geometries": rows_pieces}, geometry=rows_geometry, crs=crs
    )


def match_buildings(
    candidates: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    *,
    covered_fraction: float = 0.6,
    code_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Mark candidates lying on a registered building as changes to it rather than new construction.

    Touching pieces of one building (footprints cut at vector-tile edges) are joined first
    (:func:`dissolve_buildings`). A candidate of which at least ``covered_fraction`` of the area lies on
    one joined building is a change to that building (rebuilt, rooftop addition); anything else is new.

    Parameters
    ----------
    candidates : GeoDataFrame in any CRS
    buildings : GeoDataFrame of registered footprints in any CRS
    covered_fraction : float
    code_column : str, optional
        Column identifying a building; by default the first of ``code``, ``id``, ``osm_id`` present, else
        the row index.

    Returns
    -------
    GeoDataFrame
        A copy of ``candidates`` with ``match`` (``"new"`` or ``"registered_building_changed"``),
        ``building_code`` (the piece the candidate overlaps most, for a match; else None),
        ``covered`` (share of the candidate on registered buildings, all of them) and
        ``building_share`` (share of the matched building's footprint the candidate covers: near 1 for a
        rebuilt building, small for a rooftop addition; NaN for new).
    """
    out = candidates.copy()
    n = len(out)
    match = np.full(n, MATCH_NEW, dtype=object)
    code = np.full(n, None, dtype=object)
    covered = np.zeros(n)
    share = np.full(n, np.nan)
    registered = dissolve_buildings(buildings, code_column=code_column)
    if n and len(registered):
        mine = transform_geometries(out.geometry.to_numpy(), out.crs, registered.crs)
        area = shapely.area(mine)
        which, hit = STRtree(registered.geometry.to_numpy()).query(mine, predicate="intersects")
        overlap = shapely.area(shapely.intersection(mine[which], registered.geometry.to_numpy()[hit]))
        np.add.at(covered, which, overlap)
        covered = np.divide(covered, area, out=np.zeros(n), where=area > 0)
        best = pd.DataFrame({"which": which, "hit": hit, "overlap": overlap}).sort_values(
            ["which", "overlap"], ascending=[True, False], kind="stable"
        )
        best = best.drop_duplicates("which")
        for i, b, amount in best.itertuples(index=False):
            if area[i] <= 0 or amount < covered_fraction * area[i]:
                continue
            building = registered.iloc[b]
            pieces = np.asarray(building["piece_geometries"], dtype=object)
            on_piece = shapely.area(shapely.intersection(mine[i], pieces))
            match[i] = MATCH_REGISTERED
            code[i] = building["codes"][int(np.argmax(on_piece))]
            share[i] = amount / building.geometry.area
    out["match"] = match
    # object dtype keeps None for "no building" (pandas 3 would infer strings with NaN).
    out["building_code"] = pd.Series(code, index=out.index, dtype=object)
    out["covered"] = covered
    out["building_share"] = share
    return out


def join_building_changes(candidates: gpd.GeoDataFrame, *, gap_m: float = CHANGE_JOIN_M) -> gpd.GeoDataFrame:
    """Candidates that change the same registered building and lie within ``gap_m`` of each other, as one.

    A street office files one case per changed building, so a rebuilt building that the detector cut in
    two must not become two cases. Parts of one building far apart (two separate rooftop additions) stay
    separate. A joined candidate keeps the id and chips of its largest part, so running the pipeline again
    gives the same ids; its outline is the parts' union closed across the gap; ``area_m2`` and
    ``building_share`` are sums, ``confidence`` and ``covered`` area-weighted means, ``width_m`` the
    largest, the pixel box the union and ``colour_steel`` true if any part's is.

    Parameters
    ----------
    candidates : GeoDataFrame
        :func:`match_buildings` output, in EPSG:4326.
    gap_m : float
    """
    registered = np.flatnonzero((candidates["match"] == MATCH_REGISTERED).to_numpy())
    if len(registered) < 2:
        return candidates
    crs = metric_crs(*_centre_lonlat(candidates.geometry.iloc[registered]))
    metric = transform_geometries(candidates.geometry.to_numpy()[registered], STORAGE_CRS, crs)
    codes = candidates["building_code"].to_numpy()[registered]
    left, right = STRtree(metric).query(metric, predicate="dwithin", distance=gap_m)
    same = (left < right) & (codes[left] == codes[right])
    groups = _components(len(registered), left[same], right[same])
    labels = np.unique(groups)
    if len(labels) == len(registered):
        return candidates
    out = candidates.copy()
    drop = []
    for group in labels:
        members = np.flatnonzero(groups == group)
        if len(members) < 2:
            continue
        rows = registered[members]
        area = out["area_m2"].to_numpy()[rows]
        keep = rows[int(np.argmax(area))]
        joined = shapely.union_all(metric[members]).buffer(gap_m / 2, join_style="mitre")
        joined = joined.buffer(-gap_m / 2, join_style="mitre")
        weights = area / area.sum()
        index = out.index[keep]
        out.loc[index, "geometry"] = shapely.normalize(_to_storage(np.array([joined]), crs))[0]
        out.loc[index, "area_m2"] = area.sum()
        out.loc[index, "building_share"] = out["building_share"].to_numpy()[rows].sum()
        for column in ("confidence", "covered"):
            out.loc[index, column] = float(out[column].to_numpy()[rows] @ weights)
        out.loc[index, "width_m"] = out["width_m"].to_numpy()[rows].max()
        out.loc[index, "compactness"] = 4.0 * math.pi * joined.area / joined.length**2
        for column, pick in (("col0", np.min), ("row0", np.min), ("col1", np.max), ("row1", np.max)):
            out.loc[index, column] = int(pick(out[column].to_numpy()[rows]))
        if "colour_steel" in out:
            out.loc[index, "colour_steel"] = bool(out["colour_steel"].to_numpy()[rows].any())
        drop += [out.index[r] for r in rows if r != keep]
    return out.drop(index=drop).reset_index(drop=True)


def locate_candidates(candidates: gpd.GeoDataFrame, locator: UnitLocator) -> gpd.GeoDataFrame:
    """A copy of ``candidates`` with the street, community, grid, courtyard and worker at each one.

    Each candidate is located by its representative point (a point inside the polygon, unlike the
    centroid of an L-shaped shed).
    """
    out = candidates.copy()
    if len(out):
        points = out.geometry.to_crs(STORAGE_CRS).representative_point()
        found = locator.locate(points.x.to_numpy(), points.y.to_numpy())
        for column in (*LOCATE_LEVELS, "worker"):
            out[column] = pd.Series(found[column].to_numpy(dtype=object), index=out.index, dtype=object)
    else:
        for column in (*LOCATE_LEVELS, "worker"):
            out[column] = pd.Series([], dtype=object)
    return out


def pixel_size_m(transform: Affine, crs) -> float:
    """Side of a (square-equivalent) pixel in metres at the raster origin."""
    crs = pyproj.CRS.from_user_input(crs)
    side = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
    if crs.is_projected:
        return side * crs.axis_info[0].unit_conversion_factor
    lon, lat = _to_lonlat(np.array([transform.c]), np.array([transform.f]), crs)
    return side * 111_320.0 * math.sqrt(abs(math.cos(math.radians(float(lat[0])))))


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label (the smallest member index) of each of ``n`` nodes, given edges."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _apply_affine(geometry: np.ndarray, transform: Affine) -> np.ndarray:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def apply(x, y):
        return a * x + b * y + c, d * x + e * y + f

    return shapely.transform(geometry, lambda xy: np.column_stack(apply(xy[:, 0], xy[:, 1])))


def _to_metric(geometry: np.ndarray, crs: pyproj.CRS) -> np.ndarray:
    if crs.is_projected and crs.axis_info[0].unit_conversion_factor == 1.0:
        return geometry
    lon, lat = _centre_lonlat(gpd.GeoSeries(geometry, crs=crs))
    return transform_geometries(geometry, crs, metric_crs(lon, lat))


def _to_storage(geometry: np.ndarray, crs: pyproj.CRS) -> np.ndarray:
    # gridmap.crs caches its transformers; geopandas' to_crs builds one per call (tens of ms for CGCS2000)
    return transform_geometries(geometry, crs, STORAGE_CRS)


def _centre_lonlat(series: gpd.GeoSeries) -> tuple[float, float]:
    minx, miny, maxx, maxy = series.total_bounds
    lon, lat = _to_lonlat(np.array([(minx + maxx) / 2]), np.array([(miny + maxy) / 2]), series.crs)
    return float(lon[0]), float(lat[0])


def _to_lonlat(x: np.ndarray, y: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = transformer(crs, STORAGE_CRS).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def _building_codes(buildings: gpd.GeoDataFrame, code_column: str | None) -> np.ndarray:
    if code_column is None:
        code_column = next((c for c in ("code", "id", "osm_id") if c in buildings.columns), None)
    values = buildings.index if code_column is None else buildings[code_column]
    return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)


def _empty_candidates() -> gpd.GeoDataFrame:
    columns = {
        "id": pd.Series([], dtype=object),
        **{c: pd.Series([], dtype=np.float64) for c in ("area_m2", "width_m", "compactness", "confidence")},
        **{c: pd.Series([], dtype=np.int64) for c in ("col0", "row0", "col1", "row1")},
    }
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=STORAGE_CRS), crs=STORAGE_CRS)
