"""QIDO-RS routes (PS3.18 §10.6) under ``/dicom-web``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import ArchiveDep, Reader, RootDep
from app.dicom.levels import Level
from app.dicom.negotiation import DICOM_JSON, negotiate_json
from app.routers.responses import json_response
from app.routers.uids import SeriesUID, StudyUID
from app.services import qido

router = APIRouter(prefix="/dicom-web", tags=["QIDO-RS"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "Matches, as a DICOM JSON array (possibly empty)"},
    400: {"description": "An invalid query parameter, named in the message"},
    406: {"description": "No acceptable media type"},
}


async def _search(
    request: Request, archive: ArchiveDep, root: str, level: Level, scope: dict[str, str] | None = None
) -> Response:
    media_type = negotiate_json(request.headers.get("accept"))
    result = await qido.search(archive, level, request.query_params.multi_items(), root, scope)
    headers = {"Warning": result.warning} if result.warning else {}
    return await json_response(request, qido.encode(result.matches), media_type, headers)


@router.get("/studies", summary="Search for studies", responses=_RESPONSES)
async def search_studies(request: Request, archive: ArchiveDep, root: RootDep, _: Reader) -> Response:
    return await _search(request, archive, root, Level.STUDY)


@router.get("/series", summary="Search for series", responses=_RESPONSES)
async def search_series(request: Request, archive: ArchiveDep, root: RootDep, _: Reader) -> Response:
    return await _search(request, archive, root, Level.SERIES)


@router.get("/instances", summary="Search for instances", responses=_RESPONSES)
async def search_instances(request: Request, archive: ArchiveDep, root: RootDep, _: Reader) -> Response:
    return await _search(request, archive, root, Level.INSTANCE)


@router.get("/studies/{study}/series", summary="Search for a study's series", responses=_RESPONSES)
async def search_study_series(
    request: Request, archive: ArchiveDep, root: RootDep, _: Reader, study: StudyUID
) -> Response:
    return await _search(request, archive, root, Level.SERIES, {"0020000D": study})


@router.get("/studies/{study}/instances", summary="Search for a study's instances", responses=_RESPONSES)
async def search_study_instances(
    request: Request, archive: ArchiveDep, root: RootDep, _: Reader, study: StudyUID
) -> Response:
    return await _search(request, archive, root, Level.INSTANCE, {"0020000D": study})


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="Search for a series' instances",
    responses=_RESPONSES,
)
async def search_series_instances(
    request: Request, archive: ArchiveDep, root: RootDep, _: Reader, study: StudyUID, series: SeriesUID
) -> Response:
    return await _search(request, archive, root, Level.INSTANCE, {"0020000D": study, "0020000E": series})
