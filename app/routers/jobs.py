"""Background jobs under ``/api/jobs``: an import's or a send's progress and outcomes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.http.deps import ArchiveDep, JobReader
from app.services import jobs

router = APIRouter(prefix="/api/jobs", tags=["Jobs"])


@router.get(
    "/{job_id}",
    summary="A job's state, progress and per-instance outcomes",
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
