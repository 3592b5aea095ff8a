"""Response helpers shared by the routers: JSON bodies compressed when the client takes
gzip, and streamed bodies."""

from __future__ import annotations

import asyncio
import gzip

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Send

from app.services.bodies import Body

#: Cache-Control of instance, frame and rendered responses: what is stored under a UID never
#: changes (a different object under it is refused), so viewers may keep it; "private":
#: it is patient data, for no shared cache.
IMMUTABLE = "private, max-age=31536000, immutable"

#: Below this, compressing costs more than it saves.
_GZIP_MIN = 1024
#: Above this, compression runs off the event loop.
_GZIP_OFF_LOOP = 256 << 10


def _accepts_gzip(request: Request) -> bool:
    for coding in request.headers.get("accept-encoding", "").split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip().lower() == "gzip" and params.replace(" ", "") not in (
            "q=0",
            "q=0.0",
            "q=0.00",
            "q=0.000",
        ):
            return True
    return False


async def json_response(
    request: Request, body: bytes, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response, gzip-compressed when the client accepts it (level 1: metadata of a
    large series compresses ~10x in milliseconds)."""
    headers = dict(headers or {})
    headers["Vary"] = "Accept, Accept-Encoding"
    if len(body) >= _GZIP_MIN and _accepts_gzip(request):
        if len(body) >= _GZIP_OFF_LOOP:
            body = await asyncio.to_thread(gzip.compress, body, 1)
        else:
            body = gzip.compress(body, 1)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=media_type, headers=headers)


def immutable(body: Body) -> StreamingResponse:
    """``body`` streamed as content that never changes (:data:`IMMUTABLE`): instances,
    frames, bulk data and renderings, all stored under UIDs."""
    response = stream(body)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def stream(body: Body) -> StreamingResponse:
    headers = {"Content-Length": str(body.length)} if body.length is not None else {}
    if body.content_range is not None:
        headers["Content-Range"] = body.content_range
    if body.warning is not None:
        headers["Warning"] = body.warning
    return ClosingStreamingResponse(
        body.chunks, status_code=body.status, media_type=body.media_type, headers=headers
    )


class ClosingStreamingResponse(StreamingResponse):
    """A streamed body closed as soon as sending ends, however it ends. Starlette stops
    iterating when a send fails (a client gone, or cut off for not reading) but leaves the
    generator suspended until the garbage collector finds it, holding the object store's
    reader — an open file or connection — that long."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
