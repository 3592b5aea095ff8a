"""STOW-RS routes (PS3.18 §10.5) under ``/dicom-web``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.dicom.negotiation import negotiate_json
from app.http.deps import ArchiveDep, Caller, RootDep, Uploader
from app.routers.openapi import STOW_BODY, STOW_RESULT, error
from app.routers.uids import StudyUID
from app.services import stow

router = APIRouter(prefix="/dicom-web", tags=["STOW-RS"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {**STOW_RESULT, "description": "Every instance was stored"},
    202: {**STOW_RESULT, "description": "Some instances were stored; FailedSOPSequence lists the others"},
    400: error("Malformed request, or no part was a DICOM instance"),
    409: {**STOW_RESULT, "description": "No instance could be stored (see FailedSOPSequence)"},
    413: error("A part or the body exceeds the configured limit"),
    415: error('Content-Type is not multipart/related; type="application/dicom" or application/dicom'),
}


async def _store(
    request: Request, archive: ArchiveDep, root: str, caller: Caller, study: str | None
) -> JSONResponse:
    media_type = negotiate_json(request.headers.get("accept"))
    content_type = request.headers.get("content-type")
    result = await stow.store(archive, caller.trail, request.stream(), content_type, root, study)
    return JSONResponse(result.body, status_code=result.status, media_type=media_type)


@router.post("/studies", summary="Store instances", responses=_RESPONSES, openapi_extra=STOW_BODY)
async def store_instances(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Uploader
) -> JSONResponse:
    return await _store(request, archive, root, caller, None)


@router.post(
    "/studies/{study}", summary="Store instances of one study", responses=_RESPONSES, openapi_extra=STOW_BODY
)
async def store_study_instances(
    request: Request, archive: ArchiveDep, root: RootDep, caller: Uploader, study: StudyUID
) -> JSONResponse:
    return await _store(request, archive, root, caller, study)
