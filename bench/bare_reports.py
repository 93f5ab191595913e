"""The baseline for bench_reports.py: the least a report endpoint does (parse the multipart body, hash and
write the photo, insert one row through a psycopg2 pool), as a bare FastAPI app."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psycopg2.pool
from fastapi import FastAPI, File, Form, UploadFile


def bare_app() -> FastAPI:
    url = os.environ["GRIDMAP_BARE_URL"]
    directory = Path(os.environ["GRIDMAP_BARE_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    setup = psycopg2.connect(url)
    with setup, setup.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bare_reports (id bigserial PRIMARY KEY, client_id text UNIQUE, "
                    "lon double precision, lat double precision, photo text, received_at timestamptz DEFAULT now())")
    setup.close()
    pool = psycopg2.pool.ThreadedConnectionPool(1, 40, url)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/reports", status_code=201)  # a plain def: FastAPI runs it in its thread pool
    def report(client_id: str = Form(...), lon: float = Form(...), lat: float = Form(...),
               photos: UploadFile = File(...)) -> dict:
        data = photos.file.read()
        sha = hashlib.sha256(data).hexdigest()
        (directory / sha).write_bytes(data)
        conn = pool.getconn()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("INSERT INTO bare_reports (client_id, lon, lat, photo) VALUES (%s, %s, %s, %s) "
                            "RETURNING id", (client_id, lon, lat, sha))
                (row_id,) = cur.fetchone()
        finally:
            pool.putconn(conn)
        return {"id": row_id}

    return app
