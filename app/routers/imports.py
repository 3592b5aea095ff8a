"""``POST /api/imports``: a ZIP file of DICOM files (a CD's content) imported as a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.dicom.reconciliation import Coercion
from app.http.deps import ArchiveDep, Importer, JobsDep
from app.routers.jobs import JobQueued
from app.services import import_jobs

router = APIRouter(prefix="/api/imports", tags=["Import"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


_PN = Query(max_length=320, description="The local Patient's Name (DICOM PN, e.g. Family^Given)")


@router.post(
    "",
    status_code=202,
    summary="Import a ZIP file of DICOM files (a CD's content) as a job",
    openapi_extra=_BODY,
    responses={
        202: {
            "model": JobQueued,
            "description": "Received; the import runs as the job named in the body and Location",
        },
        413: {"description": "Larger than FILMLESS_MAX_IMPORT_SIZE"},
        415: {"description": "Not a ZIP file"},
    },
)
async def create_import(
    request: Request,
    archive: ArchiveDep,
    jobs: JobsDep,
    caller: Importer,
    issuer: Annotated[str | None, Query(max_length=64, description="Issuer of Patient ID where none")] = None,
    patient_id: Annotated[str | None, Query(max_length=64, description="The local Patient ID")] = None,
    patient_name: Annotated[str | None, _PN] = None,
    birth_date: Annotated[str | None, Query(pattern=r"^\d{8}$", description="YYYYMMDD")] = None,
) -> JSONResponse:
    """Needs the store right. The same import as ``filmless import``, reconciliation
    (IHE IRWF.b) included: see the README."""
    coercion = Coercion(issuer, patient_id, patient_name, birth_date)
    job = await import_jobs.submit(
        archive, jobs, caller.trail, request.stream(), request.headers.get("content-type"), coercion or None
    )
    location = f"/api/jobs/{job.id}"
    return JSONResponse(
        {"id": job.id, "state": "queued", "job": location}, 202, headers={"Location": location}
    )
