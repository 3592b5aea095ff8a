"""The patient portal's pages: enrol with a printed code, sign in by an emailed link,
see one's own studies with thumbnails. Every answer to a code or an address is the same
whether or not it matched anything."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.dicom.levels import Level
from app.dicom.negotiation import negotiate_rendered
from app.dicom.rendering import parse_rendered_params
from app.errors import Forbidden, Unauthorized
from app.http import trails
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.pages import page, person_name, print_page, study_date
from app.routers.responses import IMMUTABLE, stream
from app.routers.shares_api import created_out
from app.routers.uids import SeriesUID, StudyUID
from app.security.principal import Principal
from app.services import audit, qido, rendered
from app.services.archive import Archive
from app.services.audit import Transaction
from app.services.portal import PATIENT_SHARE_DAYS, SESSION_HOURS, Portal
from app.services.shares import Shares
from app.services.signin import csrf_ok

router = APIRouter(prefix="/portal", include_in_schema=False)

COOKIE = "filmless_portal"
SENT = "If that was right, a sign-in link is on its way to that address. It works once, for 15 minutes."


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = page(template, status, **context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _patient(request: Request, archive: Archive, shares: Shares) -> Principal | None:
    return await Portal(archive, shares.hasher).principal(request.cookies.get(COOKIE))


def _value(dataset: dict[str, Any], tag: str) -> str:
    value = dataset.get(tag, {}).get("Value") or [""]
    first = value[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


@router.get("")
async def home(request: Request, archive: ArchiveDep, shares: SharesDep) -> Response:
    patient = await _patient(request, archive, shares)
    if patient is None:
        return _page("portal_signin.html")
    trail = trails.start(request, Transaction.QIDO)
    trail.identify(patient)
    result = await qido.search(
        archive, patient.scope, Level.STUDY, [("includefield", "00080080")], "/dicom-web"
    )
    owners = result.owners
    trail.note(
        studies=[o[0] for o in owners], patients=[o[1] for o in owners], owners=[o[2] for o in owners],
        count=len(result.matches),
    )  # fmt: skip
    await audit.commit(archive, trail, 200)
    rows = [
        {"uid": _value(m, "0020000D"), "date": study_date(_value(m, "00080020")),
         "description": _value(m, "00081030"), "modalities": _value(m, "00080061"),
         "hospital": o[2], "patient": person_name(_value(m, "00100010"))}
        for m, o in zip(result.matches, owners, strict=True)
    ]  # fmt: skip
    return _page("portal_home.html", signed_in=True, rows=rows, csrf=_csrf(request, archive, shares))


def _csrf(request: Request, archive: Archive, shares: Shares) -> str:
    return Portal(archive, shares.hasher).csrf(request.cookies.get(COOKIE, ""))


@router.get("/enrol")
async def enrol_form() -> Response:
    return _page("portal_enrol.html")


@router.post("/enrol")
async def enrol(
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    code: Annotated[str, Form(max_length=40)],
    email: Annotated[str, Form(max_length=254)],
) -> Response:
    await Portal(archive, shares.hasher).enrol(code, email, base)
    return _page("portal_message.html", message=SENT)


@router.post("/signin")
async def ask_for_link(
    archive: ArchiveDep, base: BaseDep, shares: SharesDep, email: Annotated[str, Form(max_length=254)]
) -> Response:
    await Portal(archive, shares.hasher).request_link(email, base)
    return _page("portal_message.html", message=SENT)


@router.get("/signin/{token}")
async def confirm(token: str) -> Response:
    # A GET spends nothing: mail scanners follow links; the person presses the button.
    return _page("portal_confirm.html", token=token)


@router.post("/signin/{token}")
async def sign_in(request: Request, archive: ArchiveDep, shares: SharesDep, token: str) -> Response:
    try:
        session = await Portal(archive, shares.hasher).sign_in(token)
    except Unauthorized as exc:
        return _page("portal_message.html", 401, message=str(exc))
    response = RedirectResponse("/portal", status_code=303)
    response.set_cookie(
        COOKIE, session, max_age=SESSION_HOURS * 3600, path="/portal", httponly=True, samesite="lax",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.post("/signout")
async def sign_out(
    request: Request, archive: ArchiveDep, shares: SharesDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    session = request.cookies.get(COOKIE)
    if session:
        service = Portal(archive, shares.hasher)
        if not csrf_ok(service.csrf(session), csrf):
            raise Forbidden("the form is stale or was not sent from this archive's page")
        await service.sign_out(session)
    response = RedirectResponse("/portal", status_code=303)
    response.delete_cookie(COOKIE, path="/portal")
    return response


@router.get("/studies/{study}")
async def study_page(request: Request, archive: ArchiveDep, shares: SharesDep, study: StudyUID) -> Response:
    patient = await _patient(request, archive, shares)
    if patient is None:
        return RedirectResponse("/portal", status_code=303)
    trail = trails.start(request, Transaction.QIDO)
    trail.identify(patient)
    scope = patient.scope
    found = await qido.search(archive, scope, Level.STUDY, [("StudyInstanceUID", study)], "/dicom-web")
    if not found.matches:
        await audit.commit(archive, trail, 404, "no such study")
        return _page(
            "portal_message.html",
            404,
            signed_in=True,
            csrf=_csrf(request, archive, shares),
            message="No such study.",
        )
    series = await qido.search(archive, scope, Level.SERIES, [], "/dicom-web", {"0020000D": study})
    owners = found.owners
    trail.note(studies=[study], patients=[o[1] for o in owners], owners=[o[2] for o in owners], count=1)
    await audit.commit(archive, trail, 200)
    match = found.matches[0]
    info = {
        "uid": study,
        "date": study_date(_value(match, "00080020")),
        "description": _value(match, "00081030"),
    }
    rows = [
        {"uid": _value(s, "0020000E"), "modality": _value(s, "00080060"), "number": _value(s, "00200011"),
         "description": _value(s, "0008103E")}
        for s in series.matches
    ]  # fmt: skip
    return _page(
        "portal_study.html",
        signed_in=True,
        study=info,
        series=rows,
        csrf=_csrf(request, archive, shares),
        max_days=PATIENT_SHARE_DAYS,
    )


@router.post("/studies/{study}/share")
async def share_study(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    study: StudyUID,
    days: Annotated[int, Form(ge=1, le=PATIENT_SHARE_DAYS)],
    csrf: Annotated[str, Form()] = "",
    recipient: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    """The patient shares a study of their own with a physician: the same share links."""
    patient = await _patient(request, archive, shares)
    if patient is None:
        return RedirectResponse("/portal", status_code=303)
    service = Portal(archive, shares.hasher)
    if not csrf_ok(service.csrf(request.cookies.get(COOKIE, "")), csrf):
        raise Forbidden("the form is stale or was not sent from this archive's page")
    trail = trails.start(request, Transaction.SHARE)
    trail.identify(patient)
    created = await service.share(patient, shares, study, days, recipient or None)
    share = created.share
    trail.event.share_id = share.id
    trail.note(studies=share.studies, owners=[share.hospital], count=1)
    await audit.commit(archive, trail, 201, f"patient created share {share.id}")
    response = await print_page(
        shares, created_out(share, created.token, created.access_code, base), status=201
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/studies/{study}/series/{series}/thumbnail")
async def thumbnail(
    request: Request, archive: ArchiveDep, shares: SharesDep, study: StudyUID, series: SeriesUID
) -> Response:
    patient = await _patient(request, archive, shares)
    if patient is None:
        return Response(status_code=401)
    trail = trails.start(request, Transaction.WADO)
    trail.identify(patient)
    choice = negotiate_rendered("image/jpeg", False)
    body = await rendered.thumbnail(archive, trail, choice, parse_rendered_params([]), study, series)
    await audit.commit(archive, trail, 200)
    response = stream(body)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
