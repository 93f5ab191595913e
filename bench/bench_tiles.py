"""Vector tiles from PostGIS: our endpoint against the bare ST_AsMVT query, and the size of a z10 tile over a
city's worth of grids.

1. Every tile covering the demo street from z12 to z18, layer ``grids``: latency of ``GET /tiles/grids/...``
   on a running server (one process, loopback, one request at a time) against the bare query
   (``ST_AsMVT`` of ``ST_AsMVTGeom`` over the tile envelope) on a psycopg2 connection, measured in the same
   run, medians and the ratio. Target: at most 1.5x.
2. 40,625 generated grids (``bench_locate.make_grids``, Voronoi cells of 20-60 vertices over 0.8 x 0.55
   degrees of Shanghai) stored as units; the size of the z10 tile holding most of them. Target: < 500 KB.

    python bench/bench_tiles.py [--admin-url postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_locate import BOUNDS, make_grids  # noqa: E402
from bench.bench_reports import free_port, make_database, serve, stop, wait_ready  # noqa: E402

BARE = """
SELECT ST_AsMVT(q, 'grids', 4096, 'geom') FROM (
    SELECT "code", "name", ST_AsMVTGeom(ST_Transform("geom", 3857), ST_TileEnvelope(%s, %s, %s), 4096, 64, true) AS geom
    FROM "units" WHERE "level" = 'grid' AND "geom" && ST_Transform(ST_TileEnvelope(%s, %s, %s), 4326)
) q
"""


def tiles_over(bounds, z):
    minx, miny, maxx, maxy = bounds
    n = 2**z

    def col(lon):
        return int((lon + 180) / 360 * n)

    def row(lat):
        return int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)

    return [(z, x, y) for x in range(col(minx), col(maxx) + 1) for y in range(row(maxy), row(miny) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1/postgres")
    args = parser.parse_args()
    import geopandas as gpd
    import httpx
    import psycopg2

    from api.demo import DEMO_PASSWORD
    from gridmap.units import make_units
    from storage import open_store

    url = make_database(args.admin_url, "gridmap_bench_tiles")
    data_dir = Path(f"/tmp/gridmap-bench-tiles-{os.getpid()}")
    env = {**os.environ, "GRIDMAP_DATABASE_URL": url, "GRIDMAP_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO),
           "GRIDMAP_INPROCESS_WORKER": "0"}
    subprocess.run([sys.executable, "-m", "api.cli", "demo", "--dir", str(data_dir / "boundaries")], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    with open_store(url) as store:
        bounds = store.get_units("street").total_bounds
    tiles = [t for z in range(12, 19) for t in tiles_over(bounds, z)]
    port = free_port()
    server = serve("api.app:create_app", port, 1, env)
    ours, bare = [], []
    try:
        wait_ready(port)
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(f"{base}/auth/token", json={"username": "supervisor", "password": DEMO_PASSWORD}
                           ).json()["access_token"]
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client, conn.cursor() as cur:
            for _ in range(2):  # the first pass warms PostgreSQL's buffers and the server; the second counts
                ours, bare = [], []
                for z, x, y in tiles:
                    started = time.perf_counter()
                    client.get(f"/tiles/grids/{z}/{x}/{y}.pbf").raise_for_status()
                    ours.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    cur.execute(BARE, (z, x, y, z, x, y))
                    cur.fetchone()
                    bare.append(time.perf_counter() - started)
        conn.close()
    finally:
        stop(server)
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"{len(tiles)} tiles z12-z18 over the demo street, layer grids")
    print(f"endpoint median {1000 * statistics.median(ours):.2f} ms (p90 {1000 * sorted(ours)[int(len(ours) * 0.9)]:.2f}), "
          f"bare ST_AsMVT median {1000 * statistics.median(bare):.2f} ms: ratio {ratio:.2f} (target <= 1.5: "
          f"{'met' if ratio <= 1.5 else 'NOT met'})")

    # A city: 40,625 grids under one street and 41 communities (containment is not what this measures).
    cells = make_grids(40_625, seed=1)
    street_code = "310101001"
    box = gpd.GeoSeries.from_wkt([f"POLYGON(({BOUNDS[0]} {BOUNDS[1]}, {BOUNDS[2]} {BOUNDS[1]}, {BOUNDS[2]} {BOUNDS[3]}, "
                                  f"{BOUNDS[0]} {BOUNDS[3]}, {BOUNDS[0]} {BOUNDS[1]}))"]).iloc[0]
    communities = [f"{street_code}{c:03d}" for c in range(1, 42)]
    grid_codes = [f"{communities[i // 999]}{i % 999 + 1:03d}" for i in range(len(cells))]
    city = gpd.GeoDataFrame(
        {"code": [street_code, *communities, *grid_codes],
         "level": ["street"] + ["community"] * len(communities) + ["grid"] * len(cells),
         "parent_code": [street_code[:6]] + [street_code] * len(communities) + [g[:12] for g in grid_codes],
         "name": [""] * (1 + len(communities) + len(cells))},
        geometry=[box] * (1 + len(communities)) + list(cells), crs="EPSG:4326")
    city_url = make_database(args.admin_url, "gridmap_bench_tiles_city")
    with open_store(city_url) as store:
        store.put_units(make_units(city.to_dict("records")))
        centre = ((BOUNDS[0] + BOUNDS[2]) / 2, (BOUNDS[1] + BOUNDS[3]) / 2)
        z10 = [t for t in tiles_over((*centre, *centre), 10)][0]
        started = time.perf_counter()
        tile = store.vector_tile("grids", *z10)
        seconds = time.perf_counter() - started
        conn = psycopg2.connect(city_url)
        with conn.cursor() as cur:
            cur.execute(BARE, (*z10, *z10))
            unsimplified = len(bytes(cur.fetchone()[0]))
        conn.close()
    print(f"z10 tile {z10} over {len(cells):,} grids: {len(tile) / 1024:.0f} KB in {seconds:.2f} s "
          f"(unsimplified ST_AsMVT {unsimplified / 1024:.0f} KB); target < 500 KB: "
          f"{'met' if len(tile) < 500 * 1024 else 'NOT met'}")


if __name__ == "__main__":
    main()
