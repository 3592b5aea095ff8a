"""The archive under test: an app on the real test services, an HTTP client for it, and a
live uvicorn process for what an in-process client cannot show (streaming, memory)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.main import create_app
from app.repository import hospitals
from app.repository.migrations import migrate
from app.security.authenticator import issue_local_token
from app.services.archive import Archive
from harness.servers import S3Server, settings_for

# The audit trail is append-only (a trigger refuses TRUNCATE): tests filter it instead.
TABLES = (
    "job_outcomes, jobs, share_failures, share_sessions, share_studies, shares, derived_objects, instances, "
    "series, studies, patients, application_entities, hospitals, object_garbage, enrolment_codes, "
    "portal_sessions, portal_signin_links, portal_patients, portal_accounts, enrolment_requests, "
    "portal_attempts"
)
#: The hospital the default test client belongs to, and another member.
HOSPITAL, OTHER_HOSPITAL = "TEST", "OTHER"
ALL_ROLES = ["reader", "uploader", "sharer", "admin"]


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated_db(postgres_url: str) -> str:
    """The test database with the archive's schema."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return postgres_url


@pytest_asyncio.fixture(loop_scope="session")
async def clean_db(migrated_db: str) -> str:
    """The test database, emptied of archive rows."""
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    finally:
        await conn.close()
    return migrated_db


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the archive under test keeps its local token signing key (created on use)."""
    return tmp_path_factory.mktemp("keys") / "signing-key.pem"


def token(
    settings: Any,
    hospital: str = HOSPITAL,
    roles: list[str] | None = None,
    subject: str = "tester",
    **claims: Any,
) -> str:
    """A real token, signed with the archive's local key."""
    return issue_local_token(
        settings, subject, hospital, ALL_ROLES if roles is None else roles, 3600, create_key=True, **claims
    )


@dataclass
class ArchiveUnderTest:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Any
    #: The app as a server runs it: with its lifespan state in every request's scope.
    asgi: ASGIApp

    @property
    def archive(self) -> Archive:
        archive: Archive = self.app.state.running.archive
        return archive

    async def audit_written(self) -> None:
        """Wait until the read events queued so far are in the database (they are written
        behind the requests, see app.services.audit_writer)."""
        await self.archive.audit.flush()

    async def followed_up(self) -> None:
        """Wait until what requests left to do after answering (saving a rendered
        thumbnail, app.services.followups) is done."""
        await self.archive.followups.settled()

    def token(self, hospital: str = HOSPITAL, roles: list[str] | None = None, subject: str = "tester") -> str:
        return token(self.settings, hospital, roles, subject)

    def as_user(
        self, hospital: str = HOSPITAL, roles: list[str] | None = None, subject: str = "tester"
    ) -> httpx.AsyncClient:
        """Another client of the same app, for a caller of another hospital or roles."""
        headers = {"Authorization": f"Bearer {self.token(hospital, roles, subject)}"}
        return httpx.AsyncClient(
            transport=self.client._transport, base_url="http://testserver", headers=headers
        )


def with_lifespan_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """``app`` with the lifespan's state copied into each request's scope, as a server
    does (ASGI lifespan "state" extension); httpx's ASGI transport runs no lifespan."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return served


async def _open(settings: Any) -> AsyncIterator[ArchiveUnderTest]:
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        for code in (HOSPITAL, OTHER_HOSPITAL):
            await hospitals.add(app.state.running.archive.pool, code, f"{code.title()} hospital")
        asgi = with_lifespan_state(app, state or {})
        transport = httpx.ASGITransport(app=asgi)
        headers = {"Authorization": f"Bearer {token(settings)}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            yield ArchiveUnderTest(app, client, settings, asgi)


@pytest.fixture
def object_store(request: pytest.FixtureRequest, backend: str) -> tuple[S3Server, str] | tuple[None, None]:
    """The S3 server and a fresh bucket for the ``s3`` backend; nothing for the filesystem."""
    if backend == "s3":
        return request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return None, None


@pytest_asyncio.fixture(loop_scope="session")
async def served(
    request: pytest.FixtureRequest,
    object_store: tuple[S3Server, str] | tuple[None, None],
    clean_db: str,
    tmp_path: Path,
    signing_key: Path,
) -> AsyncIterator[ArchiveUnderTest]:
    """The archive on the test database and on each object store in turn."""
    overrides = {"auth_local_key_file": signing_key, **getattr(request, "param", {})}
    s3, bucket = object_store
    settings = settings_for(clean_db, s3, bucket, tmp_path / "data", sweep_interval=0, **overrides)
    async for under_test in _open(settings):
        yield under_test


@pytest_asyncio.fixture(loop_scope="session")
async def client(served: ArchiveUnderTest) -> httpx.AsyncClient:
    return served.client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    url: str
    pid: int
    data_dir: Path
    #: A token of the server's own LOCAL hospital, with every role but regional.
    token: str
    #: What the server printed (uvicorn's and the archive's log).
    log: Path | None = None

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def live_server_env() -> dict[str, str]:
    """Extra environment for :func:`live_server` (e.g. ``FILMLESS_CORS_ORIGINS``): override
    this fixture in a test module or conftest to set more of the server's settings."""
    return {}


@pytest.fixture
def live_server(
    clean_db: str,
    tmp_path: Path,
    signing_key: Path,
    request: pytest.FixtureRequest,
    live_server_env: dict[str, str],
) -> Iterator[LiveServer]:
    """``filmless serve`` in its own process, on S3 when parametrized with ``"s3"``, else on
    the filesystem store, with :func:`live_server_env` added to its environment. It signs
    its own tokens, and creates its LOCAL hospital."""
    port = _free_port()
    data_dir = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env |= {
        "FILMLESS_DATABASE_URL": clean_db,
        "FILMLESS_DATA_DIR": str(data_dir),
        "FILMLESS_SWEEP_INTERVAL": "0",
        "FILMLESS_PORT": str(port),
        # dicomweb-client sends "Host: 127.0.0.1" without the port; a deployment names
        # its public URL for the same reason.
        "FILMLESS_BASE_URL": f"http://127.0.0.1:{port}",
        "FILMLESS_AUTH_LOCAL_KEY_FILE": str(signing_key),
        # No DICOM listener unless live_server_env asks for one.
        "FILMLESS_DICOM_PORT": "0",
        # One process unless a test asks for more (the default is one per core).
        "FILMLESS_WORKERS": "1",
    }
    if getattr(request, "param", "filesystem") == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        env |= {
            "FILMLESS_S3_ENDPOINT_URL": s3.endpoint_url,
            "FILMLESS_S3_BUCKET": "live-" + os.urandom(6).hex(),
            "FILMLESS_S3_ACCESS_KEY_ID": s3.access_key,
            "FILMLESS_S3_SECRET_ACCESS_KEY": s3.secret_key,
            "FILMLESS_S3_REGION": s3.region,
        }
    env |= live_server_env
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, tmp_path / "server.log")
        settings = settings_for(clean_db, None, None, data_dir, auth_local_key_file=signing_key)
        yield LiveServer(url, process.pid, data_dir, token(settings, "LOCAL"), tmp_path / "server.log")
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not become ready:\n{log.read_text(errors='replace')}")
