"""The patient's own shares in the portal (who opened what, and revoking them), the
ZIP with DICOMDIR of one of their studies (the same download a share's recipient gets),
and a study opened in the share pages' viewer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from app.errors import NotFound
from app.http.deps import ArchiveDep, SharesDep
from app.routers.portal import _csrf, _page, signed_patient
from app.routers.uids import StudyUID
from app.services.audit import Transaction
from app.services.portal import Portal
from app.services.shares import now

router = APIRouter(prefix="/portal", include_in_schema=False)


def _to_portal() -> Response:
    return RedirectResponse("/portal", status_code=303)


@router.get("/shares")
async def own_shares(request: Request, archive: ArchiveDep, shares: SharesDep) -> Response:
    signed = await signed_patient(request, archive, shares, Transaction.SHARE)
    if signed is None:
        return _to_portal()
    patient, trail = signed
    found = await Portal(archive, shares.hasher).own_shares(patient, trail)
    return _page(
        "portal_shares.html", signed_in=True, csrf=_csrf(request, archive, shares), shares=found, at=now()
    )


@router.get("/shares/{share_id}")
async def own_share(request: Request, archive: ArchiveDep, shares: SharesDep, share_id: str) -> Response:
    signed = await signed_patient(request, archive, shares, Transaction.SHARE)
    if signed is None:
        return _to_portal()
    patient, trail = signed
    csrf = _csrf(request, archive, shares)
    try:
        share, history = await Portal(archive, shares.hasher).own_share(patient, trail, share_id)
    except NotFound:
        return _page("portal_message.html", 404, signed_in=True, csrf=csrf, message="No such share.")
    return _page("portal_share.html", signed_in=True, csrf=csrf, share=share, history=history, at=now())


@router.post("/shares/{share_id}/revoke")
async def revoke(
    request: Request,
    archive: ArchiveDep,
    shares: SharesDep,
    share_id: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    signed = await signed_patient(request, archive, shares, Transaction.SHARE, csrf)
    if signed is None:
        return _to_portal()
    patient, trail = signed
    try:
        await Portal(archive, shares.hasher).revoke(patient, trail, share_id)
    except NotFound:
        return _page(
            "portal_message.html", 404, signed_in=True, csrf=_csrf(request, archive, shares),
            message="No such share.",
        )  # fmt: skip
    return RedirectResponse(f"/portal/shares/{share_id}", status_code=303)


@router.post("/studies/{study}/view")
async def view(
    request: Request,
    archive: ArchiveDep,
    shares: SharesDep,
    study: StudyUID,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The study in the share pages' viewer, through a short-lived share of the patient's
    own (a patient holds no bearer token for a DICOMweb viewer)."""
    signed = await signed_patient(request, archive, shares, Transaction.SHARE, csrf)
    if signed is None:
        return _to_portal()
    patient, trail = signed
    try:
        session = await Portal(archive, shares.hasher).view(patient, trail, shares, study)
    except NotFound:
        return _page(
            "portal_message.html", 404, signed_in=True, csrf=_csrf(request, archive, shares),
            message="No such study.",
        )  # fmt: skip
    return RedirectResponse(f"/s/{session}/studies/{study}", status_code=303)


@router.get("/studies/{study}/download")
async def download(request: Request, archive: ArchiveDep, shares: SharesDep, study: StudyUID) -> Response:
    signed = await signed_patient(request, archive, shares, Transaction.DOWNLOAD)
    if signed is None:
        return _to_portal()
    patient, trail = signed
    try:
        body = await Portal(archive, shares.hasher).download(patient, trail, study)
    except NotFound:
        return _page(
            "portal_message.html", 404, signed_in=True, csrf=_csrf(request, archive, shares),
            message="No such study.",
        )  # fmt: skip
    # Resolved, authorized and recorded before the first byte: the status cannot change.
    headers = {"Content-Disposition": 'attachment; filename="images.zip"', "Cache-Control": "no-store"}
    return StreamingResponse(body, media_type="application/zip", headers=headers)
