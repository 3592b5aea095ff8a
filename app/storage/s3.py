"""A :class:`~app.storage.base.BlobStore` on S3 (AWS, SeaweedFS, MinIO…) through aioboto3.

Objects up to ``part_size`` go up in one ``PutObject``; larger ones as a multipart upload
whose parts are sent as they fill, so an upload holds at most one part in memory. A failed
or cancelled multipart upload is aborted: S3 would otherwise keep (and bill) its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import re
from collections.abc import AsyncIterable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from app.errors import ObjectNotFound, RangeNotSatisfiable, StorageUnavailable
from app.observability import metrics
from app.settings import Settings
from app.storage.base import CHUNK_SIZE, file_chunks

__all__ = ["MIN_PART_SIZE", "S3Reader", "S3Store", "client_config"]

log = logging.getLogger(__name__)

#: aiobotocore builds its client classes at runtime and no stubs are installed.
S3Client = Any

#: S3's floor for every part but the last.
MIN_PART_SIZE = 5 << 20

#: Concurrent HTTP connections per client: a WADO-RS study retrieval streams many objects
#: at once, and botocore's default of 10 would queue them behind each other.
MAX_POOL_CONNECTIONS = 64

#: Error codes meaning "no such object" (``HeadObject`` has no body, hence the bare 404).
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_code(exc: StorageUnavailable) -> str | None:
    """The S3 error code behind a translated error, for the few callers that expect one."""
    cause = exc.__cause__
    return _error_code(cause) if isinstance(cause, ClientError) else None


@contextlib.contextmanager
def _translate(key: str | None = None) -> Iterator[None]:
    """The one place where botocore and aiohttp exceptions become the store's errors.

    With ``key``, a 404 means that object is missing; without, the request was about the
    bucket or an upload, and any failure means the store is unusable.
    """
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if key is not None and code in _NOT_FOUND:
            raise ObjectNotFound("the stored object is missing") from exc
        metrics.DEPENDENCY_ERRORS.labels("object_store").inc()
        raise StorageUnavailable("the object store is unavailable", f"object store: {code or exc}") from exc
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
        # OSError includes TimeoutError (asyncio's since 3.11) and refused connections.
        # Their text names the endpoint, bucket and key: for the log, not the client.
        metrics.DEPENDENCY_ERRORS.labels("object_store").inc()
        raise StorageUnavailable("the object store is unavailable", f"object store: {exc}") from exc


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def client_config() -> AioConfig:
    """The botocore client configuration for S3 and S3-compatible servers."""
    return AioConfig(
        # Path-style URLs: S3-compatible servers rarely have wildcard DNS for
        # virtual-hosted buckets.
        s3={"addressing_style": "path"},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=60,
        # botocore ≥ 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible servers reject or mishandle; send them only where S3 needs them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class S3Reader:
    """An opened byte range of an object: streams the ``GetObject`` body in chunks of at
    most :data:`CHUNK_SIZE`, and releases the HTTP connection when done or closed.

    Iterates with ``body.read`` rather than ``body.iter_chunks`` (which is the same loop
    wrapped in an async generator) so that abandoning the iteration leaves no generator
    to finalise: ``aclose`` alone releases everything.
    """

    def __init__(self, body: Any, key: str, length: int) -> None:
        self.length = length
        self._body: Any = body
        self._key = key

    def __aiter__(self) -> S3Reader:
        return self

    async def __anext__(self) -> bytes:
        body = self._body
        if body is None:
            raise StopAsyncIteration
        try:
            with _translate(self._key):
                # The final empty read is where aiobotocore checks Content-Length, so a
                # truncated body surfaces as an error rather than a short object.
                chunk: bytes = await body.read(CHUNK_SIZE)
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            # After a complete read aiohttp has already returned the connection to the
            # pool and this is a no-op; mid-body it drops the connection, the only safe
            # thing to do with unread bytes in flight.
            body.close()


#: Bodies up to this size are put with one signed request of :class:`_Direct`; larger ones
#: through the client (aiohttp sends a bytes body in one write, and warns above 1 MiB).
DIRECT_PUT_LIMIT = 1 << 20

_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class _DirectError(Exception):
    """An S3 error answer to a direct request: its status and code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


class _Direct:
    """GetObject and single-request PutObject, signed by botocore's own SigV4 signer and
    sent on one aiohttp session.

    Through the client, every call also resolves the endpoint from its rule set, fires a
    few dozen event hooks, builds a user agent and parses the response into a dictionary:
    about 3.7 ms of CPU per PutObject of a 40 KiB object measured here, more than storing
    it costs the rest of the archive. The object calls of the hot paths (storing a small
    instance, reading any) are these two; everything else (multipart uploads, HEAD,
    DELETE, bucket calls) stays with the client. Like the client's standard retry mode,
    a request that fails on the connection or with a 500 or 503 is tried again, once: a
    kept-alive connection an S3 server restart closed must not become an error."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        meta = client.meta
        self._url = f"{meta.endpoint_url.rstrip('/')}/{bucket}/"
        self._region = meta.region_name
        self._config = meta.config
        # The client's own credentials (static, or refreshed from its provider chain).
        self._credentials = client._request_signer._credentials
        self._session: aiohttp.ClientSession | None = None

    @property
    def usable(self) -> bool:
        return self._credentials is not None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_POOL_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=60),
                auto_decompress=False,
            )
        return self._session

    async def _headers(self, method: str, key: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        assert self._credentials is not None
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(method=method, url=self._url + key, headers=headers, data=body)
        request.context["client_config"] = self._config
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    async def _send(
        self, method: str, key: str, headers: dict[str, str], body: bytes = b""
    ) -> aiohttp.ClientResponse:
        """The response, status checked (2xx); the caller reads and releases it."""
        for attempt in (1, 2):
            signed = await self._headers(method, key, headers, body)
            try:
                response = await self._http().request(
                    method, self._url + key, headers=signed, data=body or None
                )
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt == 2:
                    raise
                continue
            if response.status < 300:
                return response
            try:
                text = await response.read()
            finally:
                response.release()
            found = _ERROR_CODE.search(text)
            code = found.group(1).decode("ascii", "replace") if found else str(response.status)
            if response.status in (500, 503) and attempt == 1:
                continue
            raise _DirectError(response.status, code)
        raise AssertionError("unreachable")

    async def get(self, key: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self._send("GET", key, headers)

    async def put(self, key: str, data: bytes) -> None:
        response = await self._send("PUT", key, {"Content-Length": str(len(data))}, data)
        try:
            await response.read()
        finally:
            response.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@contextlib.contextmanager
def _translate_direct(key: str) -> Iterator[None]:
    """:func:`_translate` for :class:`_Direct`'s answers."""
    try:
        with _translate(key):
            yield
    except _DirectError as exc:
        if exc.code in _NOT_FOUND:
            raise ObjectNotFound("the stored object is missing") from exc
        metrics.DEPENDENCY_ERRORS.labels("object_store").inc()
        raise StorageUnavailable("the object store is unavailable", f"object store: {exc.code}") from exc


class _DirectBody:
    """An aiohttp response body as :class:`S3Reader` reads one."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def read(self, size: int) -> bytes:
        return await self._response.content.read(size)

    def close(self) -> None:
        # A no-op once the body was read to its end (the connection is back in the
        # pool); mid-body it drops the connection, as the client's body does.
        self._response.close()


class S3Store:
    """Objects in one bucket, through an already-entered aiobotocore S3 ``client``
    (see :meth:`connect`). Closing the store does not close the client."""

    def __init__(self, client: S3Client, bucket: str, *, part_size: int = 16 << 20) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        # Aborts run shielded from cancellation: keep them referenced, for close() to await.
        self._cleanups: set[asyncio.Task[None]] = set()
        self._direct = _Direct(client, bucket)

    @classmethod
    async def connect(cls, settings: Settings, stack: contextlib.AsyncExitStack) -> S3Store:
        """Create a client for ``settings``, entered in ``stack``, and a store on it; create
        the bucket when ``settings.s3_create_bucket`` and it is missing."""
        if settings.s3_bucket is None:
            raise ValueError("settings.s3_bucket is not set")
        session = aioboto3.Session()
        client = await stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                # None for both: botocore's default chain (environment, instance role…).
                aws_access_key_id=_reveal(settings.s3_access_key_id),
                aws_secret_access_key=_reveal(settings.s3_secret_access_key),
                config=client_config(),
            )
        )
        store = cls(client, settings.s3_bucket, part_size=settings.s3_part_size)
        # Registered after the client, so it runs first: pending aborts finish while the
        # client is still open.
        stack.push_async_callback(store.close)
        if settings.s3_create_bucket:
            await store._ensure_bucket(settings.s3_region)
        return store

    async def _ensure_bucket(self, region: str) -> None:
        try:
            with _translate():
                await self.client.head_bucket(Bucket=self.bucket)
            return
        except StorageUnavailable as exc:
            if _s3_code(exc) not in {"404", "NoSuchBucket"}:
                raise
        log.info("creating bucket %s", self.bucket)
        # us-east-1 is the one region that refuses an explicit LocationConstraint.
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            with _translate():
                await self.client.create_bucket(Bucket=self.bucket, **extra)
        except StorageUnavailable as exc:
            # Another instance starting at the same moment may have won the race.
            if _s3_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        size = 0
        # A file-like buffer, not bytes: aiohttp sends a bytes body in one blocking write
        # (and warns about it above 1 MiB), a file-like one in chunks.
        buffer = io.BytesIO()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    # A full buffer is sent only once more data arrives, so an object of
                    # at most part_size bytes never starts a multipart upload.
                    if buffer.tell() == self.part_size:
                        if upload_id is None:
                            upload_id = await self._start_upload(key)
                        parts.append(await self._upload_part(key, upload_id, len(parts) + 1, buffer))
                        buffer = io.BytesIO()
                    take = min(self.part_size - buffer.tell(), len(view))
                    buffer.write(view[:take])
                    view = view[take:]
            if upload_id is None:
                if size <= DIRECT_PUT_LIMIT and self._direct.usable:
                    with _translate_direct(key):
                        await self._direct.put(key, buffer.getvalue())
                    return size
                buffer.seek(0)
                with _translate():
                    await self.client.put_object(Bucket=self.bucket, Key=key, Body=buffer)
                return size
            if buffer.tell():
                parts.append(await self._upload_part(key, upload_id, len(parts) + 1, buffer))
            with _translate():
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                # Shielded: a cancelled put must still abort. If this await is cancelled
                # as well, the abort carries on and close() waits for it.
                await asyncio.shield(self._in_background(self._abort(key, upload_id)))
            raise
        return size

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        # Read in CHUNK_SIZE pieces, which put gathers into parts: reading a whole part at
        # once would hold it twice (the piece read and the part's buffer).
        return await self.put(key, file_chunks(path))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _start_upload(self, key: str) -> str:
        # Shielded too: cancelled while S3 creates the upload, we would lose its id, and
        # with it the only way to abort it. So let the request finish, then abort.
        created = asyncio.ensure_future(self._create_upload(key))
        try:
            return await asyncio.shield(created)
        except asyncio.CancelledError:
            self._in_background(self._abort_once_created(key, created))
            raise

    async def _create_upload(self, key: str) -> str:
        with _translate():
            response = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return str(response["UploadId"])

    async def _abort_once_created(self, key: str, created: asyncio.Future[str]) -> None:
        with contextlib.suppress(Exception):
            await self._abort(key, await created)

    async def _upload_part(self, key: str, upload_id: str, number: int, data: io.BytesIO) -> dict[str, Any]:
        data.seek(0)
        with _translate():
            response = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            with _translate():
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageUnavailable as exc:
            # The put is failing already; its own error is the one to report. The bucket
            # should have a lifecycle rule for incomplete uploads as a backstop.
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, key, exc)

    async def open(self, key: str, start: int = 0, end: int | None = None) -> S3Reader:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        if end == start:
            # An empty range has no HTTP Range form; still, the object must exist and the
            # range must be valid.
            return self._empty_reader(key, start, await self.size(key))
        ranged = bool(start or end is not None)
        if not self._direct.usable:
            return await self._open_by_client(key, start, end, ranged)
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else {}
        try:
            with _translate_direct(key):
                response = await self._direct.get(key, headers)
        except StorageUnavailable as exc:
            if not isinstance(exc.__cause__, _DirectError) or exc.__cause__.code != "InvalidRange":
                raise
            # S3 refuses any range starting at or past the end, including start == size,
            # which this contract allows (an empty tail); the size tells the two apart.
            return self._empty_reader(key, start, await self.size(key))
        if ranged and response.status != 206:
            # A 200 instead of a 206: the server ignored the range. Streaming the whole
            # object as if it were the range would corrupt the response.
            response.close()
            raise StorageUnavailable(
                "the object store is unavailable", "object store ignored a Range request"
            )
        if response.content_length is None:
            response.close()
            raise StorageUnavailable("the object store is unavailable", "object store sent no Content-Length")
        return S3Reader(_DirectBody(response), key, response.content_length)

    async def _open_by_client(self, key: str, start: int, end: int | None, ranged: bool) -> S3Reader:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if ranged:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with _translate(key):
                response = await self.client.get_object(**request)
        except StorageUnavailable as exc:
            if _s3_code(exc) != "InvalidRange":
                raise
            return self._empty_reader(key, start, await self.size(key))
        body = response["Body"]
        if "Range" in request and not response.get("ContentRange"):
            body.close()
            raise StorageUnavailable(
                "the object store is unavailable", "object store ignored a Range request"
            )
        return S3Reader(body, key, int(response["ContentLength"]))

    def _empty_reader(self, key: str, start: int, size: int) -> S3Reader:
        if start > size:
            raise RangeNotSatisfiable(f"range starts at {start}, object {key!r} has {size} bytes", size)
        return S3Reader(None, key, 0)

    async def delete(self, key: str) -> None:
        # DeleteObject succeeds for a missing key: nothing to special-case.
        with _translate():
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def size(self, key: str) -> int:
        with _translate(key):
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        return int(response["ContentLength"])

    async def remove_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads started more than ``older_than`` seconds ago: what a
        process killed during a put left (the parts are invisible, but they use space)."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
        aborted = 0
        with _translate():
            paginator = self.client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        await self._abort(upload["Key"], upload["UploadId"])
                        aborted += 1
        return aborted

    async def ping(self) -> None:
        with _translate():
            await self.client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self._direct.close()
