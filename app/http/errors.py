"""Error handlers: archive errors become DICOMweb error responses, and the failed request
is recorded in the audit trail."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import FilmlessError, RangeNotSatisfiable, Unauthorized
from app.http.state import running
from app.services import audit

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> JSONResponse:
    # PS3.18 §8.6.1 leaves the error payload open; a reason in JSON serves people and programs.
    return JSONResponse({"status": status, "message": message}, status_code=status)


async def audit_failure(request: Request, status: int, message: str) -> None:
    trail = getattr(request.state, "audit", None)
    if trail is not None and not trail.recorded:
        try:
            await audit.commit(running(request).archive, trail, status, message)
        except FilmlessError:
            log.warning("could not record a failed request in the audit trail")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FilmlessError)
    async def archive_error(request: Request, exc: FilmlessError) -> JSONResponse:
        if exc.status >= 500:
            detail = getattr(exc, "detail", None) or exc.message
            log.warning("%s %s: %s", request.method, audit.redact(request.url.path), detail)
        await audit_failure(request, exc.status, exc.message)
        response = error_response(exc.status, exc.message)
        if isinstance(exc, RangeNotSatisfiable):
            response.headers["Content-Range"] = f"bytes */{exc.size}"  # RFC 9110 §15.5.17
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = _challenge(exc)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing's own refusals (no such path, method not allowed) in the same form as
        # every other error.
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # DICOMweb answers malformed requests with 400, naming what was wrong.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        await audit_failure(request, 400, problems or "invalid request")
        return error_response(400, problems or "invalid request")


def _challenge(exc: Unauthorized) -> str:
    """RFC 6750 §3: a challenge, with an error code when a token was given but refused."""
    if exc.error is None:
        return 'Bearer realm="filmless"'
    description = exc.message.replace('"', "'")
    return f'Bearer realm="filmless", error="{exc.error}", error_description="{description}"'
