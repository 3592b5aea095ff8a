"""The console's side of the patient portal: an enrolment code for a patient, printed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.http.console import StaffSharingForm
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.services.portal import Portal

router = APIRouter(prefix="/console", include_in_schema=False)


@router.post("/enrolment-codes")
async def new_enrolment_code(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    staff: StaffSharingForm,
    patient_id: Annotated[str, Form(max_length=64)],
) -> Response:
    code = await Portal(archive, shares.hasher).new_code(staff.principal, staff.trail, patient_id)
    return console_page(
        "console_enrolment.html", request, 201, signed=staff.signed, code=code,
        portal_url=f"{base}/portal/enrol",
    )  # fmt: skip
