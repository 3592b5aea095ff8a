"""WADO-URI (PS3.18 §9): one object by its three UIDs in query parameters, for the many
systems that link to images this way."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.dicom.rendering import parse_uri_params
from app.dicom.transfer_syntaxes import EXPLICIT_VR_LITTLE_ENDIAN
from app.dicom.uids import is_uid
from app.errors import BadRequest, NotAcceptable
from app.http.deps import ArchiveDep, UriRetriever
from app.routers.openapi import WADO_URI_QUERY, binary, error
from app.routers.responses import stream
from app.services import rendered, wado

router = APIRouter(tags=["WADO-URI"])


def _uid(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise BadRequest(f"WADO-URI parameter {name!r} is required")
    if not is_uid(value):
        raise BadRequest(f"WADO-URI parameter {name!r}: {value!r} is not a valid UID")
    return value


@router.get(
    "/wado",
    summary="Retrieve one object (WADO-URI)",
    responses={
        200: binary(
            "The object as stored (or converted), or its image rendered",
            "application/dicom",
            "image/jpeg",
            "image/png",
            "image/gif",
        ),
        400: error("A missing or wrong requestType, or a missing or invalid UID"),
        404: error("No such object"),
        406: error("A content type or transfer syntax the archive cannot produce"),
    },
    response_class=StreamingResponse,
    openapi_extra=WADO_URI_QUERY,
)
async def wado_uri(request: Request, archive: ArchiveDep, caller: UriRetriever) -> StreamingResponse:
    params = request.query_params
    if params.get("requestType") != "WADO":
        raise BadRequest("WADO-URI parameter 'requestType' must be WADO (PS3.18 §9.1.2.1)")
    study, series, instance = (
        _uid(request, "studyUID"),
        _uid(request, "seriesUID"),
        _uid(request, "objectUID"),
    )
    if params.get("anonymize") == "yes":
        raise NotAcceptable("anonymize=yes is not supported")
    # Without the parameter: Explicit VR Little Endian (PS3.18 §9.1.2.2.4), unless the
    # archive is set to send instances as stored. "*" is "as stored", as viewers ask (the
    # WADO-RS form of PS3.18 §8.7.3.5.2).
    syntax = params.get("transferSyntax") or (
        "*" if archive.settings.retrieve_as_stored else EXPLICIT_VR_LITTLE_ENDIAN
    )
    if syntax != "*" and not is_uid(syntax):
        raise BadRequest(f"WADO-URI parameter 'transferSyntax': {syntax!r} is not a valid UID")
    content_type = _content_type(params.get("contentType"))
    if content_type != "application/dicom":
        options = parse_uri_params(params.multi_items())
        image = await rendered.uri_image(
            archive, caller.trail, study, series, instance, content_type, options
        )
        if image is not None:
            return stream(image)
        if params.get("contentType"):
            raise NotAcceptable(f"instance {instance} has no image to render as {content_type}")
    return stream(await wado.single_object(archive, caller.trail, study, series, instance, syntax))


_TYPES = ("application/dicom", "image/jpeg", "image/png", "image/gif")


def _content_type(value: str | None) -> str:
    """PS3.18 §9.1.2.2.1: a list of types in preference order; without one, image/jpeg
    for objects with pixel data (and application/dicom for the others)."""
    if value is None:
        return "image/jpeg"
    for item in value.split(","):
        wanted = item.split(";")[0].strip().lower()
        if wanted in _TYPES:
            return wanted
        if wanted in ("*/*", "image/*"):
            return "image/jpeg"
        if wanted == "application/*":
            return "application/dicom"
    raise NotAcceptable(f"contentType {value!r}: this archive sends {', '.join(_TYPES)}")
