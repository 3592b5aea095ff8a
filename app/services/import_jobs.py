"""An import of an uploaded ZIP file, as a background job: the same import as
``filmless import`` (:mod:`app.services.imports`), its progress and outcomes in the job.

The upload is streamed to a spool file as it arrives, never held in memory, and refused
(413) beyond ``FILMLESS_MAX_IMPORT_SIZE``; the job removes the file when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import zipfile
from collections.abc import AsyncIterable
from pathlib import Path

from app.dicom.reconciliation import Coercion
from app.errors import PayloadTooLarge, UnsupportedMediaType
from app.repository import audit as audit_repository
from app.repository.jobs import NewJob, Progress
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.imports import ImportReport, Listener, MemberOutcome, Status, Tally, import_paths
from app.services.jobs import Jobs, Reporter
from app.settings import Settings

#: What the upload is called in the job's outcomes (never the spool file's path).
UPLOAD_LABEL = "upload.zip"
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


async def submit(
    archive: Archive,
    jobs: Jobs,
    trail: Trail,
    chunks: AsyncIterable[bytes],
    content_type: str | None,
    coercion: Coercion | None,
) -> NewJob:
    """Receive the ZIP file and queue its import for the trail's hospital (recorded)."""
    essence = (content_type or "").split(";")[0].strip().lower()
    if essence not in _ZIP_TYPES:
        raise UnsupportedMediaType("an import takes a ZIP file (application/zip)")
    upload = await _receive(archive.settings, chunks)
    try:
        if not await asyncio.to_thread(zipfile.is_zipfile, upload):
            raise UnsupportedMediaType("the body is not a ZIP file")
        parameters = {
            "source": UPLOAD_LABEL,
            "size": upload.stat().st_size,
            # Which attributes are reconciled, not to what: the job's row carries no PHI.
            "reconcile": [k for k, v in vars(coercion).items() if v is not None] if coercion else [],
        }
        job = await jobs.create("import", trail, parameters)
    except BaseException:
        _discard(upload)
        raise

    async def work(reporter: Reporter) -> None:
        try:
            report = await import_paths(
                archive, trail, [upload], coercion, _listener(reporter), labels=[UPLOAD_LABEL]
            )
            await _audit(archive, trail, report, job)
        finally:
            await asyncio.to_thread(upload.unlink, missing_ok=True)

    jobs.launch(job, work)
    await audit.commit(archive, trail, 202, f"job {job.id}")
    return job


async def _receive(settings: Settings, chunks: AsyncIterable[bytes]) -> Path:
    limit = settings.max_import_size
    spool = settings.spool_path
    await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
    handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix="upload-", suffix=".zip", dir=spool)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"an import is at most {limit} bytes")
                await asyncio.to_thread(file.write, chunk)
    except BaseException:
        _discard(path)
        raise
    return path


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _listener(reporter: Reporter) -> Listener:
    async def listen(tally: Tally, outcomes: list[MemberOutcome]) -> None:
        progress = Progress(
            tally.files_total,
            tally.files_done,
            tally.bytes_total,
            tally.bytes_done,
            {s.value: n for s, n in tally.counts.items()},
        )
        await reporter(progress, [o.as_json() for o in outcomes])

    return listen


async def _audit(archive: Archive, trail: Trail, report: ImportReport, job: NewJob) -> None:
    """The import's own event, when it ends (its instances were audited as stored)."""
    event = trail.child(Transaction.IMPORT)
    event.outcome, event.instances = 200, report.count(Status.STORED)
    event.detail = f"job {job.id}: " + ", ".join(f"{report.count(s)} {s.value}" for s in Status)
    stored = [o for o in report.outcomes if o.status is Status.STORED]
    event.study_uids = sorted({o.study_instance_uid for o in stored if o.study_instance_uid})
    event.owner_hospitals = [trail.event.hospital or ""]
    await audit_repository.record(archive.pool, event)
    await audit.export(archive, [event])
