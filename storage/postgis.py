"""PostGIS store: psycopg2 with a thread-safe connection pool.

A batch is COPied (text format) into a temporary table and upserted from there with one
``INSERT ... SELECT ... ON CONFLICT ("code") DO UPDATE``, all in one transaction. Geometry goes in as WKB
(``ST_GeomFromWKB(wkb, 4326)``) and comes back with ``ST_AsBinary``, so it round-trips exactly. Spatial filters are ``geom && <envelope>`` (GIST index) AND ``ST_Intersects`` (exact).
Every value is bound as a parameter; every identifier is quoted.

Concurrency: ``put_units`` takes ``FOR KEY SHARE`` locks on the stored parents it relies on and
``delete_units`` takes ``FOR UPDATE`` locks on the rows it deletes before looking for children, so a
concurrent put and delete cannot leave an orphan.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext

import psycopg2
import psycopg2.extensions
import psycopg2.pool
from geopandas import GeoDataFrame
from shapely.geometry.base import BaseGeometry

from gridmap.codes import LEVELS
from gridmap.units import empty_units
from storage._common import (
    bbox_geometry,
    check_parents,
    checked_bbox,
    checked_geometry,
    checked_level,
    children_error,
    code_list,
    load_migrations,
    mask_url,
    newer_schema_error,
    one_line,
    prepare_batch,
    to_units,
)
from storage.base import BBox, Store
from gridmap.tiles import BUFFER, EXTENT, LAYERS, check_tile, tolerance
from storage.records import OPEN_STATES, TILE_EPOCHS, Dialect, Records, Tx, tile_source
from storage.errors import StoreConfigError, StoreError

#: Environment variable with the maximum number of pooled connections (default 8).
POOL_SIZE_ENV = "GRIDMAP_DB_POOL_SIZE"
DEFAULT_POOL_SIZE = 8
#: Seconds a caller waits for a free pooled connection before StoreError.
ACQUIRE_TIMEOUT = 30.0
#: Seconds libpq waits for the server when connecting (unless the URL sets connect_timeout).
CONNECT_TIMEOUT = 10
#: Rows per COPY chunk in put_units (bounds the memory of the text sent).
COPY_CHUNK = 5000
#: pg_advisory_xact_lock key serialising schema migrations ("gridmap" in ASCII).
MIGRATION_LOCK = 0x67726964_6D6170

_COLUMNS = '"code", "level", "name", "parent_code", "worker", "population", "attributes"'
_SELECT = f'SELECT {_COLUMNS}, ST_AsBinary("geom") FROM "units"'
# put_units: COPY the batch into a temporary table, then one INSERT ... ON CONFLICT from it.
_STAGE = """
CREATE TEMPORARY TABLE "units_incoming" (
    "code" text, "level" text, "name" text, "parent_code" text, "worker" text,
    "population" bigint, "attributes" jsonb, "wkb" bytea
) ON COMMIT DROP
"""
_COPY = f'COPY "units_incoming" ({_COLUMNS}, "wkb") FROM STDIN'
_UPSERT = f"""
INSERT INTO "units" ({_COLUMNS}, "geom")
SELECT {_COLUMNS}, ST_GeomFromWKB("wkb", 4326) FROM "units_incoming"
ON CONFLICT ("code") DO UPDATE SET
    "level" = EXCLUDED."level",
    "name" = EXCLUDED."name",
    "parent_code" = EXCLUDED."parent_code",
    "worker" = EXCLUDED."worker",
    "population" = EXCLUDED."population",
    "attributes" = EXCLUDED."attributes",
    "geom" = EXCLUDED."geom"
"""
# COPY text format: backslash, tab, newline and carriage return escaped; \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_ENVELOPE = "ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
_CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS "schema_migrations" (
    "version"    integer PRIMARY KEY,
    "applied_at" timestamptz NOT NULL DEFAULT now()
)
"""


# One layer of one tile: the tile's envelope (ST_TileEnvelope, Web Mercator), the features whose geometry meets
# it plus the buffer (GIST index, in EPSG:4326), simplified (gridmap.tiles.tolerance) and clipped and quantised by
# ST_AsMVTGeom with the extent and buffer of gridmap.tiles; and the epoch of the table, in the same snapshot.
TILE_SQL = """
WITH "tile" AS (SELECT ST_TileEnvelope(%s, %s, %s) AS "env")
SELECT (SELECT sum("changes") FROM "tile_epochs" WHERE "source" = %s), ST_AsMVT("features", %s, {extent}, 'geom')
FROM (
    SELECT {{columns}}, ST_AsMVTGeom(ST_Simplify(ST_Transform("source"."geom", 3857), %s), "tile"."env",
                                   {extent}, {buffer}, true) AS "geom"
    FROM ({{source}}) AS "source", "tile"
    WHERE "source"."geom" && ST_Transform(ST_Expand("tile"."env", (ST_XMax("tile"."env") - ST_XMin("tile"."env"))
                                                            * {margin}), 4326)
) AS "features"
WHERE "geom" IS NOT NULL
""".format(extent=EXTENT, buffer=BUFFER, margin=BUFFER / EXTENT)


class PostgisStore(Store, Records):
    """Units (and the service's records, :mod:`storage.records`) in a PostgreSQL database with PostGIS."""

    backend = "postgis"
    dialect = Dialect("postgis", "%s", " FOR UPDATE SKIP LOCKED", times_as_text=False,
                      lock_place='SELECT pg_advisory_xact_lock(hashtext("k")) FROM '
                                 '(SELECT "k" FROM unnest(string_to_array(?, \',\')) AS "k" ORDER BY "k") AS "cells"')

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self.url = mask_url(url)
        self._size = _pool_size() if pool_size is None else pool_size
        if self._size < 1:
            raise StoreConfigError(f"pool size {self._size} for {self.url}: need at least 1 connection")
        self._slots = threading.BoundedSemaphore(self._size)
        self._closed = False
        self._epochs_conn: psycopg2.extensions.connection | None = None
        self._epochs_lock = threading.Lock()
        try:
            given = psycopg2.extensions.parse_dsn(url)
        except psycopg2.Error as error:
            raise StoreConfigError(f"cannot connect to PostgreSQL at {self.url}: {one_line(error)}") from error
        extra = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "gridmap", "client_encoding": "UTF8"}
        extra = {k: v for k, v in extra.items() if k not in given}
        self._dsn, self._extra = url, extra
        try:
            # minconn = maxconn: psycopg2's pool closes any connection returned beyond minconn, so a smaller
            # minconn means a new connection (a new server process) for most requests under load.
            self._pool = psycopg2.pool.ThreadedConnectionPool(self._size, self._size, dsn=url, **extra)
        except psycopg2.Error as error:
            raise StoreConfigError(f"cannot connect to PostgreSQL at {self.url}: {one_line(error)}") from error
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------ the contract

    def put_units(self, units: GeoDataFrame) -> int:
        batch = prepare_batch(units)
        if not len(batch):
            return 0
        with self._cursor("put_units") as cur:
            wanted = [p for p in batch.needs if p is not None]
            stored: set[str] = set()
            if wanted:
                cur.execute('SELECT "code" FROM "units" WHERE "code" = ANY(%s::text[]) FOR KEY SHARE', (wanted,))
                stored = {code for (code,) in cur.fetchall()}
            check_parents(batch, stored)
            cur.execute(_STAGE)
            for start in range(0, len(batch.rows), COPY_CHUNK):
                cur.copy_expert(_COPY, io.StringIO(_copy_text(batch.rows[start : start + COPY_CHUNK])))
            cur.execute(_UPSERT)
        return len(batch)

    def get_units(
        self,
        level: str | None = None,
        *,
        codes: Iterable[str] | None = None,
        parent_code: str | None = None,
        bbox: BBox | None = None,
    ) -> GeoDataFrame:
        level = checked_level(level)
        clauses: list[str] = []
        params: list[object] = []
        if level is not None:
            clauses.append('"level" = %s')
            params.append(level)
        if codes is not None:
            wanted = code_list(codes)
            if not wanted:
                return empty_units()
            clauses.append('"code" = ANY(%s::text[])')
            params.append(wanted)
        if parent_code is not None:
            clauses.append('"parent_code" = %s')
            params.append(str(parent_code))
        if bbox is not None:
            box = checked_bbox(bbox)
            clauses.append(f'"geom" && {_ENVELOPE} AND ST_Intersects("geom", ST_GeomFromWKB(%s, 4326))')
            params += [*box, bbox_geometry(box).wkb]
        return to_units(self._select(clauses, params, "get_units"))

    def units_intersecting(self, geometry: BaseGeometry, *, level: str | None = None) -> GeoDataFrame:
        geometry = checked_geometry(geometry)
        level = checked_level(level)
        if geometry.is_empty:
            return empty_units()
        query = "ST_GeomFromWKB(%s, 4326)"
        clauses = [f'"geom" && {query} AND ST_Intersects("geom", {query})']
        wkb = geometry.wkb
        params: list[object] = [wkb, wkb]
        if level is not None:
            clauses.append('"level" = %s')
            params.append(level)
        return to_units(self._select(clauses, params, "units_intersecting"))

    def delete_units(self, codes: Iterable[str]) -> int:
        wanted = code_list(codes)
        if not wanted:
            return 0
        with self._cursor("delete_units") as cur:
            # Lock first: a concurrent put holding FOR KEY SHARE on one of these commits its children
            # before this statement returns, so the check below (a new snapshot) sees them.
            cur.execute('SELECT "code" FROM "units" WHERE "code" = ANY(%s::text[]) FOR UPDATE', (wanted,))
            cur.execute(
                'SELECT "parent_code", "code" FROM "units" '
                'WHERE "parent_code" = ANY(%(codes)s::text[]) AND NOT ("code" = ANY(%(codes)s::text[])) '
                'ORDER BY "parent_code", "code"',
                {"codes": wanted},
            )
            orphans = cur.fetchall()
            if orphans:
                raise children_error(orphans)
            cur.execute('DELETE FROM "units" WHERE "code" = ANY(%s::text[])', (wanted,))
            return cur.rowcount

    def count_units(self) -> dict[str, int]:
        with self._cursor("count_units") as cur:
            cur.execute('SELECT "level", count(*) FROM "units" GROUP BY "level"')
            found = dict(cur.fetchall())
        return {level: int(found.get(level, 0)) for level in LEVELS}

    def existing_codes(self, codes: Iterable[str]) -> set[str]:
        wanted = code_list(codes)
        if not wanted:
            return set()
        with self._cursor("existing_codes") as cur:
            cur.execute('SELECT "code" FROM "units" WHERE "code" = ANY(%s::text[])', (wanted,))
            return {code for (code,) in cur.fetchall()}

    def schema_version(self) -> int:
        with self._cursor("schema_version") as cur:
            cur.execute('SELECT coalesce(max("version"), 0) FROM "schema_migrations"')
            return int(cur.fetchone()[0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool = getattr(self, "_pool", None)
        if pool is not None and not pool.closed:
            pool.closeall()
        with self._epochs_lock:
            if self._epochs_conn is not None:
                self._epochs_conn.close()

    # --------------------------------------------------------------------------------------- plumbing

    @contextmanager
    def _cursor(self, what: str, error: type[StoreError] = StoreError, *,
                autocommit: bool = False) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in one transaction on a pooled connection: committed if the block succeeds, rolled
        back otherwise; psycopg2 errors come out as ``error`` with a one-line message. ``autocommit``: no
        transaction, each statement its own (one round trip where BEGIN and COMMIT add two: for single reads)."""
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        if not self._slots.acquire(timeout=ACQUIRE_TIMEOUT):
            raise StoreError(
                f"{what}: all {self._size} connections to {self.url} stayed busy for {ACQUIRE_TIMEOUT:g} s "
                f"(raise {POOL_SIZE_ENV})"
            )
        conn = None
        discard = False
        try:
            try:
                conn = self._pool.getconn()
            except psycopg2.Error as exc:
                raise error(f"{what}: cannot connect to PostgreSQL at {self.url}: {one_line(exc)}") from exc
            try:
                conn.autocommit = autocommit
                # psycopg2 >= 2.9 opens a transaction inside "with conn" even in autocommit mode.
                with nullcontext() if autocommit else conn, conn.cursor() as cur:
                    yield cur
            except psycopg2.Error as exc:
                discard = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
                raise error(f"{what} failed on {self.url}: {one_line(exc)}") from exc
            except UnicodeError as exc:  # text psycopg2 cannot encode (lone surrogates)
                raise error(f"{what} failed on {self.url}: {one_line(exc)}") from exc
        finally:
            if conn is not None:
                self._give_back(conn, discard or bool(conn.closed))
            self._slots.release()

    def vector_tile(self, layer: str, z: int, x: int, y: int, *,
                    scope: Iterable[str] | None = None) -> tuple[int, bytes]:
        spec = LAYERS[layer]
        check_tile(z, x, y)
        if z < spec.minzoom:
            return self.tile_epochs()[tile_source(layer)], b""
        params: list[object] = []
        columns = ", ".join(f'"{c}"' for c in spec.properties_at(z))
        if spec.level is not None:
            source = f'SELECT {columns}, "geom" FROM "units" WHERE "level" = %s'
            params.append(spec.level)
        else:
            source = f'SELECT {columns}, "geom" FROM "cases" WHERE "state" = ANY(%s::text[])'
            params.append(list(OPEN_STATES))
            if scope is not None:
                source += ' AND ("grid" = ANY(%s::text[]) OR "community" = ANY(%s::text[]) OR "street" = ANY(%s::text[]))'
                params += [list(scope)] * 3
        sql = TILE_SQL.format(source=source, columns=columns)
        ((epoch, tile),) = self._read("vector_tile", sql, [z, x, y, tile_source(layer), layer, tolerance(z), *params])
        return int(epoch), bytes(tile or b"")

    def tile_epochs(self) -> dict[str, int]:
        # Every tile request asks, so on a connection of its own, in autocommit, with the statement prepared:
        # half the time and the CPU of a pooled transaction.
        with self._epochs_lock:
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            try:
                if self._epochs_conn is None or self._epochs_conn.closed:
                    self._epochs_conn = psycopg2.connect(self._dsn, **self._extra)
                    self._epochs_conn.autocommit = True
                    with self._epochs_conn.cursor() as cur:
                        cur.execute(f'PREPARE "tile_epochs" AS {TILE_EPOCHS}')
                with self._epochs_conn.cursor() as cur:
                    cur.execute('EXECUTE "tile_epochs"')
                    return {source: int(n) for source, n in cur.fetchall()}
            except psycopg2.Error as exc:
                if self._epochs_conn is not None:
                    self._epochs_conn.close()  # the next call connects again
                raise StoreError(f"tile_epochs failed on {self.url}: {one_line(exc)}") from exc

    def _read(self, what: str, sql: str, params: list[object] | tuple = ()) -> list[tuple]:
        """The rows of one read-only statement, in autocommit."""
        with self._cursor(what, autocommit=True) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    @contextmanager
    def _tx(self, what: str) -> Iterator[Tx]:
        with self._cursor(what) as cur:
            yield Tx(cur, self.dialect)

    def _give_back(self, conn: psycopg2.extensions.connection, discard: bool) -> None:
        try:
            if self._pool.closed:
                conn.close()
            else:
                self._pool.putconn(conn, close=discard)
        except psycopg2.Error:
            pass

    def _select(self, clauses: list[str], params: list[object], what: str) -> list[tuple]:
        sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + ' ORDER BY "code"'
        with self._cursor(what) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def _prepare(self) -> None:
        """Check the database, create PostGIS if it can, apply pending migrations (one transaction each)."""
        migrations = load_migrations("postgis")
        known = migrations[-1].version
        with self._cursor("opening", StoreConfigError) as cur:
            cur.execute("SELECT current_database(), current_setting('server_encoding')")
            self._database, encoding = cur.fetchone()
            if encoding.upper() not in ("UTF8", "UTF-8"):
                raise StoreConfigError(
                    f"database {self._database} at {self.url} has encoding {encoding}: gridmap needs UTF8"
                )
            if _has_postgis(cur) and _applied(cur) == {m.version for m in migrations}:
                return
        while True:
            with self._cursor("migrating", StoreConfigError) as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                self._ensure_postgis(cur)
                cur.execute(_CREATE_MIGRATIONS)
                applied = _applied(cur)
                if max(applied, default=0) > known:
                    raise newer_schema_error(max(applied), known, f"database {self._database} at {self.url}")
                pending = [m for m in migrations if m.version not in applied]
                if not pending:
                    return
                migration = pending[0]
                try:
                    cur.execute(migration.sql)
                except psycopg2.Error as exc:
                    raise StoreConfigError(
                        f"migration {migration.name} failed on {self.url}: {one_line(exc)}"
                    ) from exc
                cur.execute('INSERT INTO "schema_migrations" ("version") VALUES (%s)', (migration.version,))

    def _ensure_postgis(self, cur: psycopg2.extensions.cursor) -> None:
        if _has_postgis(cur):
            return
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
        if cur.fetchone() is None:
            raise StoreConfigError(
                f"database {self._database} at {self.url} lacks the PostGIS extension and this PostgreSQL "
                "server has no PostGIS installed: install PostGIS 3 for it"
            )
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        except psycopg2.Error as exc:
            raise StoreConfigError(
                f"database {self._database} at {self.url} lacks the PostGIS extension and it could not be "
                f"created ({one_line(exc)}): have a superuser run CREATE EXTENSION postgis in it"
            ) from exc


def _copy_text(rows: list[tuple]) -> str:
    """``(code, level, name, parent_code, worker, population, attributes_json, wkb)`` rows as COPY text."""

    def field(value: object) -> str:
        return "\\N" if value is None else str(value).translate(_COPY_ESCAPES)

    return "".join(
        f"{field(code)}\t{field(level)}\t{field(name)}\t{field(parent)}\t{field(worker)}\t{field(population)}"
        f"\t{field(attributes)}\t\\\\x{wkb.hex()}\n"
        for code, level, name, parent, worker, population, attributes, wkb in rows
    )


def _has_postgis(cur: psycopg2.extensions.cursor) -> bool:
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
    return cur.fetchone() is not None


def _applied(cur: psycopg2.extensions.cursor) -> set[int]:
    cur.execute("SELECT to_regclass('\"schema_migrations\"') IS NOT NULL")
    if not cur.fetchone()[0]:
        return set()
    cur.execute('SELECT "version" FROM "schema_migrations"')
    return {int(v) for (v,) in cur.fetchall()}


def _pool_size() -> int:
    raw = os.environ.get(POOL_SIZE_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise StoreConfigError(f"{POOL_SIZE_ENV}={raw!r} is not a whole number of connections >= 1")
    return size
