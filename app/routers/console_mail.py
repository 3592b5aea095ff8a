"""The console's "send by email" of a new share's Access Page (CSRF-checked, audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.errors import FilmlessError
from app.http.deps import ArchiveDep, BaseDep, SharesDep
from app.routers.console import console_page
from app.routers.console_studies import _check_csrf, _staff, _trail
from app.security.principal import Right
from app.services import audit
from app.services.audit import Transaction
from app.services.share_mail import send_access_page

router = APIRouter(prefix="/console", include_in_schema=False)


@router.post("/shares/{share_id}/email")
async def email_access_page(
    request: Request,
    archive: ArchiveDep,
    base: BaseDep,
    shares: SharesDep,
    share_id: str,
    token: Annotated[str, Form(max_length=100)],
    access_code: Annotated[str, Form(max_length=40)],
    to: Annotated[str, Form(max_length=254)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    signed = await _staff(request, Right.SHARE)
    _check_csrf(signed, csrf)
    trail = _trail(request, Transaction.SHARE, signed)
    trail.event.share_id = share_id
    try:
        await send_access_page(archive, shares, signed.principal, share_id, token, access_code, to, base)
    except FilmlessError as exc:
        await audit.commit(archive, trail, exc.status, f"Access Page not emailed: {exc}")
        return console_page("console_message.html", request, exc.status, signed=signed, message=str(exc))
    await audit.commit(archive, trail, 200, f"emailed the Access Page to {to.strip()}")
    message = f"The Access Page of share {share_id} was sent to {to.strip()}."
    return console_page("console_sent.html", request, signed=signed, message=message, share_id=share_id)
