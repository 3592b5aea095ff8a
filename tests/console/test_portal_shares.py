"""A signed-in patient's own shares (who opened what, revoking) and the ZIP with DICOMDIR
of their own study, each recorded in the audit trail as the patient; another patient's
share or study is not there, by any id or URL, and every form checks its CSRF token."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import pydicom
import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, csrf_of, sign_in
from tests.console.patients import signed_in_patient, store
from tests.fixtures import ArchiveUnderTest
from tests.mail.smtp import Mailbox

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

ANNA, BERT = "anna@home.example", "bert@home.example"


async def _last(archive: ArchiveUnderTest) -> int:
    """The audit trail's last event so far (the trail is append-only: kept across tests)."""
    await archive.audit_written()
    pool = archive.app.state.running.archive.pool
    return int(await pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events"))


async def _events(archive: ArchiveUnderTest, transaction: str, after: int) -> list[dict[str, object]]:
    await archive.audit_written()
    pool = archive.app.state.running.archive.pool
    rows = await pool.fetch(
        "SELECT subject, outcome, detail, share_id, study_uids, patient_ids, instances FROM audit_events "
        "WHERE transaction = $1 AND pk > $2 ORDER BY pk",
        transaction,
        after,
    )
    return [dict(r) for r in rows]


async def test_a_patient_sees_who_opened_her_shares_and_revokes_them(
    mailing_console: ArchiveUnderTest, mailbox: Mailbox
):
    portal = mailing_console
    since = await _last(portal)
    hers = await store(portal, "SHARES-A", "CT hers")
    his = await store(portal, "SHARES-B", "CT his")
    async with browser_at(portal) as anna, browser_at(portal) as bert:
        anna_csrf = await signed_in_patient(portal, mailbox, anna, hers, "SHARES-A", ANNA)
        bert_csrf = await signed_in_patient(portal, mailbox, bert, his, "SHARES-B", BERT)
        assert "No study" not in (empty := await anna.get("/portal/shares")).text
        assert "not shared any study yet" in empty.text
        made = await anna.post(
            f"/portal/studies/{hers}/share", data={"csrf": anna_csrf, "days": "5", "recipient": "Dr. Ives"}
        )
        assert made.status_code == 201
        share_link = re.search(r"https?://testserver(/s/[A-Za-z0-9_-]+)", made.text)
        assert share_link
        async with browser_at(portal) as physician:
            assert (await physician.get(share_link.group(1))).status_code == 303
        listed = await anna.get("/portal/shares")
        ids = re.findall(r'href="/portal/shares/([^"]+)"', listed.text)
        assert len(ids) == 1 and "Dr. Ives" in listed.text
        (share_id,) = ids
        page = await anna.get(f"/portal/shares/{share_id}")
        assert page.status_code == 200 and "share opened" in page.text
        assert page.headers["cache-control"] == "no-store"
        # Another patient: not in his list, not by id, and he cannot revoke it.
        assert share_id not in (await bert.get("/portal/shares")).text
        assert (await bert.get(f"/portal/shares/{share_id}")).status_code == 404
        theirs = await bert.post(f"/portal/shares/{share_id}/revoke", data={"csrf": bert_csrf})
        assert theirs.status_code == 404
        # A share staff made of her study is not hers to see or revoke either.
        async with browser_at(portal) as staff:
            await sign_in(staff, "alice")
            study_page = await staff.get(f"/console/studies/{hers}")
            form = {"study": hers, "expires": (dt.date.today() + dt.timedelta(days=2)).isoformat()}
            staff_made = await staff.post("/console/shares", data={**form, "csrf": csrf_of(study_page.text)})
            assert staff_made.status_code == 201
            staff_share = re.search(r'action="/console/shares/([^/"]+)/pdf"', staff_made.text)
            assert staff_share
        assert (await anna.get(f"/portal/shares/{staff_share.group(1)}")).status_code == 404
        assert (
            await anna.post(f"/portal/shares/{staff_share.group(1)}/revoke", data={"csrf": anna_csrf})
        ).status_code == 404
        # Her own revoke needs her page's CSRF token.
        assert (
            await anna.post(f"/portal/shares/{share_id}/revoke", data={"csrf": bert_csrf})
        ).status_code == 403
        assert (await anna.post(f"/portal/shares/{share_id}/revoke")).status_code == 403
        async with browser_at(portal) as physician:
            assert (await physician.get(share_link.group(1))).status_code == 303  # still open
        done = await anna.post(f"/portal/shares/{share_id}/revoke", data={"csrf": anna_csrf})
        assert done.status_code == 303 and done.headers["location"] == f"/portal/shares/{share_id}"
        after = await anna.get(f"/portal/shares/{share_id}")
        assert "revoked" in after.text and "Revoke:" not in after.text
        async with browser_at(portal) as physician:
            assert (await physician.get(share_link.group(1))).status_code == 404
    # Signed out, none of it.
    async with browser_at(portal) as stranger:
        assert (await stranger.get(f"/portal/shares/{share_id}")).status_code == 303
        assert (
            await stranger.post(f"/portal/shares/{share_id}/revoke", data={"csrf": anna_csrf})
        ).status_code == 303
    events = await _events(portal, "SHARE", since)
    mine = [e for e in events if e["share_id"] == share_id and str(e["subject"]).startswith("patient:")]
    anna_subject = mine[0]["subject"]
    assert [e["outcome"] for e in mine if e["subject"] == anna_subject][-1] == 200
    assert any(e["detail"] == f"revoked {share_id}" and e["subject"] == anna_subject for e in mine)
    refused = [e for e in mine if e["subject"] != anna_subject]
    assert refused and all(e["outcome"] == 404 for e in refused)


async def test_a_patient_downloads_her_study_as_a_zip_with_a_dicomdir(
    mailing_console: ArchiveUnderTest, mailbox: Mailbox, tmp_path
):
    portal = mailing_console
    since = await _last(portal)
    hers = await store(portal, "ZIP-A", "CT zip")
    his = await store(portal, "ZIP-B", "CT not hers")
    async with browser_at(portal) as anna:
        await signed_in_patient(portal, mailbox, anna, hers, "ZIP-A", ANNA)
        page = await anna.get(f"/portal/studies/{hers}")
        assert f'href="/portal/studies/{hers}/download"' in page.text
        answer = await anna.get(f"/portal/studies/{hers}/download")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(answer.content)) as zipped:
            names = zipped.namelist()
            assert "DICOMDIR" in names and len(names) == 2
            zipped.extractall(tmp_path)
        directory = pydicom.dcmread(tmp_path / "DICOMDIR")
        (image,) = [r for r in directory.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
        instance = pydicom.dcmread(tmp_path.joinpath(*image.ReferencedFileID))
        assert instance.StudyInstanceUID == hers and instance.PatientID == "ZIP-A"
        # Another patient's study, by URL: not there, and nothing streamed.
        guessed = await anna.get(f"/portal/studies/{his}/download")
        assert guessed.status_code == 404 and "application/zip" not in guessed.headers["content-type"]
    async with browser_at(portal) as stranger:
        assert (await stranger.get(f"/portal/studies/{hers}/download")).status_code == 303
    events = await _events(portal, "DOWNLOAD", since)
    assert [(e["outcome"], e["study_uids"]) for e in events] == [(200, [hers]), (404, [])]
    assert events[0]["subject"] == events[1]["subject"] and str(events[0]["subject"]).startswith("patient:")
    assert events[0]["patient_ids"] == ["ZIP-A"] and events[0]["instances"] == 1


async def test_a_patient_views_her_own_study_through_a_short_lived_share_of_her_own(
    mailing_console: ArchiveUnderTest, mailbox: Mailbox
):
    portal = mailing_console
    since = await _last(portal)
    hers = await store(portal, "VIEW-A", "CT viewed")
    his = await store(portal, "VIEW-B", "CT not hers")
    address = "viewer@home.example"
    async with browser_at(portal) as anna:
        csrf = await signed_in_patient(portal, mailbox, anna, hers, "VIEW-A", address)
        study = await anna.get(f"/portal/studies/{hers}")
        assert f'action="/portal/studies/{hers}/view"' in study.text
        assert (await anna.post(f"/portal/studies/{hers}/view", data={"csrf": "x"})).status_code == 403
        assert (await anna.post(f"/portal/studies/{his}/view", data={"csrf": csrf})).status_code == 404
        opened = await anna.post(f"/portal/studies/{hers}/view", data={"csrf": csrf})
        assert opened.status_code == 303
        page = re.fullmatch(rf"/s/([A-Za-z0-9_-]+)/studies/{re.escape(hers)}", opened.headers["location"])
        assert page
        viewer = await anna.get(opened.headers["location"])
        assert viewer.status_code == 200 and "CT viewed" in viewer.text
        images = re.findall(r'<img src="([^"]+/thumbnail)"', viewer.text)
        assert images and (await anna.get(images[0])).content[:2] == b"\xff\xd8"
        # View only, an hour at most, and listed among her shares.
        assert (await anna.get(f"/s/{page.group(1)}/download")).status_code in (403, 404)
        listed = await anna.get("/portal/shares")
        assert "you, in the viewer" in listed.text
    pool = portal.app.state.running.archive.pool
    (share,) = await pool.fetch(
        "SELECT permissions, expires_at - created_at AS lasts, notify_email FROM shares "
        "WHERE recipient = 'you, in the viewer'"
    )
    assert share["permissions"] == ["view"] and share["lasts"] <= dt.timedelta(hours=1)
    assert share["notify_email"] is None
    # Recorded as the patient; and no "was opened" email about her own look.
    events = await _events(portal, "SHARE", since)
    (made,) = [e for e in events if str(e["detail"]).startswith("patient opened study in viewer")]
    assert made["outcome"] == 303 and str(made["subject"]).startswith("patient:")
    assert made["study_uids"] == [hers]
    await portal.app.state.running.shares.notices.drain()
    assert [m for m in mailbox.messages_to(address) if "was opened" in str(m["Subject"])] == []
