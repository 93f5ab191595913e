"""The service's own errors and the one place every package's errors become HTTP responses.

Each package has one root (:class:`gridmap.errors.GridmapError`, :class:`inspection.errors.InspectionError`,
:class:`storage.errors.StoreError`, :class:`ServiceError` here); :func:`install_handlers` maps them to status
codes. Every error response is ``{"detail": "<one line saying what is wrong>"}``; nothing else leaks (no
traceback, no SQL), and an unexpected exception is a 500 with a reference the log has.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gridmap.errors import GridmapError, TooLargeError
from inspection.errors import ImageError, InspectionError, MetadataError, TaxonomyError, WorkflowError
from storage.errors import InvalidValueError, StoreConfigError, StoreError
from storage.records import ConflictError, RecordNotFoundError

log = logging.getLogger("gridmap.api")


class ServiceError(Exception):
    """Root of the errors the service raises on purpose; ``status`` is the HTTP code."""

    status = 400


class BadParameterError(ServiceError):
    """A query parameter with a value that cannot be used (OGC API asks for 400 here, not 422)."""

    status = 400


class AuthError(ServiceError):
    """No credentials, or credentials that are wrong or expired."""

    status = 401


class ForbiddenError(ServiceError):
    """Authenticated, but this role or scope may not do this."""

    status = 403


class NotFoundError(ServiceError):
    """The thing asked for does not exist (or is out of the caller's scope: the two are not told apart)."""

    status = 404


class ConflictingStateError(ServiceError):
    """The request contradicts what is stored (an upload incomplete, an offset that moved on)."""

    status = 409


class PayloadTooLargeError(ServiceError):
    status = 413


class UnavailableError(ServiceError):
    """Part of the installation is missing (the pages' browser libraries before ``npm ci``)."""

    status = 503


class InvalidInputError(ServiceError):
    """A well-formed request whose content cannot be used (outside the street, wrong datum, bad hash)."""

    status = 422


def status_of(error: Exception) -> int:
    """The HTTP status for a domain error."""
    if isinstance(error, ServiceError):
        return error.status
    if isinstance(error, TooLargeError):
        return 413
    if isinstance(error, (ImageError, MetadataError, TaxonomyError)):
        return 422
    if isinstance(error, WorkflowError):
        return 409
    if isinstance(error, (GridmapError, InspectionError)):
        return 422
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, RecordNotFoundError):
        return 404
    if isinstance(error, InvalidValueError):
        return 422
    if isinstance(error, StoreConfigError):
        return 503
    if isinstance(error, StoreError):
        return 503
    return 500


def _response(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(detail).split())}, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f" and {more} more" if more > 0 else "")


def install_handlers(app: FastAPI) -> None:
    """Map every package's root error (and request validation) to a JSON response."""

    async def domain(request: Request, error: Exception) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _response(status, str(error) or type(error).__name__, headers)

    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _response(422, _validation_message(error))

    async def http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _response(error.status_code, error.detail, getattr(error, "headers", None))

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", reference, request.method, request.url.path)
        return _response(500, f"internal error (reference {reference}); the request was not completed")

    for root in (ServiceError, GridmapError, InspectionError, StoreError):
        app.add_exception_handler(root, domain)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, unexpected)
