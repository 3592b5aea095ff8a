"""The staff console's sign-in: the identity provider's authorization code flow, a
development sign-in when explicitly enabled, and sign-out. Pages are server-rendered and
work without JavaScript; every form carries its session's CSRF token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.errors import FilmlessError
from app.http import trails
from app.http.console import COOKIE, check_csrf, signed_in
from app.http.state import running
from app.routers.pages import page
from app.security.principal import Role
from app.services.audit import Transaction
from app.services.signin import SignIn

router = APIRouter(include_in_schema=False)


def _signin(request: Request) -> SignIn:
    return running(request).signin


def _set_cookie(request: Request, response: Response, session_id: str, max_age: int) -> None:
    # HttpOnly: no script reads it; Lax: sent on the provider's top-level redirect back,
    # not on cross-site form posts; Secure whenever the page was reached over TLS.
    response.set_cookie(
        COOKIE, session_id, max_age=max_age, path="/console", httponly=True, samesite="lax",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def console_page(template: str, request: Request, status: int = 200, **context: Any) -> Response:
    development = _signin(request).settings.console_dev_signin
    response = page(template, status, development=development, **context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _signin_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    service = _signin(request)
    context: dict[str, Any] = {"oidc": service.oidc_enabled, "error": error, "roles": [r.value for r in Role]}
    pending_id = None
    if service.settings.console_dev_signin:
        pending_id, context["csrf"] = await service.pending()
    response = console_page("console_signin.html", request, status, **context)
    if pending_id is not None:
        _set_cookie(request, response, pending_id, 600)
    return response


@router.get("/console")
async def home(request: Request) -> Response:
    signed = await signed_in(request)
    if signed is None:
        return RedirectResponse("/console/signin", status_code=303)
    roles = sorted(r.value for r in signed.principal.roles)
    return console_page("console_home.html", request, signed=signed, roles=roles)


@router.get("/console/signin")
async def signin_page(request: Request) -> Response:
    return await _signin_page(request)


@router.get("/console/login")
async def login(request: Request) -> Response:
    """To the identity provider, with a fresh state, nonce and PKCE challenge."""
    redirect_uri = str(request.url_for("console_callback"))
    try:
        pending_id, url = await _signin(request).begin(redirect_uri)
    except FilmlessError as exc:
        return await _signin_page(request, exc.status, str(exc))
    response = RedirectResponse(url, status_code=303)
    _set_cookie(request, response, pending_id, 600)
    return response


@router.get("/console/callback", name="console_callback")
async def callback(
    request: Request, code: str | None = None, state: str | None = None, error: str | None = None
) -> Response:
    trail = trails.start(request, Transaction.SIGN_IN)
    if error is not None or code is None or state is None:
        await _signin(request).cancelled(trail)
        return await _signin_page(request, 400, "The sign-in was cancelled or refused.")
    try:
        session_id = await _signin(request).complete(request.cookies.get(COOKIE), code, state, trail)
    except FilmlessError as exc:
        return await _signin_page(request, exc.status, str(exc))
    response = RedirectResponse("/console", status_code=303)
    _set_cookie(request, response, session_id, _signin(request).settings.console_session_hours * 3600)
    return response


@router.post("/console/dev-signin")
async def dev_signin(
    request: Request,
    subject: Annotated[str, Form(min_length=1, max_length=200)],
    hospital: Annotated[str, Form(min_length=1, max_length=64)],
    csrf: Annotated[str, Form()] = "",
    roles: Annotated[list[str] | None, Form()] = None,
) -> Response:
    service = _signin(request)
    try:
        session_id = await service.development(
            request.cookies.get(COOKIE), csrf, subject, hospital, roles or [],
            trails.start(request, Transaction.SIGN_IN),
        )  # fmt: skip
    except FilmlessError as exc:
        return await _signin_page(request, exc.status, str(exc))
    response = RedirectResponse("/console", status_code=303)
    _set_cookie(request, response, session_id, service.settings.console_session_hours * 3600)
    return response


@router.post("/console/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    signed = await signed_in(request)
    check_csrf(signed.csrf if signed else None, csrf)
    assert signed is not None
    await _signin(request).sign_out(
        request.cookies[COOKIE], signed, trails.start(request, Transaction.SIGN_OUT)
    )
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response
