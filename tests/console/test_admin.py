"""The console's administration pages, signed in through the real provider: member
hospitals, known AEs, and the audit trail filtered and exported as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
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


async def _last(archive: ArchiveUnderTest) -> int:
    """The audit trail's last event so far (the trail is append-only: kept across tests)."""
    await archive.audit_written()
    return int(
        await archive.app.state.running.archive.pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events")
    )


async def _admin_events(archive: ArchiveUnderTest, after: int) -> list[tuple[str | None, int, str | None]]:
    await archive.audit_written()
    rows = await archive.app.state.running.archive.pool.fetch(
        "SELECT subject, outcome, detail FROM audit_events "
        "WHERE transaction = 'ADMIN' AND pk > $1 ORDER BY pk",
        after,
    )
    return [(r["subject"], r["outcome"], r["detail"]) for r in rows]


async def test_an_admin_renames_a_hospital_and_manages_its_aes(console: ArchiveUnderTest):
    pool = console.app.state.running.archive.pool
    after = await _last(console)
    async with browser_at(console) as browser:
        await sign_in(browser, "adam")
        page = await browser.get("/console/admin")
        csrf = csrf_of(page.text)
        assert '<label for="ae_title">' in page.text and '<label for="name-1">' in page.text

        renamed = await browser.post(
            f"/console/admin/hospitals/{HOSPITAL}", data={"name": "St Elsewhere", "csrf": csrf}
        )
        assert renamed.status_code == 303 and renamed.headers["location"] == "/console/admin"
        assert await pool.fetchval("SELECT name FROM hospitals WHERE code = $1", HOSPITAL) == "St Elsewhere"

        form = {"ae_title": "DESK_PACS", "host": "pacs.example.test", "port": "11112", "csrf": csrf,
                "may": ["may_echo", "may_store", "destination"]}  # fmt: skip
        assert (await browser.post("/console/admin/aes", data=form)).status_code == 303
        row = await pool.fetchrow("SELECT * FROM application_entities WHERE ae_title = 'DESK_PACS'")
        assert (row["host"], row["port"], row["may_store"], row["destination"], row["may_move"]) == (
            "pacs.example.test", 11112, True, True, False
        )  # fmt: skip
        again = await browser.post("/console/admin/aes", data=form)
        assert again.status_code == 409 and "known already" in again.text

        listed = await browser.get("/console/admin")
        assert "DESK_PACS" in listed.text and 'value="pacs.example.test"' in listed.text
        changed = await browser.post(
            "/console/admin/aes/DESK_PACS",
            data={
                "host": "pacs2.example.test",
                "port": "4242",
                "may": ["may_find", "may_move"],
                "csrf": csrf,
            },
        )
        assert changed.status_code == 303
        row = await pool.fetchrow("SELECT * FROM application_entities WHERE ae_title = 'DESK_PACS'")
        now = tuple(row[k] for k in ("host", "port", "may_echo", "may_find", "may_move", "destination"))
        assert now == ("pacs2.example.test", 4242, False, True, True, False)

        assert (
            await browser.post("/console/admin/aes/DESK_PACS/remove", data={"csrf": csrf})
        ).status_code == 303
        assert (
            await pool.fetchval("SELECT count(*) FROM application_entities WHERE ae_title = 'DESK_PACS'") == 0
        )
        gone = await browser.post("/console/admin/aes/DESK_PACS/remove", data={"csrf": csrf})
        assert gone.status_code == 404
        blank = await browser.post(f"/console/admin/hospitals/{HOSPITAL}", data={"name": "  ", "csrf": csrf})
        assert blank.status_code == 400
    events = await _admin_events(console, after)
    assert ("adam", 200, f"renamed hospital {HOSPITAL}") in events
    assert ("adam", 201, f"added AE DESK_PACS of {HOSPITAL}") in events
    assert ("adam", 200, "changed AE DESK_PACS") in events
    assert ("adam", 204, "removed AE DESK_PACS") in events
    # What the console refused is on the trail too, with the reason it showed.
    assert ("adam", 409, "AE title 'DESK_PACS' is known already") in events
    assert ("adam", 404, "no known AE 'DESK_PACS'") in events
    assert ("adam", 400, "a hospital's name is not empty") in events


async def test_an_admin_changes_only_their_own_hospitals_aes(console: ArchiveUnderTest):
    """The REST API (one code path with the console) adds an AE of the other hospital;
    the console's admin of this one can neither change nor remove it."""
    added = await console.client.post(
        "/api/aes",
        json={
            "ae_title": "OTHER_PACS",
            "host": "other.example.test",
            "port": 104,
            "hospital": OTHER_HOSPITAL,
        },
    )
    assert added.status_code == 201
    async with browser_at(console) as browser:
        await sign_in(browser, "adam")
        csrf = csrf_of((await browser.get("/console/admin")).text)
        changed = await browser.post(
            "/console/admin/aes/OTHER_PACS", data={"host": "x.test", "port": "1", "csrf": csrf}
        )
        assert changed.status_code == 404
        assert (
            await browser.post("/console/admin/aes/OTHER_PACS/remove", data={"csrf": csrf})
        ).status_code == 404
    changed_by_api = await console.client.put(
        "/api/aes/OTHER_PACS", json={"host": "other2.example.test", "port": 105, "may_find": True}
    )
    assert changed_by_api.status_code == 200 and changed_by_api.json()["host"] == "other2.example.test"
    renamed = await console.client.patch(f"/api/hospitals/{OTHER_HOSPITAL}", json={"name": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"
    assert (await console.client.patch("/api/hospitals/no-such", json={"name": "X"})).status_code == 404


async def test_admin_forms_need_the_role_and_the_form_token(console: ArchiveUnderTest):
    pool = console.app.state.running.archive.pool
    before = await pool.fetchval("SELECT name FROM hospitals WHERE code = $1", HOSPITAL)
    async with browser_at(console) as browser:
        await sign_in(browser, "adam")
        for forged in ({}, {"csrf": "guessed"}):
            answer = await browser.post(
                f"/console/admin/hospitals/{HOSPITAL}", data={"name": "Forged", **forged}
            )
            assert answer.status_code == 403
            ae = {"ae_title": "FORGED", "host": "h.test", "port": "104", **forged}
            assert (await browser.post("/console/admin/aes", data=ae)).status_code == 403
    async with browser_at(console) as browser:
        await sign_in(browser, "alice")
        csrf = csrf_of((await browser.get("/console")).text)
        answer = await browser.post(
            f"/console/admin/hospitals/{HOSPITAL}", data={"name": "Forged", "csrf": csrf}
        )
        assert answer.status_code == 403
        ae = {"ae_title": "FORGED", "host": "h.test", "port": "104", "csrf": csrf}
        assert (await browser.post("/console/admin/aes", data=ae)).status_code == 403
    assert await pool.fetchval("SELECT name FROM hospitals WHERE code = $1", HOSPITAL) == before
    assert await pool.fetchval("SELECT count(*) FROM application_entities WHERE ae_title = 'FORGED'") == 0
