"""Opening a store from a URL: ``open_store``."""

from __future__ import annotations

import os

from storage._common import mask_url
from storage.base import Store
from storage.errors import StoreConfigError

#: Environment variable read when ``open_store`` is given no URL.
URL_ENV = "GRIDMAP_DATABASE_URL"
#: The URL used when neither an argument nor the environment gives one (relative to the working directory).
DEFAULT_URL = "sqlite:///./gridmap.db"
ACCEPTED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user[:password]@host[:port]/dbname or postgres://..."
)


def open_store(url: str | None = None) -> Store:
    """Open (creating the schema if needed) the store at ``url``.

    ``None`` reads ``$GRIDMAP_DATABASE_URL``, else uses ``sqlite:///./gridmap.db``. SQLite URLs follow
    SQLAlchemy: three slashes then a path relative to the working directory, four for an absolute path.
    ``postgresql://`` and ``postgres://`` open PostGIS. Anything else, an unreachable server, a missing
    directory or a database without PostGIS raises :class:`storage.errors.StoreConfigError`.
    """
    if url is None:
        url = os.environ.get(URL_ENV, "").strip() or DEFAULT_URL
    if not isinstance(url, str):
        raise StoreConfigError(f"database URL must be a string, got {type(url).__name__}: expected {ACCEPTED_FORMS}")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else ""
        if not path:
            raise StoreConfigError(f"SQLite URL {url!r} has no path: expected {ACCEPTED_FORMS}")
        if path == ":memory:" or "?" in path:
            raise StoreConfigError(
                f"SQLite URL {url!r}: in-memory databases and URL parameters are not supported: expected {ACCEPTED_FORMS}"
            )
        from storage.sqlite import SqliteStore

        return SqliteStore(path, url=url)
    if sep and scheme in ("postgresql", "postgres"):
        from storage.postgis import PostgisStore

        return PostgisStore(url)
    raise StoreConfigError(f"unsupported database URL {mask_url(url)!r}: expected {ACCEPTED_FORMS}")
