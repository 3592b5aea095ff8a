"""The console's jobs: send a study to a known AE, import a CD's ZIP file from the browser,
and follow either job's progress on its page (a reload shows the newest; no script).

Each action calls the service of its REST endpoint (``POST /api/studies/{s}/send``,
``POST /api/imports``), which records it in the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from app.errors import BadRequest, FilmlessError, PayloadTooLarge
from app.http.console import Staff, StaffFollowingJob, StaffImporting, StaffSendingForm, check_csrf
from app.http.deps import ArchiveDep, JobsDep
from app.http.errors import audit_failure
from app.routers.console import console_page
from app.routers.uids import StudyUID
from app.services import import_jobs, jobs, send

router = APIRouter(prefix="/console", include_in_schema=False)

#: Outcomes shown on a job's page (the rest through ``GET /api/jobs/{id}``).
SHOWN_OUTCOMES = 200
#: Room for the form's boundaries and its CSRF field around the ZIP file.
_FORM_OVERHEAD = 64 << 10
_CHUNK = 1 << 20


async def _failed(request: Request, staff: Staff, exc: FilmlessError) -> Response:
    """The reason on a page, recorded as the error handler would have (the page answers
    in its stead)."""
    await audit_failure(request, exc.status, exc.message)
    return console_page("console_message.html", request, exc.status, signed=staff.signed, message=str(exc))


def _to_job(job_id: str) -> Response:
    # 303: reloading the job's page does not send or import again.
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


@router.post("/studies/{study}/send")
async def send_study(
    request: Request, study: StudyUID, archive: ArchiveDep, jobs_: JobsDep, staff: StaffSendingForm,
    destination: Annotated[str, Form(min_length=1, max_length=16)],
) -> Response:  # fmt: skip
    """Send the study to one of the hospital's known destinations, as a job."""
    try:
        job = await send.submit(archive, jobs_, staff.trail, study, send.Destination(ae_title=destination))
    except FilmlessError as exc:
        return await _failed(request, staff, exc)
    return _to_job(job.id)


@router.get("/imports")
async def import_page(request: Request, archive: ArchiveDep, staff: StaffImporting) -> Response:
    return console_page(
        "console_import.html", request, signed=staff.signed, max_size=archive.settings.max_import_size
    )


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


@router.post("/imports")
async def import_upload(
    request: Request, archive: ArchiveDep, jobs_: JobsDep, staff: StaffImporting
) -> Response:
    """A CD's ZIP file posted by a plain multipart form, imported as a job.

    The form is parsed here rather than by a ``Form`` dependency so that an upload larger
    than ``FILMLESS_MAX_IMPORT_SIZE`` is refused by its Content-Length before any of it is
    spooled; the CSRF token is checked before the import starts."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > archive.settings.max_import_size + _FORM_OVERHEAD:
        return await _failed(
            request, staff, PayloadTooLarge(f"an import is at most {archive.settings.max_import_size} bytes")
        )
    async with request.form(max_files=1, max_fields=2) as form:
        sent = form.get("csrf")
        check_csrf(staff.signed.csrf, sent if isinstance(sent, str) else "")
        upload = form.get("file")
        try:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise BadRequest("choose the ZIP file to import")
            # A browser labels a .zip by the platform's idea of it; the service checks
            # the content itself (a ZIP's central directory).
            job = await import_jobs.submit(
                archive, jobs_, staff.trail, _chunks(upload), upload.content_type or "application/zip", None
            )
        except FilmlessError as exc:
            return await _failed(request, staff, exc)
    return _to_job(job.id)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, archive: ArchiveDep, staff: StaffFollowingJob) -> Response:
    try:
        job = await jobs.read(archive, staff.trail, job_id, SHOWN_OUTCOMES, 0)
    except FilmlessError as exc:
        return await _failed(request, staff, exc)
    return console_page("console_job.html", request, signed=staff.signed, job=job, shown=SHOWN_OUTCOMES)
