"""The film library desk in the console, signed in through the real provider: find a
study (the QIDO-RS engine, within the person's hospital), its page with thumbnails and
viewer link, a share created from a form (CSRF checked), listed, and revoked."""

from __future__ import annotations

import datetime as dt
import re
import zlib

import httpx
import pytest
import pytest_asyncio

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
from tests.fixtures import ArchiveUnderTest
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

PATIENT = {"PatientID": "DESK-1", "PatientName": "Desk^Dana", "PatientBirthDate": "19800101"}


@pytest_asyncio.fixture(loop_scope="session")
async def study(console: ArchiveUnderTest) -> str:
    sample = make_sample("ct", **PATIENT, StudyDescription="CT head", AccessionNumber="ACC-77")
    body, ctype = multipart_body([sample.data])
    stored = await console.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert stored.status_code == 200, stored.text
    return sample.study


async def test_find_a_study_and_open_its_page(console: ArchiveUnderTest, study: str):
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        found = await browser.get("/console/studies", params={"PatientName": "desk"})
        assert found.status_code == 200
        assert f'href="/console/studies/{study}"' in found.text and "Dana Desk" in found.text
        by_accession = await browser.get("/console/studies", params={"AccessionNumber": "ACC-77"})
        assert study in by_accession.text
        none = await browser.get("/console/studies", params={"PatientID": "NOBODY"})
        assert "0 studies" in none.text and study not in none.text
        page = await browser.get(f"/console/studies/{study}")
        assert page.status_code == 200 and "CT head" in page.text
        assert f"https://viewer.example.test/viewer?StudyInstanceUIDs={study}" in page.text
        thumbnails = re.findall(r'src="(/console/studies/[^"]+/thumbnail)"', page.text)
        assert len(thumbnails) == 1
        image = await browser.get(thumbnails[0])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
        # The page's own view is in the study's access history the next time.
        again = await browser.get(f"/console/studies/{study}")
        assert "Access history" in again.text and "alice" in again.text


async def test_another_hospital_finds_nothing(console: ArchiveUnderTest, study: str):
    async with browser_at(console) as browser:
        await sign_in(browser, "olga")
        found = await browser.get("/console/studies", params={"PatientID": "DESK-1"})
        assert "0 studies" in found.text and study not in found.text
        assert (await browser.get(f"/console/studies/{study}")).status_code == 404
        guessed = await browser.get(f"/console/studies/{study}/series/1.2.3/thumbnail")
        assert guessed.status_code == 404


async def test_signed_out_pages_send_to_sign_in(console: ArchiveUnderTest, study: str):
    async with browser_at(console) as browser:
        for path in ("/console/studies", f"/console/studies/{study}", "/console/shares"):
            answer = await browser.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"


async def test_create_list_and_revoke_a_share(console: ArchiveUnderTest, study: str):
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        page = await browser.get(f"/console/studies/{study}")
        form = {
            "study": study, "expires": (dt.date.today() + dt.timedelta(days=7)).isoformat(),
            "permissions": ["view", "download"], "recipient": "Dr. Who",
        }  # fmt: skip
        # A form posted from elsewhere (no token, a wrong one) is refused.
        for forged in ({}, {"csrf": "guessed"}):
            assert (await browser.post("/console/shares", data={**form, **forged})).status_code == 403
        created = await browser.post("/console/shares", data={**form, "csrf": csrf_of(page.text)})
        assert created.status_code == 201 and "Dana Desk" in created.text
        link = re.search(r'https?://[^"<\s]+/s/[A-Za-z0-9_-]+', created.text)
        assert link, "the Access Page carries the link"
        path = link.group(0).split("testserver", 1)[1]
        await _pdf_of(browser, created.text)
        assert (await browser.get(path)).status_code in (200, 303)
        listed = await browser.get("/console/shares", params={"study": study})
        share_id = re.search(r'href="/console/shares/([^"]+)"', listed.text)
        assert share_id and "Dr. Who" in listed.text
        detail = await browser.get(f"/console/shares/{share_id.group(1)}")
        assert "active" in detail.text and "SHARE-ACCESS" in detail.text
        revoke = f"/console/shares/{share_id.group(1)}/revoke"
        assert (await browser.post(revoke, data={"csrf": "guessed"})).status_code == 403
        done = await browser.post(revoke, data={"csrf": csrf_of(detail.text)})
        assert done.status_code == 303
        assert "revoked" in (await browser.get(f"/console/shares/{share_id.group(1)}")).text
        assert (await browser.get(path)).status_code == 404


async def test_a_reader_cannot_share(console: ArchiveUnderTest, study: str):
    async with browser_at(console) as browser:
        await sign_in(browser, "rita")
        page = await browser.get(f"/console/studies/{study}")
        assert page.status_code == 200 and 'action="/console/shares"' not in page.text
        form = {"study": study, "expires": dt.date.today().isoformat(), "csrf": csrf_of(page.text)}
        assert (await browser.post("/console/shares", data=form)).status_code == 403


def _pdf_text(pdf: bytes) -> bytes:
    """The content streams of a PDF, inflated (fpdf2 writes text as literal strings)."""
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    out = []
    for raw in streams:
        try:
            out.append(zlib.decompress(raw))
        except zlib.error:
            out.append(raw)
    return b"\n".join(out)


async def _pdf_of(browser: httpx.AsyncClient, page: str) -> None:
    action = re.search(r'<form class="noprint" method="post" action="([^"]+)">', page)
    assert action, "the Access Page offers its PDF"
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    assert {"csrf", "token", "access_code"} <= fields.keys()
    assert (await browser.post(action.group(1), data={**fields, "csrf": ""})).status_code == 403
    wrong = await browser.post(action.group(1), data={**fields, "access_code": "AAAA-BBBB"})
    assert wrong.status_code == 404
    pdf = await browser.post(action.group(1), data=fields)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith("attachment;")
    assert pdf.content.startswith(b"%PDF-") and pdf.content.rstrip().endswith(b"%%EOF")
    text = _pdf_text(pdf.content)
    assert fields["access_code"].encode() in text and b"Dana Desk" in text


async def test_each_page_records_its_outcome_once(console: ArchiveUnderTest, study: str):
    """The services behind the pages record what happened, refusals shown on a page
    included, and a forged form is refused before anything is recorded."""
    newest = (await console.client.get("/api/audit", params={"limit": 1})).json()
    before = newest[0]["pk"] if newest else 0
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        assert (await browser.get("/console/studies/1.2.3.404")).status_code == 404
        page = await browser.get(f"/console/studies/{study}")
        too_late = (dt.date.today() + dt.timedelta(days=console.settings.share_max_days + 5)).isoformat()
        form = {"study": study, "expires": too_late, "csrf": csrf_of(page.text)}
        refused = await browser.post("/console/shares", data=form)
        assert refused.status_code == 400 and "expires_at" in refused.text
        forged = await browser.post("/console/shares", data={**form, "csrf": "guessed"})
        assert forged.status_code == 403
        created = await browser.post("/console/shares", data={**form, "expires": dt.date.today().isoformat()})
        assert created.status_code == 201
    trail = await console.client.get("/api/audit", params={"subject": "alice", "limit": 50})
    assert trail.status_code == 200, trail.text
    mine = [e for e in reversed(trail.json()) if e["pk"] > before and e["path"].startswith("/console/")]
    missing = [e for e in mine if e["path"] == "/console/studies/1.2.3.404"]
    assert [(e["transaction"], e["outcome"], e["detail"]) for e in missing] == [
        ("QIDO-RS", 404, "no such study")
    ]
    shares = [
        (e["outcome"], e["detail"]) for e in mine if e["method"] == "POST" and e["path"] == "/console/shares"
    ]
    assert len(shares) == 2, shares  # the forged post is not among them
    assert shares[0][0] == 400 and "expires_at" in shares[0][1]
    assert shares[1][0] == 201 and shares[1][1].startswith("created share ")
