"""The storage interface: one small abstract class, two implementations (PostGIS and embedded SQLite).

Every method speaks the unit table of :mod:`gridmap.units` (a GeoDataFrame in EPSG:4326). The contract,
checked for both backends by ``tests/test_storage_contract.py``:

* :meth:`Store.put_units` validates the batch (:func:`gridmap.units.check_units`, one code once, polygonal
  non-empty geometry, parents present) before writing, then upserts by code in ONE transaction: all rows
  or none.
* Reads return a unit table sorted by code; filters combine with AND; spatial filters use the index to
  prefilter and then the exact intersects predicate.
* :meth:`Store.delete_units` refuses to orphan children.
* Driver exceptions never escape: they are wrapped in :class:`storage.errors.StoreError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from geopandas import GeoDataFrame
from shapely.geometry.base import BaseGeometry

BBox = tuple[float, float, float, float]


class Store(ABC):
    """A place units live. Open one with :func:`storage.open_store`; use it as a context manager.

    Implementations are safe to share between threads (each holds a small connection pool).
    """

    #: The URL the store was opened with, any password masked.
    url: str
    #: ``"postgis"`` or ``"sqlite"``.
    backend: str

    @abstractmethod
    def put_units(self, units: GeoDataFrame) -> int:
        """Insert or replace (by code) every unit of ``units`` in one transaction; return rows written.

        Raises :class:`gridmap.errors.InputError` (and subclasses ``CRSError``, ``CodeError``,
        ``GeometryError``) for a malformed table, :class:`storage.errors.DuplicateCodeError` for a code
        given twice, :class:`storage.errors.ParentNotFoundError` for a non-street unit whose parent is
        neither stored nor in the batch. Nothing is written when anything is raised.
        """

    @abstractmethod
    def get_units(
        self,
        level: str | None = None,
        *,
        codes: Iterable[str] | None = None,
        parent_code: str | None = None,
        bbox: BBox | None = None,
    ) -> GeoDataFrame:
        """Units matching every given filter, sorted by code.

        ``bbox`` is ``(minx, miny, maxx, maxy)`` in EPSG:4326 and selects units whose geometry intersects
        the box. An unknown ``level`` raises :class:`gridmap.errors.CodeError`.
        """

    @abstractmethod
    def units_intersecting(self, geometry: BaseGeometry, *, level: str | None = None) -> GeoDataFrame:
        """Units whose geometry intersects ``geometry`` (EPSG:4326) exactly, sorted by code."""

    @abstractmethod
    def delete_units(self, codes: Iterable[str]) -> int:
        """Delete the units with these codes; return rows deleted (unknown codes are ignored).

        Raises :class:`storage.errors.ChildrenExistError`, deleting nothing, if a unit that is not being
        deleted has one of them as its parent.
        """

    @abstractmethod
    def count_units(self) -> dict[str, int]:
        """Number of stored units per level, every level of :data:`gridmap.codes.LEVELS` present, in order."""

    @abstractmethod
    def existing_codes(self, codes: Iterable[str]) -> set[str]:
        """The subset of ``codes`` that is stored."""

    @abstractmethod
    def schema_version(self) -> int:
        """The highest applied schema migration (``storage/sql/<backend>/NNNN_*.sql``)."""

    @abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent; any other call afterwards raises StoreError."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
