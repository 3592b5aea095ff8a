"""Staff sign-in to the console through a real OpenID Connect provider on loopback: the
authorization code flow with PKCE, the session cookie, session fixation, CSRF, sign-out,
and the development sign-in that is refused unless enabled."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.console.conftest import archive_with, browser_at
from tests.console.oidc import PROVIDER_WARNINGS, authorize_at_provider, csrf_of, sign_in
from tests.fixtures import HOSPITAL, ArchiveUnderTest

COOKIE = "filmless_console"

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)


async def test_sign_in_through_the_provider(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        assert (await browser.get("/console")).headers["location"] == "/console/signin"
        done = await sign_in(browser)
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
    async with browser_at(console) as browser:
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
        async with browser_at(console) as other:
            other.cookies.set(COOKIE, stale, path="/console")
            assert (await other.get("/console")).status_code == 303
    async with browser_at(console) as other:
        other.cookies.set(COOKIE, signed, path="/console")
        assert (await other.get("/console")).status_code == 200


async def test_a_callback_replayed_or_from_another_browser_is_refused(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        start = await browser.get("/console/login")
        back = await authorize_at_provider(start.headers["location"], "alice")
        # Another browser (no pending sign-in: login CSRF) cannot use the code.
        async with browser_at(console) as stranger:
            refused = await stranger.get(back)
            assert refused.status_code == 400 and COOKIE not in refused.cookies
        assert (await browser.get(back)).status_code == 303
        # The pending session is spent: the same callback again is refused.
        assert (await browser.get(back)).status_code == 400


async def test_a_wrong_state_is_refused(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        start = await browser.get("/console/login")
        back = await authorize_at_provider(start.headers["location"], "alice")
        query = parse_qs(urlsplit(back).query)
        forged = await browser.get("/console/callback", params={"code": query["code"][0], "state": "forged"})
        assert forged.status_code == 400


async def test_a_hospital_that_is_not_a_member_is_refused(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        refused = await sign_in(browser, "mallory")
        assert refused.status_code == 403 and "not a member" in refused.text
        assert (await browser.get("/console")).status_code == 303


async def test_sign_out_needs_the_csrf_token(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        await sign_in(browser)
        home = await browser.get("/console")
        token = csrf_of(home.text)
        for forged in ({}, {"csrf": "guessed"}):
            assert (await browser.post("/console/logout", data=forged)).status_code == 403
        assert (await browser.get("/console")).status_code == 200  # still signed in
        out = await browser.post("/console/logout", data={"csrf": token})
        assert out.status_code == 303
        assert (await browser.get("/console")).status_code == 303


async def test_development_sign_in_is_refused_unless_enabled(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        page = await browser.get("/console/signin")
        assert "dev-signin" not in page.text and "/console/login" in page.text
        refused = await browser.post(
            "/console/dev-signin", data={"subject": "eve", "hospital": HOSPITAL, "roles": ["admin"]}
        )
        assert refused.status_code == 403
        assert (await browser.get("/console")).status_code == 303


async def test_development_sign_in_when_enabled(clean_db: str, tmp_path: Path):
    async for archive in archive_with(clean_db, tmp_path, console_dev_signin=True):
        async with browser_at(archive) as browser:
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
