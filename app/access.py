"""Who is calling, and what they may do.

Every route depends on :func:`requires`, which authenticates the bearer token
(:mod:`app.security.authenticator`) and checks the caller's rights, so the whole
policy lives here: roles grant rights, the caller's hospital and roles give the scope
every repository query carries (:class:`app.scope.Scope`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, Unauthorized
from app.scope import Scope
from app.share_gateway import PREFIX_KEY


class Role(Enum):
    READER = "reader"  # QIDO-RS, WADO-RS, WADO-URI of their hospital's studies
    UPLOADER = "uploader"  # STOW-RS
    SHARER = "sharer"  # create and revoke share links
    ADMIN = "admin"  # delete, audit queries, hospital management
    REGIONAL = "regional"  # reads other members' studies of a specific patient


class Right(Enum):
    READ = "read"  # search, metadata, frames, rendered images
    DOWNLOAD = "download"  # whole instances (WADO-RS retrieve, WADO-URI DICOM, ZIP)
    STORE = "store"
    SHARE = "share"
    DELETE = "delete"
    AUDIT = "audit"
    ADMINISTER = "administer"


ROLE_RIGHTS: dict[Role, frozenset[Right]] = {
    Role.READER: frozenset({Right.READ, Right.DOWNLOAD}),
    Role.UPLOADER: frozenset({Right.STORE}),
    Role.SHARER: frozenset({Right.SHARE}),
    Role.ADMIN: frozenset({Right.DELETE, Right.AUDIT, Right.ADMINISTER}),
    # Regional look-up widens what READ reaches; it grants no right of its own.
    Role.REGIONAL: frozenset(),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    hospital: str | None
    hospital_pk: int | None
    roles: frozenset[Role]
    share_id: str | None = None
    shared_studies: frozenset[str] | None = None
    #: A share's rights, from its permissions; staff rights come from their roles.
    share_rights: frozenset[Right] | None = None
    #: A de-identifying share's key (see app.dicom.deidentification).
    deidentify_key: bytes | None = None

    @property
    def rights(self) -> frozenset[Right]:
        if self.share_rights is not None:
            return self.share_rights
        return frozenset().union(*(ROLE_RIGHTS[r] for r in self.roles))

    @property
    def scope(self) -> Scope:
        return Scope(
            hospital_pk=self.hospital_pk,
            regional=Role.REGIONAL in self.roles and Right.READ in self.rights,
            study_uids=self.shared_studies,
            deidentify_key=self.deidentify_key,
        )


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
        principal: Principal = await request.app.state.authenticator.principal(token)
    else:
        # Not a JWT: a share link's token (or a share session's), which also works as a
        # bearer token on /dicom-web.
        principal = await request.app.state.shares.principal(token)
        if principal.deidentify_key is not None and PREFIX_KEY not in request.scope:
            # Its answers are de-identified at the share's own root (app.share_deidentify).
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
