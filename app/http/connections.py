"""The client connection a request arrived on, so that a request's own code can abort it.

ASGI gives an application no handle on its connection, and a response that has started
cannot be taken back: when its client stops reading, all an application can do is raise,
and uvicorn then *closes* the transport. asyncio closes a transport only once its write
buffer drains, which a client that stopped reading never lets happen, so the socket (and
the kernel's buffers behind it) would stay until the client went away.

:class:`HttpProtocol` is uvicorn's own HTTP protocol (httptools when installed, as
uvicorn's ``auto`` picks it), which makes its transport the current one while it parses
what arrived: the task uvicorn starts for a request copies that context, so the request's
code finds its connection with :func:`current` and ends it with :func:`abort`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from contextvars import ContextVar

from uvicorn.protocols.http.h11_impl import H11Protocol

_transport: ContextVar[asyncio.BaseTransport | None] = ContextVar("filmless_transport", default=None)


def current() -> asyncio.BaseTransport | None:
    """The transport of the connection this request arrived on, when the server is
    ``filmless serve`` (or uses :class:`HttpProtocol`); else ``None``."""
    return _transport.get()


def abort(transport: asyncio.BaseTransport) -> None:
    """End the connection now, with a reset: what is buffered for the client is dropped,
    in this process and in the kernel (a zero linger time makes close send an RST rather
    than keep the unsent bytes for a reader that is not reading)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]  # every stream transport has it


class _Tracked(asyncio.Protocol):
    transport: asyncio.Transport

    def data_received(self, data: bytes) -> None:
        token = _transport.set(self.transport)
        try:
            super().data_received(data)
        finally:
            _transport.reset(token)


class _H11Protocol(_Tracked, H11Protocol):
    pass


HttpProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover (uvicorn[standard] brings httptools)
    HttpProtocol = _H11Protocol
else:

    class _HttpToolsProtocol(_Tracked, HttpToolsProtocol):
        pass

    HttpProtocol = _HttpToolsProtocol
