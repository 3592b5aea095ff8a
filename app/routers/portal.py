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
from app.errors import Unauthorized
from app.http import trails
from app.http.console import check_csrf
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.pages import page, person_name, print_page, study_date
from app.routers.responses import IMMUTABLE, stream
from app.routers.shares_api import created_out
from app.routers.uids import SeriesUID, StudyUID
from app.security.principal import Principal
from app.services import qido, rendered
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.portal import PATIENT_SHARE_DAYS, SESSION_HOURS, Portal
from app.services.shares import Shares

router = APIRouter(prefix="/portal", include_in_schema=False)

COOKIE = "filmless_portal"
SENT = "If that was right, a sign-in link is on its way to that address. It works once, for 15 minutes."


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = page(template, status, **context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _patient(
    request: Request, archive: Archive, shares: Shares, transaction: Transaction
) -> Trail | None:
    """The signed-in patient's trail of this request (identified), or None."""
    patient = await Portal(archive, shares.hasher).principal(request.cookies.get(COOKIE))
    if patient is None:
        return None
    trail = trails.start(request, transaction)
    trail.identify(patient)
    return trail


async def signed_patient(
    request: Request, archive: Archive, shares: Shares, transaction: Transaction, csrf: str | None = None
) -> tuple[Principal, Trail] | None:
    """The signed-in patient and their request's trail, the form's CSRF token checked
    when one is posted (``csrf`` not None); None when no one is signed in."""
    trail = await _patient(request, archive, shares, transaction)
    if trail is None or trail.principal is None:
        return None
    if csrf is not None:
        check_csrf(_csrf(request, archive, shares), csrf)
    return trail.principal, trail


def _value(dataset: dict[str, Any], tag: str) -> str:
    value = dataset.get(tag, {}).get("Value") or [""]
    first = value[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


def _csrf(request: Request, archive: Archive, shares: Shares) -> str:
    return Portal(archive, shares.hasher).csrf(request.cookies.get(COOKIE, ""))


@router.get("")
async def home(request: Request, archive: ArchiveDep, shares: SharesDep) -> Response:
    trail = await _patient(request, archive, shares, Transaction.QIDO)
    if trail is None:
        return _page("portal_signin.html")
    result = await qido.search_recorded(
        archive, trail, Level.STUDY, [("includefield", "00080080")], "/dicom-web"
    )
    rows = [
        {"uid": _value(m, "0020000D"), "date": study_date(_value(m, "00080020")),
         "description": _value(m, "00081030"), "modalities": _value(m, "00080061"),
         "hospital": o[2], "patient": person_name(_value(m, "00100010"))}
        for m, o in zip(result.matches, result.owners, strict=True)
    ]  # fmt: skip
    return _page("portal_home.html", signed_in=True, rows=rows, csrf=_csrf(request, archive, shares))


@router.get("/enrol")
async def enrol_form() -> Response:
    return _page("portal_enrol.html")


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/enrol")
async def enrol(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    code: Annotated[str, Form(max_length=40)],
    email: Annotated[str, Form(max_length=254)],
) -> Response:
    trail = trails.start(request, Transaction.ENROLMENT)
    await Portal(archive, shares.hasher).enrol(code, email, base, trail, _client(request))
    return _page("portal_message.html", message=SENT)


@router.post("/signin")
async def ask_for_link(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    email: Annotated[str, Form(max_length=254)],
) -> Response:
    trail = trails.start(request, Transaction.SIGN_IN)
    await Portal(archive, shares.hasher).request_link(email, base, trail, _client(request))
    return _page("portal_message.html", message=SENT)


@router.get("/signin/{token}")
async def confirm(token: str) -> Response:
    # A GET spends nothing: mail scanners follow links; the person presses the button.
    return _page("portal_confirm.html", token=token)


@router.post("/signin/{token}")
async def sign_in(request: Request, archive: ArchiveDep, shares: SharesDep, token: str) -> Response:
    try:
        session = await Portal(archive, shares.hasher).sign_in(
            token, trails.start(request, Transaction.SIGN_IN)
        )
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
        check_csrf(service.csrf(session), csrf)
        await service.sign_out(session, trails.start(request, Transaction.SIGN_OUT))
    response = RedirectResponse("/portal", status_code=303)
    response.delete_cookie(COOKIE, path="/portal")
    return response


@router.get("/studies/{study}")
async def study_page(request: Request, archive: ArchiveDep, shares: SharesDep, study: StudyUID) -> Response:
    trail = await _patient(request, archive, shares, Transaction.QIDO)
    if trail is None:
        return RedirectResponse("/portal", status_code=303)
    csrf = _csrf(request, archive, shares)
    view = await qido.find_study(archive, trail, study, "/dicom-web")
    if view is None:
        return _page("portal_message.html", 404, signed_in=True, csrf=csrf, message="No such study.")
    info = {
        "uid": study,
        "date": study_date(_value(view.study, "00080020")),
        "description": _value(view.study, "00081030"),
    }
    rows = [
        {"uid": _value(s, "0020000E"), "modality": _value(s, "00080060"), "number": _value(s, "00200011"),
         "description": _value(s, "0008103E")}
        for s in view.series
    ]  # fmt: skip
    return _page(
        "portal_study.html", signed_in=True, study=info, series=rows, csrf=csrf, max_days=PATIENT_SHARE_DAYS
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
    service = Portal(archive, shares.hasher)
    patient = await service.principal(request.cookies.get(COOKIE))
    if patient is None:
        return RedirectResponse("/portal", status_code=303)
    check_csrf(service.csrf(request.cookies.get(COOKIE, "")), csrf)
    trail = trails.start(request, Transaction.SHARE)
    trail.identify(patient)
    created = await service.share(patient, trail, shares, study, days, recipient or None)
    response = await print_page(
        shares, created_out(created.share, created.token, created.access_code, base), status=201
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/studies/{study}/series/{series}/thumbnail")
async def thumbnail(
    request: Request, archive: ArchiveDep, shares: SharesDep, study: StudyUID, series: SeriesUID
) -> Response:
    trail = await _patient(request, archive, shares, Transaction.WADO)
    if trail is None:
        return Response(status_code=401)
    choice = negotiate_rendered("image/jpeg", False)
    body = await rendered.thumbnail(archive, trail, choice, parse_rendered_params([]), study, series)
    response = stream(body)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
