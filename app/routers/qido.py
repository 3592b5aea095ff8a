"""QIDO-RS routes (PS3.18 §10.6) under ``/dicom-web``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.dicom.levels import Level
from app.dicom.negotiation import negotiate_json
from app.http.deps import ArchiveDep, Caller, RootDep, Searcher
from app.routers.openapi import QIDO_QUERY, dicom_json, error
from app.routers.responses import json_response
from app.routers.uids import SeriesUID, StudyUID
from app.services import qido

router = APIRouter(prefix="/dicom-web", tags=["QIDO-RS"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: dicom_json("Matches, as a DICOM JSON array (possibly empty)"),
    400: error("An invalid query parameter, named in the message"),
    406: error("No acceptable media type"),
}


async def _search(
    request: Request,
    archive: ArchiveDep,
    root: str,
    caller: Caller,
    level: Level,
    path_uids: dict[str, str] | None = None,
) -> Response:
    media_type = negotiate_json(request.headers.get("accept"))
    params = request.query_params.multi_items()
    result = await qido.search_recorded(archive, caller.trail, level, params, root, path_uids)
    headers = {"Warning": result.warning} if result.warning else {}
    return await json_response(request, qido.encode(result.matches), media_type, headers)


@router.get("/studies", summary="Search for studies", responses=_RESPONSES, openapi_extra=QIDO_QUERY)
async def search_studies(request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher) -> Response:
    return await _search(request, archive, root, caller, Level.STUDY)


@router.get("/series", summary="Search for series", responses=_RESPONSES, openapi_extra=QIDO_QUERY)
async def search_series(request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher) -> Response:
    return await _search(request, archive, root, caller, Level.SERIES)


@router.get("/instances", summary="Search for instances", responses=_RESPONSES, openapi_extra=QIDO_QUERY)
async def search_instances(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher
) -> Response:
    return await _search(request, archive, root, caller, Level.INSTANCE)


@router.get(
    "/studies/{study}/series",
    summary="Search for a study's series",
    responses=_RESPONSES,
    openapi_extra=QIDO_QUERY,
)
async def search_study_series(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher, study: StudyUID
) -> Response:
    return await _search(request, archive, root, caller, Level.SERIES, {"0020000D": study})


@router.get(
    "/studies/{study}/instances",
    summary="Search for a study's instances",
    responses=_RESPONSES,
    openapi_extra=QIDO_QUERY,
)
async def search_study_instances(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher, study: StudyUID
) -> Response:
    return await _search(request, archive, root, caller, Level.INSTANCE, {"0020000D": study})


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="Search for a series' instances",
    responses=_RESPONSES,
    openapi_extra=QIDO_QUERY,
)
async def search_series_instances(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Searcher, study: StudyUID, series: SeriesUID
) -> Response:
    return await _search(
        request, archive, root, caller, Level.INSTANCE, {"0020000D": study, "0020000E": series}
    )
