"""Deletion routes under ``/dicom-web``: a study, a series or an instance."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.http.deps import ArchiveDep, Deleter
from app.routers.uids import InstanceUID, SeriesUID, StudyUID
from app.services import delete

router = APIRouter(prefix="/dicom-web", tags=["Delete"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    204: {"description": "Deleted: the index rows at once, the objects right after"},
    404: {"description": "Nothing stored in scope (also when deleted before)"},
}


@router.delete("/studies/{study}", status_code=204, summary="Delete a study", responses=_RESPONSES)
async def delete_study(archive: ArchiveDep, caller: Deleter, study: StudyUID) -> Response:
    await delete.delete(archive, caller.trail, study)
    return Response(status_code=204)


@router.delete(
    "/studies/{study}/series/{series}", status_code=204, summary="Delete a series", responses=_RESPONSES
)
async def delete_series(archive: ArchiveDep, caller: Deleter, study: StudyUID, series: SeriesUID) -> Response:
    await delete.delete(archive, caller.trail, study, series)
    return Response(status_code=204)


@router.delete(
    "/studies/{study}/series/{series}/instances/{instance}",
    status_code=204,
    summary="Delete an instance",
    responses=_RESPONSES,
)
async def delete_instance(
    archive: ArchiveDep, caller: Deleter, study: StudyUID, series: SeriesUID, instance: InstanceUID
) -> Response:
    await delete.delete(archive, caller.trail, study, series, instance)
    return Response(status_code=204)
