"""The second baseline for bench_tiles.py: the bare ST_AsMVT query behind the least HTTP endpoint (a Starlette
route run in its thread pool on a psycopg2 pool connection, no auth, no cache), so the service's own overhead
can be told apart from what any Python tile server pays for HTTP."""

from __future__ import annotations

import os

import psycopg2.pool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.bench_tiles import BARE


def bare_app() -> Starlette:
    pool = psycopg2.pool.ThreadedConnectionPool(4, 4, os.environ["GRIDMAP_BARE_URL"])

    def draw(z: int, x: int, y: int) -> bytes:
        conn = pool.getconn()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(BARE, (z, x, y, z, x, y))
                return bytes(cur.fetchone()[0] or b"")
        finally:
            pool.putconn(conn)

    async def tile(request) -> Response:
        p = request.path_params
        data = await run_in_threadpool(draw, p["z"], p["x"], p["y"])
        return Response(data, media_type="application/vnd.mapbox-vector-tile")

    async def health(request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/health", health), Route("/tiles/grids/{z:int}/{x:int}/{y:int}.pbf", tile)])
