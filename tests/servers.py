"""The real backing services as pytest fixtures: a throwaway PostgreSQL and a SeaweedFS S3
server (from :mod:`harness.servers`).

A pytest plugin (``pytest_plugins = ["tests.servers"]``). Each server starts once per
session, only if a test asks for it, and can be replaced by an existing one:

- ``FILMLESS_TEST_DATABASE_URL``: use this PostgreSQL database instead of starting one;
- ``FILMLESS_TEST_S3_ENDPOINT``, ``FILMLESS_TEST_S3_ACCESS_KEY``,
  ``FILMLESS_TEST_S3_SECRET_KEY`` (and optionally ``FILMLESS_TEST_S3_REGION``): use this
  S3 server instead of starting SeaweedFS.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from app.storage.base import BlobStore
from app.storage.filesystem import FilesystemStore
from app.storage.s3 import MIN_PART_SIZE, S3Store
from harness.servers import S3Server, s3_client_for, start_postgres, start_seaweedfs

#: Start-up times of the servers this session started, for the terminal summary.
_startup_seconds: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _startup_seconds:
        started = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in _startup_seconds.items())
        terminalreporter.write_line(f"test services started: {started}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of an empty ``filmless_test`` database (or ``$FILMLESS_TEST_DATABASE_URL``)."""
    if url := os.environ.get("FILMLESS_TEST_DATABASE_URL"):
        yield url
        return
    began = time.perf_counter()
    async with start_postgres() as cluster:
        url = await cluster.create_database("filmless_test")
        _startup_seconds["PostgreSQL"] = time.perf_counter() - began
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3 endpoint: a private SeaweedFS (or ``$FILMLESS_TEST_S3_ENDPOINT``)."""
    if endpoint := os.environ.get("FILMLESS_TEST_S3_ENDPOINT"):
        yield S3Server(
            endpoint_url=endpoint,
            access_key=os.environ["FILMLESS_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["FILMLESS_TEST_S3_SECRET_KEY"],
            region=os.environ.get("FILMLESS_TEST_S3_REGION", "us-east-1"),
        )
        return
    began = time.perf_counter()
    with start_seaweedfs() as server:
        _startup_seconds["SeaweedFS"] = time.perf_counter() - began
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def s3_client(s3_server: S3Server) -> AsyncIterator[Any]:
    """An admin aiobotocore client on :func:`s3_server`, shared by the whole session."""
    async with s3_client_for(s3_server) as client:
        yield client


async def _create_bucket(client: Any) -> str:
    name = f"filmless-test-{secrets.token_hex(6)}"
    await client.create_bucket(Bucket=name)
    return name


async def _drop_bucket(client: Any, name: str) -> None:
    # A test may have removed the bucket itself (to make the store fail).
    try:
        await client.head_bucket(Bucket=name)
    except client.exceptions.ClientError:
        return
    # Emptied first: real S3 and MinIO refuse to delete a non-empty bucket.
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=name):
        if objects := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
            await client.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    uploads = await client.list_multipart_uploads(Bucket=name)
    for upload in uploads.get("Uploads", []):
        await client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    await client.delete_bucket(Bucket=name)


@pytest_asyncio.fixture(loop_scope="session")
async def s3_bucket(s3_client: Any) -> AsyncIterator[str]:
    """A fresh, uniquely named bucket, deleted (with its contents) afterwards."""
    name = await _create_bucket(s3_client)
    try:
        yield name
    finally:
        await _drop_bucket(s3_client, name)


@pytest.fixture(params=["filesystem", "s3"], ids=["filesystem", "s3"])
def blob_backend(request: pytest.FixtureRequest) -> tuple[Any, str] | None:
    """The parametrisation behind :func:`blob_store`: ``None`` for the filesystem, else
    the session's S3 client and a fresh bucket.

    A plain fixture because it looks the S3 fixtures up on demand, so filesystem-only runs
    never start SeaweedFS; an async fixture could not, since async fixtures are set up by
    running the event loop, which is busy while another async fixture runs.
    """
    if request.param == "filesystem":
        return None
    return request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")


@pytest_asyncio.fixture(loop_scope="session")
async def blob_store(blob_backend: tuple[Any, str] | None, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each storage backend in turn: a filesystem store on ``tmp_path``, then an S3 store
    on a fresh bucket with 5 MiB parts, so modest objects already go multipart.

    The S3 store shares the session's client (configured as by :meth:`S3Store.connect`,
    which has tests of its own) rather than paying for a new client in every test.
    """
    if blob_backend is None:
        root = tmp_path / "objects"
        root.mkdir()
        store: BlobStore = FilesystemStore(root)
    else:
        client, bucket = blob_backend
        store = S3Store(client, bucket, part_size=MIN_PART_SIZE)
    try:
        yield store
    finally:
        await store.close()
