"""Errors of the storage layer.

One root, :class:`StoreError`; every driver exception (psycopg2, sqlite3) is wrapped in one of these with a
one-line message before it leaves the package, the driver's exception kept as ``__cause__``. Invalid input
that the core can judge on its own (CRS, levels, geometry) raises the core's :mod:`gridmap.errors` instead.
"""

from __future__ import annotations

from collections.abc import Iterable


class StoreError(Exception):
    """Root of every error the storage layer raises: a failed query, a lost connection, a closed store."""


class StoreConfigError(StoreError):
    """The store cannot be opened: bad URL, unreachable server, missing PostGIS, missing directory."""


class DuplicateCodeError(StoreError):
    """A batch holds the same unit code more than once. ``codes``: the duplicated codes, sorted."""

    def __init__(self, message: str, *, codes: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.codes: list[str] = list(codes)


class ParentNotFoundError(StoreError):
    """Units whose ``parent_code`` is neither stored nor in the batch.

    ``missing``: each missing parent code (``None`` for a unit without one) -> the codes of the units needing it.
    """

    def __init__(self, message: str, *, missing: dict[str | None, list[str]] | None = None) -> None:
        super().__init__(message)
        self.missing: dict[str | None, list[str]] = dict(missing or {})


class ChildrenExistError(StoreError):
    """A delete would orphan units. ``children``: each unit to delete -> codes of its children that stay."""

    def __init__(self, message: str, *, children: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.children: dict[str, list[str]] = dict(children or {})


class UnitNotFoundError(StoreError):
    """A unit that was asked for by code is not stored (reserved for callers that need one unit)."""


class InvalidValueError(StoreError):
    """A value no database column can hold (text with a NUL character, an integer beyond 64 bits): bad input,
    refused before it reaches the driver."""
