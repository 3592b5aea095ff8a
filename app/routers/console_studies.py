"""The console's film library desk: find studies (the QIDO-RS engine), a study's page with
its series' thumbnails, viewer link and access history, and its shares: create (then
print), list, revoke. The signed-in person's rights are exactly their bearer token's."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.dicom.levels import Level
from app.dicom.negotiation import negotiate_rendered
from app.dicom.rendering import parse_rendered_params
from app.errors import FilmlessError, Forbidden
from app.http import trails
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page, signed_in
from app.routers.pages import person_name, print_page, study_date, summaries
from app.routers.responses import IMMUTABLE, stream
from app.routers.shares_api import created_out
from app.routers.uids import SeriesUID, StudyUID
from app.security.principal import Right
from app.services import admin, audit, qido, rendered
from app.services.access_pdf import access_page_pdf
from app.services.admin import AuditFilter
from app.services.audit import Trail, Transaction
from app.services.shares import ShareFilter, ShareRequest, now
from app.services.signin import Signed, csrf_ok

router = APIRouter(prefix="/console", include_in_schema=False)

#: The search form's fields: QIDO-RS matching keys (PS3.18 §10.6.1.2), by label.
SEARCH_KEYS = {
    "PatientName": "Patient name",
    "PatientID": "Patient ID",
    "StudyDate": "Study date (YYYYMMDD or a range YYYYMMDD-YYYYMMDD)",
    "ModalitiesInStudy": "Modality",
    "AccessionNumber": "Accession number",
}


class SignInFirst(Exception):
    """A console page asked for without a signed-in session: answered by
    :func:`to_sign_in`, a redirect to the sign-in page, wherever it is raised."""


async def to_sign_in(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/console/signin", status_code=303)


async def _staff(request: Request, right: Right) -> Signed:
    signed = await signed_in(request)
    if signed is None:
        raise SignInFirst
    if right not in signed.principal.rights:
        raise Forbidden(f"this requires the right to {right.value}")
    return signed


def _trail(request: Request, transaction: Transaction, signed: Signed) -> Trail:
    trail = trails.start(request, transaction)
    trail.identify(signed.principal)
    return trail


def _value(dataset: dict[str, Any], tag: str) -> str:
    value = dataset.get(tag, {}).get("Value") or [""]
    first = value[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


def _check_csrf(signed: Signed, csrf: str) -> None:
    if not csrf_ok(signed.csrf, csrf):
        raise Forbidden("the form is stale or was not sent from this archive's page")


@router.get("/studies")
async def find_studies(request: Request, archive: ArchiveDep) -> Response:
    signed = await _staff(request, Right.READ)
    asked = {k: request.query_params.get(k, "").strip() for k in SEARCH_KEYS}
    rows: list[dict[str, str]] = []
    error = None
    if any(asked.values()):
        params = [(k, v) for k, v in asked.items() if v]
        # Names are matched the way people type them: a prefix, case-insensitively.
        params = [(k, f"{v}*" if k == "PatientName" and not v.endswith("*") else v) for k, v in params]
        trail = _trail(request, Transaction.QIDO, signed)
        try:
            result = await qido.search(archive, signed.principal.scope, Level.STUDY, params, "/dicom-web")
        except FilmlessError as exc:
            error = str(exc)
        else:
            trail.note(
                studies=(o[0] for o in result.owners), patients=(o[1] for o in result.owners),
                owners=(o[2] for o in result.owners), count=len(result.matches),
            )  # fmt: skip
            await audit.commit(archive, trail, 200)
            for match in result.matches:
                rows.append({
                    "uid": _value(match, "0020000D"), "patient": person_name(_value(match, "00100010")),
                    "patient_id": _value(match, "00100020"), "date": study_date(_value(match, "00080020")),
                    "description": _value(match, "00081030"), "modalities": _value(match, "00080061"),
                    "accession": _value(match, "00080050"),
                })  # fmt: skip
    return console_page(
        "console_studies.html", request, signed=signed, keys=SEARCH_KEYS, asked=asked, rows=rows, error=error,
        searched=any(asked.values()),
    )  # fmt: skip


@router.get("/studies/{study}")
async def study_page(request: Request, archive: ArchiveDep, study: StudyUID) -> Response:
    signed = await _staff(request, Right.READ)
    trail = _trail(request, Transaction.QIDO, signed)
    scope = signed.principal.scope
    studies = await qido.search(archive, scope, Level.STUDY, [("StudyInstanceUID", study)], "/dicom-web")
    if not studies.matches:
        await audit.commit(archive, trail, 404, "no such study")
        return console_page("console_message.html", request, 404, signed=signed, message="No such study.")
    series = await qido.search(archive, scope, Level.SERIES, [], "/dicom-web", {"0020000D": study})
    owners = studies.owners
    trail.note(studies=[study], patients=[o[1] for o in owners], owners=[o[2] for o in owners], count=1)
    await audit.commit(archive, trail, 200)
    match = studies.matches[0]
    info = {
        "uid": study, "patient": person_name(_value(match, "00100010")),
        "patient_id": _value(match, "00100020"),
        "date": study_date(_value(match, "00080020")), "description": _value(match, "00081030"),
        "accession": _value(match, "00080050"),
    }  # fmt: skip
    series_rows = [
        {"uid": _value(s, "0020000E"), "modality": _value(s, "00080060"), "number": _value(s, "00200011"),
         "description": _value(s, "0008103E"), "count": _value(s, "00201209")}
        for s in series.matches
    ]  # fmt: skip
    history = []
    if Right.AUDIT in signed.principal.rights or Right.SHARE in signed.principal.rights:
        f = AuditFilter(study_uid=study)
        # The page's own access is recorded above; the trail records nothing more.
        history = await admin.audit_events(archive, trail, signed.principal.hospital, f, 100, 0)
    viewer = archive.settings.console_viewer_url
    return console_page(
        "console_study.html", request, signed=signed, study=info, series=series_rows, history=history,
        viewer=viewer.replace("{study}", study) if viewer else None,
        can_share=Right.SHARE in signed.principal.rights,
        default_expiry=(now() + dt.timedelta(days=30)).date(),
        max_days=archive.settings.share_max_days,
    )  # fmt: skip


@router.get("/studies/{study}/series/{series}/thumbnail")
async def series_thumbnail(
    request: Request, archive: ArchiveDep, study: StudyUID, series: SeriesUID
) -> Response:
    try:
        signed = await _staff(request, Right.READ)
    except SignInFirst:  # an image: no redirect to a page
        return Response(status_code=401)
    trail = _trail(request, Transaction.WADO, signed)
    choice = negotiate_rendered("image/jpeg", False)
    body = await rendered.thumbnail(archive, trail, choice, parse_rendered_params([]), study, series)
    await audit.commit(archive, trail, 200)
    response = stream(body)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@router.post("/shares")
async def create_share(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    study: Annotated[str, Form(max_length=64)],
    expires: Annotated[dt.date, Form()],
    csrf: Annotated[str, Form()] = "",
    permissions: Annotated[list[str] | None, Form()] = None,
    max_uses: Annotated[int | None, Form(ge=1)] = None,
    recipient: Annotated[str | None, Form(max_length=200)] = None,
    challenge: Annotated[str, Form()] = "",
    pin: Annotated[str | None, Form(max_length=12)] = None,
    notify_email: Annotated[str | None, Form(max_length=254)] = None,
) -> Response:
    signed = await _staff(request, Right.SHARE)
    _check_csrf(signed, csrf)
    trail = _trail(request, Transaction.SHARE, signed)
    # The share lasts until the end of the chosen day (UTC).
    until = dt.datetime.combine(expires, dt.time(23, 59), dt.UTC)
    asked = ShareRequest(
        studies=[study], expires_at=until, permissions=permissions or ["view"], max_uses=max_uses,
        recipient=recipient or None, challenge=challenge or None, pin=pin or None,
        notify_email=notify_email or None,
    )  # fmt: skip
    try:
        created = await shares.create(signed.principal, asked)
    except FilmlessError as exc:
        await audit.commit(archive, trail, exc.status, str(exc))
        return console_page("console_message.html", request, exc.status, signed=signed, message=str(exc))
    share = created.share
    trail.event.share_id = share.id
    trail.note(studies=share.studies, owners=[share.hospital], count=len(share.studies))
    await audit.commit(archive, trail, 201, f"created share {share.id}")
    out = created_out(share, created.token, created.access_code, base)
    pdf_action = f"/console/shares/{share.id}/pdf"
    email_action = f"/console/shares/{share.id}/email"
    response = await print_page(
        shares, out, status=201, pdf_action=pdf_action, email_action=email_action, csrf=signed.csrf
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/shares")
async def list_shares(request: Request, shares: SharesDep) -> Response:
    signed = await _staff(request, Right.SHARE)
    assert signed.principal.hospital_pk is not None
    trail = _trail(request, Transaction.SHARE, signed)
    study = request.query_params.get("study") or None
    found = await shares.search(trail, ShareFilter(signed.principal.hospital_pk, study), 200, 0)
    return console_page("console_shares.html", request, signed=signed, shares=found, at=now())


@router.get("/shares/{share_id}")
async def share_page(request: Request, archive: ArchiveDep, shares: SharesDep, share_id: str) -> Response:
    signed = await _staff(request, Right.SHARE)
    trail = _trail(request, Transaction.SHARE, signed)
    share = await shares.visible(signed.principal, share_id)
    history = await shares.history(share.id)
    trail.event.share_id = share.id
    await audit.commit(archive, trail, 200)
    return console_page("console_share.html", request, signed=signed, share=share, history=history, at=now())


@router.post("/shares/{share_id}/revoke")
async def revoke_share(
    request: Request, archive: ArchiveDep, shares: SharesDep, share_id: str, csrf: Annotated[str, Form()] = ""
) -> Response:
    signed = await _staff(request, Right.SHARE)
    _check_csrf(signed, csrf)
    trail = _trail(request, Transaction.SHARE, signed)
    await shares.revoke(signed.principal, trail, share_id)
    return RedirectResponse(f"/console/shares/{share_id}", status_code=303)


@router.post("/shares/{share_id}/pdf")
async def share_pdf(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    share_id: str,
    token: Annotated[str, Form(max_length=100)],
    access_code: Annotated[str, Form(max_length=40)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The Access Page as a PDF. Secrets are stored only as hashes, so (as for printing
    through the API) only whoever holds them, from the creation answer, can ask."""
    signed = await _staff(request, Right.SHARE)
    _check_csrf(signed, csrf)
    trail = _trail(request, Transaction.SHARE, signed)
    share = await shares.held(signed.principal, share_id, token, access_code)
    out = created_out(share, token, access_code, base)
    studies = await summaries(shares, out.studies)
    names = ", ".join(sorted({person_name(s["patient_name"]) for s in studies}))
    hospital = str(studies[0]["hospital_name"]) if studies else ""
    body = await asyncio.to_thread(access_page_pdf, out, studies, names, hospital)
    trail.event.share_id = share.id
    await audit.commit(archive, trail, 200, "printed as PDF")
    headers = {
        "Content-Disposition": f'attachment; filename="access-page-{share.id}.pdf"',
        "Cache-Control": "no-store",
    }
    return Response(body, media_type="application/pdf", headers=headers)
