"""Background jobs under ``/api/jobs``: an import's or a send's progress and outcomes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.http.deps import ArchiveDep, JobReader
from app.services import jobs

router = APIRouter(prefix="/api/jobs", tags=["Jobs"])

#: A time as the job's row gives it (RFC 3339, with its offset).
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class JobQueued(BaseModel):
    """The answer to a request that starts a job (an import, a send)."""

    id: str
    state: Literal["queued"]
    job: str = Field(description="Where to follow it: GET this path (also in Location)")


class JobProgress(BaseModel):
    items_total: int = Field(description="Instances (or files) known so far")
    items_done: int
    bytes_total: int
    bytes_done: int


class JobOutcome(BaseModel):
    """What became of one instance: an import's member (``volume``, ``member``,
    ``coerced``) or a send's instance (``series_instance_uid``, ``dimse_status``,
    ``attempts``); a field a kind of job does not give is absent."""

    model_config = ConfigDict(extra="allow")

    status: str | None = Field(
        default=None,
        description="Import: stored, already present, refused, unreadable; send: sent, failed",
    )
    reason: str | None = Field(default=None, description="Why it was refused, or could not be read or sent")
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    volume: str | None = None
    member: str | None = None
    coerced: list[str] | None = Field(default=None, description="Attributes reconciled (IHE IRWF.b)")
    dimse_status: str | None = Field(default=None, description="The C-STORE status (PS3.4 §B.2.3), hex")
    attempts: int | None = None


class JobOut(BaseModel):
    id: str
    kind: Literal["import", "send"]
    hospital: str
    subject: str = Field(description="Who started it")
    state: Literal["queued", "running", "done", "failed"]
    parameters: dict[str, Any] = Field(description="What it was asked to do (no PHI)")
    progress: JobProgress
    counts: dict[str, int] = Field(description="Instances by outcome status so far")
    error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    outcomes: list[JobOutcome] = Field(description="In order, from outcomes_offset")
    outcomes_offset: int


@router.get(
    "/{job_id}",
    summary="A job's state, progress and per-instance outcomes",
    response_model=JobOut,
    # Each outcome carries the fields of its kind of job only, as the job recorded it.
    response_model_exclude_unset=True,
    responses={404: {"description": "No such job of the caller's hospital"}},
)
async def read_job(
    job_id: str,
    archive: ArchiveDep,
    caller: JobReader,
    limit: Annotated[int, Query(ge=1, le=jobs.MAX_OUTCOMES)] = jobs.MAX_OUTCOMES,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Any staff of the job's hospital may read it (another hospital's job is a 404).
    ``outcomes`` lists the instances' outcomes in order, ``limit`` at a time from ``offset``."""
    return await jobs.read(archive, caller.trail, job_id, limit, offset)
