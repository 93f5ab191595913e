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
    ===========================  =====================================================================
    """

    database_url: str = DEFAULT_DATABASE_URL
    limits: ReadLimits = ReadLimits()
    debug: bool = False

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
        )


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used."""


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
