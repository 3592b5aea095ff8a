"""Sign-in and sign-out in the audit trail, staff (through the real OIDC provider) and
patients (by emailed link): who, how, and the refusals too, never with a secret, and as
DICOM User Authentication messages (PS3.15 A.5.3.13, Login and Logout) in the sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.console.conftest import CLIENT_SECRET, archive_with, browser_at
from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, authorize_at_provider, csrf_of, sign_in
from tests.console.patients import enrolment_code, sign_in_link, store
from tests.fixtures import ArchiveUnderTest
from tests.mail.smtp import Mailbox

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

NO_SIGN_IN = "no sign-in is in progress in this browser (or it took too long)"


async def _last(archive: ArchiveUnderTest) -> int:
    """The audit trail's last event so far (the trail is append-only: kept across tests)."""
    return int(
        await archive.app.state.running.archive.pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events")
    )


async def _events(archive: ArchiveUnderTest, after: int) -> list[dict[str, object]]:
    await archive.audit_written()
    pool = archive.app.state.running.archive.pool
    rows = await pool.fetch(
        "SELECT transaction, subject, hospital, outcome, detail, path, client_address FROM audit_events "
        "WHERE transaction IN ('SIGN-IN', 'SIGN-OUT') AND pk > $1 ORDER BY pk",
        after,
    )
    return [dict(r) for r in rows]


async def test_staff_sign_in_and_out_are_recorded(console: ArchiveUnderTest):
    after = await _last(console)
    async with browser_at(console) as browser:
        assert (await browser.get("/console/callback", params={"error": "access_denied"})).status_code == 400
        start = await browser.get("/console/login")
        back = await authorize_at_provider(start.headers["location"], "alice")
        async with browser_at(console) as stranger:  # no sign-in in progress there
            assert (await stranger.get(back)).status_code == 400
        assert (await browser.get(back)).status_code == 303
        home = await browser.get("/console")
        assert (await browser.post("/console/logout", data={"csrf": csrf_of(home.text)})).status_code == 303
        refused = await sign_in(browser, "mallory")  # not a member hospital
        assert refused.status_code == 403
    events = [
        (e["transaction"], e["subject"], e["outcome"], e["detail"]) for e in await _events(console, after)
    ]
    assert events == [
        ("SIGN-IN", None, 400, "sign-in cancelled or refused at the identity provider"),
        ("SIGN-IN", None, 400, f"sign-in refused: {NO_SIGN_IN}"),
        ("SIGN-IN", "alice", 303, "signed in (oidc)"),
        ("SIGN-OUT", "alice", 303, "signed out"),
        ("SIGN-IN", None, 403, events[-1][3]),
    ]
    assert str(events[-1][3]).startswith("sign-in refused:")
    assert all(
        e["path"].startswith("/console/") and "code=" not in e["path"] for e in await _events(console, after)
    )


async def test_patient_sign_in_and_out_are_recorded_without_the_link(
    mailing_console: ArchiveUnderTest, mailbox: Mailbox, tmp_path: Path
):
    portal = mailing_console
    after = await _last(portal)
    study = await store(portal, "EVENTS-1", "CT events")
    address = "events@home.example"
    async with browser_at(portal) as staff:
        await sign_in(staff, "alice")
        code = await enrolment_code(portal, staff, study, "EVENTS-1")
    async with browser_at(portal) as browser:
        await browser.post("/portal/enrol", data={"code": code, "email": address})
        link = sign_in_link(mailbox, address, 1)
        assert (await browser.post(link)).status_code == 303
        home = await browser.get("/portal")
        assert (await browser.post("/portal/signout", data={"csrf": csrf_of(home.text)})).status_code == 303
        assert (await browser.post(link)).status_code == 401  # used
        await browser.post("/portal/signin", data={"email": "unknown@home.example"})
    token = link.rsplit("/", 1)[1]
    events = await _events(portal, after)
    patient = [e for e in events if str(e["subject"] or "").startswith("patient:")]
    assert [(e["transaction"], e["outcome"], e["detail"]) for e in patient] == [
        ("SIGN-IN", 303, "signed in (emailed link)"),
        ("SIGN-OUT", 303, "signed out"),
    ]
    assert patient[0]["subject"] == patient[1]["subject"]
    refused = [e for e in events if e["outcome"] == 401]
    assert len(refused) == 1 and refused[0]["detail"] == "sign-in link not valid"
    assert any(e["detail"] == "sign-in link asked for an unknown address" for e in events)
    # The link's secret is in no audit row.
    pool = portal.app.state.running.archive.pool
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE path LIKE $1", f"%{token}%") == 0
    assert {e["path"] for e in events if str(e["path"]).startswith("/portal/signin/")} == {
        "/portal/signin/(secret)"
    }


@pytest_asyncio.fixture(loop_scope="session")
async def sinking_console(clean_db: str, tmp_path: Path, issuer: str) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in archive_with(
        clean_db, tmp_path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET,
        audit_sink=tmp_path / "audit.jsonl",
    ):  # fmt: skip
        yield under_test


async def test_sign_in_events_reach_the_audit_sink_as_user_authentication(
    sinking_console: ArchiveUnderTest, tmp_path: Path
):
    async with browser_at(sinking_console) as browser:
        await sign_in(browser, "alice")
        home = await browser.get("/console")
        await browser.post("/console/logout", data={"csrf": csrf_of(home.text)})
    messages = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    authentications = [m for m in messages if m["EventIdentification"]["EventID"]["csd-code"] == "110114"]
    kinds = [m["EventIdentification"]["EventTypeCode"][0]["originalText"] for m in authentications]
    assert kinds == ["Login", "Logout"]
    assert [m["ActiveParticipant"][0]["UserID"] for m in authentications] == ["alice", "alice"]
