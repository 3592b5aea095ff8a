"""A :class:`~app.storage.base.BlobStore` on a local directory tree.

Each object is one file at ``root/<key>``. Writes go to a hidden temporary file next to
the target and are renamed into place, so readers see either the old object or the new
one, never a partial file, and a crash leaves at worst a ``.*.tmp`` orphan (which can
never collide with a key, so it is invisible to the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, ParamSpec, TypeVar

from app.errors import ObjectNotFound, RangeNotSatisfiable, StorageUnavailable
from app.observability import metrics
from app.storage.base import CHUNK_SIZE, file_chunks

__all__ = ["KEY_PATTERN", "FilesystemReader", "FilesystemStore"]

P = ParamSpec("P")
T = TypeVar("T")

#: Exactly the shape :func:`~app.storage.base.new_key` produces: two fan-out levels
#: taken from the token itself. Anything else (``..``, ``/``-prefixed, backslashes,
#: upper case) is refused before it gets near the filesystem.
KEY_PATTERN = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{28}")


@contextlib.contextmanager
def _translate(key: str, *, missing: Literal["object", "store"] = "object") -> Iterator[None]:
    """Turn ``OSError`` into the store's errors.

    ``missing="object"``: a missing file means the object is absent (reads). For writes a
    missing path means the store itself is broken (e.g. its root vanished), so it must not
    be reported as a 404.
    """
    try:
        yield
    except FileNotFoundError as exc:
        if missing == "object":
            raise ObjectNotFound("the stored object is missing") from exc
        raise StorageUnavailable("the object store is unavailable", f"object store: {exc}") from exc
    except OSError as exc:
        metrics.DEPENDENCY_ERRORS.labels("object_store").inc()
        raise StorageUnavailable(_unavailable(exc), f"object store: {exc}") from exc


def _unavailable(exc: OSError) -> str:
    """What a client is told: which dependency failed and how, never where it lives."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the object store is out of space"
    return "the object store is unavailable"


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking file I/O in a worker thread.

    A thread cannot be interrupted, so when the caller is cancelled we still wait for the
    call to finish before letting the cancellation through: otherwise the caller's cleanup
    (closing the descriptor, unlinking the temp file) would race the I/O still running.
    Every call is bounded (one chunk), so the wait is short.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    # A rename or a new entry is only durable once the directory holding it is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(directory: Path) -> None:
    """Create the two fan-out levels of ``root/ab/cd`` (never ``root`` itself: a missing
    root is a misconfiguration or an unmounted volume, not something to paper over)."""
    if directory.is_dir():
        return
    for level in (directory.parent, directory):
        try:
            level.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(level.parent)


#: Where objects are written before they are renamed into place: one directory on the
#: same volume (so the rename is atomic), and the one place a crash can leave files.
TEMPORARY_DIR = ".tmp"


def _create_temp(root: Path) -> tuple[int, Path]:
    # The leading dot and the suffix keep temp names out of KEY_PATTERN.
    directory = root / TEMPORARY_DIR
    path = directory / f".{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if not root.is_dir():
            raise  # the store's root itself is gone: not something to paper over
        directory.mkdir(exist_ok=True)
        fd = os.open(path, flags, 0o644)
    return fd, path


def remove_stale_files(directory: Path, cutoff: float) -> int:
    """Remove the files directly in ``directory`` last modified before ``cutoff`` (blocking);
    how many. A missing directory has none."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _commit(fd: int, temp: Path, target: Path) -> None:
    os.fsync(fd)
    os.close(fd)
    os.replace(temp, target)
    _fsync_dir(target.parent)


def _move_into_place(source: Path, target: Path) -> int | None:
    """Make ``source`` the object at ``target`` by a rename, durably (blocking); its size,
    or None when the two are on different volumes."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The data first, then the name: after a crash the object is whole or absent.
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return None
        raise
    _fsync_dir(target.parent)
    return size


def _discard(fd: int, temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        temp.unlink()


def _open_range(path: Path, key: str, start: int, end: int | None) -> tuple[BinaryIO, int]:
    """Open ``path`` positioned at ``start``; return the file and the range length."""
    f = path.open("rb", buffering=0)
    try:
        size = os.fstat(f.fileno()).st_size
        if start > size:
            raise RangeNotSatisfiable(f"range starts at {start}, object {key!r} has {size} bytes", size)
        stop = size if end is None else min(end, size)
        f.seek(start)
    except BaseException:
        f.close()
        raise
    return f, stop - start


class FilesystemReader:
    """An opened byte range of a file; yields chunks of at most :data:`CHUNK_SIZE`.

    The file is opened by :meth:`FilesystemStore.open`, so the reader keeps serving the
    bytes it was opened on even if the key is overwritten or deleted meanwhile.
    """

    def __init__(self, file: BinaryIO, key: str, length: int) -> None:
        self.length = length
        self._file: BinaryIO | None = file
        self._key = key
        self._remaining = length

    def __aiter__(self) -> FilesystemReader:
        return self

    async def __anext__(self) -> bytes:
        file = self._file
        if file is None or self._remaining == 0:
            await self.aclose()
            raise StopAsyncIteration
        try:
            with _translate(self._key):
                chunk = await _in_thread(file.read, min(CHUNK_SIZE, self._remaining))
            if not chunk:
                # Cannot happen with atomic replacement, but a file truncated in place
                # behind our back must not pass for a complete object.
                raise StorageUnavailable(
                    "the object store is unavailable", f"object {self._key!r} is shorter than expected"
                )
        except BaseException:
            await self.aclose()
            raise
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            # Closing a descriptor does not block on a regular file: no thread needed.
            file.close()


class FilesystemStore:
    """Objects as files under ``root``, which must exist (see :func:`~app.storage.factory.open_store`).

    Keys must match :data:`KEY_PATTERN`; any other key is a caller bug and raises
    ``ValueError`` (keys are archive-generated, never client input).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        target = self._path(key)
        with _translate(key, missing="store"):
            await _in_thread(_ensure_dir, target.parent)
            fd, temp = await _in_thread(_create_temp, self.root)
        size = 0
        try:
            # Small incoming chunks are coalesced so that each thread hop moves ~CHUNK_SIZE.
            pending = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if not pending and len(chunk) >= CHUNK_SIZE:
                    with _translate(key, missing="store"):
                        await _in_thread(_write_all, fd, chunk)
                    continue
                pending += chunk
                if len(pending) >= CHUNK_SIZE:
                    with _translate(key, missing="store"):
                        await _in_thread(_write_all, fd, pending)
                    pending = bytearray()
            with _translate(key, missing="store"):
                if pending:
                    await _in_thread(_write_all, fd, pending)
                await _in_thread(_commit, fd, temp, target)
        except BaseException:
            # Synchronous on purpose: a close and an unlink are quick, and this way a second
            # cancellation cannot skip the cleanup.
            _discard(fd, temp)
            raise
        return size

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        if move:
            # A spooled instance on the store's volume is renamed into place: written
            # once, never read back (the spool directory defaults to data_dir/spool).
            target = self._path(key)
            with _translate(key, missing="store"):
                await _in_thread(_ensure_dir, target.parent)
                size = await _in_thread(_move_into_place, path, target)
            if size is not None:
                return size
        return await self.put(key, file_chunks(path))

    async def open(self, key: str, start: int = 0, end: int | None = None) -> FilesystemReader:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        path = self._path(key)
        with _translate(key):
            file, length = await _in_thread(_open_range, path, key, start, end)
        return FilesystemReader(file, key, length)

    async def delete(self, key: str) -> None:
        # Empty fan-out directories are left in place: removing them would race a
        # concurrent put into the same directory, and there are at most 65,536 of them.
        path = self._path(key)
        with _translate(key, missing="store"):
            await _in_thread(path.unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def size(self, key: str) -> int:
        path = self._path(key)
        with _translate(key):
            stat = await _in_thread(path.stat)
        return stat.st_size

    async def remove_stale_uploads(self, older_than: float) -> int:
        """Remove temporary files untouched for ``older_than`` seconds: what a process
        killed during a put left. A live put writes its file at least once a chunk."""
        with _translate("", missing="store"):
            return await _in_thread(remove_stale_files, self.root / TEMPORARY_DIR, time.time() - older_than)

    async def ping(self) -> None:
        # Creating a file is the only reliable writability test: ``os.access`` grants the
        # root user everything and knows nothing of a full disk or inode table.
        if not await _in_thread(self.root.is_dir):
            raise StorageUnavailable(
                "the object store is unavailable", f"object store: {self.root} is not a directory"
            )
        with _translate("", missing="store"):
            fd, temp = await _in_thread(_create_temp, self.root)
            await _in_thread(_discard, fd, temp)

    async def close(self) -> None:
        return None
