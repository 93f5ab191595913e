"""The service's records (accounts, tokens, grid responsibilities, photos, reports, cases and their audit log,
surveys, upload batches, jobs): one set of SQL statements shared by both backends.

The statements are written once, with ``?`` placeholders, in the SQL both PostgreSQL and SQLite speak
(``INSERT ... ON CONFLICT``, ``RETURNING``). A backend supplies a :class:`Dialect` and a ``_tx(what)``
context manager yielding a :class:`Tx` (one transaction: committed when the block succeeds, rolled back
otherwise). Values cross the boundary as plain Python: timezone-aware UTC ``datetime``, ``dict``/``list``
for JSON, ``bool``. Rows come back as ``dict``.

Writes that must be atomic with their audit event (a case and its first event, a transition and its event,
a report and the case it opens or joins) happen in one transaction. The audit log is append-only in the
schema (triggers refuse UPDATE and DELETE) and hash-chained here: each event stores
``sha256(prev_hash + canonical JSON of the event)``, so :func:`verify_chain` detects a rewrite made behind
the database's back (a restored dump, a superuser dropping the trigger).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone

from gridmap.tiles import LAYERS
from storage.errors import InvalidValueError, StoreError

GENESIS = "0" * 64
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)
_CASE_TIMES = ("reported_at", "registered_at", "dispatched_at", "handled_at", "verified_at", "closed_at",
               "deadline_at", "updated_at")
_CASE_COLUMNS = ("id", "category", "source", "state", "lon", "lat", "street", "community", "grid", "courtyard",
                 "assignee", "description", "source_ref", "attributes", "escalation_level", *_CASE_TIMES, "version")
#: Columns a transition may change (besides state, updated_at and version).
CASE_UPDATABLE = frozenset({"assignee", "escalation_level", "registered_at", "dispatched_at", "handled_at",
                            "verified_at", "closed_at", "deadline_at", "description", "attributes"})
_EVENT_COLUMNS = ("id", "case_id", "seq", "at", "actor", "role", "action", "from_state", "to_state", "assignee",
                  "note", "photos", "prev_hash", "hash")
_REPORT_COLUMNS = ("id", "client_id", "username", "category", "lon", "lat", "datum", "accuracy_m", "observed_at",
                   "received_at", "note", "photos", "flags", "grid", "case_id")
_JOB_COLUMNS = ("id", "kind", "batch_id", "state", "attempts", "lease_owner", "lease_until", "progress", "result",
                "error", "created_at", "updated_at")
_ACCOUNT_COLUMNS = ("username", "role", "display_name", "password_hash", "scope", "absent", "max_open", "created_at")
OPEN_STATES = ("reported", "registered", "dispatched", "handled", "verified")
_INT64 = 2**63 - 1
TILE_EPOCHS = 'SELECT "source", sum("changes") FROM "tile_epochs" GROUP BY "source"'


def tile_source(layer: str) -> str:
    """The table a tile layer is drawn from, whose epoch its tiles follow."""
    return "cases" if LAYERS[layer].level is None else "units"


class ConflictError(StoreError):
    """A write lost a race: the case changed since it was read (its version moved on), or a job's lease
    passed to another worker. The caller reads again and decides."""


class RecordNotFoundError(StoreError):
    """A record asked for by id is not stored."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends for the shared statements."""

    name: str
    #: ``%s`` for psycopg2, ``?`` for sqlite3.
    placeholder: str
    #: Appended to the job-claiming subquery (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite serialises writers).
    skip_locked: str
    #: Datetimes are stored as text (SQLite) rather than native timestamps.
    times_as_text: bool
    #: Serialises filing reports of one category near one place (PostgreSQL: advisory locks on the cells of
    #: a coarse grid that the search box touches, given comma-separated in sorted order), so two reports of
    #: the same thing arriving together join one case; empty where writers are serial anyway.
    lock_place: str = ""

    def sql(self, statement: str) -> str:
        if self.placeholder == "?":
            return statement
        return statement.replace("%", "%%").replace("?", self.placeholder)


@dataclass(frozen=True)
class Step:
    """One move of a case: the state it goes to, the columns that change, and its audit event."""

    state: str
    changes: dict
    event: dict


class Tx:
    """One transaction's cursor, speaking ``?`` placeholders whatever the backend."""

    def __init__(self, cursor, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def run(self, statement: str, params: Sequence[object] = ()) -> int:
        self._cursor.execute(self._dialect.sql(statement), [self._value(p) for p in params])
        return self._cursor.rowcount

    def all(self, statement: str, params: Sequence[object] = ()) -> list[tuple]:
        self.run(statement, params)
        return list(self._cursor.fetchall())

    def one(self, statement: str, params: Sequence[object] = ()) -> tuple | None:
        self.run(statement, params)
        return self._cursor.fetchone()

    def _value(self, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise InvalidValueError(f"text {value[:20]!r}… contains a NUL character")
        if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 - 1 <= value <= _INT64:
            raise InvalidValueError(f"number {value} is out of range")
        if isinstance(value, datetime):
            return encode_time(value) if self._dialect.times_as_text else _utc(value)
        if isinstance(value, (dict, list)):
            return _JSON.encode(value)
        if isinstance(value, bool) and self._dialect.times_as_text:
            return int(value)
        return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise StoreError(f"naive datetime {value.isoformat()}: times must carry a timezone")
    return value.astimezone(timezone.utc)


def encode_time(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, microseconds included, so text order is time order."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def decode_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(str(value)).astimezone(timezone.utc)


def decode_json(value: object):
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


def _row(columns: Sequence[str], values: Sequence[object], *, times=(), jsons=(), bools=()) -> dict:
    row = dict(zip(columns, values))
    for key in times:
        row[key] = decode_time(row[key])
    for key in jsons:
        row[key] = decode_json(row[key])
    for key in bools:
        row[key] = bool(row[key])
    return row


def _id(value) -> int | None:
    """A record id as the database can hold it; None for one no row can have (out of int64 range)."""
    number = int(value)
    return number if 0 < number <= _INT64 else None


def _case(values) -> dict:
    return _row(_CASE_COLUMNS, values, times=_CASE_TIMES, jsons=("attributes",))


def _event(values) -> dict:
    return _row(_EVENT_COLUMNS, values, times=("at",), jsons=("photos",))


def _report(values) -> dict:
    return _row(_REPORT_COLUMNS, values, times=("observed_at", "received_at"), jsons=("photos", "flags"))


def _job(values) -> dict:
    return _row(_JOB_COLUMNS, values, times=("lease_until", "created_at", "updated_at"), jsons=("progress", "result"))


def _account(values) -> dict:
    return _row(_ACCOUNT_COLUMNS, values, times=("created_at",), jsons=("scope",), bools=("absent",))


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def event_hash(prev_hash: str, event: dict) -> str:
    """SHA-256 over the previous hash and the event's content (everything but ids and hashes)."""
    content = {k: event.get(k) for k in ("case_id", "seq", "actor", "role", "action", "from_state", "to_state",
                                         "assignee", "note", "photos")}
    content["at"] = encode_time(event["at"])
    return hashlib.sha256((prev_hash + _JSON.encode(content)).encode("utf-8")).hexdigest()


def verify_chain(events: Sequence[dict]) -> list[int]:
    """The seqs of events whose hash does not follow from their predecessor and content (empty = intact)."""
    broken: list[int] = []
    prev = GENESIS
    for index, event in enumerate(events, start=1):
        if event["seq"] != index or event["prev_hash"] != prev or event_hash(prev, event) != event["hash"]:
            broken.append(event["seq"])
        prev = event["hash"]
    return broken


class Records:
    """The service's record operations, mixed into both stores (see the module docstring)."""

    dialect: Dialect

    @abstractmethod
    def _tx(self, what: str) -> AbstractContextManager[Tx]:
        """One transaction (see the module docstring)."""

    @abstractmethod
    def vector_tile(self, layer: str, z: int, x: int, y: int, *,
                    scope: Iterable[str] | None = None) -> tuple[int, bytes]:
        """One layer of :data:`gridmap.tiles.LAYERS` as an MVT tile (empty bytes: nothing there), with the epoch
        of its table (:func:`tile_source`, :meth:`tile_epochs`) as it was no later than the data drawn: a
        tile kept under that epoch can be older than it says, never newer. ``cases`` are the open ones,
        limited to ``scope`` (unit codes, as :meth:`list_cases`) when given."""

    @abstractmethod
    def tile_epochs(self) -> dict[str, int]:
        """``{"units": n, "cases": m}``: numbers that grow with every committed write to that table, by any
        process (triggers of the ``0003_tile_epochs`` migration; read with :data:`TILE_EPOCHS`). Cheap: the
        tile cache reads them on every request for a tile it holds."""

    # ----------------------------------------------------------------------------- accounts and tokens

    def put_account(self, account: dict) -> dict:
        """Insert or replace an account (``username, role, display_name, password_hash, scope, absent,
        max_open``); ``created_at`` is kept from the first insert."""
        values = [account["username"], account["role"], account.get("display_name", ""), account["password_hash"],
                  list(account.get("scope", [])), bool(account.get("absent", False)),
                  int(account.get("max_open", 30)), account.get("created_at") or datetime.now(timezone.utc)]
        with self._tx("put_account") as tx:
            row = tx.one(
                f'INSERT INTO "accounts" ({_columns(_ACCOUNT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) '
                'ON CONFLICT ("username") DO UPDATE SET "role" = excluded."role", '
                '"display_name" = excluded."display_name", "password_hash" = excluded."password_hash", '
                '"scope" = excluded."scope", "absent" = excluded."absent", "max_open" = excluded."max_open" '
                f'RETURNING {_columns(_ACCOUNT_COLUMNS)}',
                values,
            )
        return _account(row)

    def get_account(self, username: str) -> dict | None:
        with self._tx("get_account") as tx:
            row = tx.one(f'SELECT {_columns(_ACCOUNT_COLUMNS)} FROM "accounts" WHERE "username" = ?', [username])
        return None if row is None else _account(row)

    def list_accounts(self, role: str | None = None) -> list[dict]:
        clause, params = ('WHERE "role" = ?', [role]) if role else ("", [])
        with self._tx("list_accounts") as tx:
            rows = tx.all(f'SELECT {_columns(_ACCOUNT_COLUMNS)} FROM "accounts" {clause} ORDER BY "username"', params)
        return [_account(r) for r in rows]

    def set_absent(self, username: str, absent: bool) -> None:
        with self._tx("set_absent") as tx:
            if not tx.run('UPDATE "accounts" SET "absent" = ? WHERE "username" = ?', [bool(absent), username]):
                raise RecordNotFoundError(f"no account {username!r}")

    def add_token(self, token_hash: str, username: str, *, created_at: datetime, expires_at: datetime) -> None:
        with self._tx("add_token") as tx:
            tx.run('INSERT INTO "tokens" ("token_hash", "username", "created_at", "expires_at") VALUES (?, ?, ?, ?)',
                   [token_hash, username, created_at, expires_at])

    def account_for_token(self, token_hash: str, now: datetime) -> dict | None:
        """The account a live token belongs to, with the token's ``token_expires_at`` (None: unknown or
        expired)."""
        cols = ", ".join(f'a."{c}"' for c in _ACCOUNT_COLUMNS)
        with self._tx("account_for_token") as tx:
            row = tx.one(f'SELECT {cols}, t."expires_at" FROM "tokens" t JOIN "accounts" a ON a."username" = t."username" '
                         'WHERE t."token_hash" = ? AND t."expires_at" > ?', [token_hash, now])
        if row is None:
            return None
        return {**_account(row[:-1]), "token_expires_at": decode_time(row[-1])}

    def revoke_tokens(self, username: str) -> int:
        with self._tx("revoke_tokens") as tx:
            return tx.run('DELETE FROM "tokens" WHERE "username" = ?', [username])

    # ---------------------------------------------------------------------------- grid responsibilities

    def put_assignments(self, rows: Iterable[tuple[str, str | None, str | None]]) -> int:
        """``(grid_code, worker, backup)`` rows, inserted or replaced."""
        rows = list(rows)
        with self._tx("put_assignments") as tx:
            for grid, worker, backup in rows:
                tx.run('INSERT INTO "grid_assignments" ("grid_code", "worker", "backup") VALUES (?, ?, ?) '
                       'ON CONFLICT ("grid_code") DO UPDATE SET "worker" = excluded."worker", '
                       '"backup" = excluded."backup"', [grid, worker, backup])
        return len(rows)

    def assignment(self, grid_code: str) -> tuple[str | None, str | None]:
        """``(worker, backup)`` responsible for a grid (``(None, None)`` when nobody is)."""
        with self._tx("assignment") as tx:
            row = tx.one('SELECT "worker", "backup" FROM "grid_assignments" WHERE "grid_code" = ?', [grid_code])
        return (None, None) if row is None else (row[0], row[1])

    def responsibles(self, grid_code: str) -> tuple[dict | None, dict | None]:
        """The grid's responsible worker and backup as ``{username, absent, max_open, open_cases}`` (None where
        there is none), in one query: what the dispatch rule needs."""
        with self._tx("responsibles") as tx:
            return self._responsibles(tx, grid_code)

    @staticmethod
    def _responsibles(tx: Tx, grid_code: str) -> tuple[dict | None, dict | None]:
        states = ", ".join("?" for _ in OPEN_STATES)
        rows = tx.all(
            'SELECT g."worker", g."backup", a."username", a."absent", a."max_open", '
            f'(SELECT count(*) FROM "cases" c WHERE c."assignee" = a."username" AND c."state" IN ({states})) '
            'FROM "grid_assignments" g JOIN "accounts" a ON a."username" IN (g."worker", g."backup") '
            'WHERE g."grid_code" = ?', [*OPEN_STATES, grid_code])
        found = {r[2]: {"username": r[2], "absent": bool(r[3]), "max_open": int(r[4]), "open_cases": int(r[5])}
                 for r in rows}
        if not rows:
            return None, None
        return found.get(rows[0][0]), found.get(rows[0][1])

    def put_photo(self, photo: dict) -> bool:
        """Record a photo by its SHA-256 (``sha256, bytes, width, height, format, exif``); False if known."""
        with self._tx("put_photo") as tx:
            return self._put_photo(tx, photo)

    @staticmethod
    def _put_photo(tx: Tx, photo: dict) -> bool:
        row = tx.one('INSERT INTO "photos" ("sha256", "bytes", "width", "height", "format", "exif", "created_at") '
                     'VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT ("sha256") DO NOTHING RETURNING "sha256"',
                     [photo["sha256"], photo["bytes"], photo["width"], photo["height"], photo["format"],
                      photo.get("exif", {}), datetime.now(timezone.utc)])
        return row is not None

    def get_photo(self, sha256: str) -> dict | None:
        with self._tx("get_photo") as tx:
            row = tx.one('SELECT "sha256", "bytes", "width", "height", "format", "exif", "created_at" FROM "photos" '
                         'WHERE "sha256" = ?', [sha256])
        if row is None:
            return None
        return _row(("sha256", "bytes", "width", "height", "format", "exif", "created_at"), row,
                    times=("created_at",), jsons=("exif",))

    # ---------------------------------------------------------------------------------------------- cases

    def create_case(self, case: dict, event: dict, steps: Sequence[Step] = ()) -> tuple[dict, bool]:
        """Insert a case and its first audit event, then apply ``steps`` (see :meth:`advance_case`), all in
        one transaction.

        ``case`` holds the columns of ``cases`` (no id/version); ``event`` the event's ``at, actor, role,
        action, note, photos``. With a ``source_ref`` already stored, nothing is written and the stored
        case comes back with ``False``: a candidate or hotline request files one case, however often sent.
        """
        with self._tx("create_case") as tx:
            return self._create_case(tx, case, event, steps)

    def _create_case(self, tx: Tx, case: dict, event: dict, steps: Sequence[Step] = ()) -> tuple[dict, bool]:
        if case.get("source_ref") is not None:
            existing = tx.one(f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases" WHERE "source_ref" = ?',
                              [case["source_ref"]])
            if existing is not None:
                return _case(existing), False
        # The case goes in as it stands after its steps, with all its events in one statement: a new report's
        # case, registered and dispatched, is two statements rather than six.
        final, running, trail = dict(case), case.get("assignee"), []
        for step in steps:
            _check_changes(step.changes)
            trail.append((final["state"], step))
            final.update(step.changes)
            final["state"] = step.state
        final["updated_at"] = steps[-1].event["at"] if steps else case.get("updated_at", case["reported_at"])
        final["version"] = 1 + len(steps)
        names = [c for c in _CASE_COLUMNS if c != "id" and c in final]
        row = tx.one(
            f'INSERT INTO "cases" ({_columns(names)}) VALUES ({", ".join("?" for _ in names)}) '
            f'ON CONFLICT ("source_ref") DO NOTHING RETURNING {_columns(_CASE_COLUMNS)}', [final[c] for c in names])
        if row is None:  # a concurrent insert of the same source_ref won
            existing = tx.one(f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases" WHERE "source_ref" = ?',
                              [case["source_ref"]])
            return _case(existing), False
        created = _case(row)
        events = [_chain(created["id"], None, None, case["state"], {**event, "assignee": running})]
        for from_state, step in trail:
            running = step.changes.get("assignee", running)
            events.append(_chain(created["id"], events[-1], from_state, step.state, {**step.event, "assignee": running}))
        _insert_events(tx, events)
        return created, True

    def get_case(self, case_id: int) -> dict | None:
        if _id(case_id) is None:
            return None
        with self._tx("get_case") as tx:
            row = tx.one(f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases" WHERE "id" = ?', [int(case_id)])
        return None if row is None else _case(row)

    def list_cases(
        self,
        *,
        states: Iterable[str] | None = None,
        scope: Iterable[str] | None = None,
        assignee: str | None = None,
        category: str | None = None,
        source: str | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        reported_from: datetime | None = None,
        reported_to: datetime | None = None,
        deadline_before: datetime | None = None,
        ids: Iterable[int] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """Cases matching every given filter, by id. ``scope``: unit codes; a case is in scope when its
        street, community or grid is one of them (how a role's reach is expressed)."""
        clauses, params = _case_filters(states=states, scope=scope, assignee=assignee, category=category,
                                        source=source, bbox=bbox, reported_from=reported_from,
                                        reported_to=reported_to, deadline_before=deadline_before, ids=ids)
        sql = f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases"'
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += ' ORDER BY "id"'
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        with self._tx("list_cases") as tx:
            return [_case(r) for r in tx.all(sql, params)]

    def count_cases(self, **filters) -> int:
        clauses, params = _case_filters(**filters)
        sql = 'SELECT count(*) FROM "cases"' + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._tx("count_cases") as tx:
            return int(tx.one(sql, params)[0])

    def advance_case(self, case_id: int, *, version: int, steps: Sequence[Step]) -> dict:
        """Apply ``steps`` to a case atomically, if it is still at ``version``: each moves it to a state with
        changes to columns of :data:`CASE_UPDATABLE` and appends its event (``at, actor, role, action, note,
        photos``). Several steps (register, then dispatch) are one transaction, so a case is never seen
        half-way.

        Raises :class:`ConflictError` when another writer got there first, :class:`RecordNotFoundError`
        for an unknown id.
        """
        if _id(case_id) is None:
            raise RecordNotFoundError(f"no case {case_id}")
        with self._tx("advance_case") as tx:
            row = tx.one(f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases" WHERE "id" = ?', [int(case_id)])
            if row is None:
                raise RecordNotFoundError(f"no case {case_id}")
            case = _case(row)
            if case["version"] != version:
                raise ConflictError(f"case {case_id} changed meanwhile (now version {case['version']}, "
                                    f"expected {version}): reload it and try again")
            return self._advance(tx, case, steps)

    def _advance(self, tx: Tx, case: dict, steps: Sequence[Step], last: dict | None = None) -> dict:
        for step in steps:
            _check_changes(step.changes)
            names = sorted(step.changes)
            sets = "".join(f', "{n}" = ?' for n in names)
            row = tx.one(
                f'UPDATE "cases" SET "state" = ?, "updated_at" = ?, "version" = "version" + 1{sets} '
                f'WHERE "id" = ? AND "version" = ? RETURNING {_columns(_CASE_COLUMNS)}',
                [step.state, step.event["at"], *[step.changes[n] for n in names], case["id"], case["version"]])
            if row is None:
                raise ConflictError(f"case {case['id']} changed meanwhile: reload it and try again")
            after = _case(row)
            last = self._append_event(tx, after, case["state"], {**step.event, "assignee": after["assignee"]}, last)
            case = after
        return case

    def _append_event(self, tx: Tx, case: dict, from_state: str | None, event: dict,
                      last: dict | None = None) -> dict:
        """Append ``event`` to the case's chain; ``last`` is its previous event when the caller just wrote it
        (saves reading it back)."""
        if last is None and from_state is not None:
            row = tx.one('SELECT "seq", "hash" FROM "case_events" WHERE "case_id" = ? ORDER BY "seq" DESC LIMIT 1',
                         [case["id"]])
            last = None if row is None else {"seq": int(row[0]), "hash": row[1]}
        full = _chain(case["id"], last, from_state, case["state"], event)
        _insert_events(tx, [full])
        return full

    def case_events(self, case_id: int) -> list[dict]:
        if _id(case_id) is None:
            return []
        with self._tx("case_events") as tx:
            rows = tx.all(f'SELECT {_columns(_EVENT_COLUMNS)} FROM "case_events" WHERE "case_id" = ? ORDER BY "seq"',
                          [int(case_id)])
        return [_event(r) for r in rows]

    def file_report(
        self,
        report: dict,
        *,
        new_case: dict,
        event: dict,
        near: Callable[[list[dict]], dict | None],
        search_box: tuple[float, float, float, float],
        steps: Callable[[Callable[[str], tuple]], Sequence[Step]] | None = None,
        photos: Sequence[dict] = (),
    ) -> tuple[dict, dict, str]:
        """Store a field report (and its ``photos``, as :meth:`put_photo`) and attach it to an open case or
        open one, in one transaction. A new case also takes the steps (registration, dispatch) that
        ``steps(responsibles)`` returns, given :meth:`responsibles` read in this transaction (so a report that
        joins a case reads nothing for a dispatch it does not need).

        Idempotent by ``report["client_id"]``: a report sent again (an offline queue replaying, a retry
        after a lost response) returns the stored one with ``"duplicate"``. Otherwise the open cases of
        the same category inside ``search_box`` are handed to ``near``, which returns the one to join (the
        caller measures distance) or None; the outcome is ``"attached"`` or ``"opened"``.
        Returns ``(report, case, outcome)``.
        """
        with self._tx("file_report") as tx:
            if self.dialect.lock_place:
                # Two reports within the search radius have boxes that touch a common cell, so they meet
                # on that cell's lock; taken in sorted order, the locks cannot deadlock.
                tx.run(self.dialect.lock_place, [",".join(_cells(report["category"], search_box))])
            stored = tx.one(f'SELECT {_columns(_REPORT_COLUMNS)} FROM "reports" WHERE "client_id" = ?',
                            [report["client_id"]])
            if stored is not None:
                stored = _report(stored)
                case = _case(tx.one(f'SELECT {_columns(_CASE_COLUMNS)} FROM "cases" WHERE "id" = ?',
                                    [stored["case_id"]]))
                return stored, case, "duplicate"
            minx, miny, maxx, maxy = search_box
            states = ", ".join("?" for _ in OPEN_STATES)
            # Each nearby case comes with its last audit event, which an attached report's event follows.
            last_event = ('(SELECT e."{}" FROM "case_events" e WHERE e."case_id" = "cases"."id" '
                          'ORDER BY e."seq" DESC LIMIT 1)')
            rows = tx.all(f'SELECT {_columns(_CASE_COLUMNS)}, {last_event.format("seq")}, {last_event.format("hash")} '
                          f'FROM "cases" WHERE "category" = ? AND "state" IN ({states}) '
                          'AND "lat" BETWEEN ? AND ? AND "lon" BETWEEN ? AND ? ORDER BY "id"',
                          [report["category"], *OPEN_STATES, miny, maxy, minx, maxx])
            for photo in photos:
                self._put_photo(tx, photo)
            nearby = [_case(r[:-2]) for r in rows]
            lasts = {r[0]: {"seq": int(r[-2]), "hash": r[-1]} for r in rows}
            joined = near(nearby)
            if joined is not None:
                case, outcome = joined, "attached"
                self._append_event(tx, case, case["state"], {**event, "action": "attach_report",
                                                             "assignee": case["assignee"]}, lasts[case["id"]])
            else:
                planned = steps(lambda grid: self._responsibles(tx, grid)) if steps else ()
                case, _ = self._create_case(tx, new_case, event, planned)
                outcome = "opened"
            names = [c for c in _REPORT_COLUMNS if c != "id"]
            values = {**report, "case_id": case["id"]}
            row = tx.one(f'INSERT INTO "reports" ({_columns(names)}) VALUES ({", ".join("?" for _ in names)}) '
                         f'RETURNING {_columns(_REPORT_COLUMNS)}', [values.get(n) for n in names])
            return _report(row), case, outcome

    def list_reports(self, *, case_id: int | None = None, scope: Iterable[str] | None = None,
                     since: datetime | None = None, limit: int | None = None) -> list[dict]:
        clauses, params = [], []
        if case_id is not None:
            clauses.append('"case_id" = ?')
            params.append(int(case_id))
        if scope is not None:
            codes = sorted(set(scope))
            if not codes:
                return []
            clauses.append(f'"grid" IN ({", ".join("?" for _ in codes)})')
            params += codes
        if since is not None:
            clauses.append('"received_at" >= ?')
            params.append(since)
        sql = f'SELECT {_columns(_REPORT_COLUMNS)} FROM "reports"'
        sql += (" WHERE " + " AND ".join(clauses) if clauses else "") + ' ORDER BY "id"'
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx("list_reports") as tx:
            return [_report(r) for r in tx.all(sql, params)]

    # -------------------------------------------------------------------------------------------- surveys

    def put_survey(self, survey: dict) -> bool:
        """Record a survey (``id, batch_id, path, acquired_at, bounds, stac``); False if its id is known."""
        minx, miny, maxx, maxy = survey["bounds"]
        with self._tx("put_survey") as tx:
            row = tx.one('INSERT INTO "surveys" ("id", "batch_id", "path", "acquired_at", "minx", "miny", "maxx", '
                         '"maxy", "stac", "created_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) '
                         'ON CONFLICT ("id") DO NOTHING RETURNING "id"',
                         [survey["id"], survey["batch_id"], survey["path"], survey["acquired_at"], minx, miny, maxx,
                          maxy, survey["stac"], datetime.now(timezone.utc)])
        return row is not None

    def list_surveys(self, *, bbox: tuple[float, float, float, float] | None = None,
                     before: datetime | None = None) -> list[dict]:
        """Surveys, newest first; ``bbox`` keeps those whose bounds meet it, ``before`` those acquired earlier."""
        clauses, params = [], []
        if bbox is not None:
            minx, miny, maxx, maxy = bbox
            clauses.append('"minx" <= ? AND "maxx" >= ? AND "miny" <= ? AND "maxy" >= ?')
            params += [maxx, minx, maxy, miny]
        if before is not None:
            clauses.append('"acquired_at" < ?')
            params.append(before)
        cols = ("id", "batch_id", "path", "acquired_at", "minx", "miny", "maxx", "maxy", "stac", "created_at")
        sql = f'SELECT {_columns(cols)} FROM "surveys"' + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._tx("list_surveys") as tx:
            rows = tx.all(sql + ' ORDER BY "acquired_at" DESC, "id"', params)
        return [_row(cols, r, times=("acquired_at", "created_at"), jsons=("stac",)) for r in rows]

    # ------------------------------------------------------------------------------------ uploads and jobs

    def create_batch(self, batch_id: str, username: str, manifest: dict, now: datetime) -> tuple[dict, bool]:
        """Open an upload batch with its manifest (``files``: ``name, size, sha256`` each); idempotent by id:
        an existing batch comes back unchanged with ``False``."""
        with self._tx("create_batch") as tx:
            row = tx.one('INSERT INTO "upload_batches" ("id", "username", "state", "manifest", "created_at") '
                         "VALUES (?, ?, 'open', ?, ?) ON CONFLICT (\"id\") DO NOTHING RETURNING \"id\"",
                         [batch_id, username, manifest, now])
        return self.get_batch(batch_id), row is not None

    def get_batch(self, batch_id: str) -> dict | None:
        cols = ("id", "username", "state", "manifest", "created_at", "completed_at")
        with self._tx("get_batch") as tx:
            row = tx.one(f'SELECT {_columns(cols)} FROM "upload_batches" WHERE "id" = ?', [batch_id])
        return None if row is None else _row(cols, row, times=("created_at", "completed_at"), jsons=("manifest",))

    def complete_batch(self, batch_id: str, now: datetime, *, kind: str = "survey") -> dict:
        """Mark a batch complete and queue its job, in one transaction; idempotent (the job is unique per
        batch). Returns the job."""
        with self._tx("complete_batch") as tx:
            tx.run("UPDATE \"upload_batches\" SET \"state\" = 'complete', \"completed_at\" = ? "
                   "WHERE \"id\" = ? AND \"state\" = 'open'", [now, batch_id])
            tx.run('INSERT INTO "jobs" ("kind", "batch_id", "state", "created_at", "updated_at") '
                   "VALUES (?, ?, 'queued', ?, ?) ON CONFLICT (\"batch_id\") DO NOTHING", [kind, batch_id, now, now])
            return _job(tx.one(f'SELECT {_columns(_JOB_COLUMNS)} FROM "jobs" WHERE "batch_id" = ?', [batch_id]))

    def claim_job(self, owner: str, now: datetime, lease_until: datetime, *, max_attempts: int = 5) -> dict | None:
        """Take the oldest queued job, or a running one whose lease has expired (its worker died), for
        ``owner`` until ``lease_until``. Jobs tried ``max_attempts`` times are failed instead of retried."""
        with self._tx("claim_job") as tx:
            tx.run("UPDATE \"jobs\" SET \"state\" = 'failed', \"error\" = coalesce(\"error\", 'gave up after ' || "
                   "\"attempts\" || ' attempts'), \"updated_at\" = ? WHERE \"state\" = 'running' "
                   'AND "lease_until" < ? AND "attempts" >= ?', [now, now, int(max_attempts)])
            row = tx.one(
                "UPDATE \"jobs\" SET \"state\" = 'running', \"lease_owner\" = ?, \"lease_until\" = ?, "
                '"attempts" = "attempts" + 1, "updated_at" = ? WHERE "id" = (SELECT "id" FROM "jobs" '
                "WHERE \"state\" = 'queued' OR (\"state\" = 'running' AND \"lease_until\" < ?) ORDER BY \"id\" "
                f'LIMIT 1{self.dialect.skip_locked}) RETURNING {_columns(_JOB_COLUMNS)}',
                [owner, lease_until, now, now])
        return None if row is None else _job(row)

    def renew_job(self, job_id: int, owner: str, lease_until: datetime, progress: dict, now: datetime) -> None:
        """Extend ``owner``'s lease and record progress; :class:`ConflictError` if the lease was lost."""
        with self._tx("renew_job") as tx:
            n = tx.run("UPDATE \"jobs\" SET \"lease_until\" = ?, \"progress\" = ?, \"updated_at\" = ? "
                       "WHERE \"id\" = ? AND \"lease_owner\" = ? AND \"state\" = 'running'",
                       [lease_until, progress, now, int(job_id), owner])
        if not n:
            raise ConflictError(f"job {job_id} is no longer leased to {owner}")

    def finish_job(self, job_id: int, owner: str, *, result: dict | None = None, error: str | None = None,
                   now: datetime) -> None:
        """Mark ``owner``'s job done (``result``) or failed (``error``)."""
        state = "failed" if error is not None else "done"
        with self._tx("finish_job") as tx:
            n = tx.run('UPDATE "jobs" SET "state" = ?, "result" = ?, "error" = ?, "lease_until" = NULL, '
                       "\"updated_at\" = ? WHERE \"id\" = ? AND \"lease_owner\" = ? AND \"state\" = 'running'",
                       [state, result or {}, error, now, int(job_id), owner])
        if not n:
            raise ConflictError(f"job {job_id} is no longer leased to {owner}")

    def get_job(self, job_id: int) -> dict | None:
        if _id(job_id) is None:
            return None
        with self._tx("get_job") as tx:
            row = tx.one(f'SELECT {_columns(_JOB_COLUMNS)} FROM "jobs" WHERE "id" = ?', [int(job_id)])
        return None if row is None else _job(row)

    def list_jobs(self, *, state: str | None = None) -> list[dict]:
        clause, params = ('WHERE "state" = ?', [state]) if state else ("", [])
        with self._tx("list_jobs") as tx:
            rows = tx.all(f'SELECT {_columns(_JOB_COLUMNS)} FROM "jobs" {clause} ORDER BY "id"', params)
        return [_job(r) for r in rows]


#: Side of the lock cells in degrees (about 200 m): larger than any search box, so a box touches at most four.
LOCK_CELL_DEGREES = 0.002


def _cells(category: str, box: tuple[float, float, float, float]) -> list[str]:
    minx, miny, maxx, maxy = (math.floor(v / LOCK_CELL_DEGREES) for v in box)
    return sorted(f"{category}:{i}:{j}" for i in range(minx, maxx + 1) for j in range(miny, maxy + 1))


def _check_changes(changes: dict) -> None:
    unknown = set(changes) - CASE_UPDATABLE
    if unknown:
        raise StoreError(f"a case step cannot change {', '.join(sorted(unknown))}")


def _chain(case_id: int, last: dict | None, from_state: str | None, to_state: str, event: dict) -> dict:
    """The full audit event following ``last`` (None: the case's first), hash included."""
    seq, prev = (1, GENESIS) if last is None else (last["seq"] + 1, last["hash"])
    full = {"case_id": case_id, "seq": seq, "at": event["at"], "actor": event["actor"], "role": event["role"],
            "action": event["action"], "from_state": from_state, "to_state": to_state,
            "assignee": event.get("assignee"), "note": event.get("note") or "",
            "photos": list(event.get("photos") or []), "prev_hash": prev}
    full["hash"] = event_hash(prev, full)
    return full


def _insert_events(tx: Tx, events: list[dict]) -> None:
    names = [c for c in _EVENT_COLUMNS if c != "id"]
    row = "(" + ", ".join("?" for _ in names) + ")"
    tx.run(f'INSERT INTO "case_events" ({_columns(names)}) VALUES {", ".join(row for _ in events)}',
           [event[n] for event in events for n in names])


def _case_filters(*, states=None, scope=None, assignee=None, category=None, source=None, bbox=None,
                  reported_from=None, reported_to=None, deadline_before=None, ids=None) -> tuple[list[str], list]:
    clauses: list[str] = []
    params: list[object] = []

    def one_of(column_sql: str, values: Iterable[object]) -> None:
        values = list(values)
        clauses.append(f'{column_sql} IN ({", ".join("?" for _ in values)})' if values else "1 = 0")
        params.extend(values)

    if states is not None:
        one_of('"state"', sorted(set(states)))
    if scope is not None:
        codes = sorted(set(scope))
        if not codes:
            clauses.append("1 = 0")
        else:
            marks = ", ".join("?" for _ in codes)
            clauses.append(f'("grid" IN ({marks}) OR "community" IN ({marks}) OR "street" IN ({marks}))')
            params += codes * 3
    for column, value in (("assignee", assignee), ("category", category), ("source", source)):
        if value is not None:
            clauses.append(f'"{column}" = ?')
            params.append(value)
    if bbox is not None:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise StoreError("bbox values must be finite numbers")
        clauses.append('"lon" BETWEEN ? AND ? AND "lat" BETWEEN ? AND ?')
        params += [minx, maxx, miny, maxy]
    if reported_from is not None:
        clauses.append('"reported_at" >= ?')
        params.append(reported_from)
    if reported_to is not None:
        clauses.append('"reported_at" < ?')
        params.append(reported_to)
    if deadline_before is not None:
        clauses.append('"deadline_at" < ?')
        params.append(deadline_before)
    if ids is not None:
        one_of('"id"', [i for i in (_id(v) for v in ids) if i is not None])
    return clauses, params
