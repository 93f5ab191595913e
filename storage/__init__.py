"""Storage of unit tables: one small interface (:class:`Store`), two implementations.

* :class:`storage.postgis.PostgisStore` — PostgreSQL + PostGIS through psycopg2 and a connection pool;
* :class:`storage.sqlite.SqliteStore` — one embedded SQLite file with an R*Tree index.

Open either with :func:`open_store`::

    with open_store("sqlite:///./gridmap.db") as store:
        store.put_units(units)

The core (:mod:`gridmap`) never imports this package; this package imports the core.
"""

from storage import errors
from storage.base import Store
from storage.config import DEFAULT_URL, URL_ENV, open_store
from storage.errors import (
    ChildrenExistError,
    DuplicateCodeError,
    ParentNotFoundError,
    StoreConfigError,
    StoreError,
    UnitNotFoundError,
)

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "ChildrenExistError",
    "DuplicateCodeError",
    "ParentNotFoundError",
    "Store",
    "StoreConfigError",
    "StoreError",
    "UnitNotFoundError",
    "errors",
    "open_store",
]
