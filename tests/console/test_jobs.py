"""The console's jobs, signed in through the real provider: a study sent to a real dcmtk
``storescp`` from its page, a CD's ZIP file imported by a plain form upload, and each
job's page; refused without the right or the form's token, and audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydicom.uid import generate_uid

from app.repository import aes
from app.repository.aes import NewApplicationEntity
from tests.api.peers import needs_storescp, storescp
from tests.console.conftest import CLIENT_SECRET, archive_with, browser_at
from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, csrf_of, sign_in
from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest
from tests.imports.media import SHAPES, write_fileset, zip_of
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)


async def _last(archive: ArchiveUnderTest) -> int:
    """The audit trail's last event so far (the trail is append-only: kept across tests)."""
    await archive.audit_written()
    return int(await archive.archive.pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events"))


async def _events(archive: ArchiveUnderTest, transaction: str, after: int) -> list[dict[str, object]]:
    await archive.audit_written()
    rows = await archive.archive.pool.fetch(
        "SELECT subject, outcome, detail, study_uids, instances FROM audit_events "
        "WHERE transaction = $1 AND pk > $2 ORDER BY pk",
        transaction,
        after,
    )
    return [dict(r) for r in rows]


async def _stored_study(archive: ArchiveUnderTest) -> str:
    study = generate_uid()
    body, content_type = multipart_body(
        make_sample(shape, study=study, PatientID="CONSOLE-SEND").data for shape in ("ct", "rle")
    )
    stored = await archive.client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type}
    )
    assert stored.status_code == 200, stored.text
    return study


async def _add_ae(
    archive: ArchiveUnderTest, title: str, port: int, hospital: str = HOSPITAL, **flags: bool
) -> None:
    added = await aes.add(
        archive.archive.pool, NewApplicationEntity(title, "127.0.0.1", port, hospital, **flags)
    )
    assert added is not None


@needs_storescp
async def test_a_study_is_sent_to_a_known_ae_from_its_page(console: ArchiveUnderTest, tmp_path: Path):
    study = await _stored_study(console)
    (tmp_path / "received").mkdir()
    with storescp(tmp_path / "received") as peer:
        await _add_ae(console, "STORESCP", peer.port, destination=True)
        await _add_ae(console, "NOT_A_DEST", peer.port + 1)  # known, but not sent to
        await _add_ae(console, "OTHERS_PACS", peer.port, OTHER_HOSPITAL, destination=True)
        after = await _last(console)
        async with browser_at(console) as browser:
            await sign_in(browser, "rita")
            page = await browser.get(f"/console/studies/{study}")
            assert page.status_code == 200
            assert '<label for="destination">' in page.text and '<option value="STORESCP">' in page.text
            assert "NOT_A_DEST" not in page.text and "OTHERS_PACS" not in page.text
            csrf = csrf_of(page.text)

            for forged in ({}, {"csrf": "guessed"}):
                refused = await browser.post(
                    f"/console/studies/{study}/send", data={"destination": "STORESCP", **forged}
                )
                assert refused.status_code == 403
            for title in ("NOT_A_DEST", "OTHERS_PACS"):
                refused = await browser.post(
                    f"/console/studies/{study}/send", data={"destination": title, "csrf": csrf}
                )
                assert refused.status_code in (400, 404) and title in refused.text

            sent = await browser.post(
                f"/console/studies/{study}/send", data={"destination": "STORESCP", "csrf": csrf}
            )
            assert sent.status_code == 303, sent.text
            job_url = sent.headers["location"]
            assert job_url.startswith("/console/jobs/")
            await console.app.state.running.jobs.wait()
            job = await browser.get(job_url)
        received = peer.received()

    assert job.status_code == 200
    assert '<strong id="job-state">done</strong>' in job.text and "sent: 2" in job.text
    assert f"Study {study} to AE STORESCP" in job.text and '<label for="job-progress">2 of 2' in job.text
    assert len(received) == 2
    row = await console.archive.pool.fetchrow(
        "SELECT kind, state, parameters FROM jobs WHERE id = $1", job_url.rsplit("/", 1)[1]
    )
    assert (row["kind"], row["state"]) == ("send", "done")
    sends = [e for e in await _events(console, "SEND", after) if e["subject"] == "rita"]
    assert {e["outcome"] for e in sends} >= {202}
    assert all(e["study_uids"] == [study] for e in sends if e["outcome"] == 202)
    assert any(e["outcome"] == 200 and e["instances"] == 2 for e in sends), (
        sends
    )  # the send itself, when done
    assert [e["outcome"] for e in await _events(console, "JOB", after) if e["subject"] == "rita"] == [200]
    refusals = {(e["outcome"], e["detail"]) for e in sends if e["outcome"] not in (200, 202)}
    assert refusals == {
        (400, "NOT_A_DEST is not a destination the archive may send to"),
        (404, "no known application entity 'OTHERS_PACS'"),
    }


async def test_sending_and_following_jobs_need_the_right(console: ArchiveUnderTest):
    study = await _stored_study(console)
    async with browser_at(console) as browser:
        await sign_in(browser, "uma")  # an uploader: may not download, so may not send
        csrf = csrf_of((await browser.get("/console")).text)
        refused = await browser.post(
            f"/console/studies/{study}/send", data={"destination": "X", "csrf": csrf}
        )
        assert refused.status_code == 403
    async with browser_at(console) as browser:
        await sign_in(browser, "olga")  # another hospital's: its jobs are not theirs to see
        assert (await browser.get("/console/jobs/no-such-job")).status_code == 404
        assert (await browser.get("/console/imports")).status_code == 403


async def test_a_cd_is_imported_from_the_browser(console: ArchiveUnderTest, tmp_path: Path):
    medium = write_fileset(tmp_path / "cd")
    body = zip_of(medium, tmp_path / "cd.zip").read_bytes()
    after = await _last(console)
    async with browser_at(console) as browser:
        await sign_in(browser, "uma")
        page = await browser.get("/console/imports")
        assert page.status_code == 200
        assert '<label for="file">ZIP file (at most 8.0 GiB)</label>' in page.text
        assert 'enctype="multipart/form-data"' in page.text
        csrf = csrf_of(page.text)
        upload = {"file": ("cd.zip", body, "application/zip")}

        for forged in ({}, {"csrf": "guessed"}):
            assert (await browser.post("/console/imports", data=forged, files=upload)).status_code == 403
        not_zip = await browser.post(
            "/console/imports",
            data={"csrf": csrf},
            files={"file": ("cd.zip", b"not a zip", "application/zip")},
        )
        assert not_zip.status_code == 415
        imported = await browser.post("/console/imports", data={"csrf": csrf}, files=upload)
        assert imported.status_code == 303, imported.text
        job_url = imported.headers["location"]
        await console.app.state.running.jobs.wait()
        job = await browser.get(job_url)
    assert job.status_code == 200 and '<strong id="job-state">done</strong>' in job.text
    assert f"stored: {len(SHAPES)}" in job.text
    for sample in medium.samples:
        assert sample.instance in job.text
    stored = await console.client.get(f"/dicom-web/studies/{medium.samples[0].study}/instances")
    assert stored.status_code == 200 and len(stored.json()) == len(SHAPES)
    imports = [e for e in await _events(console, "IMPORT", after) if e["subject"] == "uma"]
    assert [e["outcome"] for e in imports if e["outcome"] != 202].count(403) == 2
    assert any(e["outcome"] == 202 for e in imports)
    assert any(e["instances"] == len(SHAPES) for e in imports), imports  # the import itself, when done
    # The spooled upload is gone.
    assert not [p for p in console.settings.spool_path.iterdir() if p.name.startswith("upload-")]


@pytest_asyncio.fixture(loop_scope="session")
async def small_imports(clean_db: str, tmp_path: Path, issuer: str) -> AsyncIterator[ArchiveUnderTest]:
    async for under_test in archive_with(
        clean_db, tmp_path, oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET,
        max_import_size=4096,
    ):  # fmt: skip
        yield under_test


async def test_an_upload_over_the_limit_is_refused_before_it_is_spooled(small_imports: ArchiveUnderTest):
    async with browser_at(small_imports) as browser:
        await sign_in(browser, "uma")
        csrf = csrf_of((await browser.get("/console/imports")).text)
        files = {"file": ("cd.zip", b"PK" + bytes(200_000), "application/zip")}
        refused = await browser.post("/console/imports", data={"csrf": csrf}, files=files)
    assert refused.status_code == 413 and "at most 4096 bytes" in refused.text
    spool = small_imports.settings.spool_path
    assert not spool.exists() or not [p for p in spool.iterdir() if p.name.startswith("upload-")]


async def test_importing_needs_the_store_right(console: ArchiveUnderTest, tmp_path: Path):
    async with browser_at(console) as browser:
        await sign_in(browser, "rita")
        assert (await browser.get("/console/imports")).status_code == 403
        csrf = csrf_of((await browser.get("/console")).text)
        files = {"file": ("cd.zip", b"PK", "application/zip")}
        assert (await browser.post("/console/imports", data={"csrf": csrf}, files=files)).status_code == 403
