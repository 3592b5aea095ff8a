"""The limit on the portal's unauthenticated forms: enrolment codes guessed, sign-in
links asked for and enrolment requests sent, per email address and per client address,
counted in PostgreSQL so that it holds across workers (two archives on one database
here), and answered exactly as any other attempt — only nothing is checked or sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.console.conftest import CLIENT_SECRET, archive_with, browser_at
from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, sign_in
from tests.console.patients import enrolment_code, sign_in_link, store
from tests.fixtures import HOSPITAL, ArchiveUnderTest
from tests.mail.smtp import Mailbox

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

PER_ADDRESS, PER_CLIENT = 3, 5


def _limited(
    clean_db: str, path: Path, key: Path, issuer: str, mailbox: Mailbox
) -> AsyncIterator[ArchiveUnderTest]:
    return archive_with(
        clean_db, path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET,
        smtp_host=mailbox.host, smtp_port=mailbox.port, smtp_security="none",
        portal_attempts_per_address=PER_ADDRESS, portal_attempts_per_client=PER_CLIENT,
        share_key_file=key,
    )  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def workers(
    clean_db: str, tmp_path: Path, issuer: str, mailbox: Mailbox
) -> AsyncIterator[tuple[ArchiveUnderTest, ArchiveUnderTest]]:
    """Two archives (as two workers) on one database, each with its own process state,
    sharing the key secrets are hashed with (as workers share the data directory)."""
    key = tmp_path / "share.key"
    async for first in _limited(clean_db, tmp_path / "one", key, issuer, mailbox):
        async for second in _limited(clean_db, tmp_path / "two", key, issuer, mailbox):
            yield first, second


def _from(archive: ArchiveUnderTest, address: str) -> httpx.AsyncClient:
    """A browser at the archive from client address ``address``."""
    transport = archive.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=(address, 40000)),
        base_url="http://testserver",
    )


async def test_guessing_codes_and_asking_for_links_stops_at_the_limit_across_workers(
    workers: tuple[ArchiveUnderTest, ArchiveUnderTest], mailbox: Mailbox
):
    one, two = workers
    pool = one.app.state.running.archive.pool
    after = await pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events")  # the trail is kept
    study = await store(one, "LIMIT-1", "CT limit")
    async with browser_at(one) as staff:
        await sign_in(staff, "alice")
        code = await enrolment_code(one, staff, study, "LIMIT-1")
    victim = "victim@home.example"
    async with _from(one, "192.0.2.10") as a, _from(two, "192.0.2.11") as b:
        # Guesses at one address, from two clients, through both workers: the limit is
        # the address's, wherever the attempts land.
        answers = [
            await a.post("/portal/enrol", data={"code": "AAAA-BBBB-CCCC", "email": victim}),
            await b.post("/portal/enrol", data={"code": "AAAA-BBBB-CCCD", "email": victim}),
            await a.post("/portal/enrol", data={"code": "AAAA-BBBB-CCCE", "email": victim}),
        ]
        # Over the limit, even the right code opens nothing — and says the same.
        late = await b.post("/portal/enrol", data={"code": code, "email": victim})
        assert {r.status_code for r in [*answers, late]} == {200}
        assert {r.text for r in [*answers, late]} == {late.text}
        assert mailbox.messages_to(victim) == []
        # The code was not spent: another address enrols with it.
        assert (
            await a.post("/portal/enrol", data={"code": code, "email": "anna@home.example"})
        ).status_code == 200
        sign_in_link(mailbox, "anna@home.example", 1)
        # Sign-in links for one address: three are sent, then none, alike answered.
        asked = [
            await (a if n % 2 else b).post("/portal/signin", data={"email": "anna@home.example"})
            for n in range(4)
        ]
        assert {r.text for r in asked} == {late.text}
        sign_in_link(mailbox, "anna@home.example", 1 + PER_ADDRESS)
    # The next window counts afresh.
    await pool.execute("UPDATE portal_attempts SET bucket = bucket - 1")
    async with _from(two, "192.0.2.11") as b:
        await b.post("/portal/signin", data={"email": "anna@home.example"})
    sign_in_link(mailbox, "anna@home.example", 2 + PER_ADDRESS)
    # The audit trail says what was not checked; no row holds an address or a code.
    events = await pool.fetch(
        "SELECT detail, client_address FROM audit_events WHERE detail LIKE '%too many%' AND pk > $1", after
    )
    assert sorted(e["detail"] for e in events) == [
        "enrolment code: too many attempts, not checked", "sign-in link: too many attempts, not checked",
    ]  # fmt: skip
    assert await pool.fetchval("SELECT count(*) FROM portal_attempts") > 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE detail LIKE '%victim%' OR query LIKE '%victim%' "
            "OR path LIKE '%victim%'"
        )
        == 0
    )


async def test_one_client_trying_many_addresses_is_stopped(
    workers: tuple[ArchiveUnderTest, ArchiveUnderTest], mailbox: Mailbox
):
    one, two = workers
    study = await store(one, "LIMIT-2", "CT client")
    async with browser_at(one) as staff:
        await sign_in(staff, "alice")
        code = await enrolment_code(one, staff, study, "LIMIT-2")
    async with _from(one, "198.51.100.7") as a, _from(two, "198.51.100.7") as b:
        for n in range(PER_CLIENT):
            client = a if n % 2 else b
            await client.post(
                "/portal/enrol", data={"code": f"WXYZ-WXYZ-000{n}", "email": f"guess{n}@home.example"}
            )
        late = await a.post("/portal/enrol", data={"code": code, "email": "fresh@home.example"})
        assert late.status_code == 200
        assert mailbox.messages_to("fresh@home.example") == []
        # The request form counts too: past the limit, stored for no one.
        form = {"hospital": HOSPITAL, "name": "Lim It", "birth_date": "1990-02-02", "reference": "LIMIT-2"}
        for n in range(PER_ADDRESS + 1):
            sent = await (a if n % 2 else b).post(
                "/portal/request", data={**form, "email": "req@home.example"}
            )
            assert sent.status_code == 200
    async with _from(two, "198.51.100.8") as elsewhere:
        # Another client is not held back by that one.
        assert (
            await elsewhere.post("/portal/enrol", data={"code": code, "email": "fresh@home.example"})
        ).status_code == 200
        sent = await elsewhere.post("/portal/request", data={**form, "email": "other@home.example"})
        assert sent.status_code == 200
    sign_in_link(mailbox, "fresh@home.example", 1)
    pool = one.app.state.running.archive.pool
    stored = await pool.fetch("SELECT email FROM enrolment_requests ORDER BY pk")
    assert [r["email"] for r in stored] == ["req@home.example"] * PER_ADDRESS + ["other@home.example"]
