"""The console's side of enrolment by request: the film library lists the pending
requests of its hospital, reviews one against the patient records it may be, and
approves it (linking the record it confirms) or declines it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.errors import FilmlessError
from app.http.console import StaffEnrolling, StaffEnrollingForm
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.routers.pages import person_name
from app.services.enrolment_requests import EnrolmentRequests

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/enrolment-requests")
async def pending(
    request: Request, archive: ArchiveDep, shares: SharesDep, staff: StaffEnrolling
) -> Response:
    found = await EnrolmentRequests(archive, shares.hasher).pending(staff.principal, staff.trail)
    return console_page("console_requests.html", request, signed=staff.signed, requests=found)


@router.get("/enrolment-requests/{pk}")
async def review(
    request: Request, archive: ArchiveDep, shares: SharesDep, staff: StaffEnrolling, pk: int
) -> Response:
    service = EnrolmentRequests(archive, shares.hasher)
    try:
        asked, candidates = await service.review(staff.principal, staff.trail, pk)
    except FilmlessError as exc:
        return console_page(
            "console_message.html", request, exc.status, signed=staff.signed, message=str(exc)
        )
    shown = [
        {
            "patient_id": c.patient_id,
            "name": person_name(c.patient_name or ""),
            "birth": c.patient_birth_date or "",
        }
        for c in candidates
    ]
    return console_page("console_request.html", request, signed=staff.signed, asked=asked, candidates=shown)


@router.post("/enrolment-requests/{pk}/{decision}")
async def decide(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    staff: StaffEnrollingForm,
    pk: int,
    decision: str,
    patient_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    signed = staff.signed
    if decision not in ("approve", "decline"):
        return console_page("console_message.html", request, 404, signed=signed, message="No such decision.")
    service = EnrolmentRequests(archive, shares.hasher)
    try:
        if decision == "approve":
            decided = await service.approve(staff.principal, staff.trail, pk, patient_id, base)
        else:
            decided = await service.decline(staff.principal, staff.trail, pk, base)
    except FilmlessError as exc:
        return console_page("console_message.html", request, exc.status, signed=signed, message=str(exc))
    done = "approved: the patient record is linked" if decision == "approve" else "declined"
    told = (
        "The requester was emailed."
        if decided.emailed
        else "The email to the requester could not be sent; tell them another way."
    )
    message = f"Enrolment request {pk} {done}. {told}"
    return console_page("console_decided.html", request, signed=signed, message=message)
