"""Where cases cluster: a kernel density surface and a choropleth of cases per grid.

Both take a table of cases (``lon``, ``lat``, ``grid``; any filtering by category, source or time is the
caller's) and the grid polygons, and return GeoDataFrames in EPSG:4326 that a map draws as they are.

The kernel is a quartic (biweight) kernel of ``bandwidth_m`` on a square lattice of ``cell_m`` in the
metric CRS of the area (:func:`gridmap.crs.metric_crs`), the kernel of ArcGIS's and QGIS's heatmaps;
values are cases per km². The choropleth counts cases per grid and per hectare, since grids differ in size
by a factor of two or more.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridmap.crs import metric_crs
from inspection.errors import InspectionError

MAX_CELLS = 250_000


def kernel_density(cases: pd.DataFrame, area: shapely.Geometry, *, bandwidth_m: float = 150.0,
                   cell_m: float = 25.0) -> gpd.GeoDataFrame:
    """Case density (cases/km²) on square cells covering ``area`` (EPSG:4326), as cell centre points with a
    ``density`` column; cells with no case within the bandwidth are left out.

    >>> import shapely
    >>> cases = pd.DataFrame({"lon": [120.18], "lat": [30.25]})
    >>> grid = kernel_density(cases, shapely.box(120.17, 30.24, 120.19, 30.26), bandwidth_m=100, cell_m=10)
    >>> round(float(grid["density"].sum() * (10 / 1000) ** 2), 2)  # the surface integrates to one case
    1.0
    """
    if bandwidth_m <= 0 or cell_m <= 0:
        raise InspectionError("bandwidth_m and cell_m must be positive")
    centre = area.centroid
    crs = metric_crs(centre.x, centre.y)
    minx, miny, maxx, maxy = gpd.GeoSeries([area], crs="EPSG:4326").to_crs(crs).total_bounds
    nx, ny = int(np.ceil((maxx - minx) / cell_m)), int(np.ceil((maxy - miny) / cell_m))
    if nx * ny > MAX_CELLS:
        raise InspectionError(f"{nx} x {ny} cells of {cell_m:g} m: more than {MAX_CELLS:,}; use larger cells")
    empty = gpd.GeoDataFrame({"density": []}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    if not len(cases):
        return empty
    points = gpd.GeoSeries(gpd.points_from_xy(cases["lon"], cases["lat"]), crs="EPSG:4326").to_crs(crs)
    px, py = points.x.to_numpy(), points.y.to_numpy()
    xs = minx + (np.arange(nx) + 0.5) * cell_m
    ys = miny + (np.arange(ny) + 0.5) * cell_m
    density = np.zeros((ny, nx))
    reach = int(np.ceil(bandwidth_m / cell_m))
    norm = 3.0 / (np.pi * bandwidth_m**2)  # quartic kernel: 3/(pi h^2) (1 - d^2/h^2)^2, per m²
    for x, y in zip(px, py):
        col, row = int((x - minx) // cell_m), int((y - miny) // cell_m)
        c0, c1 = max(col - reach, 0), min(col + reach + 1, nx)
        r0, r1 = max(row - reach, 0), min(row + reach + 1, ny)
        if c0 >= c1 or r0 >= r1:
            continue
        dx = xs[c0:c1][None, :] - x
        dy = ys[r0:r1][:, None] - y
        u = (dx * dx + dy * dy) / bandwidth_m**2
        density[r0:r1, c0:c1] += np.where(u < 1, norm * (1 - u) ** 2, 0.0)
    rows, cols = np.nonzero(density > 0)
    if not len(rows):
        return empty
    cells = gpd.GeoSeries(gpd.points_from_xy(xs[cols], ys[rows]), crs=crs).to_crs("EPSG:4326")
    return gpd.GeoDataFrame({"density": density[rows, cols] * 1e6}, geometry=cells.values, crs="EPSG:4326")


def choropleth(cases: pd.DataFrame, grids: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Every grid (``code``, ``name``, geometry) with ``cases`` (count) and ``per_ha`` (cases per hectare)."""
    counts = cases["grid"].value_counts() if len(cases) else pd.Series(dtype=int)
    out = grids[["code", "name", "geometry"]].copy()
    out["cases"] = out["code"].map(counts).fillna(0).astype(int)
    centre = out.geometry.union_all().centroid
    hectares = out.to_crs(metric_crs(centre.x, centre.y)).area / 10_000
    out["per_ha"] = (out["cases"] / hectares).round(3)
    return out.reset_index(drop=True)
