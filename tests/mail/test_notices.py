"""Owner notices: the address given at a share's creation is emailed (through a real SMTP
server on loopback) when the share is first opened — once — and when its challenge is
locked out; a mail server that is down fails neither the opening nor the answer."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from harness.servers import settings_for
from tests.fixtures import ArchiveUnderTest, _open
from tests.mail.smtp import Mailbox, smtp_server
from tests.samples import make_sample, multipart_body

OWNER = "owner@hospital.example"


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


async def _archive(clean_db: str, tmp_path: Path, **smtp: Any) -> AsyncIterator[ArchiveUnderTest]:
    settings = settings_for(clean_db, None, None, tmp_path / "data", sweep_interval=0, **smtp)
    async for under_test in _open(settings):
        sample = make_sample("ct", PatientID="NOTE-1", PatientName="Note^Nina", PatientBirthDate="19600101")
        body, ctype = multipart_body([sample.data])
        stored = await under_test.client.post(
            "/dicom-web/studies", content=body, headers={"Content-Type": ctype}
        )
        assert stored.status_code == 200, stored.text
        under_test.app.state.study = sample.study
        yield under_test


@pytest_asyncio.fixture(loop_scope="session")
async def mailing(clean_db: str, tmp_path: Path, mailbox: Mailbox) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in _archive(
        clean_db, tmp_path, smtp_host=mailbox.host, smtp_port=mailbox.port, smtp_security="none"
    ):
        yield under_test


async def _create(archive: ArchiveUnderTest, **extra: Any) -> dict[str, Any]:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    body = {"studies": [archive.app.state.study], "expires_at": expires, **extra}
    response = await archive.client.post("/api/shares", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _browser(archive: ArchiveUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=archive.client._transport, base_url="http://testserver")


async def _arrived(box: Mailbox, subject: str) -> list[EmailMessage]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [m for m in box.messages_to(OWNER) if subject in str(m["Subject"])]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message {subject!r} arrived")


async def test_the_owner_is_told_of_the_first_open_only(mailing: ArchiveUnderTest, mailbox: Mailbox):
    share = await _create(mailing, notify_email=OWNER, recipient="Dr. Who", max_uses=5)
    assert share["notify_email"] == OWNER
    async with _browser(mailing) as browser:
        for _ in range(2):
            assert (await browser.get(f"/s/{share['token']}")).status_code == 303
    (told,) = await _arrived(mailbox, f"Share {share['id']} was opened")
    text = told.get_content()
    assert "Dr. Who" in text and "first time" in text
    assert share["token"] not in text and share["access_code"] not in text and "Nina" not in text
    # A second open sends nothing more (once the notice under way has gone).
    await mailing.app.state.running.shares.notices.drain()
    assert len([m for m in mailbox.messages_to(OWNER) if share["id"] in str(m["Subject"])]) == 1


async def test_a_share_without_an_address_tells_nobody(mailing: ArchiveUnderTest, mailbox: Mailbox):
    before = len(mailbox.received)
    share = await _create(mailing)
    assert share["notify_email"] is None
    async with _browser(mailing) as browser:
        assert (await browser.get(f"/s/{share['token']}")).status_code == 303
    await mailing.app.state.running.shares.notices.drain()
    assert len(mailbox.received) == before


async def test_the_owner_is_told_of_a_lockout(mailing: ArchiveUnderTest, mailbox: Mailbox):
    share = await _create(mailing, notify_email=OWNER, challenge="pin", pin="4711")
    async with _browser(mailing) as browser:
        for _ in range(5):
            assert (await browser.post(f"/s/{share['token']}", data={"answer": "0000"})).status_code == 403
        assert (await browser.post(f"/s/{share['token']}", data={"answer": "4711"})).status_code == 429
    (told,) = await _arrived(mailbox, f"Share {share['id']} was locked out")
    assert "5 wrong answers" in told.get_content() and "4711" not in told.get_content()
    # Not opened: no first-open notice.
    assert not [
        m for m in mailbox.messages_to(OWNER) if f"Share {share['id']} was opened" in str(m["Subject"])
    ]


async def test_a_bad_address_is_refused(mailing: ArchiveUnderTest):
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    body = {
        "studies": [mailing.app.state.study],
        "expires_at": expires,
        "notify_email": "a@b.example\nBcc: c@d.e",
    }
    assert (await mailing.client.post("/api/shares", json=body)).status_code == 400


async def test_mail_down_fails_no_access(clean_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with smtp_server() as box:
        port = box.port  # stopped again: nothing listens there
    async for archive in _archive(
        clean_db, tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none"
    ):
        share = await _create(archive, notify_email=OWNER)
        async with _browser(archive) as browser:
            assert (await browser.get(f"/s/{share['token']}")).status_code == 303
        await archive.app.state.running.shares.notices.drain()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    assert any(f"owner notice of share {share['id']} not sent" in line for line in lines)
    assert not any(OWNER in line or share["token"] in line for line in lines)
