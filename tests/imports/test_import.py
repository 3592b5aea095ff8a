"""Importing media through the store pipeline: folders, DICOMDIR file-sets, ZIP files and
ISO 9660 images, on the real database and object store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
from pathlib import Path

import pydicom
import pytest

from app.repository import hospitals
from app.security.principal import Principal, Role
from app.services.audit import Trail, Transaction
from app.services.imports import ImportReport, Status, Tally, import_paths
from tests.fixtures import HOSPITAL, ArchiveUnderTest
from tests.imports.media import SHAPES, iso_of, write_fileset, zip_of


async def trail_of(served: ArchiveUnderTest) -> Trail:
    hospital = await hospitals.by_code(served.archive.pool, HOSPITAL)
    assert hospital is not None
    trail = Trail(Transaction.IMPORT, method="TEST", path="import")
    trail.identify(Principal("importer", hospital.code, hospital.pk, frozenset({Role.UPLOADER})))
    return trail


async def stored_sha256(served: ArchiveUnderTest, study: str) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the instance as WADO-RS returns it."""
    response = await served.client.get(f"/dicom-web/studies/{study}/instances")
    assert response.status_code == 200, response.text
    found = {}
    for item in response.json():
        instance = item["00080018"]["Value"][0]
        series = item["0020000E"]["Value"][0]
        body = await served.client.get(
            f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert body.status_code == 200
        payload = body.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
        found[instance] = hashlib.sha256(payload).hexdigest()
    return found


def file_sha256(paths: list[Path]) -> dict[str, str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): hashlib.sha256(
            p.read_bytes()
        ).hexdigest()
        for p in paths
    }


@pytest.mark.parametrize("kind", ["folder", "zip", "iso"])
async def test_a_file_set_imports_completely_and_again_stores_nothing(
    served: ArchiveUnderTest, tmp_path: Path, kind: str
) -> None:
    medium = write_fileset(tmp_path / "cd")
    source = {
        "folder": lambda: medium.root,
        "zip": lambda: zip_of(medium, tmp_path / "cd.zip"),
        "iso": lambda: iso_of(medium, tmp_path / "cd.iso"),
    }[kind]()
    trail = await trail_of(served)

    first = await import_paths(served.archive, trail, [source])

    assert [o.status for o in first.outcomes] == [Status.STORED] * len(SHAPES)
    assert {o.member for o in first.outcomes} == {p.relative_to(medium.root).as_posix() for p in medium.files}
    # Byte for byte what the medium holds.
    assert await stored_sha256(served, medium.samples[0].study) == file_sha256(medium.files)

    again = await import_paths(served.archive, trail, [source])
    assert [o.status for o in again.outcomes] == [Status.PRESENT] * len(SHAPES)
    assert {o.sop_instance_uid for o in again.outcomes} == {s.instance for s in medium.samples}


async def test_unreadable_members_are_reported_and_the_rest_stored(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    medium = write_fileset(tmp_path / "cd", ("ct", "mr"))
    loose = tmp_path / "loose"
    shutil.copytree(medium.root, loose / "cd")
    # A folder without a DICOMDIR next to the file-set: every file is tried.
    (loose / "extra").mkdir()
    (loose / "extra" / "notes.txt").write_text("not an image")
    truncated = medium.files[0].read_bytes()[:300]
    (loose / "extra" / "TRUNC").write_bytes(truncated)
    # A file the DICOMDIR references and the medium lacks.
    (loose / "cd" / medium.files[1].relative_to(medium.root)).unlink()

    report = await import_paths(
        served.archive, await trail_of(served), [loose, tmp_path / "nothing-here.iso"]
    )

    by_member = {(o.volume, o.member): o for o in report.outcomes}
    statuses = sorted(o.status.value for o in report.outcomes)
    assert statuses == ["stored", "unreadable", "unreadable", "unreadable", "unreadable"]
    assert by_member[(str(loose), "extra/notes.txt")].status is Status.UNREADABLE
    assert by_member[(str(loose), "extra/TRUNC")].status is Status.UNREADABLE
    missing = [o for o in report.outcomes if o.reason and "DICOMDIR" in o.reason]
    assert len(missing) == 1 and missing[0].member.endswith("IM000000")
    assert report.count(Status.STORED) == 1


async def test_a_cancelled_import_leaves_nothing_half_written(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    medium = write_fileset(tmp_path / "cd", ("ct",) * 40)
    source = zip_of(medium, tmp_path / "cd.zip")
    first_batch = asyncio.Event()

    def listener(tally: Tally, outcomes: object) -> None:
        if tally.files_done:
            first_batch.set()

    task = asyncio.create_task(import_paths(served.archive, await trail_of(served), [source], None, listener))
    await first_batch.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with served.archive.pool.acquire() as conn:
        pending = await conn.fetchval("SELECT count(*) FROM instances WHERE status = 0")
        stored = await conn.fetchval("SELECT count(*) FROM instances WHERE status = 1")
    assert pending == 0
    assert 0 < stored < 40
    spool = served.settings.spool_path
    assert not [p for p in spool.iterdir() if p.name.startswith("import-")]

    rest = await import_paths(served.archive, await trail_of(served), [source])
    assert rest.count(Status.PRESENT) == stored
    assert rest.count(Status.STORED) == 40 - stored


def _report_counts(report: ImportReport) -> dict[str, int]:
    return {s.value: report.count(s) for s in Status}


async def test_samples_on_the_medium_are_the_ones_stored(served: ArchiveUnderTest, tmp_path: Path) -> None:
    medium = write_fileset(tmp_path / "cd", ("ct", "rle"))
    report = await import_paths(served.archive, await trail_of(served), [iso_of(medium, tmp_path / "cd.iso")])
    assert _report_counts(report) == {"stored": 2, "already present": 0, "refused": 0, "unreadable": 0}
    response = await served.client.get(
        f"/dicom-web/studies/{medium.samples[0].study}/series/{medium.samples[1].series}"
        f"/instances/{medium.samples[1].instance}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    payload = response.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    stored = pydicom.dcmread(io.BytesIO(payload))
    assert stored.pixel_array.tolist() == medium.samples[1].dataset.pixel_array.tolist()
