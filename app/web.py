"""HTTP-level glue: one handler turning archive errors into DICOMweb error responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.errors import FilmlessError, RangeNotSatisfiable

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> JSONResponse:
    # PS3.18 §8.6.1 leaves the error payload open; a reason in JSON serves people and programs.
    return JSONResponse({"status": status, "message": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FilmlessError)
    async def archive_error(request: Request, exc: FilmlessError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        response = error_response(exc.status, exc.message)
        if isinstance(exc, RangeNotSatisfiable):
            response.headers["Content-Range"] = f"bytes */{exc.size}"  # RFC 9110 §15.5.17
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # DICOMweb answers malformed requests with 400, naming what was wrong.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return error_response(400, problems or "invalid request")
