"""A new share's Access Page sent by email from the console, to a real SMTP server on
loopback: CSRF checked, the secrets checked against the share, what arrived read back,
and the sending in the share's access history."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
from tests.fixtures import ArchiveUnderTest
from tests.mail.smtp import Mailbox
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

TO = "dr.house@clinic.example"


async def _stored(archive: ArchiveUnderTest) -> str:
    sample = make_sample("ct", PatientID="MAIL-1", PatientName="Mail^Mona", PatientBirthDate="19700101")
    body, ctype = multipart_body([sample.data])
    stored = await archive.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert stored.status_code == 200, stored.text
    return sample.study


async def test_send_the_access_page_by_email(mailing_console: ArchiveUnderTest, mailbox: Mailbox):
    study = await _stored(mailing_console)
    async with browser_at(mailing_console) as browser:
        await sign_in(browser, "alice")
        page = await browser.get(f"/console/studies/{study}")
        form = {
            "study": study, "expires": (dt.date.today() + dt.timedelta(days=3)).isoformat(),
            "notify_email": "alice@hospital.example",
        }  # fmt: skip
        created = await browser.post("/console/shares", data={**form, "csrf": csrf_of(page.text)})
        assert created.status_code == 201
        action = re.search(
            r'<form class="noprint" method="post" action="(/console/shares/[^"]+/email)">', created.text
        )
        assert action, "the Access Page offers to send it by email"
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', created.text))
        sent = {**fields, "to": TO}
        assert (await browser.post(action.group(1), data={**sent, "csrf": "guessed"})).status_code == 403
        wrong = await browser.post(action.group(1), data={**sent, "access_code": "AAAA-BBBB"})
        assert wrong.status_code == 404
        bad = await browser.post(action.group(1), data={**sent, "to": "x@y.example\r\nBcc: z@w.example"})
        assert bad.status_code == 400
        assert mailbox.messages_to(TO) == []
        done = await browser.post(action.group(1), data=sent)
        assert done.status_code == 200 and TO in done.text
        (message,) = mailbox.messages_to(TO)
        text = message.get_content()
        assert fields["access_code"] in text and f"/s/{fields['token']}" in text
        assert "Mail" not in text and "Mona" not in text  # no patient name in an email
        share_id = action.group(1).split("/")[3]
        history = await browser.get(f"/console/shares/{share_id}")
        assert f"emailed the Access Page to {TO}" in history.text
    # The link in the email opens the share.
    link = re.search(r"https?://testserver(/s/[A-Za-z0-9_-]+)", text)
    assert link
    async with browser_at(mailing_console) as recipient:
        assert (await recipient.get(link.group(1))).status_code in (200, 303)
    # The sharer asked to be told of the first open (the form's address reached the share).
    await mailing_console.app.state.running.shares.notices.drain()
    (told,) = mailbox.messages_to("alice@hospital.example")
    assert f"Share {share_id} was opened" in str(told["Subject"])
