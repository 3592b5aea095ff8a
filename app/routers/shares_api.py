"""Share links for staff under ``/api/shares``: create, list, inspect, revoke, print."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from app.dicom.query import MAX_OFFSET
from app.dicom.uids import UID_MAX_LENGTH, UID_PATTERN
from app.http.deps import BaseDep, Sharer, SharesDep
from app.routers.pages import print_page
from app.services.shares import ShareFilter, ShareRequest, ShareRow, now

router = APIRouter(prefix="/api/shares", tags=["Shares"])


class ShareIn(BaseModel):
    studies: list[Annotated[str, Field(pattern=UID_PATTERN, max_length=UID_MAX_LENGTH)]] = Field(
        min_length=1, max_length=100
    )
    expires_at: dt.datetime = Field(
        description="Required; at most FILMLESS_SHARE_MAX_DAYS away, with a time zone"
    )
    permissions: list[Literal["view", "download", "reshare"]] = Field(default=["view"], min_length=1)
    max_uses: int | None = Field(default=None, ge=1, description="Gate passes and downloads allowed")
    recipient: str | None = Field(default=None, max_length=200, description="Who it is for, shown to staff")
    challenge: Literal["birthdate", "pin"] | None = Field(default=None, description="Asked before access")
    pin: str | None = Field(default=None, pattern=r"^[0-9]{4,12}$", description="For challenge=pin")
    deidentify: bool = Field(
        default=False,
        description="Serve de-identified copies (PS3.15 Annex E, Basic Application Level Confidentiality "
        "Profile, UIDs replaced consistently) on every path: page, download and DICOMweb root",
    )
    notify_email: str | None = Field(
        default=None,
        max_length=254,
        description="Emailed when the share is first opened and when it is locked out",
    )


class ShareOut(BaseModel):
    id: str
    state: str
    hospital: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    max_uses: int | None
    uses: int
    permissions: list[str]
    recipient: str | None
    challenge: str | None
    parent_id: str | None
    revoked_at: dt.datetime | None
    studies: list[str]
    deidentify: bool
    notify_email: str | None
    burned_in_warning: bool | None = Field(
        default=None,
        description="De-identified, yet some images' Burned In Annotation (0028,0301) is YES or absent: "
        "text in the pixels may still identify the patient (given on creation and on GET of one share)",
    )


class ShareCreated(ShareOut):
    token: str = Field(description="The link's secret: shown only this once")
    access_code: str = Field(description="The code typed at /access: shown only this once")
    page_url: str
    access_url: str
    dicomweb_root: str


class ShareAccess(BaseModel):
    """One event of a share's access history: a recipient's or its staff's."""

    at: dt.datetime
    transaction: str = Field(description="E.g. SHARE-ACCESS (a gate), SHARE-DOWNLOAD, WADO-RS")
    outcome: int = Field(description="The HTTP status answered")
    client_address: str | None
    user_agent: str | None
    studies: list[str]
    instances: int
    bytes: int
    detail: str | None


class ShareDetail(ShareOut):
    history: list[ShareAccess] = Field(description="Newest first")


class Revoked(BaseModel):
    revoked: list[str] = Field(description="The share and the shares minted from it, if still active")


def share_out(share: ShareRow) -> ShareOut:
    data = {k: v for k, v in asdict(share).items() if k in ShareOut.model_fields}
    return ShareOut(**data, state=share.state(now()))


def created_out(share: ShareRow, token: str, code: str, base: str) -> ShareCreated:
    return ShareCreated(
        **share_out(share).model_dump(), token=token, access_code=code, page_url=f"{base}/s/{token}",
        access_url=f"{base}/access", dicomweb_root=f"{base}/share/{token}/dicom-web",
    )  # fmt: skip


@router.post(
    "",
    status_code=201,
    summary="Share studies (the secrets are in this response only)",
    response_model=ShareCreated,
    responses={
        201: {"content": {"text/html": {}}, "description": "With Accept: text/html, the printable page"}
    },
)
async def create_share(
    body: ShareIn, request: Request, base: BaseDep, caller: Sharer, shares: SharesDep
) -> Response:
    created = await shares.share(caller.principal, caller.trail, ShareRequest(**body.model_dump()))
    share = created.share
    out = created_out(share, created.token, created.access_code, base)
    out.burned_in_warning = await shares.burned_in_warning(share)
    if "text/html" in request.headers.get("accept", ""):
        return await print_page(shares, out, status=201)
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get("", summary="List shares of the caller's hospital", response_model=list[ShareOut])
async def list_shares(
    caller: Sharer,
    shares: SharesDep,
    study: Annotated[str | None, Query(description="Study Instance UID")] = None,
    patient: Annotated[str | None, Query(description="PatientID")] = None,
    creator: Annotated[str | None, Query(description="Subject who created it")] = None,
    state: Annotated[Literal["active", "expired", "revoked", "exhausted"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ShareOut]:
    assert caller.principal.hospital_pk is not None
    f = ShareFilter(caller.principal.hospital_pk, study, patient, creator, state)
    found = await shares.search(caller.trail, f, limit, offset)
    return [share_out(s) for s in found]


@router.get("/{share_id}", summary="A share and its access history", response_model=ShareDetail)
async def get_share(share_id: str, caller: Sharer, shares: SharesDep) -> dict[str, Any]:
    share, history = await shares.inspect(caller.principal, caller.trail, share_id)
    events = [
        {"at": e.at, "transaction": e.transaction, "outcome": e.outcome, "client_address": e.client_address,
         "user_agent": e.user_agent, "studies": e.study_uids, "instances": e.instances, "bytes": e.bytes,
         "detail": e.detail}
        for e in history
    ]  # fmt: skip
    out = share_out(share)
    out.burned_in_warning = await shares.burned_in_warning(share)
    return {**out.model_dump(), "history": events}


@router.post("/{share_id}/revoke", summary="Revoke a share and every share minted from it")
async def revoke_share(share_id: str, caller: Sharer, shares: SharesDep) -> Revoked:
    return Revoked(revoked=await shares.revoke(caller.principal, caller.trail, share_id))


@router.post(
    "/{share_id}/print",
    summary="The printable access page (with the secrets from the creation response)",
    response_class=HTMLResponse,
)
async def print_share(
    share_id: str,
    base: BaseDep,
    caller: Sharer,
    shares: SharesDep,
    token: Annotated[str, Form(max_length=100)],
    access_code: Annotated[str, Form(max_length=40)],
) -> HTMLResponse:
    share = await shares.reprint(caller.principal, caller.trail, share_id, token, access_code)
    return await print_page(shares, created_out(share, token, access_code, base))
