"""WADO-RS routes (PS3.18 §10.4) under ``/dicom-web``: instances, metadata, bulk data."""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from app.deps import ArchiveDep, Reader, RootDep
from app.errors import BadRequest
from app.routers.negotiation import DICOM_JSON, negotiate_bulk, negotiate_dicom, negotiate_json
from app.routers.uids import InstanceUID, SeriesUID, StudyUID
from app.services import wado
from app.services.wado import Body

router = APIRouter(prefix="/dicom-web", tags=["WADO-RS"])

_DICOM = 'multipart/related; type="application/dicom"'
_RETRIEVE: dict[int | str, dict[str, object]] = {
    200: {"content": {_DICOM: {}}, "description": "The instances, as stored"},
    404: {"description": "No such study, series or instance"},
    406: {"description": "No acceptable media type, or a transfer syntax the archive cannot produce"},
}
_METADATA: dict[int | str, dict[str, object]] = {
    200: {
        "content": {DICOM_JSON: {}},
        "description": "DICOM JSON of every instance, bulk values as BulkDataURI",
    },
    404: {"description": "No such study, series or instance"},
    406: {"description": "No acceptable media type"},
}


def _stream(body: Body) -> StreamingResponse:
    headers = {"Content-Length": str(body.length)} if body.length is not None else None
    return StreamingResponse(body.chunks, media_type=body.media_type, headers=headers)


async def _metadata(
    request: Request,
    archive: ArchiveDep,
    root: str,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    media_type = negotiate_json(request.headers.get("accept"))
    return Response(await wado.metadata(archive, root, study, series, instance), media_type=media_type)


@router.get(
    "/studies/{study}", summary="Retrieve a study", responses=_RETRIEVE, response_class=StreamingResponse
)
async def retrieve_study(
    request: Request, archive: ArchiveDep, _: Reader, study: StudyUID
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"))
    return _stream(await wado.instances(archive, choice, study))


@router.get(
    "/studies/{study}/series/{series}",
    summary="Retrieve a series",
    responses=_RETRIEVE,
    response_class=StreamingResponse,
)
async def retrieve_series(
    request: Request, archive: ArchiveDep, _: Reader, study: StudyUID, series: SeriesUID
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"))
    return _stream(await wado.instances(archive, choice, study, series))


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="Retrieve an instance",
    responses=_RETRIEVE,
    response_class=StreamingResponse,
)
async def retrieve_instance(
    request: Request,
    archive: ArchiveDep,
    _: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"))
    return _stream(await wado.instances(archive, choice, study, series, instance))


@router.get("/studies/{study}/metadata", summary="Retrieve a study's metadata", responses=_METADATA)
async def study_metadata(
    request: Request, archive: ArchiveDep, root: RootDep, _: Reader, study: StudyUID
) -> Response:
    return await _metadata(request, archive, root, study)


@router.get(
    "/studies/{study}/series/{series}/metadata", summary="Retrieve a series' metadata", responses=_METADATA
)
async def series_metadata(
    request: Request, archive: ArchiveDep, root: RootDep, _: Reader, study: StudyUID, series: SeriesUID
) -> Response:
    return await _metadata(request, archive, root, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="Retrieve an instance's metadata",
    responses=_METADATA,
)
async def instance_metadata(
    request: Request,
    archive: ArchiveDep,
    root: RootDep,
    _: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> Response:
    return await _metadata(request, archive, root, study, series, instance)


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}",
    summary="Retrieve a bulk value named by a BulkDataURI",
    responses={
        200: {
            "content": {
                'multipart/related; type="application/octet-stream"': {},
                "application/octet-stream": {},
            }
        },
        206: {"description": "The requested byte range of a single-part bulk value"},
        404: {"description": "No such instance or bulk value"},
    },
    response_class=StreamingResponse,
)
async def retrieve_bulkdata(
    request: Request,
    archive: ArchiveDep,
    _: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    path: str = Path(pattern=r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$", description="Tag path of the value"),
) -> StreamingResponse:
    multipart = negotiate_bulk(request.headers.get("accept"))
    byte_range = _parse_range(request.headers.get("range")) if not multipart else None
    body = await wado.bulkdata(archive, study, series, instance, path, multipart, byte_range)
    response = _stream(body)
    if body.content_range is not None:
        response.status_code = 206
        response.headers["Content-Range"] = body.content_range
    return response


def _parse_range(value: str | None) -> tuple[int, int | None] | None:
    """One ``bytes=start-[end]`` range (RFC 9110 §14.1.2); other forms are refused."""
    if value is None:
        return None
    match = _RANGE.match(value.strip())
    if not match:
        raise BadRequest("only a single 'bytes=start-end' range is supported")
    start, end = int(match.group(1)), int(match.group(2)) if match.group(2) else None
    if end is not None and end < start:
        raise BadRequest("the range's end is before its start")
    return start, end
