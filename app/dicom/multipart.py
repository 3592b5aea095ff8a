"""multipart/related framing (RFC 2387 over RFC 2046 §5.1): STOW-RS requests in, WADO-RS
responses out (PS3.18 §10.5 and §10.4).

Pure: reading turns chunks into part events (python-multipart's ``MultipartParser``,
behind :class:`Preamble` and :class:`PartEvents`), and what becomes of a part's bytes is
the caller's (:mod:`app.services.stow.reader` spools them). Writing is the mirror image:
parts are framed around caller-supplied byte streams.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from python_multipart.multipart import MultipartParser

from app.dicom.media import MediaType, parse_content_type
from app.errors import BadRequest, FilmlessError, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    pass

__all__ = [
    "PartEvents",
    "Preamble",
    "as_single_part",
    "boundary_of",
    "multipart_boundary",
    "part_type",
    "related_content_type",
    "stream_multipart",
]

T = TypeVar("T")

# RFC 2046 §5.1.1 allows 70 characters; python-multipart accepts up to 256, and being
# lenient with clients costs nothing.
_MAX_BOUNDARY = 256
# A preamble is legal (RFC 2046 §5.1.1) but in practice empty; a body that shows no
# delimiter within this many bytes is not multipart at all.
_MAX_PREAMBLE = 64 << 10
# Parts carry Content-Type and perhaps Content-ID, Content-Location, Content-Length, ...
_MAX_PART_HEADERS = 32
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def as_single_part(chunks: AsyncIterable[bytes], part_type: str) -> tuple[AsyncIterator[bytes], MediaType]:
    """Frame a single-part body (e.g. one ``application/dicom`` instance, PS3.18 §10.5.1)
    as a multipart body, so it is spooled, limited and hashed by the same reader. The
    boundary is 128 random bits: it cannot occur in the body by chance."""
    boundary = multipart_boundary()

    async def framed() -> AsyncIterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("ascii")
        async for chunk in chunks:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode("ascii")

    return framed(), MediaType("multipart", "related", {"type": part_type, "boundary": boundary})


def multipart_boundary() -> str:
    """A fresh random boundary: 32 hex digits, which cannot occur by chance in a body."""
    return secrets.token_hex(16)


def related_content_type(boundary: str, type_: str) -> str:
    """The Content-Type of a multipart/related response, e.g.
    ``multipart/related; type="application/dicom"; boundary=...`` (PS3.18 §8.7.3)."""
    return str(MediaType("multipart", "related", {"type": type_, "boundary": boundary}))


async def stream_multipart(
    parts: AsyncIterable[tuple[Mapping[str, str], AsyncIterable[bytes]]], boundary: str
) -> AsyncIterator[bytes]:
    """Frame ``parts`` (headers, body stream) as a multipart body (RFC 2046 §5.1.1):
    ``--boundary CRLF headers CRLF CRLF body`` for each, then ``CRLF --boundary-- CRLF``.

    The CRLF ending a body belongs to the next delimiter, so bodies are sent verbatim.
    Raises ValueError for a header that would break the framing (CR or LF in a value, a
    name that is not a token)."""
    separator = f"--{boundary}\r\n".encode("ascii")
    first = True
    # Closing this stream early (a client gone) closes the part and the body under way, so
    # what they hold open (a stored object's reader) is let go at once, not when collected.
    async with closing(parts):
        async for headers, body in parts:
            head: bytes | None = (b"" if first else b"\r\n") + separator + _encode_headers(headers)
            first = False
            async with closing(body):
                async for chunk in body:
                    if not chunk:
                        continue
                    if head is not None:
                        # A part's headers go out with its first chunk when that is small:
                        # each piece sent costs a pass through every middleware.
                        if len(chunk) <= _JOIN_LIMIT:
                            chunk = head + chunk
                        else:
                            yield head
                        head = None
                    yield chunk
            if head is not None:
                yield head  # an empty body
    yield (b"" if first else b"\r\n") + f"--{boundary}--\r\n".encode("ascii")


#: Largest first chunk of a part copied to join its headers.
_JOIN_LIMIT = 256 << 10


@contextlib.asynccontextmanager
async def closing(iterable: AsyncIterable[Any]) -> AsyncIterator[None]:
    """Close ``iterable`` on leaving, if it can be closed (an async generator): ``async
    for`` alone leaves a generator it stops iterating suspended."""
    try:
        yield
    finally:
        aclose = getattr(iterable, "aclose", None)
        if aclose is not None:
            await aclose()


def boundary_of(content_type: MediaType) -> bytes:
    if content_type.type != "multipart":
        raise UnsupportedMediaType(f"expected a multipart request body, got {content_type.essence}")
    boundary = content_type.params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary parameter")
    if len(boundary) > _MAX_BOUNDARY or not boundary.isascii() or "\r" in boundary or "\n" in boundary:
        raise BadRequest("the multipart boundary parameter is invalid")
    return boundary.encode("ascii")


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid multipart header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1") + b"\r\n"


class Preamble:
    """Drops everything before the first delimiter line (RFC 2046 §5.1.1: the preamble).

    python-multipart expects the body to open with the delimiter, so the preamble is cut
    here; only a delimiter-sized tail is buffered while searching."""

    def __init__(self, boundary: bytes) -> None:
        self._pattern = b"\r\n--" + boundary
        self._tail = b"\r\n"  # the body's start counts as a line start
        self._seen = 0
        self.done = False

    @property
    def truncated(self) -> bool:
        """True if the body ended on what may have been the start of a delimiter."""
        return self._tail.startswith(self._pattern)

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes from the first delimiter on, or b"" while still searching."""
        data = self._tail + chunk
        start = 0
        while (found := data.find(self._pattern, start)) >= 0:
            # A delimiter line is the boundary followed by CRLF, or by "--" when closing.
            after = data[found + len(self._pattern) : found + len(self._pattern) + 2]
            if after in (b"\r\n", b"--"):
                self.done = True
                return data[found + 2 :]
            if after in (b"", b"\r", b"-"):
                self._tail = data[found:]  # undecided until the next chunk
                return b""
            start = found + 1
        self._seen += len(chunk)
        if self._seen > _MAX_PREAMBLE:
            raise BadRequest("malformed multipart body: no boundary delimiter found")
        self._tail = data[-(len(self._pattern) - 1) :]
        return b""


class PartEvents:
    """Collects python-multipart's synchronous callbacks for one chunk as a list of events
    (``("headers", dict)``, ``("data", [bytes, ...])``, ``("end", None)``) that the async
    side then applies; part data is checked against the size limit as it is seen, so an
    oversized part stops the parser at once."""

    def __init__(self, boundary: bytes, max_part_size: int) -> None:
        self.max_part_size = max_part_size
        self.events: list[tuple[str, Any]] = []
        self.finished = False
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._size = 0
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: self.events.append(("headers", self._headers)),
                "on_part_data": self._data,
                "on_part_end": lambda: self.events.append(("end", None)),
                "on_end": self._end,
            },
            max_header_count=_MAX_PART_HEADERS,
        )

    def _begin(self) -> None:
        self._headers, self._size = {}, 0

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        value = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()
        previous = self._headers.get(name)
        self._headers[name] = value if previous is None else f"{previous}, {value}"

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self.max_part_size:
            raise PayloadTooLarge(f"a body part exceeds the limit of {self.max_part_size} bytes")
        if self.events and self.events[-1][0] == "data":
            self.events[-1][1].append(data[start:end])
        else:
            self.events.append(("data", [data[start:end]]))

    def _end(self) -> None:
        self.finished = True


def part_type(headers: Mapping[str, str]) -> MediaType | None:
    value = headers.get("content-type")
    if value is None:
        return None
    try:
        return parse_content_type(value)
    except FilmlessError:
        return None
