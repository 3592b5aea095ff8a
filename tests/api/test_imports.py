"""``POST /api/imports`` and ``GET /api/jobs/{id}``: an uploaded CD's content imported as a
background job of the server, and the job's progress and outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.repository import jobs as jobs_repository
from app.repository.jobs import Progress
from app.services.jobs import STALE_SECONDS, Jobs
from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest
from tests.imports.media import SHAPES, write_fileset, zip_of


async def test_an_uploaded_zip_is_imported_as_a_job(served: ArchiveUnderTest, tmp_path: Path) -> None:
    medium = write_fileset(tmp_path / "cd")
    instance_bytes = sum(p.stat().st_size for p in medium.files)
    # Not referenced by the DICOMDIR, which governs the whole medium: not imported.
    (medium.root / "README.TXT").write_text("a file the DICOMDIR does not list")
    body = zip_of(medium, tmp_path / "cd.zip").read_bytes()

    response = await served.client.post(
        "/api/imports", content=body, headers={"Content-Type": "application/zip"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/api/jobs/{job_id}"
    await served.app.state.running.jobs.wait()

    job = (await served.client.get(f"/api/jobs/{job_id}")).json()
    assert job["state"] == "done", job
    assert job["kind"] == "import" and job["hospital"] == HOSPITAL
    assert job["counts"] == {"stored": len(SHAPES), "already present": 0, "refused": 0, "unreadable": 0}
    assert job["progress"]["items_done"] == job["progress"]["items_total"] == len(SHAPES)
    assert job["progress"]["bytes_done"] == instance_bytes
    assert [o["status"] for o in job["outcomes"]] == ["stored"] * len(SHAPES)
    assert {o["sop_instance_uid"] for o in job["outcomes"]} == {s.instance for s in medium.samples}
    assert {o["volume"] for o in job["outcomes"]} == {"upload.zip"}
    # The spooled upload is gone.
    assert not [p for p in served.settings.spool_path.iterdir() if p.name.startswith("upload-")]
    stored = await served.client.get(f"/dicom-web/studies/{medium.samples[0].study}/instances")
    assert len(stored.json()) == len(SHAPES)

    # Another hospital's staff cannot see it; a reader of the hospital can.
    async with served.as_user(OTHER_HOSPITAL) as other:
        assert (await other.get(f"/api/jobs/{job_id}")).status_code == 404
    async with served.as_user(roles=["reader"]) as reader:
        assert (await reader.get(f"/api/jobs/{job_id}?limit=2&offset=1")).json()["outcomes"] == job[
            "outcomes"
        ][1:3]

    again = await served.client.post(
        "/api/imports", content=body, headers={"Content-Type": "application/zip"}
    )
    await served.app.state.running.jobs.wait()
    second = (await served.client.get(f"/api/jobs/{again.json()['id']}")).json()
    assert second["counts"]["already present"] == len(SHAPES) and second["counts"]["stored"] == 0


async def test_an_import_needs_the_store_right_and_a_zip_file(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    async with served.as_user(roles=["reader"]) as reader:
        refused = await reader.post(
            "/api/imports", content=b"PK", headers={"Content-Type": "application/zip"}
        )
    assert refused.status_code == 403
    not_zip = await served.client.post(
        "/api/imports", content=b"x" * 100, headers={"Content-Type": "application/zip"}
    )
    assert not_zip.status_code == 415
    wrong_type = await served.client.post(
        "/api/imports", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert not [p for p in served.settings.spool_path.iterdir() if p.name.startswith("upload-")]


@pytest.mark.parametrize("served", [{"max_import_size": 1000}], indirect=True)
async def test_an_import_larger_than_the_limit_is_refused(served: ArchiveUnderTest, tmp_path: Path) -> None:
    body = zip_of(write_fileset(tmp_path / "cd", ("ct",)), tmp_path / "cd.zip").read_bytes()
    response = await served.client.post(
        "/api/imports", content=body, headers={"Content-Type": "application/zip"}
    )
    assert response.status_code == 413
    assert not [p for p in served.settings.spool_path.iterdir() if p.name.startswith("upload-")]


async def test_a_job_whose_process_died_is_reported_failed(served: ArchiveUnderTest) -> None:
    archive = served.archive
    async with archive.pool.acquire() as conn:
        hospital_pk = await conn.fetchval("SELECT pk FROM hospitals WHERE code = $1", HOSPITAL)
    job = await jobs_repository.create(archive.pool, "import", hospital_pk, "tester", {})
    await jobs_repository.start(archive.pool, job.pk)
    await jobs_repository.progress(archive.pool, job.pk, Progress(10, 3, 0, 0, {"stored": 3}), [])
    async with archive.pool.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET heartbeat_at = now() - make_interval(secs => $2) WHERE pk = $1",
            job.pk,
            STALE_SECONDS + 1,
        )
    assert (await served.client.get(f"/api/jobs/{job.id}")).json()["state"] == "running"

    # What any archive process does as it starts.
    restarted = Jobs(archive)
    await restarted.open()
    await restarted.close()

    after = (await served.client.get(f"/api/jobs/{job.id}")).json()
    assert after["state"] == "failed"
    assert after["error"].startswith("interrupted")
    assert after["progress"]["items_done"] == 3
