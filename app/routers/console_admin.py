"""The console's administration pages: member hospitals, known AEs, and the audit trail
with filters and a CSV export (the admin service's, scoped to the admin's hospital)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.errors import BadRequest, FilmlessError
from app.http.console import Staff, StaffAdministering, StaffAdministeringForm, StaffAuditing
from app.http.deps import ArchiveDep
from app.http.errors import audit_failure
from app.routers.console import console_page
from app.services import admin
from app.services.admin import ApplicationEntityChange, AuditFilter, NewApplicationEntity

router = APIRouter(prefix="/console", include_in_schema=False)

#: The audit page's filters, by label (PatientID, Study Instance UID, subject, share id).
AUDIT_FILTERS = {"patient": "Patient ID", "study": "Study Instance UID", "subject": "User", "share": "Share"}


def _day(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)


@router.get("/admin")
async def admin_page(request: Request, archive: ArchiveDep, staff: StaffAdministering) -> Response:
    members = await admin.hospitals_list(archive, staff.trail)
    known = await admin.aes_list(archive, staff.trail, staff.principal.hospital_pk)
    return console_page("console_admin.html", request, signed=staff.signed, hospitals=members, aes=known)


#: What a known AE may do, by form field (PS3.7 DIMSE services it may ask of the archive).
AE_MAY = ("may_echo", "may_store", "may_find", "may_move", "may_get", "destination")


async def _done(request: Request, staff: Staff, exc: FilmlessError | None = None) -> Response:
    """Back to the administration page (303: a reload does not post again), or the reason
    (recorded, as the error handler would have: the page answers in its stead)."""
    if exc is None:
        return RedirectResponse("/console/admin", status_code=303)
    await audit_failure(request, exc.status, exc.message)
    return console_page("console_message.html", request, exc.status, signed=staff.signed, message=str(exc))


@router.post("/admin/hospitals/{code}")
async def rename_hospital(
    request: Request, code: str, archive: ArchiveDep, staff: StaffAdministeringForm,
    name: Annotated[str, Form(min_length=1, max_length=200)],
) -> Response:  # fmt: skip
    try:
        await admin.rename_hospital(archive, staff.trail, code, name.strip())
    except FilmlessError as exc:
        return await _done(request, staff, exc)
    return await _done(request, staff)


def _change(host: str, port: int, may: list[str] | None, description: str) -> ApplicationEntityChange:
    asked = set(may or ())
    if not asked <= set(AE_MAY):
        raise BadRequest(f"an AE may only {', '.join(AE_MAY)}")
    flags = {name: name in asked for name in AE_MAY}
    return ApplicationEntityChange(host=host.strip(), port=port, description=description.strip(), **flags)


@router.post("/admin/aes")
async def add_ae(
    request: Request, archive: ArchiveDep, staff: StaffAdministeringForm,
    ae_title: Annotated[str, Form(min_length=1, max_length=16)],
    host: Annotated[str, Form(min_length=1, max_length=253)],
    port: Annotated[int, Form(ge=1, le=65535)],
    may: Annotated[list[str] | None, Form()] = None,
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:  # fmt: skip
    """A new AE of the admin's own hospital (the page lists only theirs)."""
    try:
        if staff.principal.hospital is None:
            raise BadRequest("you are not signed in for a member hospital")
        change = _change(host, port, may, description)
        new = NewApplicationEntity(
            ae_title=ae_title.strip(), hospital=staff.principal.hospital, **vars(change)
        )
        await admin.add_ae(archive, staff.trail, new)
    except FilmlessError as exc:
        return await _done(request, staff, exc)
    return await _done(request, staff)


@router.post("/admin/aes/{ae_title}")
async def change_ae(
    request: Request, ae_title: str, archive: ArchiveDep, staff: StaffAdministeringForm,
    host: Annotated[str, Form(min_length=1, max_length=253)],
    port: Annotated[int, Form(ge=1, le=65535)],
    may: Annotated[list[str] | None, Form()] = None,
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:  # fmt: skip
    try:
        change = _change(host, port, may, description)
        await admin.update_ae(archive, staff.trail, ae_title, change, staff.principal.hospital_pk)
    except FilmlessError as exc:
        return await _done(request, staff, exc)
    return await _done(request, staff)


@router.post("/admin/aes/{ae_title}/remove")
async def remove_ae(
    request: Request, ae_title: str, archive: ArchiveDep, staff: StaffAdministeringForm
) -> Response:
    try:
        await admin.remove_ae(archive, staff.trail, ae_title, staff.principal.hospital_pk)
    except FilmlessError as exc:
        return await _done(request, staff, exc)
    return await _done(request, staff)


@router.get("/audit")
async def audit_page(request: Request, archive: ArchiveDep, staff: StaffAuditing) -> Response:
    signed = staff.signed
    q = request.query_params
    asked = {k: q.get(k, "").strip() for k in (*AUDIT_FILTERS, "since", "until")}
    try:
        # "until" is a day: the whole of it is included.
        until = _day(asked["until"])
        f = AuditFilter(
            None, asked["patient"] or None, asked["study"] or None, asked["subject"] or None,
            asked["share"] or None, _day(asked["since"]), until + dt.timedelta(days=1) if until else None,
        )  # fmt: skip
    except ValueError:
        return console_page(
            "console_message.html", request, 400, signed=signed, message="Dates are YYYY-MM-DD."
        )
    try:
        events = await admin.audit_events(archive, staff.trail, signed.principal.hospital, f, 1000, 0)
    except FilmlessError as exc:
        return console_page("console_message.html", request, exc.status, signed=signed, message=str(exc))
    if q.get("format") == "csv":
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"', "Cache-Control": "no-store"}
        return Response(admin.as_csv(events), media_type="text/csv", headers=headers)
    query = "&".join(f"{k}={v}" for k, v in q.multi_items() if k != "format")
    return console_page(
        "console_audit.html", request, signed=signed, filters=AUDIT_FILTERS, asked=asked, events=events,
        csv_url=f"/console/audit?{query}&format=csv" if query else "/console/audit?format=csv",
    )  # fmt: skip
