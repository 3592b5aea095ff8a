"""ASGI middlewares: a last-resort 500 inside CORS, and the per-request id and access log."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ClientStalled
from app.http import connections
from app.http.errors import audit_failure, error_response
from app.observability import logs, metrics
from app.services import audit

log = logging.getLogger(__name__)
access = logging.getLogger("filmless.access")


class StallTimeout:
    """Bounds how long a client may stall: waiting for the next piece of a request body
    raises :class:`ClientStalled` (408, the request's own clean-up removes its spool files),
    and a response body no one reads for ``timeout`` seconds ends the connection: aborted
    (see :mod:`app.http.connections`) when the server is ``filmless serve``, else by
    raising out of ``send``.

    Only the body is timed: once it is complete, ``receive`` waits for a disconnect for as
    long as a response streams, which is no stall."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise ClientStalled("the request body stopped arriving") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        connection = connections.current()
        loop = asyncio.get_running_loop()
        aborted = False

        def abort() -> None:
            nonlocal aborted
            aborted = True
            assert connection is not None
            connections.abort(connection)

        async def timed_send(message: Message) -> None:
            # uvicorn's send waits while the client's socket buffer is full: a reader that
            # stopped reading. A started response cannot change its status; end it instead.
            if connection is None:
                async with asyncio.timeout(self.timeout):
                    await send(message)
                return
            # Aborted under the waiting send: uvicorn then sees the connection lost, its
            # send returns and the response ends as for any client that went away (the
            # streaming body is cancelled and closes what it holds), with no error.
            timer = loop.call_later(self.timeout, abort)
            try:
                await send(message)
            finally:
                timer.cancel()

        try:
            await self.app(scope, timed_receive, timed_send)
        finally:
            if aborted:
                log.info(
                    "%s %s: the client stopped reading for %s s; connection aborted",
                    scope["method"], audit.redact(scope["path"]), self.timeout,
                )  # fmt: skip


class CatchUnexpected:
    """Answers an unexpected exception with a 500 *inside* the CORS middleware (Starlette's
    own error handler sits outside it, so a browser would see a CORS failure instead of
    the error), and records the failed request in the audit trail."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("%s %s failed", scope["method"], audit.redact(scope["path"]))
            if started:
                raise  # a streamed response cannot change its status any more
            request = Request(scope)
            await audit_failure(request, 500, "internal error")
            await error_response(500, "internal error")(scope, receive, send)


class RequestLog:
    """Gives each request an id (kept from a well-formed incoming ``X-Request-ID``, else
    new), sends it back in ``X-Request-ID``, and writes one access line per request:
    method, path (share secrets redacted; never the query, which may name a patient),
    status, bytes sent, duration and client address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = logs.new_request_id(incoming)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status, sent, received = 0, 0, 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def tracking(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            metrics.REQUESTS.labels(route, scope["method"], str(status or 0)).inc()
            metrics.LATENCY.labels(route, scope["method"]).observe(elapsed)
            metrics.BYTES_OUT.labels(route).inc(sent)
            if received:
                metrics.BYTES_IN.labels(route).inc(received)
            client = scope.get("client")
            access.info(
                "%s %s %s",
                scope["method"],
                audit.redact(scope["path"]),
                status or "-",
                extra={
                    "status": status or None,
                    "bytes": sent,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
            logs.request_id.reset(token)


def _route(scope: Scope) -> str:
    """The template of the route that served the request: a bounded label, no UIDs."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return str(path)
    path_: str = scope["path"]
    if path_.startswith(("/share/", "/s/")):
        return "/" + path_.split("/")[1] + "/{secret}"
    return "unmatched"
