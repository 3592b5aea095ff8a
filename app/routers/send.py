"""``POST /api/studies/{study}/send``: a study sent to another archive, as a job."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.http.deps import ArchiveDep, JobsDep, Sender
from app.routers.jobs import JobQueued
from app.routers.uids import StudyUID
from app.services import send

router = APIRouter(prefix="/api/studies", tags=["Send"])


class SendIn(BaseModel):
    destination: str | None = Field(
        default=None, max_length=16, description="AE title of a known destination of the caller's hospital"
    )
    dicomweb: str | None = Field(
        default=None, max_length=2000, description="A STOW-RS root listed in FILMLESS_SEND_DICOMWEB_URLS"
    )
    token: str | None = Field(
        default=None, max_length=8000, description="Bearer token for the STOW-RS archive (never stored)"
    )


@router.post(
    "/{study}/send",
    status_code=202,
    summary="Send a study by C-STORE or STOW-RS, as a job",
    responses={
        202: {
            "model": JobQueued,
            "description": "Queued; the job (in the body and Location) reports each instance",
        },
        400: {"description": "Neither or both destinations, or one the archive may not send to"},
        404: {"description": "No such study in the caller's reach, or no such AE of their hospital"},
    },
)
async def send_study(
    study: StudyUID, body: SendIn, archive: ArchiveDep, jobs: JobsDep, caller: Sender
) -> JSONResponse:
    """Needs the download right: sending copies whole instances out of the archive, as a
    download does."""
    destination = send.Destination(body.destination, body.dicomweb, body.token)
    job = await send.submit(archive, jobs, caller.trail, study, destination)
    location = f"/api/jobs/{job.id}"
    return JSONResponse(
        {"id": job.id, "state": "queued", "job": location}, 202, headers={"Location": location}
    )
