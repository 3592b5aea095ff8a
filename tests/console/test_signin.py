"""Staff sign-in to the console through a real OpenID Connect provider on loopback: the
authorization code flow with PKCE, the session cookie, session fixation, CSRF, sign-out,
and the development sign-in that is refused unless enabled."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from harness.servers import settings_for
from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, authorize_at_provider, csrf_of, provider
from tests.fixtures import HOSPITAL, ArchiveUnderTest, _open

COOKIE = "filmless_console"
#: Characters that must be form-encoded in client_secret_basic (RFC 6749 §2.3.1).
CLIENT_SECRET = secrets.token_urlsafe(16) + "/+:"

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with provider() as url:
        yield url


async def _archive(clean_db: str, tmp_path: Path, **overrides: object) -> AsyncIterator[ArchiveUnderTest]:
    settings = settings_for(clean_db, None, None, tmp_path / "data", sweep_interval=0, **overrides)
    async for under_test in _open(settings):
        yield under_test


@pytest_asyncio.fixture(loop_scope="session")
async def console(clean_db: str, tmp_path: Path, issuer: str) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in _archive(
        clean_db, tmp_path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET
    ):
        yield under_test


def _browser(archive: ArchiveUnderTest) -> httpx.AsyncClient:
    """A browser at the archive: no bearer token, cookies kept."""
    return httpx.AsyncClient(transport=archive.client._transport, base_url="http://testserver")


async def _sign_in(browser: httpx.AsyncClient, subject: str = "alice") -> httpx.Response:
    start = await browser.get("/console/login")
    assert start.status_code == 303
    location = start.headers["location"]
    query = parse_qs(urlsplit(location).query)
    # PKCE (RFC 7636 §4.3): an S256 challenge, never the verifier itself.
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["client_id"] == [CLIENT_ID] and query["nonce"] and query["state"]
    back = await authorize_at_provider(location, subject)
    assert back.startswith("http://testserver/console/callback?")
    return await browser.get(back)


async def test_sign_in_through_the_provider(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        assert (await browser.get("/console")).headers["location"] == "/console/signin"
        done = await _sign_in(browser)
        assert done.status_code == 303 and done.headers["location"] == "/console"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure
        home = await browser.get("/console")
        assert home.status_code == 200
        # Roles and hospital come from the ID token's claims, as a bearer token's do.
        assert "Alice Archivist" in home.text and HOSPITAL in home.text
        assert "reader, sharer" in home.text
        assert home.headers["cache-control"] == "no-store"
        assert "DEVELOPMENT" not in home.text


async def test_the_session_id_is_rotated_at_sign_in(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        # An attacker's fixed identifier planted before sign-in...
        browser.cookies.set(COOKIE, "planted-by-an-attacker", path="/console")
        start = await browser.get("/console/login")
        pending = start.cookies[COOKIE]
        assert pending != "planted-by-an-attacker"
        back = await authorize_at_provider(start.headers["location"], "alice")
        done = await browser.get(back)
        signed = done.cookies[COOKIE]
        # ...and the pending one are worth nothing once the person has signed in.
        assert signed != pending
    for stale in ("planted-by-an-attacker", pending):
        async with _browser(console) as other:
            other.cookies.set(COOKIE, stale, path="/console")
            assert (await other.get("/console")).status_code == 303
    async with _browser(console) as other:
        other.cookies.set(COOKIE, signed, path="/console")
        assert (await other.get("/console")).status_code == 200


async def test_a_callback_replayed_or_from_another_browser_is_refused(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        start = await browser.get("/console/login")
        back = await authorize_at_provider(start.headers["location"], "alice")
        # Another browser (no pending sign-in: login CSRF) cannot use the code.
        async with _browser(console) as stranger:
            refused = await stranger.get(back)
            assert refused.status_code == 400 and COOKIE not in refused.cookies
        assert (await browser.get(back)).status_code == 303
        # The pending session is spent: the same callback again is refused.
        assert (await browser.get(back)).status_code == 400


async def test_a_wrong_state_is_refused(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        start = await browser.get("/console/login")
        back = await authorize_at_provider(start.headers["location"], "alice")
        query = parse_qs(urlsplit(back).query)
        forged = await browser.get("/console/callback", params={"code": query["code"][0], "state": "forged"})
        assert forged.status_code == 400


async def test_a_hospital_that_is_not_a_member_is_refused(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        refused = await _sign_in(browser, "mallory")
        assert refused.status_code == 403 and "not a member" in refused.text
        assert (await browser.get("/console")).status_code == 303


async def test_sign_out_needs_the_csrf_token(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        await _sign_in(browser)
        home = await browser.get("/console")
        token = csrf_of(home.text)
        for forged in ({}, {"csrf": "guessed"}):
            assert (await browser.post("/console/logout", data=forged)).status_code == 403
        assert (await browser.get("/console")).status_code == 200  # still signed in
        out = await browser.post("/console/logout", data={"csrf": token})
        assert out.status_code == 303
        assert (await browser.get("/console")).status_code == 303


async def test_development_sign_in_is_refused_unless_enabled(console: ArchiveUnderTest):
    async with _browser(console) as browser:
        page = await browser.get("/console/signin")
        assert "dev-signin" not in page.text and "/console/login" in page.text
        refused = await browser.post(
            "/console/dev-signin", data={"subject": "eve", "hospital": HOSPITAL, "roles": ["admin"]}
        )
        assert refused.status_code == 403
        assert (await browser.get("/console")).status_code == 303


async def test_development_sign_in_when_enabled(clean_db: str, tmp_path: Path):
    async for archive in _archive(clean_db, tmp_path, console_dev_signin=True):
        async with _browser(archive) as browser:
            page = await browser.get("/console/signin")
            assert "DEVELOPMENT SIGN-IN" in page.text and "/console/login" not in page.text
            form = {"subject": "dev", "hospital": HOSPITAL, "roles": ["reader", "admin"]}
            # Without the form's CSRF token: refused.
            assert (await browser.post("/console/dev-signin", data=form)).status_code == 403
            page = await browser.get("/console/signin")
            done = await browser.post("/console/dev-signin", data={**form, "csrf": csrf_of(page.text)})
            assert done.status_code == 303
            home = await browser.get("/console")
            assert home.status_code == 200 and "DEVELOPMENT SIGN-IN" in home.text
            assert "admin, reader" in home.text
