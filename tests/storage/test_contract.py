"""The BlobStore contract, run unchanged against every backend (see ``blob_store``).

Backend-specific checks appear only where a backend can leave something behind that the
contract cannot see: temp files on disk, incomplete multipart uploads in S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import ObjectNotFound, RangeNotSatisfiable, StorageUnavailable
from app.storage.base import CHUNK_SIZE, BlobReader, BlobStore, new_key
from app.storage.factory import open_store
from app.storage.filesystem import FilesystemStore
from app.storage.s3 import S3Store
from harness.servers import S3Server, settings_for

MiB = 1 << 20


class SourceFailed(Exception):
    """Raised by a test's source stream, to check it reaches the caller unchanged."""


async def stream(data: bytes, chunk_size: int = 64 << 10) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk_size):
        yield data[offset : offset + chunk_size]


async def random_stream(
    total: int, digest: Any, chunk_size: int = 64 << 10, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    """``total`` random bytes in small chunks, hashed into ``digest`` on the way, without
    ever holding more than one chunk."""
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise SourceFailed(f"source failed after {sent} bytes")
        chunk = os.urandom(min(chunk_size, total - sent))
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


async def read_all(reader: BlobReader) -> bytes:
    async with contextlib.aclosing(reader):
        chunks = [chunk async for chunk in reader]
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    data = b"".join(chunks)
    assert len(data) == reader.length
    return data


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def assert_nothing_left(store: BlobStore, key: str) -> None:
    assert not await store.exists(key)
    if isinstance(store, FilesystemStore):
        assert files_under(store.root) == []  # no temp file either
    if isinstance(store, S3Store):
        uploads = await store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK_SIZE, CHUNK_SIZE + 1], ids=lambda n: f"{n}B")
async def test_round_trip(blob_store: BlobStore, size: int) -> None:
    key, data = new_key(), os.urandom(size)
    assert await blob_store.put(key, stream(data)) == size
    reader = await blob_store.open(key)
    assert reader.length == size
    assert await read_all(reader) == data
    assert await blob_store.size(key) == size


async def test_large_object_is_streamed(blob_store: BlobStore) -> None:
    # 12 MiB in 64 KiB pieces: three parts for S3 at 5 MiB per part.
    key, total = new_key(), 12 * MiB
    sent = hashlib.sha256()
    assert await blob_store.put(key, random_stream(total, sent)) == total

    received, length = hashlib.sha256(), 0
    async with contextlib.aclosing(await blob_store.open(key)) as reader:
        assert reader.length == total
        async for chunk in reader:
            assert len(chunk) <= CHUNK_SIZE
            received.update(chunk)
            length += len(chunk)
    assert (length, received.hexdigest()) == (total, sent.hexdigest())
    assert await blob_store.size(key) == total
    if isinstance(blob_store, S3Store):
        head = await blob_store.client.head_object(Bucket=blob_store.bucket, Key=key)
        assert head["ETag"].strip('"').endswith("-3"), "expected a three-part multipart upload"


async def test_put_accepts_one_huge_chunk(blob_store: BlobStore) -> None:
    # A source chunk larger than a part or a write buffer must be split, not rejected.
    key, data = new_key(), os.urandom(11 * MiB)
    assert await blob_store.put(key, stream(data, chunk_size=len(data))) == len(data)
    assert await read_all(await blob_store.open(key)) == data


@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
@pytest.mark.parametrize("size", [0, 1000, 6 * MiB + 3], ids=lambda n: f"{n}B")
async def test_put_file(blob_store: BlobStore, tmp_path: Path, move: bool, size: int) -> None:
    source, key, data = tmp_path / "instance.dcm", new_key(), os.urandom(size)
    source.write_bytes(data)
    assert await blob_store.put_file(key, source, move=move) == size
    assert await read_all(await blob_store.open(key)) == data
    if not move or isinstance(blob_store, S3Store):
        assert source.read_bytes() == data  # left for the caller to remove
    if isinstance(blob_store, FilesystemStore) and move:
        # On the store's volume the file itself became the object: renamed, not copied.
        assert not source.exists()
        assert files_under(blob_store.root) == [blob_store.root / key]


def _other_volume(path: Path, than: Path) -> bool:
    return path.is_dir() and os.stat(path).st_dev != os.stat(than).st_dev


async def test_put_file_moves_across_volumes_by_copying(tmp_path: Path) -> None:
    """A spool directory on another file system than the store (/dev/shm is a tmpfs): the
    rename cannot work, and the file is copied instead."""
    shm = Path("/dev/shm")  # noqa: S108 (a file system, not a temporary file's name)
    if not _other_volume(shm, tmp_path):
        pytest.skip("needs a second file system at /dev/shm")
    store, key, data = FilesystemStore(tmp_path / "objects"), new_key(), os.urandom(5000)
    store.root.mkdir()
    source = shm / f"filmless-test-{key.rsplit('/', 1)[1]}.dcm"
    source.write_bytes(data)
    try:
        assert await store.put_file(key, source, move=True) == len(data)
        assert await read_all(await store.open(key)) == data
        assert files_under(store.root) == [store.root / key]
    finally:
        source.unlink(missing_ok=True)


async def test_overwrite_replaces_the_object(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(b"first version, rather long"))
    await blob_store.put(key, stream(b"second"))
    assert await read_all(await blob_store.open(key)) == b"second"
    assert await blob_store.size(key) == len(b"second")


# --- ranges --------------------------------------------------------------------------------

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (100, None, DATA[100:]),
        (100, 200, DATA[100:200]),
        (0, 1, DATA[:1]),
        (100, 10**9, DATA[100:]),  # end beyond the object: clamped
        (len(DATA) - 1, None, DATA[-1:]),
        (len(DATA), None, b""),  # start == size: an empty tail, not an error
        (len(DATA), len(DATA) + 5, b""),
        (50, 50, b""),
    ],
    ids=["start", "start-end", "first-byte", "end-clamped", "last-byte", "at-end", "at-end-bounded", "empty"],
)
async def test_ranged_open(blob_store: BlobStore, start: int, end: int | None, expected: bytes) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA, chunk_size=1000))
    reader = await blob_store.open(key, start, end)
    assert reader.length == len(expected)
    assert await read_all(reader) == expected


async def test_range_of_an_empty_object(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(b""))
    assert await read_all(await blob_store.open(key, 0, 100)) == b""
    with pytest.raises(RangeNotSatisfiable):
        await blob_store.open(key, 1)


@pytest.mark.parametrize("end", [None, len(DATA) + 10], ids=["open-ended", "bounded"])
async def test_range_starting_beyond_the_end_is_416(blob_store: BlobStore, end: int | None) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA))
    with pytest.raises(RangeNotSatisfiable) as raised:
        await blob_store.open(key, len(DATA) + 1, end)
    assert raised.value.status == 416
    assert raised.value.size == len(DATA)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 5)])
async def test_malformed_range_is_a_caller_bug(blob_store: BlobStore, start: int, end: int | None) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA))
    with pytest.raises(ValueError, match="invalid range"):
        await blob_store.open(key, start, end)


# --- missing objects, exists, size, delete --------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(0, None), (5, None), (5, 10), (5, 5)])
async def test_open_missing_key_fails_before_iteration(
    blob_store: BlobStore, start: int, end: int | None
) -> None:
    with pytest.raises(ObjectNotFound):
        await blob_store.open(new_key(), start, end)


async def test_exists_and_size(blob_store: BlobStore) -> None:
    key = new_key()
    assert not await blob_store.exists(key)
    with pytest.raises(ObjectNotFound):
        await blob_store.size(key)
    await blob_store.put(key, stream(DATA))
    assert await blob_store.exists(key)
    assert await blob_store.size(key) == len(DATA)


async def test_delete(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA))
    await blob_store.delete(key)
    assert not await blob_store.exists(key)
    with pytest.raises(ObjectNotFound):
        await blob_store.open(key)
    await blob_store.delete(key)  # deleting again, or a key never stored, is fine
    await blob_store.delete(new_key())


async def test_abandoned_reader_releases_its_resources(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(os.urandom(3 * CHUNK_SIZE)))
    # Far more abandoned readers than the S3 connection pool holds: a leaked connection
    # would make the next request wait forever.
    for _ in range(70):
        reader = await blob_store.open(key)
        async with contextlib.aclosing(reader):
            async for _chunk in reader:
                break
    assert await blob_store.size(key) == 3 * CHUNK_SIZE


async def test_unread_reader_can_be_closed(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA))
    reader = await blob_store.open(key, 10)
    await reader.aclose()
    await reader.aclose()  # idempotent
    assert [chunk async for chunk in reader] == []


# --- failed writes leave nothing behind -----------------------------------------------------


@pytest.mark.parametrize("fail_after", [0, 3 * MiB, 7 * MiB], ids=["at-once", "first-part", "multipart"])
async def test_failed_put_leaves_nothing(blob_store: BlobStore, fail_after: int) -> None:
    key = new_key()
    with pytest.raises(SourceFailed):
        await blob_store.put(key, random_stream(12 * MiB, hashlib.sha256(), fail_after=fail_after))
    await assert_nothing_left(blob_store, key)


async def test_failed_overwrite_keeps_the_old_object(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, stream(DATA))
    with pytest.raises(SourceFailed):
        await blob_store.put(key, random_stream(12 * MiB, hashlib.sha256(), fail_after=7 * MiB))
    assert await read_all(await blob_store.open(key)) == DATA


async def test_cancelled_put_leaves_nothing(blob_store: BlobStore) -> None:
    key, stalled = new_key(), asyncio.Event()

    async def stalling_source() -> AsyncIterator[bytes]:
        async for chunk in random_stream(7 * MiB, hashlib.sha256()):
            yield chunk
        stalled.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield b"never"

    task = asyncio.create_task(blob_store.put(key, stalling_source()))
    await asyncio.wait_for(stalled.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_nothing_left(blob_store, key)


# --- health ----------------------------------------------------------------------------------


async def test_ping(blob_store: BlobStore) -> None:
    await blob_store.ping()


# --- backend-specific ------------------------------------------------------------------------

INVALID_KEYS = [
    "",
    "..",
    "../../etc/passwd",
    "/etc/passwd",
    "ab/cd/../../../etc/passwd",
    "ab\\cd\\abcd0123456789abcdef0123456789",
    "AB/CD/ABCD0123456789ABCDEF0123456789",  # upper case
    "ab/cd/ef0123456789abcdef0123456789ab",  # fan-out not taken from the token
    "ab/cd/abcd0123456789abcdef0123456789/x",
    "ab/cd/abcd0123456789abcdef012345678",  # one digit short
]


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_filesystem_rejects_invalid_keys(tmp_path: Path, key: str) -> None:
    store = FilesystemStore(tmp_path)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.put(key, stream(b"x"))
    with pytest.raises(ValueError, match="invalid object key"):
        await store.open(key)
    for operation in (store.delete, store.exists, store.size):
        with pytest.raises(ValueError, match="invalid object key"):
            await operation(key)
    assert files_under(tmp_path) == []


async def test_filesystem_ping_fails_without_root(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        await FilesystemStore(tmp_path / "missing").ping()
    with pytest.raises(StorageUnavailable):
        await FilesystemStore(tmp_path / "missing").put(new_key(), stream(b"x"))


async def test_s3_wrong_credentials_are_unavailable(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    wrong = dataclasses.replace(s3_server, secret_key=s3_server.secret_key[::-1])
    settings = settings_for("", wrong, s3_bucket, tmp_path, s3_create_bucket=False)
    async with contextlib.AsyncExitStack() as stack:
        store = await S3Store.connect(settings, stack)
        with pytest.raises(StorageUnavailable):
            await store.ping()


async def test_s3_missing_bucket_is_unavailable(s3_server: S3Server, tmp_path: Path) -> None:
    settings = settings_for("", s3_server, "filmless-test-absent", tmp_path, s3_create_bucket=False)
    async with contextlib.AsyncExitStack() as stack:
        store = await S3Store.connect(settings, stack)
        with pytest.raises(StorageUnavailable):
            await store.ping()
        with pytest.raises(StorageUnavailable):
            await store.put(new_key(), stream(b"x"))


# --- factory ---------------------------------------------------------------------------------


async def test_open_store_defaults_to_the_filesystem(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings_for("", None, None, tmp_path), stack)
        assert isinstance(store, FilesystemStore)
        assert store.root == tmp_path / "objects"
        await store.ping()


async def test_open_store_creates_the_s3_bucket(s3_server: S3Server, s3_client: Any, tmp_path: Path) -> None:
    bucket = f"filmless-test-created-{os.urandom(4).hex()}"
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(settings_for("", s3_server, bucket, tmp_path), stack)
            assert isinstance(store, S3Store)
            await store.ping()
    finally:
        await s3_client.delete_bucket(Bucket=bucket)
