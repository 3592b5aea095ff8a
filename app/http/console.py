"""The staff console's session in the HTTP layer: the signed-in person of a browser, and
the one dependency every console page takes — signed in, holding the page's right, its
form's CSRF token checked, and the request's audit trail started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.errors import Forbidden
from app.http import trails
from app.http.state import running
from app.security.principal import Principal, Right
from app.services.audit import Trail, Transaction
from app.services.signin import Signed, csrf_ok

COOKIE = "filmless_console"


class SignInFirst(Exception):
    """A console page asked for without a signed-in session: answered by
    :func:`to_sign_in` wherever it is raised — a redirect to the sign-in page, or for an
    image (which a browser cannot follow to a page) a bare 401."""

    def __init__(self, redirect: bool = True) -> None:
        super().__init__()
        self.redirect = redirect


async def to_sign_in(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SignInFirst) and not exc.redirect:
        return Response(status_code=401)
    return RedirectResponse("/console/signin", status_code=303)


async def signed_in(request: Request) -> Signed | None:
    """The signed-in person of this browser, if any (for the console's pages)."""
    return await running(request).signin.signed(request.cookies.get(COOKIE))


def check_csrf(expected: str | None, sent: str) -> None:
    """A form's token against its session's: a form posted from another site has none."""
    if not csrf_ok(expected, sent):
        raise Forbidden("the form is stale or was not sent from this archive's page")


@dataclass(frozen=True)
class Staff:
    """A signed-in staff member on a console page, with the page's audit trail."""

    signed: Signed
    trail: Trail

    @property
    def principal(self) -> Principal:
        return self.signed.principal


def staff(
    right: Right | None, transaction: Transaction, *, form: bool = False, image: bool = False
) -> Callable[..., Awaitable[Staff]]:
    """The staff member of a console page that needs ``right`` (None: any member
    hospital's staff, whatever their roles); with ``form``, a form post whose CSRF token
    must match the session's. The trail starts once they are known
    (an anonymous browser is sent to sign in, not recorded)."""

    async def signed_staff(request: Request) -> Signed:
        signed = await signed_in(request)
        if signed is None:
            raise SignInFirst(redirect=not image)
        if right is None:
            if signed.principal.hospital_pk is None:
                raise Forbidden("only a member hospital's staff may do this")
        elif right not in signed.principal.rights:
            raise Forbidden(f"this requires the right to {right.value}")
        return signed

    def started(request: Request, signed: Signed) -> Staff:
        trail = trails.start(request, transaction)
        trail.identify(signed.principal)
        return Staff(signed, trail)

    # Defaults rather than Annotated: the dependencies are local to this factory, which
    # string annotations (PEP 563) cannot name.
    async def page(request: Request, signed: Signed = Depends(signed_staff)) -> Staff:
        return started(request, signed)

    async def posted(request: Request, signed: Signed = Depends(signed_staff), csrf: str = Form("")) -> Staff:
        check_csrf(signed.csrf, csrf)
        return started(request, signed)

    return posted if form else page


StaffSearching = Annotated[Staff, Depends(staff(Right.READ, Transaction.QIDO))]
StaffViewing = Annotated[Staff, Depends(staff(Right.READ, Transaction.WADO, image=True))]
StaffSharing = Annotated[Staff, Depends(staff(Right.SHARE, Transaction.SHARE))]
StaffSharingForm = Annotated[Staff, Depends(staff(Right.SHARE, Transaction.SHARE, form=True))]
StaffAdministering = Annotated[Staff, Depends(staff(Right.ADMINISTER, Transaction.ADMIN))]
StaffAdministeringForm = Annotated[Staff, Depends(staff(Right.ADMINISTER, Transaction.ADMIN, form=True))]
StaffSendingForm = Annotated[Staff, Depends(staff(Right.DOWNLOAD, Transaction.SEND, form=True))]
StaffImporting = Annotated[Staff, Depends(staff(Right.STORE, Transaction.IMPORT))]
StaffImportingForm = Annotated[Staff, Depends(staff(Right.STORE, Transaction.IMPORT, form=True))]
#: A job's page: any member hospital's staff, as for ``GET /api/jobs/{id}``.
StaffFollowingJob = Annotated[Staff, Depends(staff(None, Transaction.JOB))]
StaffAuditing = Annotated[Staff, Depends(staff(Right.AUDIT, Transaction.AUDIT_QUERY))]
StaffEnrolling = Annotated[Staff, Depends(staff(Right.SHARE, Transaction.ENROLMENT))]
StaffEnrollingForm = Annotated[Staff, Depends(staff(Right.SHARE, Transaction.ENROLMENT, form=True))]
