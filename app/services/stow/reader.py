"""The STOW-RS request body, read incrementally: the stream is fed chunk by chunk to the
multipart framing of :mod:`app.dicom.multipart`, and every part is spooled to its own
temporary file while its size and SHA-256 are computed, so an instance is never held
whole in memory (PS3.18 §10.5)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState

from app.dicom.media import MediaType
from app.dicom.multipart import PartEvents, Preamble, boundary_of, part_type
from app.errors import BadRequest, PayloadTooLarge, StorageUnavailable
from app.storage.base import CHUNK_SIZE

if TYPE_CHECKING:
    from hashlib import _Hash

T = TypeVar("T")


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
    boundary = boundary_of(content_type)
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


@dataclass(slots=True)
class _Open:
    """The part being received: its headers, then its spool file."""

    headers: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    file: BufferedWriter | None = None
    size: int = 0
    hasher: _Hash = field(default_factory=hashlib.sha256)
    #: Received and not yet written: data arrives in pieces of a few KiB, and each write is
    #: a hop to a thread, so a part is written a CHUNK_SIZE at a time (a small instance in
    #: one go, with its closing).
    unwritten: bytearray = field(default_factory=bytearray)


class _Spooler(Generic[T]):
    """The state of one :func:`spool_parts` call."""

    def __init__(
        self,
        boundary: bytes,
        spool_dir: Path,
        max_part_size: int,
        on_part: Callable[[SpooledPart], Awaitable[T]] | None,
    ) -> None:
        self._preamble = Preamble(boundary)
        self._events = PartEvents(boundary, max_part_size)
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
            current = self._open
            assert current is not None and current.file is not None
            for piece in payload:
                current.unwritten += piece
            if len(current.unwritten) >= CHUNK_SIZE:
                data, current.unwritten = current.unwritten, bytearray()
                await asyncio.to_thread(_write, current.file, current.hasher, data)
                current.size += len(data)
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
        data, current.unwritten = current.unwritten, bytearray()
        await asyncio.to_thread(_write_and_close, current.file, current.hasher, data)
        current.size += len(data)
        part = SpooledPart(
            current.headers, part_type(current.headers), current.path, current.size, current.hasher.digest()
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


def _write(file: BufferedWriter, hasher: _Hash, data: bytes | bytearray) -> None:
    file.write(data)
    hasher.update(data)


def _write_and_close(file: BufferedWriter, hasher: _Hash, data: bytes | bytearray) -> None:
    with file:
        _write(file, hasher, data)


async def _call(on_part: Callable[[SpooledPart], Awaitable[T]], part: SpooledPart) -> T:
    return await on_part(part)
