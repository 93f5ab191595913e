"""Configuration from the environment, read in one place so the core never looks at it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gridmap.io import ReadLimits

DEFAULT_DATABASE_URL = "sqlite:///./gridmap.db"


@dataclass(frozen=True)
class Settings:
    """Settings of the CLI and the service.

    ===========================  =====================================================================
    variable                     meaning
    ===========================  =====================================================================
    GRIDMAP_DATABASE_URL         ``postgresql://user@host/db`` (PostGIS) or ``sqlite:///PATH``;
                                 unset: ``./gridmap.db``
    GRIDMAP_MAX_IMPORT_MB        largest boundary file accepted (default 512)
    GRIDMAP_MAX_IMPORT_FEATURES  most features in one file (default 500,000)
    GRIDMAP_MAX_IMPORT_VERTICES  most vertices in one import (default 20,000,000)
    GRIDMAP_DEBUG                ``1``: show tracebacks of unexpected errors
    GRIDMAP_DATA_DIR             photos, uploads and pipeline work files (default ``./gridmap-data``)
    GRIDMAP_TOKEN_TTL_HOURS      life of a bearer token (default 12: one working day and a half)
    GRIDMAP_MAX_PHOTO_MB         largest field-report photo (default 20)
    GRIDMAP_MAX_PHOTO_MEGAPIXELS most pixels in a report photo (default 100; decompression bombs)
    GRIDMAP_MAX_UPLOAD_FILE_MB   largest file in a drone upload batch (default 4096)
    GRIDMAP_MAX_UPLOAD_FILES     most files in one upload batch (default 5000)
    GRIDMAP_TAXONOMY             a city's category file, merged over the shipped CJ/T 214 taxonomy
    GRIDMAP_INPROCESS_WORKER     ``1``: the service runs upload jobs itself (default on the embedded
                                 SQLite store, off on PostGIS where ``gridmap worker`` runs them)
    GRIDMAP_TILE_CACHE_MB        memory each server process gives cached vector tiles (default 64)
    GRIDMAP_BASEMAP              the pages' basemap: ``none`` (default), ``tianditu``, ``amap``, ``osm``
                                 (:mod:`api.basemaps`)
    GRIDMAP_TIANDITU_KEY         the key Tianditu issues (needed for ``tianditu``)
    ===========================  =====================================================================
    """

    database_url: str = DEFAULT_DATABASE_URL
    limits: ReadLimits = ReadLimits()
    debug: bool = False
    data_dir: str = "./gridmap-data"
    token_ttl_hours: int = 12
    max_photo_bytes: int = 20 * 1024**2
    max_photo_pixels: int = 100_000_000
    max_upload_file_bytes: int = 4096 * 1024**2
    max_upload_files: int = 5000
    taxonomy: str | None = None
    inprocess_worker: bool | None = None
    tile_cache_bytes: int = 64 * 1024**2
    basemap: str = "none"
    tianditu_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        defaults = ReadLimits()
        return cls(
            database_url=environ.get("GRIDMAP_DATABASE_URL") or DEFAULT_DATABASE_URL,
            limits=ReadLimits(
                max_bytes=_positive_int(environ, "GRIDMAP_MAX_IMPORT_MB", defaults.max_bytes // 1024**2) * 1024**2,
                max_features=_positive_int(environ, "GRIDMAP_MAX_IMPORT_FEATURES", defaults.max_features),
                max_vertices=_positive_int(environ, "GRIDMAP_MAX_IMPORT_VERTICES", defaults.max_vertices),
            ),
            debug=environ.get("GRIDMAP_DEBUG", "") not in ("", "0", "false"),
            data_dir=environ.get("GRIDMAP_DATA_DIR") or "./gridmap-data",
            token_ttl_hours=_positive_int(environ, "GRIDMAP_TOKEN_TTL_HOURS", 12),
            max_photo_bytes=_positive_int(environ, "GRIDMAP_MAX_PHOTO_MB", 20) * 1024**2,
            max_photo_pixels=_positive_int(environ, "GRIDMAP_MAX_PHOTO_MEGAPIXELS", 100) * 1_000_000,
            max_upload_file_bytes=_positive_int(environ, "GRIDMAP_MAX_UPLOAD_FILE_MB", 4096) * 1024**2,
            max_upload_files=_positive_int(environ, "GRIDMAP_MAX_UPLOAD_FILES", 5000),
            taxonomy=environ.get("GRIDMAP_TAXONOMY") or None,
            inprocess_worker=_flag(environ, "GRIDMAP_INPROCESS_WORKER"),
            tile_cache_bytes=_positive_int(environ, "GRIDMAP_TILE_CACHE_MB", 64) * 1024**2,
            basemap=_basemap(environ),
            tianditu_key=environ.get("GRIDMAP_TIANDITU_KEY") or None,
        )


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


def _basemap(environ: Mapping[str, str]) -> str:
    from api.basemaps import basemap

    name = environ.get("GRIDMAP_BASEMAP", "").strip().lower() or "none"
    try:
        basemap(name, tianditu_key=environ.get("GRIDMAP_TIANDITU_KEY") or None)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    return name


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not 1 or 0")


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value
