"""Benchmark :class:`gridmap.locate.PolygonLocator` against a bare ``STRtree.query`` on one core.

Generates Shanghai's count of unit grids (a jittered Voronoi tessellation over central Shanghai with
wiggled, densified edges, a few exclaves and holes), locates uniformly random points with both methods,
checks the answers are identical and exits with status 1 if they are not.

    python bench/bench_locate.py [--points 1000000] [--grids 40625] [--seed 0] [--cells-per-polygon 256]
"""

from __future__ import annotations

import os

# Numeric libraries to one thread before they are imported: the figure is per core.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import shapely  # noqa: E402
from shapely import STRtree  # noqa: E402

from gridmap.locate import DEFAULT_CELLS_PER_POLYGON, PolygonLocator  # noqa: E402

cv2.setNumThreads(1)

# Central Shanghai, about 75 km x 61 km: 40,625 grids of about 0.11 km2 each.
BOUNDS = (121.10, 30.90, 121.90, 31.45)


def make_grids(count: int, seed: int) -> np.ndarray:
    """``count`` grids tessellating :data:`BOUNDS`, 20-60 vertices each, with exclaves and holes."""
    rng = np.random.default_rng(seed)
    exclaves = max(1, count // 2000)
    cells = _voronoi(count + exclaves, rng)
    cells = _wiggle(cells, rng)
    # An exclave: a grid made of two cells far apart, as when a grid owns a separate housing estate.
    order = rng.permutation(len(cells))
    owners, lost = order[:exclaves], order[exclaves : 2 * exclaves]
    cells[owners] = shapely.multipolygons(np.stack([cells[owners], cells[lost]], axis=1).tolist())
    cells = np.delete(cells, lost)
    # A hole: a pond or a site outside every grid.
    ponds = rng.choice(len(cells), size=max(1, count // 1000), replace=False)
    centres = shapely.point_on_surface(cells[ponds])
    cells[ponds] = shapely.difference(cells[ponds], shapely.buffer(centres, 0.0004, quad_segs=4))
    assert len(cells) == count and shapely.is_valid(cells).all()
    return cells


def _voronoi(count: int, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = BOUNDS
    ny = int(np.ceil(np.sqrt(count * (y1 - y0) / (x1 - x0))))
    nx = int(np.ceil(count / ny))
    gx, gy = np.meshgrid((np.arange(nx) + 0.5) / nx, (np.arange(ny) + 0.5) / ny)
    sx = (gx.ravel() + rng.uniform(-0.45, 0.45, gx.size) / nx)[:count]
    sy = (gy.ravel() + rng.uniform(-0.45, 0.45, gy.size) / ny)[:count]
    seeds = shapely.multipoints(shapely.points(x0 + sx * (x1 - x0), y0 + sy * (y1 - y0)))
    envelope = shapely.box(*BOUNDS)
    cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=envelope))
    return shapely.intersection(cells, envelope)


def _wiggle(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Densify every edge and bend it with a smooth displacement, keeping shared edges identical."""
    spacing = np.sqrt(shapely.area(cells).mean())
    phases = rng.uniform(0, 2 * np.pi, 6)
    xy, ring = shapely.get_coordinates(shapely.get_exterior_ring(cells), return_index=True)
    same = ring[1:] == ring[:-1]
    a, b, ring = xy[:-1][same], xy[1:][same], ring[:-1][same]
    # Both neighbours along an edge must get bit-identical vertices, so subdivide every edge from its
    # lexicographically smaller end whichever way the ring runs.
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    lo, hi = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
    length = np.hypot(*(hi - lo).T)
    # Boundaries are more detailed in some districts than others: 20-60 vertices a grid.
    mid = (lo + hi) / 2 / (10 * spacing)
    detail = 4 + 10 * (0.5 + 0.5 * np.sin(mid[:, 0] * 2.3 + phases[0]) * np.cos(mid[:, 1] * 1.7 + phases[1]))
    pieces = np.maximum(1, np.ceil(length / spacing * detail)).astype(np.int64)
    edge = np.repeat(np.arange(len(a)), pieces)
    k = np.arange(len(edge)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    step = np.where(swap[edge], pieces[edge] - k, k)
    points = lo[edge] + (hi - lo)[edge] * (step / pieces[edge])[:, None]
    points[k == 0] = a[edge[k == 0]]
    # A smooth field whose gradient stays well below 1 moves vertices without folding any edge.
    amplitude, wavelength = 0.05 * spacing, 0.9 * spacing
    arg_x = 2 * np.pi * points[:, 0] / wavelength
    arg_y = 2 * np.pi * points[:, 1] / wavelength
    points[:, 0] += amplitude * np.sin(arg_y + phases[2]) * np.cos(0.7 * arg_x + phases[3])
    points[:, 1] += amplitude * np.sin(arg_x + phases[4]) * np.cos(0.7 * arg_y + phases[5])
    ring = ring[edge]
    starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    closed = np.insert(points, np.r_[starts[1:], len(points)], points[starts], axis=0)
    closed_ring = np.insert(ring, np.r_[starts[1:], len(ring)], ring[starts])
    return shapely.polygons(shapely.linearrings(closed, indices=closed_ring))


class CountingLocator(PolygonLocator):
    """Counts the points the locator leaves to its STRtree."""

    exact_count = 0

    def _exact(self, x, y):
        self.exact_count += len(x)
        return super()._exact(x, y)


def best_of(repeats: int, function):
    """Smallest wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def lowest_per_point(n: int, which: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """The lowest polygon index per point from ``STRtree.query`` pairs, -1 for none."""
    lowest = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest, which, polygon)
    lowest[lowest == np.iinfo(np.int64).max] = -1
    return lowest


def main() -> int:
    if hasattr(os, "sched_setaffinity"):  # the figure is per core (in main: importers keep their cores)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--grids", type=int, default=40_625)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells-per-polygon", type=int, default=DEFAULT_CELLS_PER_POLYGON)
    args = parser.parse_args()

    start = time.perf_counter()
    grids = make_grids(args.grids, args.seed)
    vertices = shapely.get_num_coordinates(grids)
    print(
        f"grids: {len(grids):,} ({shapely.get_type_id(grids).tolist().count(6)} MultiPolygons), "
        f"vertices per grid: mean {vertices.mean():.1f}, 5-95% {np.percentile(vertices, 5):.0f}-"
        f"{np.percentile(vertices, 95):.0f} (generated in {time.perf_counter() - start:.1f} s)"
    )

    rng = np.random.default_rng(args.seed + 1)
    x0, y0, x1, y1 = BOUNDS
    pad_x, pad_y = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
    x = rng.uniform(x0 - pad_x, x1 + pad_x, args.points)
    y = rng.uniform(y0 - pad_y, y1 + pad_y, args.points)
    points = shapely.points(x, y)

    tree_build, tree = best_of(1, lambda: STRtree(grids))
    locator_build, locator = best_of(1, lambda: CountingLocator(grids, cells_per_polygon=args.cells_per_polygon))
    print(f"build: bare STRtree {tree_build:.2f} s, PolygonLocator {locator_build:.2f} s (its own STRtree included)")
    print(
        f"index: {locator.nrows:,} x {locator.ncols:,} cells of {locator.cell_size:.6f} degrees, "
        f"{len(locator.edge_cells):,} of them edge cells; memory {locator.nbytes / 2**20:.1f} MB"
    )

    bare_time, (which, polygon) = best_of(3, lambda: tree.query(points, predicate="intersects"))
    locate_time, found = best_of(3, lambda: locator.locate(x, y))
    expected = lowest_per_point(args.points, which, polygon)
    identical = bool(np.array_equal(found, expected))
    near_share = float(np.isin(locator.cell_of(x, y), locator.edge_cells).mean())
    locator.exact_count = 0
    locator.locate(x, y)
    print(
        f"points: {args.points:,}, in no grid: {(expected < 0).mean():.1%}; exact tests: {near_share:.1%} "
        f"in edge cells (crossing test), {locator.exact_count:,} points ({locator.exact_count / args.points:.4%}) "
        "left to the STRtree"
    )
    if not identical:
        bad = np.flatnonzero(found != expected)
        print(f"MISMATCH at {len(bad):,} points, first {bad[0]}: locate {found[bad[0]]}, STRtree {expected[bad[0]]}")
    bare_rate, locate_rate = args.points / bare_time, args.points / locate_time
    print(
        f"locate: {locate_rate:,.0f} pts/s, bare STRtree: {bare_rate:,.0f} pts/s, "
        f"ratio {locate_rate / bare_rate:.2f}x, identical: {'yes' if identical else 'no'}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
