"""The object store contract: five operations on opaque, archive-generated keys.

Keys are produced by :func:`new_key` and never derived from client-supplied UIDs, so a
hostile UID cannot address another object or escape the store's root.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

#: Chunk size used when streaming objects in and out (1 MiB).
CHUNK_SIZE = 1 << 20


def new_key() -> str:
    """A fresh object key: 128 random bits, fanned out over two directory levels.

    >>> k = new_key(); len(k.split("/")) == 3 and len(k) == 38
    True
    """
    token = secrets.token_hex(16)
    return f"{token[:2]}/{token[2:4]}/{token}"


class BlobStore(Protocol):
    """An object store. All methods raise only :mod:`app.errors` exceptions:
    ``ObjectNotFound`` for a missing key, ``StorageUnavailable`` when the backend fails."""

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the stream under ``key`` atomically (all or nothing); return its size."""
        ...

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        """Store the file at ``path`` under ``key`` atomically; return its size. With
        ``move`` the caller gives the file up, and the store may make it the object
        without copying it (a rename on the same volume); whatever is left at ``path``
        afterwards is still the caller's to remove."""
        ...

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open ``key`` for reading bytes ``[start, end)`` (``end=None``: to the end).

        Raises ``ObjectNotFound`` *before* any byte is read, so callers can open every
        object a response needs before the response starts. Like a slice, ``end`` is
        clamped to the object's size and ``start == size`` gives an empty reader;
        ``start > size`` raises ``RangeNotSatisfiable``. A negative ``start`` or
        ``end < start`` is a caller bug (``ValueError``)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int:
        """The object's length in bytes; ``ObjectNotFound`` if there is none."""
        ...

    async def remove_stale_uploads(self, older_than: float) -> int:
        """Remove what puts interrupted by a crash left (temporary files, unfinished
        multipart uploads) untouched for ``older_than`` seconds; how many."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend answers."""
        ...

    async def close(self) -> None: ...


class BlobReader(Protocol):
    """An opened byte range of an object; iterate it once, then it is closed."""

    #: Number of bytes the iteration will yield.
    length: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


async def file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """The file at ``path``, read in ``chunk_size`` pieces off the event loop."""
    with await asyncio.to_thread(path.open, "rb") as file:
        while chunk := await asyncio.to_thread(file.read, chunk_size):
            yield chunk
