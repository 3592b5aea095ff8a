"""What a share's recipient opens: the access page at ``/s/{secret}``, the code form at
``/access``, the challenge, a simple viewer, the download, and sharing further.

The link's token (or the code) is a gate: passing it — and the challenge, when there is
one — opens a session, whose own secret the pages then live under (``/s/{session}``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from app.dicom.deidentification import remap_uid
from app.errors import FilmlessError, Forbidden, TooManyRequests
from app.http import trails
from app.http.deps import BaseDep, SharesDep
from app.routers.openapi import binary
from app.routers.pages import dated, page, print_page, summaries
from app.routers.shares_api import created_out
from app.services import share_access
from app.services.audit import Trail, Transaction
from app.services.shares import Access, ShareRequest, Shares, now, principal_for

router = APIRouter(tags=["Share access"])


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _trail(request: Request, access: Access | None) -> Trail:
    trail = trails.start(request, Transaction.SHARE_ACCESS)
    if access is not None:
        trail.identify(principal_for(access.share))
    return trail


async def _unavailable(shares: Shares, request: Request) -> Response:
    await share_access.unavailable(shares, _trail(request, None))
    return page("unavailable.html", 404)


async def _open(shares: Shares, request: Request, access: Access) -> Response:
    """The gate is passed: a session (one use), and on to its page."""
    session = await share_access.open_gate(shares, _trail(request, access), access)
    return RedirectResponse(f"/s/{session}", status_code=303)


@router.get("/s/{secret}", summary="A share's access page", response_class=Response)
async def share_page(secret: str, request: Request, base: BaseDep, shares: SharesDep) -> Response:
    access = await shares.resolve(secret)
    if access is None:
        return await _unavailable(shares, request)
    if not access.via_session:
        if access.needs_challenge:
            return page("challenge.html", challenge=access.share.challenge, action=f"/s/{secret}")
        return await _open(shares, request, access)
    share = access.share
    studies = dated(await share_access.access_page(shares, _trail(request, access), access))
    key = shares.deidentify_key(share)
    return page(
        "share.html", share=share, studies=_shown(studies, key), page=f"/s/{secret}",
        root=f"/share/{secret}/dicom-web", dicomweb=f"{base}/share/{secret}/dicom-web",
        can_download="download" in share.permissions, can_reshare="reshare" in share.permissions,
        deidentified=key is not None, burned_in=await shares.burned_in_warning(share),
    )  # fmt: skip


def _shown(studies: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """What a page shows of studies: for a de-identifying share only what the profile keeps
    (PS3.15 Table E.1-1: the study's date and description are not), under its replacement UID."""
    if key is None:
        return studies
    keep = ("modalities", "num_instances", "num_series", "hospital", "hospital_name")
    return [{**{k: s[k] for k in keep}, "study_instance_uid": remap_uid(key, s["study_instance_uid"]),
             "date": "", "study_description": None} for s in studies]  # fmt: skip


@router.post("/s/{secret}", summary="Answer a share's challenge", response_class=Response)
async def answer_challenge(
    secret: str,
    request: Request,
    shares: SharesDep,
    answer: Annotated[str, Form(max_length=40)],
) -> Response:
    access = await shares.resolve(secret)
    if access is None or access.share.challenge is None or access.via_session:
        return await _unavailable(shares, request)
    return await _challenged(shares, request, access, answer, f"/s/{secret}", None)


async def _challenged(
    shares: Shares, request: Request, access: Access, answer: str, action: str, code: str | None
) -> Response:
    trail = _trail(request, access)
    try:
        session = await share_access.answer_challenge(shares, trail, access, answer, _client(request))
    except (Forbidden, TooManyRequests) as refused:
        challenge = access.share.challenge
        return page("challenge.html", refused.status, challenge=challenge, action=action, code=code,
                    error=refused.message)  # fmt: skip
    return RedirectResponse(f"/s/{session}", status_code=303)


@router.get("/access", summary="The access code form", response_class=Response)
async def code_form() -> Response:
    return page("code.html")


@router.post("/access", summary="Open a share with its access code", response_class=Response)
async def enter_code(
    request: Request,
    shares: SharesDep,
    code: Annotated[str, Form(max_length=40)],
    answer: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    try:
        access = await share_access.enter_code(shares, _trail(request, None), code, _client(request))
    except (Forbidden, TooManyRequests) as refused:
        return page("code.html", refused.status, error=refused.message)
    if access.share.challenge is None:
        return await _open(shares, request, access)
    if answer is None:
        return page("challenge.html", challenge=access.share.challenge, action="/access", code=code)
    return await _challenged(shares, request, access, answer, "/access", code)


async def _session(shares: SharesDep, secret: str) -> Access | None:
    access = await shares.resolve(secret)
    return None if access is None or access.needs_challenge else access


@router.get("/s/{secret}/studies/{study}", summary="A shared study's images", response_class=Response)
async def study_page(secret: str, study: str, request: Request, shares: SharesDep) -> Response:
    access = await _session(shares, secret)
    key = None if access is None else shares.deidentify_key(access.share)
    if access is not None and key is not None:  # a replacement UID: the original it stands for
        study = next((s for s in access.share.studies if remap_uid(key, s) == study), "")
    if access is None or study not in access.share.studies:
        return await _unavailable(shares, request)
    view = await share_access.study_page(shares, _trail(request, access), access, study)
    if view is None:
        return page("unavailable.html", 404)
    series: dict[str, list[str]] = {}
    for series_uid, instance_uid in view.instances:
        if key is not None:
            series_uid, instance_uid = remap_uid(key, series_uid), remap_uid(key, instance_uid)
        series.setdefault(series_uid, []).append(instance_uid)
    series_list = [
        {"uid": uid, "description": f"Series {n}", "images": images}
        for n, (uid, images) in enumerate(series.items(), start=1)
    ]
    (found,) = _shown(dated([view.summary]), key)
    return page("study.html", study=found, series_list=series_list, page=f"/s/{secret}",
                root=f"/share/{secret}/dicom-web")  # fmt: skip


@router.get(
    "/s/{secret}/download",
    summary="Download a share's studies as a ZIP with a DICOMDIR",
    response_class=StreamingResponse,
    responses={200: binary("The ZIP file", "application/zip")},
)
async def download(secret: str, request: Request, shares: SharesDep) -> Response:
    access = await _session(shares, secret)
    if access is None:
        return await _unavailable(shares, request)
    try:
        body = await share_access.download(shares, trails.start(request, Transaction.SHARE_DOWNLOAD), access)
    except Forbidden:
        return page("message.html", 403, heading="Download not offered",
                    message="This share lets you view the images, not download them.")  # fmt: skip
    headers = {"Content-Disposition": 'attachment; filename="images.zip"'}
    return StreamingResponse(body, media_type="application/zip", headers=headers)


@router.get("/s/{secret}/reshare", summary="Form to share further", response_class=Response)
async def reshare_form(secret: str, request: Request, shares: SharesDep) -> Response:
    access = await _session(shares, secret)
    if access is None or "reshare" not in access.share.permissions:
        return await _unavailable(shares, request)
    days = max(1, (access.share.expires_at - now()).days)
    return page("reshare.html", share=access.share, studies=await summaries(shares, access.share.studies),
                page=f"/s/{secret}", max_days=days)  # fmt: skip


@router.post("/s/{secret}/reshare", summary="Share further (a narrower child share)", response_class=Response)
async def reshare(
    secret: str,
    request: Request,
    base: BaseDep,
    shares: SharesDep,
    studies: Annotated[list[str], Form()],
    days: Annotated[int, Form(ge=1)],
    download: Annotated[str | None, Form()] = None,
    recipient: Annotated[str | None, Form(max_length=200)] = None,
    pin: Annotated[str | None, Form(max_length=12)] = None,
) -> Response:
    access = await _session(shares, secret)
    if access is None:
        return await _unavailable(shares, request)
    parent = access.share
    permissions = ["view", "download"] if download == "yes" else ["view"]
    expires = min(parent.expires_at, now() + dt.timedelta(days=days))
    asked = ShareRequest(studies, expires, permissions, recipient=recipient or None,
                         challenge="pin" if pin else None, pin=pin or None)  # fmt: skip
    try:
        created = await share_access.reshare(shares, _trail(request, access), access, asked)
    except FilmlessError as refused:
        return page("reshare.html", refused.status, share=parent, error=refused.message, page=f"/s/{secret}",
                    studies=await summaries(shares, parent.studies), max_days=days)  # fmt: skip
    return await print_page(shares, created_out(created.share, created.token, created.access_code, base), 201)
