"""The console under test: the archive with a real OpenID Connect provider on loopback."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from harness.servers import settings_for
from tests.console.oidc import CLIENT_ID, provider
from tests.fixtures import ArchiveUnderTest, _open
from tests.mail.smtp import Mailbox, smtp_server

#: Characters that must be form-encoded in client_secret_basic (RFC 6749 §2.3.1).
CLIENT_SECRET = secrets.token_urlsafe(16) + "/+:"
VIEWER = "https://viewer.example.test/viewer?StudyInstanceUIDs={study}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with provider() as url:
        yield url


async def archive_with(clean_db: str, tmp_path: Path, **overrides: object) -> AsyncIterator[ArchiveUnderTest]:
    settings = settings_for(clean_db, None, None, tmp_path / "data", sweep_interval=0, **overrides)
    async for under_test in _open(settings):
        yield under_test


@pytest_asyncio.fixture(loop_scope="session")
async def console(clean_db: str, tmp_path: Path, issuer: str) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in archive_with(
        clean_db, tmp_path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET,
        console_viewer_url=VIEWER,
    ):  # fmt: skip
        yield under_test


def browser_at(archive: ArchiveUnderTest) -> httpx.AsyncClient:
    """A browser at the archive: no bearer token, cookies kept."""
    return httpx.AsyncClient(transport=archive.client._transport, base_url="http://testserver")


#: The console with a real SMTP server on loopback (aiosmtpd), for what it sends by email.
@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest_asyncio.fixture(loop_scope="session")
async def mailing_console(
    clean_db: str, tmp_path: Path, issuer: str, mailbox: Mailbox
) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in archive_with(
        clean_db, tmp_path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET,
        smtp_host=mailbox.host, smtp_port=mailbox.port, smtp_security="none",
    ):  # fmt: skip
        yield under_test
