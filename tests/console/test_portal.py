"""The patient portal: the film library prints an enrolment code, the patient enrols with
it and signs in by the link emailed to them (a real SMTP server on loopback), and sees
their own studies with thumbnails — and nothing of anyone else's. Sign-in links work once
and not after they expire; an unknown code gets the same answer as a used one."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
from tests.console.patients import sign_in_link, store
from tests.fixtures import ArchiveUnderTest
from tests.mail.smtp import Mailbox

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

PATIENT = "pat@home.example"


@pytest.fixture
def portal(mailing_console: ArchiveUnderTest) -> ArchiveUnderTest:
    return mailing_console


async def test_enrol_sign_in_and_see_only_ones_own_studies(portal: ArchiveUnderTest, mailbox: Mailbox):
    mine = await store(portal, "PORTAL-1", "CT mine")
    theirs = await store(portal, "PORTAL-2", "CT theirs")
    async with browser_at(portal) as staff:
        await sign_in(staff, "alice")
        page = await staff.get(f"/console/studies/{mine}")
        form = {"patient_id": "PORTAL-1"}
        assert (await staff.post("/console/enrolment-codes", data={**form, "csrf": "x"})).status_code == 403
        printed = await staff.post("/console/enrolment-codes", data={**form, "csrf": csrf_of(page.text)})
        assert printed.status_code == 201
        code = re.search(r'<p class="code">([0-9A-Z-]+)</p>', printed.text)
        assert code
        # A patient the hospital does not hold gets no code.
        none = await staff.post(
            "/console/enrolment-codes", data={"patient_id": "NOBODY", "csrf": csrf_of(page.text)}
        )
        assert none.status_code == 404
    async with browser_at(portal) as browser:
        unknown = await browser.post("/portal/enrol", data={"code": "ZZZZ-ZZZZ-ZZZZ", "email": PATIENT})
        assert mailbox.messages_to(PATIENT) == []
        enrolled = await browser.post("/portal/enrol", data={"code": code.group(1).lower(), "email": PATIENT})
        assert enrolled.status_code == unknown.status_code == 200
        link = sign_in_link(mailbox, PATIENT, 1)
        used = await browser.post(
            "/portal/enrol", data={"code": code.group(1), "email": "other@home.example"}
        )
        # A used code and an unknown one get the answer a good one got; nothing is sent.
        assert used.status_code == 200 and used.text == unknown.text == enrolled.text
        assert mailbox.messages_to("other@home.example") == []
        # The emailed link asks before it signs in (mail scanners follow links).
        assert (await browser.get(link)).status_code == 200
        assert (await browser.get("/portal")).text.count("Email me a sign-in link") == 1
        signed = await browser.post(link)
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/portal" in cookie
        home = await browser.get("/portal")
        assert f"/portal/studies/{mine}" in home.text and "CT mine" in home.text
        assert theirs not in home.text and "CT theirs" not in home.text
        study = await browser.get(f"/portal/studies/{mine}")
        thumbnails = re.findall(r'src="(/portal/studies/[^"]+/thumbnail)"', study.text)
        assert study.status_code == 200 and len(thumbnails) == 1
        image = await browser.get(thumbnails[0])
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
        # Another patient's study, by guessing its URL, is not there.
        assert (await browser.get(f"/portal/studies/{theirs}")).status_code == 404
        series = thumbnails[0].split("/series/")[1].split("/")[0]
        guessed = await browser.get(f"/portal/studies/{theirs}/series/{series}/thumbnail")
        assert guessed.status_code == 404
        # She shares it with a physician herself, and is told when it is first opened.
        share_form = {"csrf": csrf_of(study.text), "days": "7", "recipient": "Dr. Quinn"}
        assert (
            await browser.post(f"/portal/studies/{mine}/share", data={**share_form, "csrf": "x"})
        ).status_code == 403
        assert (await browser.post(f"/portal/studies/{theirs}/share", data=share_form)).status_code == 404
        assert (
            await browser.post(f"/portal/studies/{mine}/share", data={**share_form, "days": "31"})
        ).status_code == 400
        made = await browser.post(f"/portal/studies/{mine}/share", data=share_form)
        assert made.status_code == 201 and "Dr. Quinn" in made.text
        share_link = re.search(r"https?://testserver(/s/[A-Za-z0-9_-]+)", made.text)
        assert share_link
        async with browser_at(portal) as physician:
            assert (await physician.get(share_link.group(1))).status_code == 303
        await portal.app.state.running.shares.notices.drain()
        told = [m for m in mailbox.messages_to(PATIENT) if "was opened" in str(m["Subject"])]
        assert len(told) == 1 and "Dr. Quinn" in told[0].get_content()
        assert (await browser.post("/portal/signout", data={"csrf": "x"})).status_code == 403
        out = await browser.post("/portal/signout", data={"csrf": csrf_of(home.text)})
        assert out.status_code == 303
        assert "Email me a sign-in link" in (await browser.get("/portal")).text
    async with browser_at(portal) as thief:
        # The link worked once.
        again = await thief.post(link)
        assert again.status_code == 401 and "set-cookie" not in again.headers
        assert "Email me a sign-in link" in (await thief.get("/portal")).text


async def test_sign_in_links_expire_and_unknown_addresses_get_the_same_answer(
    portal: ArchiveUnderTest, mailbox: Mailbox
):
    await store(portal, "PORTAL-3", "MR knee")
    async with browser_at(portal) as staff:
        await sign_in(staff, "alice")
        page = await staff.get("/console/studies", params={"PatientID": "PORTAL-3"})
        uid = re.search(r'href="/console/studies/([^"]+)"', page.text)
        assert uid
        study_page = await staff.get(f"/console/studies/{uid.group(1)}")
        form = {"patient_id": "PORTAL-3", "csrf": csrf_of(study_page.text)}
        code = re.search(
            r'<p class="code">([0-9A-Z-]+)</p>',
            (await staff.post("/console/enrolment-codes", data=form)).text,
        )
        assert code
    address = "knee@home.example"
    async with browser_at(portal) as browser:
        await browser.post("/portal/enrol", data={"code": code.group(1), "email": address})
        first = sign_in_link(mailbox, address, 1)
        nobody = await browser.post("/portal/signin", data={"email": "nobody@home.example"})
        known = await browser.post("/portal/signin", data={"email": address})
        assert nobody.status_code == known.status_code == 200 and nobody.text == known.text
        assert mailbox.messages_to("nobody@home.example") == []
        second = sign_in_link(mailbox, address, 2)
        assert second != first
        pool = portal.app.state.running.archive.pool
        await pool.execute("UPDATE portal_signin_links SET expires_at = now() - interval '1 second'")
        for link in (first, second):
            expired = await browser.post(link)
            assert expired.status_code == 401 and "not valid" in expired.text
        assert (await browser.get("/portal")).text.count("Email me a sign-in link") == 1


async def test_a_bad_address_is_refused(portal: ArchiveUnderTest):
    async with httpx.AsyncClient(transport=portal.client._transport, base_url="http://testserver") as browser:
        answer = await browser.post("/portal/signin", data={"email": "not an address"})
        assert answer.status_code == 400
