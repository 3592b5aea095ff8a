"""multipart/related bodies (RFC 2387 over RFC 2046 §5.1): STOW-RS requests in, WADO-RS
responses out (PS3.18 §10.5 and §10.4).

Reading is incremental: the request stream is fed chunk by chunk to python-multipart's
``MultipartParser`` and every part is spooled to its own temporary file while its size and
SHA-256 are computed, so an instance is never held whole in memory. Writing is the mirror
image: parts are framed around caller-supplied byte streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState

from app.dicom.media import MediaType, parse_content_type
from app.errors import BadRequest, FilmlessError, PayloadTooLarge, StorageUnavailable, UnsupportedMediaType

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "SpooledPart",
    "as_single_part",
    "multipart_boundary",
    "related_content_type",
    "spool_parts",
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


@dataclass(slots=True)
class SpooledPart:
    """One body part spooled to ``path``. ``headers`` has lower-cased names; ``content_type``
    is None when the part has no Content-Type or an unparseable one (the raw value stays in
    ``headers``)."""

    headers: dict[str, str]
    content_type: MediaType | None
    path: Path
    size: int
    sha256: bytes

    def discard(self) -> None:
        """Delete the spool file (idempotent)."""
        self.path.unlink(missing_ok=True)


@overload
async def spool_parts(
    chunks: AsyncIterable[bytes],
    content_type: MediaType,
    spool_dir: Path,
    max_part_size: int,
    max_body_size: int,
    on_part: None = None,
) -> list[SpooledPart]: ...


@overload
async def spool_parts(
    chunks: AsyncIterable[bytes],
    content_type: MediaType,
    spool_dir: Path,
    max_part_size: int,
    max_body_size: int,
    on_part: Callable[[SpooledPart], Awaitable[T]],
) -> list[tuple[SpooledPart, T]]: ...


async def spool_parts(
    chunks: AsyncIterable[bytes],
    content_type: MediaType,
    spool_dir: Path,
    max_part_size: int,
    max_body_size: int,
    on_part: Callable[[SpooledPart], Awaitable[Any]] | None = None,
) -> list[SpooledPart] | list[tuple[SpooledPart, Any]]:
    """Read a multipart body from ``chunks``, spooling each part to a file in ``spool_dir``.

    Returns the parts in body order; with ``on_part``, each paired with its result. The
    callback is started as a task the moment its part is complete, so work such as header
    parsing overlaps the upload of the remaining parts; it should report per-part failures
    as values, since an exception it raises aborts the whole read.

    Preamble and epilogue are ignored (RFC 2046 §5.1.1). Raises UnsupportedMediaType if
    ``content_type`` is not ``multipart/*``; BadRequest for a missing or invalid boundary,
    malformed framing, a body without parts, or one that ends before the closing
    delimiter; PayloadTooLarge as soon as a part exceeds ``max_part_size`` or the body
    ``max_body_size``; StorageUnavailable if the spool directory cannot be written. On any
    error or cancellation every spool file is deleted and the pending callbacks are
    cancelled; on success the files belong to the caller, who removes them with
    :meth:`SpooledPart.discard`. Part bodies are taken as binary, as DICOMweb sends them:
    a Content-Transfer-Encoding header is not decoded.
    """
    boundary = _boundary(content_type)
    try:
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(
            "the spool directory is unavailable", f"cannot create the spool directory: {exc}"
        ) from exc
    spooler = _Spooler(boundary, spool_dir, max_part_size, on_part)
    try:
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > max_body_size:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_body_size} bytes")
            await spooler.feed(chunk)
        return await spooler.finish()
    except BaseException:
        await spooler.abort()
        raise


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
    async for headers, body in parts:
        yield (b"" if first else b"\r\n") + separator + _encode_headers(headers)
        first = False
        async for chunk in body:
            if chunk:
                yield chunk
    yield (b"" if first else b"\r\n") + f"--{boundary}--\r\n".encode("ascii")


def _boundary(content_type: MediaType) -> bytes:
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


class _Preamble:
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


@dataclass(slots=True)
class _Open:
    """The part being received: its headers, then its spool file."""

    headers: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    file: BufferedWriter | None = None
    size: int = 0
    hasher: _Hash = field(default_factory=hashlib.sha256)


class _Events:
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


class _Spooler(Generic[T]):
    """The state of one :func:`spool_parts` call."""

    def __init__(
        self,
        boundary: bytes,
        spool_dir: Path,
        max_part_size: int,
        on_part: Callable[[SpooledPart], Awaitable[T]] | None,
    ) -> None:
        self._preamble = _Preamble(boundary)
        self._events = _Events(boundary, max_part_size)
        self._dir = spool_dir
        self._on_part = on_part
        self._open: _Open | None = None
        self._parts: list[SpooledPart] = []
        self._tasks: list[asyncio.Task[T]] = []
        self._failure: BaseException | None = None

    async def feed(self, chunk: bytes) -> None:
        if self._events.finished:
            return  # epilogue (RFC 2046 §5.1.1)
        if not self._preamble.done:
            chunk = self._preamble.feed(chunk)
        if not chunk:
            return
        try:
            self._events.parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        events, self._events.events = self._events.events, []
        try:
            for kind, payload in events:
                await self._apply(kind, payload)
        except OSError as exc:
            raise StorageUnavailable(
                "the request cannot be spooled" + (": out of space" if exc.errno == errno.ENOSPC else ""),
                f"cannot spool a body part: {exc}",
            ) from exc
        if self._failure is not None:
            raise self._failure

    async def finish(self) -> list[Any]:
        if not self._preamble.done and not self._preamble.truncated:
            raise BadRequest("malformed multipart body: no boundary delimiter found")
        if self._events.parser.state != MultipartState.END:
            raise BadRequest("truncated multipart body: it ends before the closing boundary delimiter")
        if not self._parts:
            raise BadRequest("the multipart body contains no parts")
        if self._on_part is None:
            return list(self._parts)
        results = await asyncio.gather(*self._tasks)
        return list(zip(self._parts, results, strict=True))

    async def _apply(self, kind: str, payload: Any) -> None:
        if kind == "headers":
            self._start(payload)
        elif kind == "data":
            assert self._open is not None and self._open.file is not None
            data = b"".join(payload)
            await asyncio.to_thread(_write, self._open.file, self._open.hasher, data)
            self._open.size += len(data)
        else:
            await self._complete()

    def _start(self, headers: dict[str, str]) -> None:
        # Created on the event loop, not in a thread: a cancelled thread could otherwise
        # create a file after the cleanup has run, and leave it behind.
        path = self._dir / f"part-{secrets.token_hex(16)}.tmp"
        self._open = _Open(headers=headers, path=path)
        self._open.file = path.open("xb")

    async def _complete(self) -> None:
        current = self._open
        if current is None:  # an empty part ends before its headers do
            raise BadRequest("malformed multipart body: a part has no header section")
        assert current.file is not None and current.path is not None
        await asyncio.to_thread(current.file.close)
        part = SpooledPart(
            current.headers, _part_type(current.headers), current.path, current.size, current.hasher.digest()
        )
        self._parts.append(part)
        self._open = None
        if self._on_part is not None:
            task = asyncio.create_task(_call(self._on_part, part))
            task.add_done_callback(self._watch)
            self._tasks.append(task)

    def _watch(self, task: asyncio.Task[T]) -> None:
        # Retrieving the exception here also keeps asyncio from logging it as unretrieved.
        if not task.cancelled() and (exc := task.exception()) is not None and self._failure is None:
            self._failure = exc

    async def abort(self) -> None:
        """Delete every spool file, then cancel and reap the callbacks."""
        current = self._open
        if current is not None and current.file is not None and current.path is not None:
            # Waits for a write still running in its thread (the buffer's lock), after
            # which a queued write can only fail on the closed file.
            with contextlib.suppress(OSError, ValueError):
                current.file.close()
            current.path.unlink(missing_ok=True)
        for part in self._parts:
            part.discard()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _write(file: BufferedWriter, hasher: _Hash, data: bytes) -> None:
    file.write(data)
    hasher.update(data)


async def _call(on_part: Callable[[SpooledPart], Awaitable[T]], part: SpooledPart) -> T:
    return await on_part(part)


def _part_type(headers: Mapping[str, str]) -> MediaType | None:
    value = headers.get("content-type")
    if value is None:
        return None
    try:
        return parse_content_type(value)
    except FilmlessError:
        return None
