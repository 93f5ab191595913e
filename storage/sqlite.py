"""Embedded store: one SQLite file (stdlib :mod:`sqlite3`), WAL mode, an R*Tree for the spatial index.

Geometry is WKB in a blob; ``units_rtree`` holds each unit's bounding box under the unit's ``id`` and is
kept in sync by triggers (``storage/sql/sqlite/0001_units.sql``), so in the same transaction as the write.
Spatial predicates: R*Tree prefilter on bounds in SQL, then the exact ``shapely.intersects`` in Python.
Writes run in ``BEGIN IMMEDIATE`` transactions, so writers are serialised by SQLite itself.

Thread-safe: each thread borrows its own connection from a small pool (WAL lets readers run alongside
the writer).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from geopandas import GeoDataFrame, points_from_xy
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
    keep_intersecting,
    load_migrations,
    newer_schema_error,
    one_line,
    prepare_batch,
    to_units,
)
from storage.base import BBox, Store
from gridmap.tiles import LAYERS, check_tile, encode_tile, lonlat_bounds
from storage.records import OPEN_STATES, TILE_EPOCHS, Dialect, Records, Tx, tile_source
from storage.errors import StoreConfigError, StoreError

#: Seconds a connection waits for another writer's lock before failing with "database is locked".
BUSY_TIMEOUT = 30.0
#: Idle connections kept for reuse; more are opened on demand and closed when returned.
IDLE_CONNECTIONS = 4

_COLUMNS = '"code", "level", "name", "parent_code", "worker", "population", "attributes", "geom"'
_SELECT = f'SELECT {_COLUMNS} FROM "units"'
_IN_JSON = '(SELECT "value" FROM json_each(?))'
_UPSERT = f"""
INSERT INTO "units" ({_COLUMNS}, "minx", "miny", "maxx", "maxy")
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT ("code") DO UPDATE SET
    "level" = excluded."level",
    "name" = excluded."name",
    "parent_code" = excluded."parent_code",
    "worker" = excluded."worker",
    "population" = excluded."population",
    "attributes" = excluded."attributes",
    "geom" = excluded."geom",
    "minx" = excluded."minx",
    "miny" = excluded."miny",
    "maxx" = excluded."maxx",
    "maxy" = excluded."maxy"
"""
_RTREE_HITS = (
    '"id" IN (SELECT "id" FROM "units_rtree" WHERE "minx" <= ? AND "maxx" >= ? AND "miny" <= ? AND "maxy" >= ?)'
)
_CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS "schema_migrations" (
    "version"    INTEGER PRIMARY KEY,
    "applied_at" TEXT NOT NULL
)
"""


class SqliteStore(Store, Records):
    """Units (and the service's records, :mod:`storage.records`) in one SQLite file at ``path`` (created, with
    its schema, if missing; its directory must exist)."""

    backend = "sqlite"
    dialect = Dialect("sqlite", "?", "", times_as_text=True)

    def __init__(self, path: str | os.PathLike[str], *, url: str | None = None) -> None:
        self.path = Path(os.path.abspath(path))
        self.url = url or f"sqlite:///{self.path}"
        if not self.path.parent.is_dir():
            raise StoreConfigError(f"cannot open SQLite database {self.path}: directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise StoreConfigError(f"cannot open SQLite database {self.path}: it is a directory")
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        try:
            conn = self._connect()
            try:
                self._enable_wal(conn)
                self._migrate(conn)
            finally:
                self._release(conn)
        except sqlite3.Error as error:
            self.close()
            raise StoreConfigError(f"cannot open SQLite database {self.path}: {one_line(error)}") from error
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------ the contract

    def put_units(self, units: GeoDataFrame) -> int:
        batch = prepare_batch(units)
        if not len(batch):
            return 0
        with self._write("put_units") as conn:
            wanted = [p for p in batch.needs if p is not None]
            stored: set[str] = set()
            if wanted:
                sql = f'SELECT "code" FROM "units" WHERE "code" IN {_IN_JSON}'
                stored = {code for (code,) in conn.execute(sql, (json.dumps(wanted),))}
            check_parents(batch, stored)
            conn.executemany(_UPSERT, (row + tuple(box) for row, box in zip(batch.rows, batch.bounds.tolist())))
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
            clauses.append('"level" = ?')
            params.append(level)
        if codes is not None:
            wanted = code_list(codes)
            if not wanted:
                return empty_units()
            clauses.append(f'"code" IN {_IN_JSON}')
            params.append(json.dumps(wanted))
        if parent_code is not None:
            clauses.append('"parent_code" = ?')
            params.append(str(parent_code))
        box = None
        if bbox is not None:
            minx, miny, maxx, maxy = checked_bbox(bbox)
            box = bbox_geometry((minx, miny, maxx, maxy))
            clauses.append(_RTREE_HITS)
            params += [maxx, minx, maxy, miny]
        rows = self._select(clauses, params, "get_units")
        if box is None:
            return to_units(rows)
        return to_units(*keep_intersecting(rows, box))

    def units_intersecting(self, geometry: BaseGeometry, *, level: str | None = None) -> GeoDataFrame:
        geometry = checked_geometry(geometry)
        level = checked_level(level)
        if geometry.is_empty:
            return empty_units()
        minx, miny, maxx, maxy = geometry.bounds
        clauses, params = [_RTREE_HITS], [maxx, minx, maxy, miny]
        if level is not None:
            clauses.append('"level" = ?')
            params.append(level)
        rows = self._select(clauses, params, "units_intersecting")
        return to_units(*keep_intersecting(rows, geometry))

    def delete_units(self, codes: Iterable[str]) -> int:
        wanted = code_list(codes)
        if not wanted:
            return 0
        doomed = json.dumps(wanted)
        with self._write("delete_units") as conn:
            orphans = conn.execute(
                f'SELECT "parent_code", "code" FROM "units" WHERE "parent_code" IN {_IN_JSON} '
                f'AND "code" NOT IN {_IN_JSON} ORDER BY "parent_code", "code"',
                (doomed, doomed),
            ).fetchall()
            if orphans:
                raise children_error(orphans)
            return conn.execute(f'DELETE FROM "units" WHERE "code" IN {_IN_JSON}', (doomed,)).rowcount

    def count_units(self) -> dict[str, int]:
        with self._connection("count_units") as conn:
            found = dict(conn.execute('SELECT "level", count(*) FROM "units" GROUP BY "level"').fetchall())
        return {level: int(found.get(level, 0)) for level in LEVELS}

    def existing_codes(self, codes: Iterable[str]) -> set[str]:
        wanted = code_list(codes)
        if not wanted:
            return set()
        with self._connection("existing_codes") as conn:
            sql = f'SELECT "code" FROM "units" WHERE "code" IN {_IN_JSON}'
            return {code for (code,) in conn.execute(sql, (json.dumps(wanted),))}

    def schema_version(self) -> int:
        with self._connection("schema_version") as conn:
            return int(conn.execute('SELECT coalesce(max("version"), 0) FROM "schema_migrations"').fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --------------------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # only after a failure we could not roll back
            conn.close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _connection(self, what: str) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._acquire()
        except sqlite3.Error as error:
            raise StoreError(f"{what}: cannot open {self.path}: {one_line(error)}") from error
        try:
            yield conn
        except (sqlite3.Error, UnicodeError, OverflowError) as error:  # the latter two: values sqlite3 cannot bind
            raise StoreError(f"{what} failed on {self.path}: {one_line(error)}") from error
        finally:
            self._release(conn)

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block succeeds, rolled back otherwise."""
        with self._connection(what) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")

    def vector_tile(self, layer: str, z: int, x: int, y: int, *,
                    scope: Iterable[str] | None = None) -> tuple[int, bytes]:
        spec = LAYERS[layer]
        check_tile(z, x, y)
        epoch = self.tile_epochs()[tile_source(layer)]  # read before the data: the tile is at least this new
        if z < spec.minzoom:
            return epoch, b""
        box = lonlat_bounds(z, x, y)
        properties = list(spec.properties_at(z))
        if spec.level is not None:
            frame = self.get_units(spec.level, bbox=box)[[*properties, "geometry"]]
        else:
            cases = self.list_cases(states=OPEN_STATES, scope=scope, bbox=box)
            frame = GeoDataFrame([{k: c[k] for k in properties} for c in cases], columns=properties,
                                 geometry=points_from_xy([c["lon"] for c in cases], [c["lat"] for c in cases]),
                                 crs="EPSG:4326")
        return epoch, encode_tile({layer: frame.to_crs("EPSG:3857")}, z, x, y)

    def tile_epochs(self) -> dict[str, int]:
        with self._connection("tile_epochs") as conn:
            return {source: int(n) for source, n in conn.execute(TILE_EPOCHS)}

    @contextmanager
    def _tx(self, what: str) -> Iterator[Tx]:
        with self._write(what) as conn:
            yield Tx(conn.cursor(), self.dialect)

    def _select(self, clauses: list[str], params: list[object], what: str) -> list[tuple]:
        sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + ' ORDER BY "code"'
        with self._connection(what) as conn:
            return conn.execute(sql, params).fetchall()

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent). The switch fails at once, without waiting for the busy
        timeout, while another connection has the file open in the middle of the same switch: retry then."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = 0.005
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreConfigError(f"cannot open SQLite database {self.path}: WAL mode refused ({mode})")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply pending ``storage/sql/sqlite/NNNN_*.sql`` files in order, each in its own transaction."""
        migrations = load_migrations("sqlite")
        known = migrations[-1].version
        if _applied(conn) == {m.version for m in migrations}:
            return
        for migration in migrations:
            conn.execute("BEGIN IMMEDIATE")  # serialises concurrent openers: re-read what is applied
            try:
                conn.execute(_CREATE_MIGRATIONS)
                applied = _applied(conn)
                if max(applied, default=0) > known:
                    raise newer_schema_error(max(applied), known, str(self.path))
                if migration.version not in applied:
                    try:
                        for statement in split_statements(migration.sql):
                            conn.execute(statement)
                    except sqlite3.Error as error:
                        raise StoreConfigError(
                            f"cannot open SQLite database {self.path}: migration {migration.name} failed: "
                            f"{one_line(error)}"
                        ) from error
                    conn.execute(
                        'INSERT INTO "schema_migrations" ("version", "applied_at") VALUES (?, ?)',
                        (migration.version, datetime.now(timezone.utc).isoformat(timespec="seconds")),
                    )
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")


def _applied(conn: sqlite3.Connection) -> set[int]:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    if not exists:
        return set()
    return {int(v) for (v,) in conn.execute('SELECT "version" FROM "schema_migrations"')}


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # _release closes a connection left in a transaction


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script (trigger bodies kept whole), for running inside our own transaction.

    ``executescript`` would commit first, so a migration could not be one transaction with its record.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(line for line in buffer.splitlines() if not line.strip().startswith("--")).strip()
    if rest:
        raise StoreError(f"SQL script ends with an incomplete statement: {rest[:60]!r}")
    return statements
