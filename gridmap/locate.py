"""Locate points in polygons fast: a cell index, with exact tests only near polygon boundaries.

:class:`PolygonLocator` answers "which polygon is this point in?" for millions of points at once, with
answers identical to a bare ``STRtree.query(points, predicate="intersects")`` reduced to the lowest polygon
index per point. :class:`UnitLocator` uses one per level of the unit table to find the street, community,
grid, courtyard and grid worker of reports, photos and detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely import STRtree

from gridmap.codes import parent_code
from gridmap.crs import bd09_to_wgs84, gcj02_to_wgs84, resolve_crs
from gridmap.errors import CRSError, InputError
from gridmap.units import check_units

# With the crossing test cheap, a few hundred cells per polygon are enough: on realistic grids 14% of
# points then fall in edge cells, and doubling the cells gains a fifth in speed for half again the memory.
DEFAULT_CELLS_PER_POLYGON = 256
# 2**25 cells is at most a 128 MB table.
DEFAULT_MAX_CELLS = 2**25
# Table code of a cell in no polygon; a cell in polygon k (the lowest) has code k + 2, and edge cell e
# (the e-th in flat order) has code len(geometries) + 2 + e.
_NONE = 1
# Cells of padding around the polygons' bounds. With two, the outermost ring of cells is never an edge
# cell, so a point clamped into it (far outside, or NaN) is answered by the table alone, and edge cells
# adjacent in flat order share a row (in column-major order, a column).
_PAD = 2
# Shewchuk's bound on the error of a floating-point 2x2 orientation determinant, relative to the sum of
# the magnitudes of its two products: a determinant farther from zero than this has the right sign.
_ORIENT_ERROR = (3.0 + 16.0 * 2.0**-53) * 2.0**-53
# A ray meeting more segment entries than this (along a long straight boundary in every direction) costs
# more than the STRtree, which answers that cell's points instead.
_MAX_RAY_ENTRIES = 64
# The levels a point is located in; buildings are too small and too many to be worth it.
LOCATE_LEVELS: tuple[str, ...] = ("street", "community", "grid", "courtyard")
# Lon/lat systems points may come in, and how to bring them to WGS84 (CGCS2000 is within a metre).
_TO_WGS84 = {"wgs84": None, "cgcs2000": None, "gcj02": gcj02_to_wgs84, "bd09": bd09_to_wgs84}


class PolygonLocator:
    """Which polygon contains (or touches) each point, for many points at once.

    The polygons' bounds, padded by two cells, are cut into a raster of square cells. A cell whose closed
    box comes within a hair of a polygon boundary is an *edge* cell; the other cells form connected regions
    that no boundary crosses, so all points of a region lie in the same polygons and one exact query per
    region labels them. A point in a region cell is answered by one table look-up. A point in an edge cell
    is answered by crossing parity: its ray along the row or column to the middle of a region cell crosses
    only segments listed for the edge cells on the way, and each crossing toggles that segment's polygon
    part against the parts the region lies in. Crossings are decided with floating-point orientation tests
    and a proven error bound; the rare point too close to a segment to decide (on a boundary, say) goes to
    the STRtree.

    The answers equal ``STRtree(geometries).query(points, predicate="intersects")`` reduced to the lowest
    polygon index per point, ``-1`` for none, as long as the polygons are valid; multipolygons whose parts
    overlap are fine too. (Elsewhere GEOS's answer for an invalid polygon depends on its algorithm.)

    Parameters
    ----------
    geometries : sequence of Polygon or MultiPolygon
        In one planar coordinate system. ``None`` and empty geometries are allowed and never match.
    cells_per_polygon : int
        Raster size relative to the number of polygons; more cells put fewer points near a boundary.
    max_cells : int
        Cap on the raster size. The table takes up to 4 bytes a cell, each edge cell 16 bytes more, each
        boundary segment 36 bytes and 4 more per cell it meets (:attr:`nbytes` has the total: 125 MB for
        Shanghai's 40,625 grids with the defaults). Building takes about three times that for a while.

    Attributes
    ----------
    geometries : numpy.ndarray of shapely geometries
    tree : shapely.STRtree
        Over ``geometries``; labels the regions and settles undecided points.
    x0, y0 : float
        Lower-left corner of the raster. Cell ``(row, col)`` spans ``x0 + col * cell_size`` to
        ``x0 + (col + 1) * cell_size`` in x, and likewise in y.
    cell_size : float
    nrows, ncols : int

    Examples
    --------
    >>> from shapely import box
    >>> locator = PolygonLocator([box(0, 0, 2, 2), box(2, 0, 4, 2), box(1, 1, 1.5, 1.5)])
    >>> locator.locate([1.0, 2.0, 3.0, 1.2, 5.0, float("nan")], [1.0, 1.0, 1.0, 1.2, 1.0, 0.0]).tolist()
    [0, 0, 1, 0, -1, -1]
    """

    def __init__(
        self,
        geometries: Sequence[shapely.Geometry] | np.ndarray,
        *,
        cells_per_polygon: int = DEFAULT_CELLS_PER_POLYGON,
        max_cells: int = DEFAULT_MAX_CELLS,
    ) -> None:
        self.geometries = np.asarray(geometries, dtype=object)
        if self.geometries.ndim != 1:
            raise ValueError("geometries must be a one-dimensional sequence")
        if max_cells < (2 * _PAD + 1) ** 2:
            raise ValueError(f"max_cells must be at least {(2 * _PAD + 1) ** 2}, the padding alone")
        self.tree = STRtree(self.geometries)
        present = ~(shapely.is_missing(self.geometries) | shapely.is_empty(self.geometries))
        count = int(present.sum())
        bounds = shapely.total_bounds(self.geometries[present]) if count else np.zeros(4)
        minx, miny, maxx, maxy = (float(b) for b in bounds)
        self.cell_size = _cell_size(bounds, max(1, min(max_cells, cells_per_polygon * count)), max_cells)
        self.ncols = int((maxx - minx) / self.cell_size) + 2 * _PAD + 1
        self.nrows = int((maxy - miny) / self.cell_size) + 2 * _PAD + 1
        self.x0 = minx - _PAD * self.cell_size
        self.y0 = miny - _PAD * self.cell_size
        self._inv = 1.0 / self.cell_size
        self._base = len(self.geometries) + 2
        self._build()

    @property
    def nbytes(self) -> int:
        """Memory of the index in bytes (not counting the STRtree and the geometries)."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray) and a.dtype != object)

    @property
    def edge_cells(self) -> np.ndarray:
        """Flat indices (see :meth:`cell_of`) of the edge cells, ascending."""
        return np.flatnonzero(self._table >= self._base)

    def locate(self, x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> np.ndarray:
        """Index of the lowest-numbered polygon containing or touching each point; ``-1`` for none or NaN.

        ``x`` and ``y`` broadcast against each other; the result has their broadcast shape, dtype int64.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        shape = x.shape
        x, y = x.ravel(), y.ravel()
        cell = self.cell_of(x, y)
        codes = self._table.take(cell)
        result = codes.astype(np.int64)
        result -= 2
        near = np.flatnonzero(codes >= self._base)
        if near.size:
            edge = codes[near].astype(np.int64) - self._base
            result[near] = self._near_boundary(x[near], y[near], cell[near], edge)
        return result.reshape(shape)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index (``row * ncols + col``) of each point, clamped into the raster.

        The one formula for cell coordinates, ``(x - x0) * (1 / cell_size)`` in floating point; the build
        converts vertices with it too. Points beyond the raster, NaN included, land in its outer ring.
        """
        col = self._cell_axis(np.asarray(x, dtype=np.float64), self.x0, self.ncols)
        row = self._cell_axis(np.asarray(y, dtype=np.float64), self.y0, self.nrows)
        row *= self.ncols
        row += col
        return row

    def _cell_axis(self, values: np.ndarray, origin: float, n: int) -> np.ndarray:
        scaled = np.subtract(values, origin)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled *= self._inv
        # fmax and fmin, unlike clip, replace NaN by the bound; after them truncation is floor.
        np.fmax(scaled, 0.0, out=scaled)
        np.fmin(scaled, n - 1, out=scaled)
        return scaled.astype(np.intp)

    def _exact(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        which, polygon = self.tree.query(shapely.points(x, y), predicate="intersects")
        return lowest_hit(len(x), which, polygon)

    def _near_boundary(self, x: np.ndarray, y: np.ndarray, cell: np.ndarray, edge: np.ndarray) -> np.ndarray:
        """Answer points in edge cells (``edge`` numbers the cell) by crossing parity.

        The point's ray runs along its row or column, ``length`` edge cells in ``direction``, to ``q`` at
        the middle of the region cell beyond. Every segment the ray crosses is listed for a cell on the
        way, once if entries that the next cell on the way lists again are dropped. A polygon part holds
        the point iff it holds the region's cells (which its boundary never touches) and the ray crosses it
        an even number of times, or neither. A segment is crossed iff it straddles the ray's line
        (half-open, so a vertex on the line counts once) and the point and ``q`` lie on either side of its
        line, by the signs of two orientation determinants. Where one is within its error bound of zero, or the point
        may lie on the segment, or the cell has no ray, the point goes to the STRtree instead.
        """
        packed, region = self._rays.take(edge, axis=0).T
        length, direction = packed >> 2, packed & 3
        vertical = direction >= 2
        # Middle of the region cell, along the ray's axis: direction 0 and 2 step up the index, 1 and 3 down.
        row, col = np.divmod(cell, self.ncols)
        reach = np.where(vertical, row, col) + (1 - 2 * (direction & 1)) * length + 0.5
        q_along = np.where(vertical, self.y0, self.x0) + reach * self.cell_size

        path_point = np.repeat(np.arange(len(x)), length)
        step = np.array([1, -1, self.ncols, -self.ncols])[direction]
        path_cell = cell[path_point] + _ranges(length) * step[path_point]
        path_edge = self._table.take(path_cell).astype(np.int64) - self._base
        first = self._entry_bounds.take(path_edge)
        counts = self._entry_bounds.take(path_edge + 1) - first
        point = path_point[np.repeat(np.arange(len(path_cell)), counts)]
        entries = self._entries.take(_ranges(counts) + np.repeat(first, counts))
        keep = np.flatnonzero((entries & (1 << direction)[point]) == 0)
        point, segment = point[keep], entries[keep] >> 4
        ends = self._segments.take(segment, axis=0)

        # Coordinates across the ray (t) and along it (s); a vertical ray sees the plane mirrored, which
        # flips every orientation's sign alike.
        across = vertical[point]
        p_t = np.where(across, x[point], y[point])
        a_t = np.where(across, ends[:, 0], ends[:, 1])
        b_t = np.where(across, ends[:, 2], ends[:, 3])
        straddle = (a_t > p_t) != (b_t > p_t)
        # Besides segments straddling the ray's line, only those whose top end is level with the point can
        # pass through it.
        near = np.flatnonzero(straddle | (p_t == np.maximum(a_t, b_t)))
        point, segment, straddle, across = point[near], segment[near], straddle[near], across[near]
        p_t, a_t, b_t, ends = p_t[near], a_t[near], b_t[near], ends.take(near, axis=0)
        p_s = np.where(across, y[point], x[point])
        a_s = np.where(across, ends[:, 1], ends[:, 0])
        b_s = np.where(across, ends[:, 3], ends[:, 2])

        d_s, d_t = b_s - a_s, b_t - a_t
        common = d_s * (p_t - a_t)
        to_p, to_q = d_t * (p_s - a_s), d_t * (q_along[point] - a_s)
        orient_p, orient_q = common - to_p, common - to_q
        undecided = np.abs(orient_p) <= _ORIENT_ERROR * (np.abs(common) + np.abs(to_p))
        undecided |= straddle & (np.abs(orient_q) <= _ORIENT_ERROR * (np.abs(common) + np.abs(to_q)))
        crossing = straddle & ((orient_p > 0) != (orient_q > 0))

        # A point whose ray crosses nothing lies in its region's polygons; the others need parities.
        result = self._region_lowest.take(region).astype(np.int64)
        crossed = point[crossing]
        crossed = crossed[np.r_[True, crossed[1:] != crossed[:-1]]] if len(crossed) else crossed
        n = len(self._part_polygon)
        members = self._region_start[region[crossed] + 1] - self._region_start[region[crossed]]
        member = _ranges(members) + np.repeat(self._region_start[region[crossed]], members)
        keys = _odd_keys(
            np.concatenate(
                [
                    point[crossing] * n + self._segment_part[segment[crossing]],
                    np.repeat(crossed, members) * n + self._region_parts[member],
                ]
            )
        )
        owner, part = np.divmod(keys, n)
        # Keys are sorted and parts numbered in polygon order, so a point's first key has its lowest polygon.
        first_key = np.ones(len(owner), dtype=bool)
        first_key[1:] = owner[1:] != owner[:-1]
        result[crossed] = -1
        result[owner[first_key]] = self._part_polygon[part[first_key]]
        unsure = np.union1d(point[undecided], np.flatnonzero(length == 0))
        if unsure.size:
            result[unsure] = self._exact(x[unsure], y[unsure])
        return result

    def _build(self) -> None:
        parts, part_polygon = shapely.get_parts(self.geometries, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        xy, vertex_ring = shapely.get_coordinates(rings, return_index=True)
        start = np.flatnonzero(vertex_ring[1:] == vertex_ring[:-1])
        # One contiguous record (ax, ay, bx, by) per segment: the query gathers them at random.
        self._segments = np.concatenate([xy[start], xy[start + 1]], axis=1)
        # Parity is counted per part, which also gets multipolygons with overlapping parts right.
        self._part_polygon = part_polygon.astype(np.int32)
        self._segment_part = ring_part[vertex_ring[start]].astype(np.int32)

        cells, segment = self._boundary_cells()
        entry_start = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if len(cells) else cells
        edge_cells = cells[entry_start]
        mask = np.ones(self.nrows * self.ncols, dtype=np.uint8)
        mask[edge_cells] = 0
        regions, labels = cv2.connectedComponents(
            mask.reshape(self.nrows, self.ncols), connectivity=4, ltype=cv2.CV_32S
        )
        del mask
        labels = labels.ravel()
        lowest = self._label_regions(labels, regions, parts)

        index_dtype = np.int32 if len(cells) < 2**31 else np.int64
        self._entry_bounds = np.r_[entry_start, len(cells)].astype(index_dtype)
        self._rays = _rays(edge_cells, self._entry_bounds, labels, self.nrows, self.ncols)
        # Entries are sorted by (cell, segment), so a key lookup finds a segment in a neighbouring cell.
        # Each entry packs its segment with one flag per ray direction into one integer: one gather.
        nseg = len(self._segments)
        key = cells * nseg + segment
        flags = sum(
            _contains_sorted(key, key + step * nseg).astype(np.int64) << direction
            for direction, step in enumerate((1, -1, self.ncols, -self.ncols))
        )
        self._entries = (segment << 4 | flags).astype(np.int32 if nseg < 2**27 else np.int64)

        lut = (lowest + 2).astype(np.min_scalar_type(self._base + len(edge_cells)))
        self._table = lut.take(labels)
        self._table[edge_cells] = self._base + np.arange(len(edge_cells))

    def _label_regions(self, labels: np.ndarray, regions: int, parts: np.ndarray) -> np.ndarray:
        """Query one cell centre per region; keep each region's parts and lowest polygon (-1 for none)."""
        # Any one cell of a region will do, so let later writes win.
        representative = np.zeros(regions, dtype=np.int64)
        chunk = 1 << 20
        for start in range(0, labels.size, chunk):
            representative[labels[start : start + chunk]] = np.arange(start, min(start + chunk, labels.size))
        row, col = np.divmod(representative, self.ncols)
        size = self.cell_size
        centres = shapely.points(self.x0 + (col + 0.5) * size, self.y0 + (row + 0.5) * size)
        which, part = STRtree(parts).query(centres, predicate="intersects")
        # Label 0 is cv2's background, the edge cells: it gets no parts.
        which, part = which[which > 0], part[which > 0]
        order = np.lexsort((part, which))
        self._region_parts = part[order].astype(np.int32)
        self._region_start = np.searchsorted(which[order], np.arange(regions + 1)).astype(np.int32)
        self._region_lowest = lowest_hit(regions, which, self._part_polygon[part]).astype(np.int32)
        return self._region_lowest

    def _boundary_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (flat cell, segment) pair where the cell's box, widened by ``delta``, meets the segment.

        Sorted by cell, then segment. Why this makes the index exact: let ``T(x) = (x - x0) * (1 /
        cell_size)`` in real arithmetic. Every floating-point cell coordinate computed here and in
        :meth:`cell_of` is within a few ulps of ``max(nrows, ncols)`` of its ``T``, far below ``delta``. So
        a point whose computed cell is ``c`` lies, under ``T``, in ``c``'s box widened by ``delta / 2``. If
        ``c`` is a region cell, no boundary meets that widened box, which overlaps the region, so the point
        lies in exactly the region's polygons; this holds for points on cell lines too. If ``c`` is an edge
        cell, the widened boxes of the cells on the point's ray hold every segment the ray can cross.
        """
        delta = max(self.nrows, self.ncols) * 2.0**-40
        count = len(self._segments)
        keys = [np.zeros(0, dtype=np.int64)]
        # In chunks of segments, to bound the memory the intermediate (cell, segment) arrays take.
        for first in range(0, count, 1 << 17):
            ends = self._segments[first : first + (1 << 17)]
            u = (ends[:, 0::2] - self.x0) * self._inv
            v = (ends[:, 1::2] - self.y0) * self._inv
            ua, ub, va, vb = u[:, 0], u[:, 1], v[:, 0], v[:, 1]
            flat = np.abs(ub - ua) >= np.abs(vb - va)
            rows, cols, which = _supercover(ua[flat], va[flat], ub[flat], vb[flat], delta)
            keys.append((rows * self.ncols + cols) * count + first + np.flatnonzero(flat)[which])
            cols, rows, which = _supercover(va[~flat], ua[~flat], vb[~flat], ub[~flat], delta)
            keys.append((rows * self.ncols + cols) * count + first + np.flatnonzero(~flat)[which])
        key = np.sort(np.concatenate(keys))
        cells, segment = np.divmod(key, max(1, count))
        return cells, segment


class UnitLocator:
    """The street, community, grid, courtyard and grid worker at points, from a unit table.

    One :class:`PolygonLocator` per level in :data:`LOCATE_LEVELS`, over that level's units sorted by code,
    so a point on a shared edge goes to the lower code. A point in a grid takes its community and street
    from the grid's parent chain (``parent_code``), so the three always agree; a point in no grid takes its
    community from the community level and its street from that community, or from the street level when
    it is in no community either. Courtyards are located on their own.

    Parameters
    ----------
    units : geopandas.GeoDataFrame
        A unit table (:mod:`gridmap.units`); buildings are ignored.
    **options
        Passed to every :class:`PolygonLocator`.

    Examples
    --------
    >>> from shapely import box
    >>> from gridmap.units import make_units
    >>> area = box(120.16, 30.24, 120.18, 30.26)
    >>> units = make_units([
    ...     {"code": "330102901", "level": "street", "parent_code": "330102", "geometry": area},
    ...     {"code": "330102901001", "level": "community", "parent_code": "330102901", "geometry": area},
    ...     {"code": "330102901001001", "level": "grid", "parent_code": "330102901001", "worker": "王芳",
    ...      "geometry": box(120.16, 30.24, 120.17, 30.26)},
    ... ])
    >>> found = UnitLocator(units).locate_one(120.165, 30.25)
    >>> found["grid"], found["street"], found["worker"], found["courtyard"], found["inside"]
    ('330102901001001', '330102901', '王芳', None, True)
    """

    def __init__(self, units: gpd.GeoDataFrame, **options) -> None:
        check_units(units)
        parent = {c: p for c, p in zip(units["code"], units["parent_code"]) if isinstance(p, str) and p}
        self.locators: dict[str, PolygonLocator] = {}
        # Per level, its codes in locator order plus a trailing None, so that index -1 reads as None.
        self._codes: dict[str, np.ndarray] = {}
        for level in LOCATE_LEVELS:
            rows = units[units["level"] == level].sort_values("code", kind="stable")
            self.locators[level] = PolygonLocator(rows.geometry.to_numpy(), **options)
            self._codes[level] = np.append(rows["code"].to_numpy(dtype=object), None)
            if level == "grid":
                workers = [w if isinstance(w, str) else None for w in rows["worker"]]
                self._worker = np.array([*workers, None], dtype=object)

        def up(code: str | None, level: str) -> str | None:
            return None if code is None else parent.get(code) or parent_code(code, level)

        self._grid_community = np.array([up(c, "grid") for c in self._codes["grid"]], dtype=object)
        self._grid_street = np.array([up(c, "community") for c in self._grid_community], dtype=object)
        self._community_street = np.array([up(c, "community") for c in self._codes["community"]], dtype=object)

    def locate(self, lon, lat, *, crs: str = "wgs84") -> pd.DataFrame:
        """Units at each point, one row per point in input order.

        Parameters
        ----------
        lon, lat : array-like of float
            Broadcast against each other and flattened.
        crs : str
            ``wgs84``, ``cgcs2000`` (taken as WGS84), ``gcj02`` or ``bd09``.

        Returns
        -------
        pandas.DataFrame
            Columns ``lon``, ``lat`` (WGS84), ``street``, ``community``, ``grid``, ``courtyard`` (codes or
            None), ``worker`` (the grid's worker or None) and ``inside`` (whether the point is in a street).

        Raises
        ------
        InputError
            If a coordinate is NaN or out of range; CRSError if ``crs`` is not a lon/lat system above.
        """
        lon, lat, columns, inside = self._columns(lon, lat, crs)
        frame = pd.DataFrame({"lon": lon, "lat": lat})
        for name, values in columns.items():
            # Object dtype keeps None; pandas would otherwise make a string column with NaN.
            frame[name] = pd.Series(values, dtype=object)
        frame["inside"] = inside
        return frame

    def _columns(self, lon, lat, crs: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """WGS84 lon, lat, the unit code columns and ``inside``, as arrays (what :meth:`locate` tabulates)."""
        lon, lat = (a.ravel() for a in np.broadcast_arrays(np.asarray(lon, float), np.asarray(lat, float)))
        to_wgs84 = _converter_to_wgs84(crs)
        _check_lonlat(lon, lat)
        if to_wgs84 is not None:
            lon, lat = to_wgs84(lon, lat)
        found = {level: self.locators[level].locate(lon, lat) for level in LOCATE_LEVELS}
        grid, community = found["grid"], found["community"]
        in_grid = grid >= 0
        community_code = np.where(in_grid, self._grid_community[grid], self._codes["community"][community])
        outside_grid_street = np.where(
            community >= 0, self._community_street[community], self._codes["street"][found["street"]]
        )
        street_code = np.where(in_grid, self._grid_street[grid], outside_grid_street)
        columns = {
            "street": street_code,
            "community": community_code,
            "grid": self._codes["grid"][grid],
            "courtyard": self._codes["courtyard"][found["courtyard"]],
            "worker": self._worker[grid],
        }
        inside = in_grid | (community >= 0) | (found["street"] >= 0)
        return lon, lat, columns, inside

    def locate_one(self, lon: float, lat: float, *, crs: str = "wgs84") -> dict:
        """Units at one point, as a dict with the columns of :meth:`locate` as keys (without building a
        table: a service locates one report at a time)."""
        x, y, columns, inside = self._columns([lon], [lat], crs)
        return {"lon": float(x[0]), "lat": float(y[0]), **{k: v[0] for k, v in columns.items()},
                "inside": bool(inside[0])}


def _check_lonlat(lon: np.ndarray, lat: np.ndarray) -> None:
    """Raise :class:`InputError` naming the first NaN or out-of-range point and how many there are."""
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((np.abs(lon) <= 180) & (np.abs(lat) <= 90)))
    if bad.size:
        first = bad[0]
        where = f"point {first}" + (f" (and {bad.size - 1} more of {lon.size})" if bad.size > 1 else "")
        raise InputError(
            f"{where} has lon={float(lon[first])}, lat={float(lat[first])}: expected lon within -180..180 "
            "and lat within -90..90, not NaN"
        )


def _converter_to_wgs84(crs: str):
    """The function taking lon/lat in ``crs`` to WGS84, ``None`` when none is needed."""
    name = resolve_crs(crs).name
    if name not in _TO_WGS84:
        raise CRSError(f"cannot locate points in {name}: give lon/lat in {', '.join(_TO_WGS84)}")
    return _TO_WGS84[name]


def lowest_hit(n: int, which: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Reduce ``STRtree.query`` output pairs to the lowest polygon index per input, ``-1`` where none.

    Examples
    --------
    >>> lowest_hit(3, np.array([0, 0, 2]), np.array([5, 3, 1])).tolist()
    [3, -1, 1]
    """
    result = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(result, which, polygon)
    result[result == np.iinfo(np.int64).max] = -1
    return result


def _cell_size(bounds: np.ndarray, target: int, max_cells: int) -> float:
    """Side of square cells giving about ``target`` cells over ``bounds``, padding within ``max_cells``."""
    minx, miny, maxx, maxy = bounds
    width, height = maxx - minx, maxy - miny
    if max(width, height) == 0:
        size = 1.0
    elif width * height > 0:
        size = float(np.sqrt(width * height / target))
    else:
        size = max(width, height) / target
    # Cell corners computed as x0 + col * cell_size must stay well inside their cells.
    size = max(size, float(np.abs(bounds).max()) * 2.0**-30)
    while (int(width / size) + 2 * _PAD + 1) * (int(height / size) + 2 * _PAD + 1) > max_cells:
        size *= 1.02
    return size


def _supercover(ua, va, ub, vb, delta):
    """Cells (row, col, segment) met by segments widened by ``delta``, for segments with ``|du| >= |dv|``.

    Walks the columns each segment spans; within a column the segment's v-range gives the rows. The
    slope is at most 1, so the interpolation loses no more than a few ulps. Floating-point operations are
    monotonic, so the cells a segment meets in one row, or one column, are contiguous: a ray meets each
    segment in one stretch of cells (``_near_boundary`` relies on it).
    """
    swap = ua > ub
    ua, ub = np.where(swap, ub, ua), np.where(swap, ua, ub)
    va, vb = np.where(swap, vb, va), np.where(swap, va, vb)
    du, dv = ub - ua, vb - va
    slope = np.divide(dv, du, out=np.zeros_like(dv), where=du > 0)
    c0 = np.floor(ua - delta).astype(np.int64)
    span = np.floor(ub + delta).astype(np.int64) - c0 + 1
    segment = np.repeat(np.arange(len(ua)), span)
    col = _ranges(span) + c0[segment]
    lo = np.maximum(ua[segment], col - delta)
    hi = np.minimum(ub[segment], col + 1 + delta)
    v_lo = va[segment] + (lo - ua[segment]) * slope[segment]
    v_hi = va[segment] + (hi - ua[segment]) * slope[segment]
    r0 = np.floor(np.minimum(v_lo, v_hi) - delta).astype(np.int64)
    height = np.floor(np.maximum(v_lo, v_hi) + delta).astype(np.int64) - r0 + 1
    pair = np.repeat(np.arange(len(col)), height)
    return _ranges(height) + r0[pair], col[pair], segment[pair]


def _rays(edge_cells, entry_bounds, labels, nrows, ncols):
    """For each edge cell, the cheapest ray to a region cell: straight along its row or column.

    Returns one row per edge cell: ``length << 2 | direction`` (direction 0-3 is right, left, up, down;
    the ray crosses ``length`` edge cells, its own included) and the label of the region cell it reaches.
    The direction meeting the fewest segment entries wins; a cell where every direction meets more than
    :data:`_MAX_RAY_ENTRIES` gets length 0 and leaves its points to the STRtree.
    """
    entries = np.diff(entry_bounds).astype(np.int64)
    row, col = np.divmod(edge_cells, ncols)
    best = np.full(len(edge_cells), _MAX_RAY_ENTRIES + 1, dtype=np.int64)
    length = np.zeros(len(edge_cells), dtype=np.int64)
    direction = np.zeros(len(edge_cells), dtype=np.int64)
    # Runs of edge cells in a row are consecutive in flat order, runs in a column in column-major order;
    # the outer ring of cells is never an edge cell, so no run wraps around.
    for order_key, forward in ((edge_cells, 0), (col * nrows + row, 2)):
        order = np.argsort(order_key, kind="stable")
        key = order_key[order]
        starts_run = np.ones(len(key), dtype=bool)
        starts_run[1:] = key[1:] != key[:-1] + 1
        run = np.cumsum(starts_run) - 1
        run_first = np.flatnonzero(starts_run)
        first = run_first[run]
        last = np.r_[run_first[1:] - 1, len(key) - 1][run]
        prefix = np.r_[0, np.cumsum(entries[order])]
        here = np.arange(len(key))
        for way, cost, cells in (
            (forward, prefix[last + 1] - prefix[here], last - here + 1),
            (forward + 1, prefix[here + 1] - prefix[first], here - first + 1),
        ):
            better = np.flatnonzero(cost < best[order])
            best[order[better]] = cost[better]
            length[order[better]] = cells[better]
            direction[order[better]] = way
    step = np.array([1, -1, ncols, -ncols])[direction]
    # Label 0, the edge cells' background, holds no parts.
    region = np.where(length > 0, labels[edge_cells + length * step], 0)
    return np.stack([length << 2 | direction, region], axis=1).astype(np.int32)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in counts])`` without the loop."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(len(starts)) - starts


def _odd_keys(keys: np.ndarray) -> np.ndarray:
    """The values occurring an odd number of times in ``keys``, ascending.

    Examples
    --------
    >>> _odd_keys(np.array([5, 3, 5, 7, 5])).tolist()
    [3, 5, 7]
    """
    # Both parts of the caller's keys come sorted by point, and timsort merges such runs fast.
    keys = np.sort(keys, kind="stable")
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys
    counts = np.diff(np.r_[starts, len(keys)])
    return keys[starts[counts % 2 == 1]]


def _contains_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Whether each needle occurs in the sorted ``haystack``."""
    if not len(haystack):
        return np.zeros(len(needles), dtype=bool)
    at = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[at] == needles
