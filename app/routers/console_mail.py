"""The console's "send by email" of a new share's Access Page (CSRF-checked, audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.errors import FilmlessError
from app.http.console import StaffSharingForm
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.services.share_mail import send_access_page

router = APIRouter(prefix="/console", include_in_schema=False)


@router.post("/shares/{share_id}/email")
async def email_access_page(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    staff: StaffSharingForm,
    share_id: str,
    token: Annotated[str, Form(max_length=100)],
    access_code: Annotated[str, Form(max_length=40)],
    to: Annotated[str, Form(max_length=254)],
) -> Response:
    try:
        await send_access_page(
            archive, shares, staff.principal, staff.trail, share_id, token, access_code, to, base
        )
    except FilmlessError as exc:
        return console_page(
            "console_message.html", request, exc.status, signed=staff.signed, message=str(exc)
        )
    message = f"The Access Page of share {share_id} was sent to {to.strip()}."
    return console_page("console_sent.html", request, signed=staff.signed, message=message, share_id=share_id)
