"""The console's administration pages, signed in through the real provider: member
hospitals, known AEs, and the audit trail filtered and exported as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, sign_in
from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)


async def test_hospitals_and_aes(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        await sign_in(browser, "adam")
        page = await browser.get("/console/admin")
        assert page.status_code == 200
        assert f"<td>{HOSPITAL}</td>" in page.text and f"<td>{OTHER_HOSPITAL}</td>" in page.text


async def test_audit_trail_filtered_and_exported(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        await browser.get("/console/studies", params={"PatientID": "AUDITED-1"})
    async with browser_at(console) as browser:
        await sign_in(browser, "adam")
        today = dt.date.today().isoformat()
        page = await browser.get(
            "/console/audit", params={"subject": "alice", "since": today, "until": today}
        )
        assert page.status_code == 200 and "QIDO-RS" in page.text and "alice" in page.text
        none = await browser.get("/console/audit", params={"subject": "nobody-at-all"})
        assert "0 events" in none.text
        exported = await browser.get("/console/audit", params={"subject": "alice", "format": "csv"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert rows and {r["subject"] for r in rows} == {"alice"}
        assert any(r["transaction"] == "QIDO-RS" and "AUDITED-1" in r["query"] for r in rows)
        assert (await browser.get("/console/audit", params={"since": "yesterday"})).status_code == 400


async def test_administration_needs_the_role(console: ArchiveUnderTest):
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        assert (await browser.get("/console/admin")).status_code == 403
        assert (await browser.get("/console/audit")).status_code == 403
