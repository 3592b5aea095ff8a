"""WADO-RS routes (PS3.18 §10.4) under ``/dicom-web``: instances, metadata, frames and
bulk data."""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from app.dicom.negotiation import negotiate_bulk, negotiate_dicom, negotiate_json
from app.errors import BadRequest
from app.http.deps import ArchiveDep, Caller, Downloader, MetadataReader, Retriever, RootDep
from app.routers.openapi import MULTIPART_DICOM, MULTIPART_OCTETS, binary, dicom_json, error
from app.routers.responses import immutable, json_response
from app.routers.uids import InstanceUID, SeriesUID, StudyUID
from app.services import frames, wado

router = APIRouter(prefix="/dicom-web", tags=["WADO-RS"])

_RETRIEVE: dict[int | str, dict[str, object]] = {
    200: binary(
        "The instances, in Explicit VR Little Endian unless the client asks for another transfer "
        "syntax, or * for as stored",
        MULTIPART_DICOM,
    ),
    206: binary(
        "Some instances left out: they cannot be converted to the transfer syntax asked for "
        "(the Warning header names them)",
        MULTIPART_DICOM,
    ),
    404: error("No such study, series or instance"),
    406: error("No acceptable media type, or a transfer syntax the archive cannot produce"),
}
_METADATA: dict[int | str, dict[str, object]] = {
    200: dicom_json("DICOM JSON of every instance, bulk values as BulkDataURI"),
    304: {"description": "Unchanged since the ETag given in If-None-Match"},
    404: error("No such study, series or instance"),
    406: error("No acceptable media type"),
}


async def _metadata(
    request: Request,
    archive: ArchiveDep,
    root: str,
    caller: Caller,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    media_type = negotiate_json(request.headers.get("accept"))
    if_none_match = request.headers.get("if-none-match")
    found = await wado.metadata(archive, caller.trail, root, study, series, instance, if_none_match)
    # Revalidate every time (no-cache): a study grows as instances arrive.
    headers = {"ETag": found.etag, "Cache-Control": "private, no-cache"}
    if found.body is None:
        return Response(status_code=304, headers=headers)
    return await json_response(request, found.body, media_type, headers)


@router.get(
    "/studies/{study}", summary="Retrieve a study", responses=_RETRIEVE, response_class=StreamingResponse
)
async def retrieve_study(
    request: Request, archive: ArchiveDep, caller: Downloader, study: StudyUID
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"), archive.settings.retrieve_as_stored)
    body = await wado.instances(archive, caller.trail, choice, study)
    return immutable(body)


@router.get(
    "/studies/{study}/series/{series}",
    summary="Retrieve a series",
    responses=_RETRIEVE,
    response_class=StreamingResponse,
)
async def retrieve_series(
    request: Request, archive: ArchiveDep, caller: Downloader, study: StudyUID, series: SeriesUID
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"), archive.settings.retrieve_as_stored)
    body = await wado.instances(archive, caller.trail, choice, study, series)
    return immutable(body)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="Retrieve an instance",
    responses=_RETRIEVE,
    response_class=StreamingResponse,
)
async def retrieve_instance(
    request: Request,
    archive: ArchiveDep,
    caller: Downloader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> StreamingResponse:
    choice = negotiate_dicom(request.headers.get("accept"), archive.settings.retrieve_as_stored)
    body = await wado.instances(archive, caller.trail, choice, study, series, instance)
    return immutable(body)


@router.get("/studies/{study}/metadata", summary="Retrieve a study's metadata", responses=_METADATA)
async def study_metadata(
    request: Request, archive: ArchiveDep, root: RootDep, caller: MetadataReader, study: StudyUID
) -> Response:
    return await _metadata(request, archive, root, caller, study)


@router.get(
    "/studies/{study}/series/{series}/metadata", summary="Retrieve a series' metadata", responses=_METADATA
)
async def series_metadata(
    request: Request,
    archive: ArchiveDep,
    root: RootDep,
    caller: MetadataReader,
    study: StudyUID,
    series: SeriesUID,
) -> Response:
    return await _metadata(request, archive, root, caller, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="Retrieve an instance's metadata",
    responses=_METADATA,
)
async def instance_metadata(
    request: Request,
    archive: ArchiveDep,
    root: RootDep,
    caller: MetadataReader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> Response:
    return await _metadata(request, archive, root, caller, study, series, instance)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}",
    summary="Retrieve frames of an instance",
    responses={
        200: binary("One part per frame, in request order", MULTIPART_OCTETS),
        400: error("A malformed frame list"),
        404: error("No such instance, or a frame number beyond its frames"),
        406: error("No acceptable media type, or a transfer syntax the archive cannot produce"),
    },
    response_class=StreamingResponse,
)
async def retrieve_frames(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    frame_list: str = Path(description="Comma-separated 1-based frame numbers, e.g. 1,3,5"),
) -> StreamingResponse:
    numbers = frames.parse_frame_list(frame_list)
    accept = request.headers.get("accept")
    return immutable(await frames.frames(archive, caller.trail, accept, study, series, instance, numbers))


# At most 18 digits: no value is larger than an exabyte, and int() of a longer string of
# digits is slow or refused.
_RANGE = re.compile(r"^bytes=([0-9]{1,18})-([0-9]{0,18})$")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}",
    summary="Retrieve a bulk value named by a BulkDataURI",
    responses={
        200: binary(
            "The value: multipart by default, or bare bytes", MULTIPART_OCTETS, "application/octet-stream"
        ),
        206: binary("The requested byte range of a single-part bulk value", "application/octet-stream"),
        404: error("No such instance or bulk value"),
        416: error("A range beyond the end of the value"),
    },
    response_class=StreamingResponse,
)
async def retrieve_bulkdata(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    path: str = Path(pattern=r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$", description="Tag path of the value"),
) -> StreamingResponse:
    multipart = negotiate_bulk(request.headers.get("accept"))
    byte_range = _parse_range(request.headers.get("range")) if not multipart else None
    body = await wado.bulkdata(archive, caller.trail, study, series, instance, path, multipart, byte_range)
    return immutable(body)


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
