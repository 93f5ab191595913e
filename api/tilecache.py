"""The vector tile cache: each tile drawn once, then served from memory until its data changes.

Invalidation. Each table tiles are drawn from (``units`` for the unit layers, ``cases`` for cases) has an
*epoch*: a number that triggers in the database raise with every committed write to it, whoever makes it
(any server process, ``gridmap worker``, psql or the sqlite3 shell; migration ``0003_tile_epochs``). A tile
is kept with the epoch it was drawn at (read in the same snapshot as its data on PostgreSQL, just before it on
SQLite, so a tile is never newer than it says). A request for a tile held in memory gets the epochs from a
read that begins after the request did (:meth:`Store.tile_epochs`, one small prepared query) and is served
from memory only if its table's epoch has not moved: a write committed before the request began is in the
tile it gets, in whichever process serves it. The requests waiting when a read begins share it, so under
load there is one read per batch of requests, not one each. A tile not held, or held under an epoch older
than one this process has already seen (epochs only grow), is drawn at once, without that read.

Rejected: LISTEN/NOTIFY feeding an in-memory epoch. It saves the read, but a notification reaches the
other processes a moment after the commit, so a client that files a case and at once asks for the tile
could miss it; with the read shared, cached tiles run at several thousand a second anyway.

Scope: a tile of cases is kept per scope (the caller's unit codes, or everything), which is part of the key
and of the ETag, so a grid worker's tile is never served to anyone who sees a different set of cases.

ETag: ``"<epoch hex>.<scope digest>"``, the same in every process for the same URL, data and scope. Epochs
start at a random number (the migration), so a database created again does not hand out the old ETags.

Memory: least recently used tiles go first once the tiles, plus a fixed allowance per entry, exceed
``GRIDMAP_TILE_CACHE_MB`` (per process); an empty tile costs its allowance, so requests for empty tiles all
over the world cannot grow the cache without bound either.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable

from fastapi.concurrency import run_in_threadpool

from gridmap.tiles import Layer, check_tile
from storage.records import tile_source

#: Bytes charged per entry besides the tile: the key, the dictionary slot and the bytes object's header.
ENTRY_OVERHEAD = 256

Key = tuple  # (layer, z, x, y, sorted scope or None)


class TileCache:
    """Tiles of one store in memory, at most ``max_bytes`` of them (see the module docstring). Thread-safe;
    ``hits`` and ``misses`` count requests served from memory and drawn."""

    def __init__(self, store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._latest: dict[str, int] = {}  # the newest epoch of each table seen here
        self._next: asyncio.Future | None = None  # the epoch read not begun yet
        self._lock = threading.Lock()

    async def fetch(self, layer: Layer, z: int, x: int, y: int,
                    scope: Iterable[str] | None) -> tuple[str, bytes, bool]:
        """The tile's ETag, its bytes and whether they came from memory. Raises
        :class:`gridmap.errors.InputError` for a tile that does not exist."""
        check_tile(z, x, y)
        scope = None if scope is None else tuple(sorted(scope))
        key = (layer.name, z, x, y, scope)
        source = tile_source(layer.name)
        with self._lock:
            entry = self._entries.get(key)
            current = entry is not None and entry[0] == self._latest.get(source)
        if current:
            epoch = self._saw(source, (await self._epochs())[source])
            if entry[0] == epoch:
                with self._lock:
                    self.hits += 1
                    if key in self._entries:
                        self._entries.move_to_end(key)
                return _etag(epoch, scope), entry[1], True
        epoch, data = await run_in_threadpool(self._draw, key, source)
        return _etag(epoch, scope), data, False

    async def _epochs(self) -> dict[str, int]:
        """The epochs, from a read that begins after this call: the next read is scheduled on the event loop
        and every request that asks before it runs shares it (under load, one read per batch of requests)."""
        loop = asyncio.get_running_loop()
        if self._next is None or self._next.get_loop() is not loop:
            self._next = loop.create_future()
            loop.call_soon(self._read, self._next)
        return await asyncio.shield(self._next)

    def _read(self, done: asyncio.Future) -> None:
        if self._next is done:
            self._next = None  # whoever asks from now on needs a later read
        try:
            # On the event loop: a short query, cheaper than the thread hop it would take.
            done.set_result(self.store.tile_epochs())
        except Exception as error:  # noqa: BLE001 - every waiting request gets it
            done.set_exception(error)

    def _draw(self, key: Key, source: str) -> tuple[int, bytes]:
        layer, z, x, y, scope = key
        epoch, data = self.store.vector_tile(layer, z, x, y, scope=scope)
        self._saw(source, epoch)
        size = len(data) + ENTRY_OVERHEAD
        with self._lock:
            self.misses += 1
            old = self._entries.get(key)
            if size <= self.max_bytes and (old is None or old[0] <= epoch):
                if old is not None:
                    self._bytes -= len(old[1]) + ENTRY_OVERHEAD
                self._entries[key] = (epoch, data)
                self._entries.move_to_end(key)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= len(dropped) + ENTRY_OVERHEAD
        return epoch, data

    def _saw(self, source: str, epoch: int) -> int:
        with self._lock:
            self._latest[source] = max(epoch, self._latest.get(source, epoch))
        return epoch


def _etag(epoch: int, scope: tuple[str, ...] | None) -> str:
    tag = "all" if scope is None else hashlib.blake2b(",".join(scope).encode(), digest_size=6).hexdigest()
    return f'"{epoch:x}.{tag}"'
