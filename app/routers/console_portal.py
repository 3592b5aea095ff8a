"""The console's side of the patient portal: an enrolment code for a patient, printed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.routers.console_studies import _check_csrf, _staff, _trail
from app.security.principal import Right
from app.services import audit
from app.services.audit import Transaction
from app.services.portal import Portal

router = APIRouter(prefix="/console", include_in_schema=False)


@router.post("/enrolment-codes")
async def new_enrolment_code(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    patient_id: Annotated[str, Form(max_length=64)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    signed = await _staff(request, Right.SHARE)
    _check_csrf(signed, csrf)
    trail = _trail(request, Transaction.SHARE, signed)
    trail.note(patients=[patient_id], owners=[signed.principal.hospital or ""])
    code = await Portal(archive, shares.hasher).new_code(signed.principal, patient_id)
    await audit.commit(archive, trail, 201, "created a patient portal enrolment code")
    return console_page(
        "console_enrolment.html", request, 201, signed=signed, code=code, portal_url=f"{base}/portal/enrol"
    )
