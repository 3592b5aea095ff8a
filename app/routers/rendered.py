"""Rendered images and thumbnails (PS3.18 §10.4.1.1.3, §10.4.1.1.6) under ``/dicom-web``,
for clients that cannot decode DICOM pixel data: browsers, mail, reports."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.dicom.negotiation import RenderedChoice, negotiate_rendered
from app.dicom.rendering import RenderOptions, parse_rendered_params
from app.http.deps import ArchiveDep, Retriever
from app.routers.openapi import binary, error
from app.routers.responses import immutable
from app.routers.uids import InstanceUID, SeriesUID, StudyUID
from app.services import frames, rendered

# Images and multipart bodies, never JSON: the document lists only their media types.
router = APIRouter(prefix="/dicom-web", tags=["Rendered"], default_response_class=StreamingResponse)

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: binary(
        "The image, or one part per image (multipart/related)",
        "image/jpeg",
        "image/png",
        "image/gif",
        'multipart/related; type="image/jpeg"',
    ),
    400: error("An invalid window, viewport, quality or annotation"),
    404: error("No such study, series, instance or frame"),
    406: error("No acceptable image type, or pixel data the archive cannot decode"),
}
_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


def _choice(request: Request, several: bool) -> RenderedChoice:
    # PS3.18 §8.3.3.1: an "accept" query parameter stands for the Accept header.
    accept = request.query_params.get("accept") or request.headers.get("accept")
    return negotiate_rendered(accept, several)


def _options(request: Request) -> RenderOptions:
    return parse_rendered_params(request.query_params.multi_items())


@router.get("/studies/{study}/rendered", summary="Render a study", responses=_RESPONSES)
async def rendered_study(
    request: Request, archive: ArchiveDep, caller: Retriever, study: StudyUID
) -> StreamingResponse:
    body = await rendered.rendered_collection(
        archive, caller.trail, _choice(request, True), _options(request), study, None
    )
    return immutable(body)


@router.get("/studies/{study}/series/{series}/rendered", summary="Render a series", responses=_RESPONSES)
async def rendered_series(
    request: Request, archive: ArchiveDep, caller: Retriever, study: StudyUID, series: SeriesUID
) -> StreamingResponse:
    choice, options = _choice(request, True), _options(request)
    body = await rendered.rendered_collection(archive, caller.trail, choice, options, study, series)
    return immutable(body)


@router.get(_INSTANCE + "/rendered", summary="Render an instance", responses=_RESPONSES)
async def rendered_instance(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> StreamingResponse:
    choice, options = _choice(request, False), _options(request)
    body = await rendered.rendered_instance(archive, caller.trail, choice, options, study, series, instance)
    return immutable(body)


@router.get(_INSTANCE + "/frames/{frame_list}/rendered", summary="Render frames", responses=_RESPONSES)
async def rendered_frames(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    frame_list: str,
) -> StreamingResponse:
    numbers = frames.parse_frame_list(frame_list)
    choice, options = _choice(request, len(numbers) > 1), _options(request)
    body = await rendered.rendered_instance(
        archive, caller.trail, choice, options, study, series, instance, numbers
    )
    return immutable(body)


@router.get("/studies/{study}/thumbnail", summary="A study's thumbnail", responses=_RESPONSES)
async def study_thumbnail(
    request: Request, archive: ArchiveDep, caller: Retriever, study: StudyUID
) -> StreamingResponse:
    body = await rendered.thumbnail(archive, caller.trail, _choice(request, False), _options(request), study)
    return immutable(body)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="A series' thumbnail", responses=_RESPONSES)
async def series_thumbnail(
    request: Request, archive: ArchiveDep, caller: Retriever, study: StudyUID, series: SeriesUID
) -> StreamingResponse:
    choice, options = _choice(request, False), _options(request)
    body = await rendered.thumbnail(archive, caller.trail, choice, options, study, series)
    return immutable(body)


@router.get(_INSTANCE + "/thumbnail", summary="An instance's thumbnail", responses=_RESPONSES)
async def instance_thumbnail(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> StreamingResponse:
    choice, options = _choice(request, False), _options(request)
    body = await rendered.thumbnail(archive, caller.trail, choice, options, study, series, instance)
    return immutable(body)


@router.get(_INSTANCE + "/frames/{frame_list}/thumbnail", summary="A frame's thumbnail", responses=_RESPONSES)
async def frame_thumbnail(
    request: Request,
    archive: ArchiveDep,
    caller: Retriever,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    frame_list: str,
) -> StreamingResponse:
    (number, *_) = frames.parse_frame_list(frame_list)
    choice, options = _choice(request, False), _options(request)
    body = await rendered.thumbnail(archive, caller.trail, choice, options, study, series, instance, number)
    return immutable(body)
