"""The console's administration pages: member hospitals, known AEs, and the audit trail
with filters and a CSV export (the admin service's, scoped to the admin's hospital)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.errors import FilmlessError
from app.http.console import StaffAdministering, StaffAuditing
from app.http.deps import ArchiveDep
from app.routers.console import console_page
from app.services import admin
from app.services.admin import AuditFilter

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
