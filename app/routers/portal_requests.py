"""The portal's enrolment request form, for a patient without a printed code. Its answer
is one page, whatever was typed: nothing tells the requester whether such a patient is
known (the film library decides, later, by email)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.http import trails
from app.http.deps import ArchiveDep, SharesDep
from app.routers.portal import _page
from app.services.audit import Transaction
from app.services.enrolment_requests import EnrolmentRequests

router = APIRouter(prefix="/portal", include_in_schema=False)

RECEIVED = (
    "Thank you. The film library will check your request against its records and email you "
    "at that address: a sign-in link if it is approved, or a note if it cannot be."
)


@router.get("/request")
async def request_form(archive: ArchiveDep, shares: SharesDep) -> Response:
    hospitals = await EnrolmentRequests(archive, shares.hasher).hospitals()
    return _page("portal_request.html", hospitals=hospitals)


@router.post("/request")
async def send_request(
    request: Request,
    archive: ArchiveDep,
    shares: SharesDep,
    hospital: Annotated[str, Form(max_length=64)],
    name: Annotated[str, Form(max_length=200)],
    birth_date: Annotated[dt.date, Form()],
    reference: Annotated[str, Form(max_length=64)],
    email: Annotated[str, Form(max_length=254)],
) -> Response:
    trail = trails.start(request, Transaction.ENROLMENT)
    client = request.client.host if request.client else None
    await EnrolmentRequests(archive, shares.hasher).submit(
        trail, client, hospital, name, birth_date, reference, email
    )
    return _page("portal_message.html", message=RECEIVED)
