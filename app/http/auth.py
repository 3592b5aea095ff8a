"""The HTTP half of authorization: every route depends on :func:`requires`, which
authenticates the bearer token (:mod:`app.security.authenticator`, or a share's token) and
checks the caller's rights (:mod:`app.security.principal`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, Unauthorized
from app.http.share_gateway import PREFIX_KEY
from app.http.state import running
from app.security.principal import Principal, Right

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT from the hospital's identity provider (or `filmless token` in development).",
)


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthorized("a bearer token is required", error=None)
    token = credentials.credentials
    if token.count(".") == 2:
        principal: Principal = await running(request).authenticator.principal(token)
    else:
        # Not a JWT: a share link's token (or a share session's), which also works as a
        # bearer token on /dicom-web.
        principal = await running(request).shares.principal(token)
        if principal.deidentify_key is not None and PREFIX_KEY not in request.scope:
            # Its answers are de-identified at the share's own root (app.http.share_deidentify).
            raise Unauthorized("a de-identified share is reached at its own DICOMweb root, /share/{token}/")
    trail = getattr(request.state, "audit", None)
    if trail is not None:
        trail.identify(principal)
    return principal


def requires(right: Right) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the authenticated caller, once it is established they hold ``right``."""

    async def authorize(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if right not in principal.rights:
            raise Forbidden(f"this requires the right to {right.value}")
        return principal

    return authorize
