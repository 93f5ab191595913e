"""Vector tiles from PostGIS: our endpoint against the bare ST_AsMVT query, cached tiles under load, and the
size of a z10 tile over a city's worth of grids.

1. Cold: every tile covering the demo street from z12 to z18, layer ``grids``, each a cache miss (a write to
   ``units`` before the counted pass invalidates them all; every answer is checked to say ``X-Cache: miss``):
   latency of ``GET /tiles/grids/...`` on a running server (one process, loopback, one request at a time)
   against the bare query (``ST_AsMVT`` of ``ST_AsMVTGeom`` over the tile envelope) on a psycopg2 connection,
   and our store's ``vector_tile`` called in this process, all measured in the same run; medians and the
   ratio. Target: at most 1.5x. The client is a minimal HTTP/1.1 one on a keep-alive socket, so the figure is
   the server's (httpx adds about 1.8 ms a request, more than a tile costs). Also, in the same pass, the bare
   query behind the least HTTP endpoint (``bench/bare_tiles.py``): what HTTP costs any Python tile server,
   against which our own overhead (auth, scope, cache bookkeeping, ETag) shows. The same tiles once cached follow.
2. Warm: the same tiles, cached, from ``wrk`` on loopback (16 connections, one thread) against the server with
   two worker processes, rotating over the tile URLs with a supervisor's bearer token. Target: >= 2,000/s.
3. 40,625 generated grids (``bench_locate.make_grids``, Voronoi cells of 20-60 vertices over 0.8 x 0.55
   degrees of Shanghai) stored as units; the size of the z10 tile holding most of them. Target: < 500 KB.

    python bench/bench_tiles.py [--admin-url postgresql://postgres@127.0.0.1/postgres] [--seconds 10]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_locate import BOUNDS, make_grids  # noqa: E402
from bench.bench_reports import WRK_DONE, free_port, load, make_database, serve, stop, wait_ready  # noqa: E402

BARE = """
SELECT ST_AsMVT(q, 'grids', 4096, 'geom') FROM (
    SELECT "code", "name", ST_AsMVTGeom(ST_Transform("geom", 3857), ST_TileEnvelope(%s, %s, %s), 4096, 64, true) AS geom
    FROM "units" WHERE "level" = 'grid' AND "geom" && ST_Transform(ST_TileEnvelope(%s, %s, %s), 4326)
) q
"""


WRK_LUA = r"""
local paths = {{}}
for line in io.lines("{paths}") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {{["Authorization"] = "Bearer {token}"}})
end
"""


class Client:
    """GET over one keep-alive HTTP/1.1 connection, nothing more (the server answers with Content-Length)."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"

    def get(self, path: str) -> tuple[bytes, dict[str, str]]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        status = self.file.readline()
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", 0)))
        if b" 200 " not in status:
            raise RuntimeError(f"GET {path}: {status!r} {body[:200]!r}")
        return body, headers


def supervisor_token(port: int) -> str:
    import httpx

    from api.demo import DEMO_PASSWORD

    reply = httpx.post(f"http://127.0.0.1:{port}/auth/token", json={"username": "supervisor", "password": DEMO_PASSWORD})
    return reply.json()["access_token"]


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
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the wrk run")
    args = parser.parse_args()
    import geopandas as gpd
    import psycopg2

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
    paths = [f"/tiles/grids/{z}/{x}/{y}.pbf" for z, x, y in tiles]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    port = free_port()
    server = serve("api.app:create_app", port, 1, env)
    bare_port = free_port()
    bare_server = serve("bench.bare_tiles:bare_app", bare_port, 1, {**env, "GRIDMAP_BARE_URL": url})
    try:
        wait_ready(port)
        wait_ready(bare_port)
        token = supervisor_token(port)
        client, bare_client = Client(port, token), Client(bare_port, "none")
        with open_store(url) as store, conn.cursor() as cur:
            for _ in range(2):  # the first pass warms PostgreSQL's buffers and the servers; the second counts
                ours, bare, bare_http, direct, cached = [], [], [], [], []
                # A real write to the units: every tile's epoch moves on, so each request below draws its tile.
                cur.execute('UPDATE "units" SET "name" = "name" WHERE "code" = (SELECT min("code") FROM "units")')
                for (z, x, y), path in zip(tiles, paths):
                    started = time.perf_counter()
                    _, headers = client.get(path)
                    ours.append(time.perf_counter() - started)
                    assert headers["x-cache"] == "miss", f"{path} was not drawn"
                    started = time.perf_counter()
                    cur.execute(BARE, (z, x, y, z, x, y))
                    cur.fetchone()
                    bare.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    bare_client.get(path)
                    bare_http.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    store.vector_tile("grids", z, x, y)
                    direct.append(time.perf_counter() - started)
            for path in paths:
                started = time.perf_counter()
                _, headers = client.get(path)
                cached.append(time.perf_counter() - started)
                assert headers["x-cache"] == "hit", f"{path} was not cached"
    finally:
        stop(server)
        stop(bare_server)
    conn.close()
    ratio = statistics.median(ours) / statistics.median(bare)
    ms = lambda values: f"{1000 * statistics.median(values):.2f} ms"  # noqa: E731
    print(f"{len(tiles)} tiles z12-z18 over the demo street, layer grids")
    print(f"cold: endpoint median {ms(ours)} (p90 {1000 * sorted(ours)[int(len(ours) * 0.9)]:.2f}), bare ST_AsMVT "
          f"median {ms(bare)}: ratio {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'}); our "
          f"store's vector_tile alone {ms(direct)}")
    print(f"cold, over HTTP both: the bare query behind the least Starlette endpoint (bench/bare_tiles.py) median "
          f"{ms(bare_http)}: ours {statistics.median(ours) / statistics.median(bare_http):.2f}x that")
    print(f"cached: endpoint median {ms(cached)}")

    port = free_port()
    server = serve("api.app:create_app", port, 2, env)
    try:
        wait_ready(port)
        token = supervisor_token(port)
        (data_dir / "paths.txt").write_text("\n".join(paths) + "\n")
        script = data_dir / "tiles.lua"
        script.write_text(WRK_LUA.format(paths=data_dir / "paths.txt", token=token) + WRK_DONE)
        load(port, script, 3, 16)  # every tile drawn once in each process
        warm = load(port, script, args.seconds, 16)
    finally:
        stop(server)
    print(f"warm: {warm['rate']:.0f} tiles/s, p50 {warm['p50_ms']:.2f} ms, p99 {warm['p99_ms']:.2f} ms over "
          f"{warm['requests']} requests ({warm['bad_status']} not 200, {warm['socket_errors']} socket errors), 2 "
          f"server processes, wrk -c16 on loopback; target >= 2,000/s: {'met' if warm['rate'] >= 2000 else 'NOT met'}")

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
        _, tile = store.vector_tile("grids", *z10)
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
