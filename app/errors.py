"""The archive's error hierarchy: each class carries its HTTP status.

    FilmlessError                 500  base; never raised bare
    ├── BadRequest                400  malformed request, invalid query parameter (PS3.18 §8.6.1)
    ├── Unauthorized              401  no bearer token, or one that does not verify
    ├── Forbidden                 403  authenticated, but without the right
    ├── NotFound                  404  unknown UID, or a resource the caller may not see
    ├── NotAcceptable             406  no acceptable media type or transfer syntax (PS3.18 §8.7.3)
    ├── Conflict                  409  the request conflicts with stored state
    ├── PayloadTooLarge           413  a part or body exceeds a configured limit
    ├── UnsupportedMediaType      415  request Content-Type not supported (PS3.18 §10.5.1.2)
    ├── RangeNotSatisfiable       416  a byte range that starts beyond the end of an object
    ├── TooManyRequests           429  locked out after failed share codes or challenges
    ├── StorageUnavailable        503  the database or object store cannot be reached
    └── ServiceBusy               503  a bound the archive keeps is reached (render memory)

Foreign exceptions (asyncpg, botocore, OSError) are translated where they are met, in the
repository and storage modules, so that everything above them only ever sees these.
"""

from __future__ import annotations

from http import HTTPStatus


class FilmlessError(Exception):
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(FilmlessError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(FilmlessError):
    """No credentials, or credentials that do not hold (RFC 6750 §3: answered with a
    ``WWW-Authenticate: Bearer`` challenge; ``error`` is its error code)."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error


class Forbidden(FilmlessError):
    status = HTTPStatus.FORBIDDEN


class NotFound(FilmlessError):
    status = HTTPStatus.NOT_FOUND


class NotAcceptable(FilmlessError):
    status = HTTPStatus.NOT_ACCEPTABLE


class Conflict(FilmlessError):
    status = HTTPStatus.CONFLICT


class PayloadTooLarge(FilmlessError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(FilmlessError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class RangeNotSatisfiable(FilmlessError):
    """A byte range that starts beyond the end of an object.

    Carries the object's ``size`` because a 416 response must say it
    (``Content-Range: bytes */<size>``, RFC 9110 §14.4)."""

    status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class TooManyRequests(FilmlessError):
    """Too many failed attempts (share codes, challenges): locked out for a while."""

    status = HTTPStatus.TOO_MANY_REQUESTS


class ClientStalled(FilmlessError):
    """The client stopped sending its request body midway (RFC 9110 §15.5.9)."""

    status = HTTPStatus.REQUEST_TIMEOUT


class StorageUnavailable(FilmlessError):
    """A dependency failed. ``message`` names which one (it is what clients read);
    ``detail`` says where and how, for the log only: endpoints, buckets and object keys
    are the operator's business, not a client's."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class ServiceBusy(FilmlessError):
    """Work the archive bounds (decoding and rendering memory) is at its bound: retry."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class ObjectNotFound(NotFound):
    """An object key the store does not hold."""
