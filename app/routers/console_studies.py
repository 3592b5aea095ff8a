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
from app.errors import FilmlessError
from app.http.console import StaffSearching, StaffSharing, StaffSharingForm, StaffViewing
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.routers.pages import person_name, print_page, study_date, summaries
from app.routers.responses import IMMUTABLE, stream
from app.routers.shares_api import created_out
from app.routers.uids import SeriesUID, StudyUID
from app.security.principal import Right
from app.services import admin, qido, rendered, send
from app.services.access_pdf import access_page_pdf
from app.services.regional import PATIENT_KEYS
from app.services.shares import ShareFilter, ShareRequest, now

router = APIRouter(prefix="/console", include_in_schema=False)

#: The search form's fields: QIDO-RS matching keys (PS3.18 §10.6.1.2), by label.
SEARCH_KEYS = {
    "PatientName": "Patient name",
    "PatientID": "Patient ID",
    "StudyDate": "Study date (YYYYMMDD or a range YYYYMMDD-YYYYMMDD)",
    "ModalitiesInStudy": "Modality",
    "AccessionNumber": "Accession number",
}


def _value(dataset: dict[str, Any], tag: str) -> str:
    value = dataset.get(tag, {}).get("Value") or [""]
    first = value[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


@router.get("/studies")
async def find_studies(request: Request, archive: ArchiveDep, staff: StaffSearching) -> Response:
    asked = {k: request.query_params.get(k, "").strip() for k in SEARCH_KEYS}
    rows: list[dict[str, str]] = []
    error = None
    if any(asked.values()):
        params = [(k, v) for k, v in asked.items() if v]
        # Names are matched the way people type them: a prefix, case-insensitively.
        params = [(k, f"{v}*" if k == "PatientName" and not v.endswith("*") else v) for k, v in params]
        try:
            result = await qido.search_recorded(archive, staff.trail, Level.STUDY, params, "/dicom-web")
        except FilmlessError as exc:
            error = str(exc)
        else:
            for match in result.matches:
                rows.append({
                    "uid": _value(match, "0020000D"), "patient": person_name(_value(match, "00100010")),
                    "patient_id": _value(match, "00100020"), "date": study_date(_value(match, "00080020")),
                    "description": _value(match, "00081030"), "modalities": _value(match, "00080061"),
                    "accession": _value(match, "00080050"),
                })  # fmt: skip
    return console_page(
        "console_studies.html", request, signed=staff.signed, keys=SEARCH_KEYS, asked=asked, rows=rows,
        error=error, searched=any(asked.values()),
    )  # fmt: skip


@router.get("/studies/{study}")
async def study_page(
    request: Request, archive: ArchiveDep, staff: StaffSearching, study: StudyUID
) -> Response:
    signed, principal = staff.signed, staff.principal
    # A regional look-up's link keeps naming the patient, so that the page may cross
    # member hospitals as the look-up did (for anyone else it only narrows).
    patient = [(k, v) for k in PATIENT_KEYS if (v := request.query_params.get(k, "").strip())]
    view = await qido.find_study(archive, staff.trail, study, "/dicom-web", patient)
    if view is None:
        return console_page("console_message.html", request, 404, signed=signed, message="No such study.")
    match = view.study
    info = {
        "uid": study, "patient": person_name(_value(match, "00100010")),
        "patient_id": _value(match, "00100020"),
        "date": study_date(_value(match, "00080020")), "description": _value(match, "00081030"),
        "accession": _value(match, "00080050"),
    }  # fmt: skip
    series_rows = [
        {"uid": _value(s, "0020000E"), "modality": _value(s, "00080060"), "number": _value(s, "00200011"),
         "description": _value(s, "0008103E"), "count": _value(s, "00201209")}
        for s in view.series
    ]  # fmt: skip
    history = []
    if Right.AUDIT in principal.rights or Right.SHARE in principal.rights:
        history = await admin.study_history(archive, principal.hospital, study, 100)
    viewer = archive.settings.console_viewer_url
    can_send = Right.DOWNLOAD in principal.rights
    destinations = await send.destinations(archive, principal.hospital_pk) if can_send else []
    return console_page(
        "console_study.html", request, signed=signed, study=info, series=series_rows, history=history,
        viewer=viewer.replace("{study}", study) if viewer else None,
        can_share=Right.SHARE in principal.rights, can_send=can_send, destinations=destinations,
        default_expiry=(now() + dt.timedelta(days=30)).date(),
        max_days=archive.settings.share_max_days,
    )  # fmt: skip


@router.get("/studies/{study}/series/{series}/thumbnail")
async def series_thumbnail(
    archive: ArchiveDep, staff: StaffViewing, study: StudyUID, series: SeriesUID
) -> Response:
    choice = negotiate_rendered("image/jpeg", False)
    body = await rendered.thumbnail(archive, staff.trail, choice, parse_rendered_params([]), study, series)
    response = stream(body)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@router.post("/shares")
async def create_share(
    request: Request,
    base: BaseDep,
    shares: SharesDep,
    staff: StaffSharingForm,
    study: Annotated[str, Form(max_length=64)],
    expires: Annotated[dt.date, Form()],
    permissions: Annotated[list[str] | None, Form()] = None,
    max_uses: Annotated[int | None, Form(ge=1)] = None,
    recipient: Annotated[str | None, Form(max_length=200)] = None,
    challenge: Annotated[str, Form()] = "",
    pin: Annotated[str | None, Form(max_length=12)] = None,
    notify_email: Annotated[str | None, Form(max_length=254)] = None,
) -> Response:
    # The share lasts until the end of the chosen day (UTC).
    until = dt.datetime.combine(expires, dt.time(23, 59), dt.UTC)
    asked = ShareRequest(
        studies=[study], expires_at=until, permissions=permissions or ["view"], max_uses=max_uses,
        recipient=recipient or None, challenge=challenge or None, pin=pin or None,
        notify_email=notify_email or None,
    )  # fmt: skip
    try:
        created = await shares.share(staff.principal, staff.trail, asked)
    except FilmlessError as exc:
        return console_page(
            "console_message.html", request, exc.status, signed=staff.signed, message=str(exc)
        )
    share = created.share
    out = created_out(share, created.token, created.access_code, base)
    response = await print_page(
        shares, out, status=201, pdf_action=f"/console/shares/{share.id}/pdf",
        email_action=f"/console/shares/{share.id}/email", csrf=staff.signed.csrf,
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/shares")
async def list_shares(request: Request, shares: SharesDep, staff: StaffSharing) -> Response:
    assert staff.principal.hospital_pk is not None
    study = request.query_params.get("study") or None
    found = await shares.search(staff.trail, ShareFilter(staff.principal.hospital_pk, study), 200, 0)
    return console_page("console_shares.html", request, signed=staff.signed, shares=found, at=now())


@router.get("/shares/{share_id}")
async def share_page(request: Request, shares: SharesDep, staff: StaffSharing, share_id: str) -> Response:
    share, history = await shares.inspect(staff.principal, staff.trail, share_id)
    return console_page(
        "console_share.html", request, signed=staff.signed, share=share, history=history, at=now()
    )


@router.post("/shares/{share_id}/revoke")
async def revoke_share(shares: SharesDep, staff: StaffSharingForm, share_id: str) -> Response:
    await shares.revoke(staff.principal, staff.trail, share_id)
    return RedirectResponse(f"/console/shares/{share_id}", status_code=303)


@router.post("/shares/{share_id}/pdf")
async def share_pdf(
    base: BaseDep,
    shares: SharesDep,
    staff: StaffSharingForm,
    share_id: str,
    token: Annotated[str, Form(max_length=100)],
    access_code: Annotated[str, Form(max_length=40)],
) -> Response:
    """The Access Page as a PDF. Secrets are stored only as hashes, so (as for printing
    through the API) only whoever holds them, from the creation answer, can ask."""
    share = await shares.reprint(staff.principal, staff.trail, share_id, token, access_code, "printed as PDF")
    out = created_out(share, token, access_code, base)
    studies = await summaries(shares, out.studies)
    names = ", ".join(sorted({person_name(s["patient_name"]) for s in studies}))
    hospital = str(studies[0]["hospital_name"]) if studies else ""
    body = await asyncio.to_thread(access_page_pdf, out, studies, names, hospital)
    headers = {
        "Content-Disposition": f'attachment; filename="access-page-{share.id}.pdf"',
        "Cache-Control": "no-store",
    }
    return Response(body, media_type="application/pdf", headers=headers)
