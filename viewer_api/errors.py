"""Core errors mapped to HTTP statuses, once for the whole app; bodies are ``{"detail": ...}``."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from imaging_hub.errors import (
    AccountDisabled,
    AccountLocked,
    AlreadyExists,
    AuthenticationFailed,
    DuplicateRejected,
    HubError,
    InvalidDicom,
    InvalidUid,
    NotFound,
    PermissionDenied,
    StorageFull,
    TooLarge,
)
from imaging_hub.retrieve import NotAcceptable

__all__ = ["ERROR_STATUS", "install_error_handlers", "status_for"]

log = structlog.get_logger(__name__)

#: The one table from core errors to HTTP statuses (the most specific class wins).
ERROR_STATUS: dict[type[HubError], int] = {
    InvalidDicom: 400,
    InvalidUid: 400,
    AuthenticationFailed: 401,
    AccountDisabled: 403,
    PermissionDenied: 403,
    NotFound: 404,
    NotAcceptable: 406,
    AlreadyExists: 409,
    DuplicateRejected: 409,
    AccountLocked: 429,
    TooLarge: 413,
    StorageFull: 507,
}

#: Paths whose malformed requests answer 400, as PS3.18 asks, rather than FastAPI's 422.
_DICOMWEB_PREFIX = "/dicomweb"


def status_for(exc: HubError) -> int:
    """The HTTP status of a core error; 500 for an error the table does not list."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


async def _hub_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer a core error with its mapped status and reason."""
    assert isinstance(exc, HubError)
    status = status_for(exc)
    if status == 500:  # not an error a client can act on: keep its text out of the answer
        log.error("request_failed", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=status)
    log.info("request_refused", path=request.url.path, error=type(exc).__name__, status=status)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=_headers(exc, status))


def _headers(exc: HubError, status: int) -> dict[str, str]:
    """Headers an error answer needs: the auth scheme on 401 (RFC 6750 3), Retry-After on 429."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, AccountLocked):
        headers["Retry-After"] = str(exc.retry_after)
    return headers


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer a value the database refuses (SQLSTATE class 22) with 400: it came from the request.

    PostgreSQL takes no NUL character in a text and no integer beyond 64 bits; the statement
    failed, so nothing was changed.
    """
    assert isinstance(exc, DataError)
    log.warning("request_refused_by_database", path=request.url.path, error=type(exc.orig).__name__)
    detail = "a value cannot be searched or stored (a NUL character, or a number out of range)"
    return JSONResponse({"detail": detail}, status_code=400)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer malformed parameters with a JSON list of what is wrong (400 under /dicomweb)."""
    assert isinstance(exc, RequestValidationError)
    status = 400 if request.url.path.startswith(_DICOMWEB_PREFIX) else 422
    return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the error handlers on app."""
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
