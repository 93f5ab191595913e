"""Locate points in polygons fast: a cell index with exact tests only near polygon boundaries.

:class:`PolygonLocator` answers "which polygon is this point in?" for millions of points, with answers
identical to a bare ``STRtree.query(points, predicate="intersects")`` reduced to the lowest polygon index.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import shapely
from shapely import STRtree

# A cell index over more cells than this per polygon stops paying: the exact-test share shrinks only with
# the square root of the cell count while the table's cache misses grow.
DEFAULT_CELLS_PER_POLYGON = 1024
# 2**25 cells is 64 MB of table (uint16 codes; 128 MB with 65,534 polygons or more).
DEFAULT_MAX_CELLS = 2**25
# Table codes: 0 = near a boundary (test exactly), 1 = in no polygon, k + 2 = polygon k.
_EDGE, _NONE = 0, 1


class PolygonLocator:
    """Which polygon contains (or touches) each point, for many points at once.

    The bounds of all polygons, padded by one cell, are cut into a raster of square cells. A cell whose
    closed box meets any polygon boundary is an *edge* cell; the other cells form connected regions that
    no boundary crosses, so every point of a region lies in the same polygons, and one exact query per
    region labels it. A point in a labelled cell is answered by one table look-up; a point in an edge cell
    is tested exactly with the STRtree. The answers equal ``STRtree(geometries).query(points,
    predicate="intersects")`` reduced to the lowest polygon index per point, ``-1`` for none.

    Parameters
    ----------
    geometries : sequence of Polygon or MultiPolygon
        In one planar coordinate system. ``None`` and empty geometries are allowed and never match.
    cells_per_polygon : int
        Raster size relative to the number of polygons; more cells put fewer points near a boundary.
    max_cells : int
        Cap on the raster size. Memory is 2 bytes a cell (4 with 65,534 polygons or more) for the table,
        plus about 5 bytes a cell while building.

    Attributes
    ----------
    geometries : numpy.ndarray of shapely geometries
    tree : shapely.STRtree
        Over ``geometries``; used for the exact tests.
    x0, y0 : float
        Lower-left corner of the raster. Cell ``(row, col)`` spans ``x0 + col * cell_size`` to
        ``x0 + (col + 1) * cell_size`` and likewise in y.
    cell_size : float
    nrows, ncols : int

    Examples
    --------
    >>> from shapely import box
    >>> locator = PolygonLocator([box(0, 0, 2, 2), box(2, 0, 4, 2), box(1, 1, 1.5, 1.5)])
    >>> locator.locate([1.0, 2.0, 1.2, 5.0, float("nan")], [1.0, 1.0, 1.2, 1.0, 0.0]).tolist()
    [0, 0, 0, -1, -1]
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
        self.tree = STRtree(self.geometries)
        present = ~(shapely.is_missing(self.geometries) | shapely.is_empty(self.geometries))
        count = int(present.sum())
        self._code_dtype = np.uint16 if len(self.geometries) + 2 <= np.iinfo(np.uint16).max else np.uint32

        if count == 0:
            self.x0, self.y0, self.cell_size, self.nrows, self.ncols = 0.0, 0.0, 1.0, 1, 1
            self._table = np.full(1, _NONE, dtype=self._code_dtype)
            return
        minx, miny, maxx, maxy = shapely.total_bounds(self.geometries[present])
        width, height = maxx - minx, maxy - miny
        target = max(1, min(int(max_cells), int(cells_per_polygon) * count))
        size = _cell_size(width, height, target, max_cells)
        self.cell_size = size
        self.ncols = int(np.floor(width / size)) + 3
        self.nrows = int(np.floor(height / size)) + 3
        # One cell of padding: every polygon lies at cell coordinates >= 1 and <= n - 1, so the outermost
        # ring of cells is in no polygon and catches every point beyond the bounds (see ``locate``).
        self.x0, self.y0 = minx - size, miny - size
        self._inv = 1.0 / size
        self._table = self._build_table()

    @property
    def nbytes(self) -> int:
        """Memory held by the cell table, in bytes (the STRtree and geometries not counted)."""
        return int(self._table.nbytes)

    def locate(self, x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> np.ndarray:
        """Index of the lowest-numbered polygon containing or touching each point; ``-1`` for none or NaN.

        ``x`` and ``y`` broadcast against each other; the result has their broadcast shape, dtype int64.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        shape = x.shape
        x, y = x.ravel(), y.ravel()
        cell = self._cell_of(x, y)
        codes = self._table.take(cell)
        result = codes.astype(np.int64)
        result -= 2
        edge = np.flatnonzero(codes == _EDGE)
        if edge.size:
            result[edge] = self._exact(x[edge], y[edge])
        return result.reshape(shape)

    def _cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index of each point, clamped into the raster; NaN lands in the outer ring.

        This is the one formula for cell coordinates, ``(x - x0) / cell_size`` in floating point; the
        build converts vertices with it too.
        """
        col = self._cell_axis(x, self.x0, self.ncols)
        row = self._cell_axis(y, self.y0, self.nrows)
        row *= self.ncols
        row += col
        return row

    def _cell_axis(self, values: np.ndarray, origin: float, n: int) -> np.ndarray:
        scaled = np.subtract(values, origin)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled *= self._inv
        # fmax/fmin drop NaN in favour of the bound, unlike clip; after them truncation is floor.
        np.fmax(scaled, 0.0, out=scaled)
        np.fmin(scaled, n - 1, out=scaled)
        return scaled.astype(np.intp)

    def _exact(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        points = shapely.points(x, y)
        which, polygon = self.tree.query(points, predicate="intersects")
        return lowest_hit(len(points), which, polygon)

    def _build_table(self) -> np.ndarray:
        edge = np.zeros((self.nrows, self.ncols), dtype=np.uint8)
        rows, cols = self._boundary_cells()
        edge[rows, cols] = 1
        count, labels = cv2.connectedComponents(1 - edge, connectivity=4, ltype=cv2.CV_32S)
        del edge
        # One cell of each region; which one does not matter, so let later writes win.
        representative = np.zeros(count, dtype=np.int64)
        flat = labels.ravel()
        step = 1 << 20
        for start in range(0, flat.size, step):
            chunk = flat[start : start + step]
            representative[chunk] = np.arange(start, start + chunk.size)
        row, col = np.divmod(representative[1:], self.ncols)
        lut = np.empty(count, dtype=self._code_dtype)
        lut[0] = _EDGE  # label 0 is the background, i.e. the edge cells
        lut[1:] = self._exact(self.x0 + (col + 0.5) * self.cell_size, self.y0 + (row + 0.5) * self.cell_size) + 2
        return lut.take(flat)

    def _boundary_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every cell whose closed box, widened by ``delta``, meets a polygon boundary.

        Why the table is exact: let ``T(x) = (x - x0) / cell_size`` in real arithmetic. Every floating
        point value here and in :meth:`_cell_of` is within a few ulps of ``max(nrows, ncols)`` of its ``T``,
        far below ``delta``. So a point whose computed cell is ``c`` lies (under ``T``) in ``c``'s box
        widened by ``delta / 2``; if ``c`` is not an edge cell, no boundary meets that widened box, which
        also overlaps the region of ``c``, so the point lies in exactly the polygons its region's
        representative lies in. This holds for points on cell lines too; points near a boundary land in
        edge cells and are tested exactly.
        """
        rings = shapely.get_rings(shapely.get_parts(self.geometries))
        xy, ring = shapely.get_coordinates(rings, return_index=True)
        u = (xy[:, 0] - self.x0) * self._inv
        v = (xy[:, 1] - self.y0) * self._inv
        same = ring[1:] == ring[:-1]
        ua, va, ub, vb = u[:-1][same], v[:-1][same], u[1:][same], v[1:][same]
        delta = max(self.nrows, self.ncols) * 2.0**-40
        flat = np.abs(ub - ua) >= np.abs(vb - va)
        rows_a, cols_a = _supercover(ua[flat], va[flat], ub[flat], vb[flat], delta)
        cols_b, rows_b = _supercover(va[~flat], ua[~flat], vb[~flat], ub[~flat], delta)
        rows = np.concatenate([rows_a, rows_b])
        cols = np.concatenate([cols_a, cols_b])
        # Widening can step one cell past the padding; the outer ring is far from every vertex anyway.
        np.clip(rows, 0, self.nrows - 1, out=rows)
        np.clip(cols, 0, self.ncols - 1, out=cols)
        return rows, cols


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


def _cell_size(width: float, height: float, target: int, max_cells: int) -> float:
    """Side of square cells giving about ``target`` cells over the bounds, padding included."""
    extent = max(width, height)
    if extent == 0:
        return 1.0
    size = np.sqrt(width * height / target) if width * height > 0 else extent / target
    # Padding and rounding add cells; grow the cells until the cap holds.
    while (np.floor(width / size) + 3) * (np.floor(height / size) + 3) > max_cells:
        size *= 1.02
    return float(size)


def _supercover(ua, va, ub, vb, delta):
    """Cells (row, col) met by segments widened by ``delta``, for segments with ``|du| >= |dv|``.

    Walks the columns each segment spans; within a column the segment's v-range gives the rows. The
    slope is at most 1, so the interpolation loses no more than a few ulps.
    """
    swap = ua > ub
    ua, ub = np.where(swap, ub, ua), np.where(swap, ua, ub)
    va, vb = np.where(swap, vb, va), np.where(swap, va, vb)
    du, dv = ub - ua, vb - va
    slope = np.divide(dv, du, out=np.zeros_like(dv), where=du > 0)
    c0 = np.floor(ua - delta).astype(np.int64)
    span = np.floor(ub + delta).astype(np.int64) - c0 + 1
    seg = np.repeat(np.arange(len(ua)), span)
    col = _ranges(span) + c0[seg]
    lo = np.maximum(ua[seg], col - delta)
    hi = np.minimum(ub[seg], col + 1 + delta)
    v_lo = va[seg] + (lo - ua[seg]) * slope[seg]
    v_hi = va[seg] + (hi - ua[seg]) * slope[seg]
    r0 = np.floor(np.minimum(v_lo, v_hi) - delta).astype(np.int64)
    height = np.floor(np.maximum(v_lo, v_hi) + delta).astype(np.int64) - r0 + 1
    pair = np.repeat(np.arange(len(col)), height)
    return _ranges(height) + r0[pair], col[pair]


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in counts])`` without the loop."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts
