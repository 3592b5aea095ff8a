"""Enrolment by request: a person without a code asks, the film library of the hospital
they named reviews the request against its records and approves it (linking the record
it confirms) or declines it, and the requester is emailed either way (a real SMTP server
on loopback; the outbox without one). The form answers the same page whoever is named,
and another hospital's staff cannot see or decide a request."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
from tests.console.patients import sign_in_link, store
from tests.fixtures import HOSPITAL, ArchiveUnderTest
from tests.mail.smtp import Mailbox

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

REAL, NOBODY, ELSEWHERE = "real@home.example", "nobody@home.example", "elsewhere@home.example"


def _form(email_address: str, reference: str, hospital: str = HOSPITAL) -> dict[str, str]:
    return {
        "hospital": hospital, "name": "Rhea Quest", "birth_date": "1980-01-01", "reference": reference,
        "email": email_address,
    }  # fmt: skip


async def _pending(staff) -> list[str]:
    page = await staff.get("/console/enrolment-requests")
    assert page.status_code == 200
    return re.findall(r'href="/console/enrolment-requests/(\d+)"', page.text)


async def test_a_request_is_approved_or_declined_and_the_requester_told(
    mailing_console: ArchiveUnderTest, mailbox: Mailbox
):
    portal = mailing_console
    pool = portal.app.state.running.archive.pool
    after = await pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events")  # the trail is kept
    study = await store(portal, "REQ-1", "CT requested", PatientBirthDate="19800101")
    async with browser_at(portal) as person:
        form = await person.get("/portal/request")
        assert form.status_code == 200
        # Every field has its label (the page works by keyboard and screen reader alone).
        for field in ("hospital", "name", "birth_date", "reference", "email"):
            assert f'<label for="{field}">' in form.text and f'id="{field}"' in form.text
        known = await person.post("/portal/request", data=_form(REAL, "REQ-1"))
        unknown = await person.post("/portal/request", data=_form(NOBODY, "NOT-A-PATIENT"))
        no_member = await person.post("/portal/request", data=_form(ELSEWHERE, "REQ-1", "NOT-A-MEMBER"))
        # The same page, whoever is named: nothing says whether such a patient exists.
        assert known.status_code == unknown.status_code == no_member.status_code == 200
        assert known.text == unknown.text == no_member.text
        assert dict(known.headers).keys() == dict(unknown.headers).keys()
        bad = await person.post("/portal/request", data=_form("not an address", "REQ-1"))
        assert bad.status_code == 400
    assert mailbox.messages_to(REAL) == mailbox.messages_to(NOBODY) == []
    async with browser_at(portal) as other_staff:
        await sign_in(other_staff, "olga")  # another member hospital's film library
        assert await _pending(other_staff) == []
    async with browser_at(portal) as staff:
        await sign_in(staff, "alice")
        first, second = await _pending(staff)  # the non-member's request was not stored
        page = await staff.get(f"/console/enrolment-requests/{first}")
        assert page.status_code == 200 and REAL in page.text
        # The record the request may be is offered, by the number typed.
        assert 'name="patient_id" value="REQ-1"' in page.text
        csrf = csrf_of(page.text)
        async with browser_at(portal) as other_staff:
            await sign_in(other_staff, "olga")
            other_page = await other_staff.get(f"/console/enrolment-requests/{first}")
            assert other_page.status_code == 404
            stolen = await other_staff.post(
                f"/console/enrolment-requests/{first}/approve",
                data={"patient_id": "REQ-1", "csrf": csrf_of(other_page.text)},
            )
            assert stolen.status_code == 404
        approve = f"/console/enrolment-requests/{first}/approve"
        assert (await staff.post(approve, data={"patient_id": "REQ-1", "csrf": "x"})).status_code == 403
        assert (await staff.post(approve, data={"patient_id": "REQ-1"})).status_code == 403
        assert (await staff.post(approve, data={"patient_id": "NOBODY", "csrf": csrf})).status_code == 404
        done = await staff.post(approve, data={"patient_id": "REQ-1", "csrf": csrf})
        assert done.status_code == 200 and "requester was emailed" in done.text
        assert (await staff.post(approve, data={"patient_id": "REQ-1", "csrf": csrf})).status_code == 409
        declined = await staff.post(f"/console/enrolment-requests/{second}/decline", data={"csrf": csrf})
        assert declined.status_code == 200
        assert await _pending(staff) == []
    (no,) = mailbox.messages_to(NOBODY)
    assert "declined" in no.get_content() and "/portal/signin/" not in no.get_content()
    assert "REQ-1" not in no.get_content() and "Rhea" not in no.get_content()
    link = sign_in_link(mailbox, REAL, 1)
    async with browser_at(portal) as person:
        assert (await person.post(link)).status_code == 303
        home = await person.get("/portal")
        assert f"/portal/studies/{study}" in home.text and "CT requested" in home.text
    events = await pool.fetch(
        "SELECT subject, outcome, detail, patient_ids FROM audit_events WHERE transaction = 'ENROLMENT' "
        "AND pk > $1 ORDER BY pk",
        after,
    )
    decided = [
        (e["subject"], e["outcome"], e["detail"])
        for e in events
        if "approved" in e["detail"] or "declined" in e["detail"]
    ]
    assert decided == [
        ("alice", 200, f"approved enrolment request {first}"),
        ("alice", 200, f"declined enrolment request {second}"),
    ]
    assert [e["outcome"] for e in events if e["subject"] == "olga"] == [200, 404, 404]
    # Three requests received, recorded without a caller and without who they named.
    received = [e for e in events if e["detail"] == "enrolment request received"]
    assert len(received) == 3 and all(e["subject"] is None and e["patient_ids"] == [] for e in received)


async def test_without_a_mail_server_the_decision_goes_to_the_outbox(console: ArchiveUnderTest):
    await store(console, "REQ-OUT", "MR outbox", PatientBirthDate="19800101")
    async with browser_at(console) as person:
        assert (
            await person.post("/portal/request", data=_form("out@home.example", "REQ-OUT"))
        ).status_code == 200
    async with browser_at(console) as staff:
        await sign_in(staff, "alice")
        (pk,) = await _pending(staff)
        page = await staff.get(f"/console/enrolment-requests/{pk}")
        done = await staff.post(
            f"/console/enrolment-requests/{pk}/approve",
            data={"patient_id": "REQ-OUT", "csrf": csrf_of(page.text)},
        )
        assert done.status_code == 200
    outbox = console.app.state.running.archive.settings.outbox_path
    (written,) = list(outbox.glob("*.eml"))
    message = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert message["To"] == "out@home.example" and "approved" in str(message["Subject"])
    assert re.search(r"/portal/signin/[A-Za-z0-9_-]+", message.get_body().get_content())  # type: ignore[union-attr]
