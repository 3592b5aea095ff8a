"""From a bearer token to a :class:`~app.security.principal.Principal`: verify the JWT against the
configured keys, map its claims to roles, and resolve the caller's member hospital."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from app.errors import Forbidden, Unauthorized
from app.repository import hospitals
from app.repository.database import Pool
from app.repository.invalidation import Invalidations
from app.security import jwt
from app.security.keys import LOCAL_ALGORITHM, LOCAL_KID, KeySource, LocalIssuer
from app.security.principal import Principal, Role
from app.settings import Settings

#: Seconds a hospital code -> key lookup is remembered. A hospital removed on any node is
#: forgotten at once through :mod:`app.repository.invalidation`; the TTL only bounds memory
#: of codes no longer used.
_HOSPITAL_TTL = 60.0
#: A verified token's claims are remembered this long (never past its expiry): a viewer
#: sends the same token with hundreds of requests, and verifying a signature costs more
#: than the rest of a small request. Bounded in size. Safe on several nodes by
#: construction: claims are a function of the token's bytes and the signing keys, which
#: are not in the database (a key withdrawn from a JWKS is honoured at most this long,
#: as on one node).
_VERIFIED_TTL = 60.0
_VERIFIED_MAX = 10_000


class Authenticator:
    def __init__(self, settings: Settings, keys: KeySource, pool: Pool, invalidations: Invalidations) -> None:
        self.settings, self.keys, self.pool = settings, keys, pool
        self.invalidations = invalidations
        invalidations.subscribe(self._invalidate)
        self._role_names = {
            settings.role_reader: Role.READER,
            settings.role_uploader: Role.UPLOADER,
            settings.role_sharer: Role.SHARER,
            settings.role_admin: Role.ADMIN,
            settings.role_regional: Role.REGIONAL,
        }
        self._hospitals: dict[str, tuple[int, float]] = {}
        self._verified: dict[bytes, tuple[dict[str, Any], float]] = {}

    async def principal(self, token: str) -> Principal:
        return await self.principal_from_claims(await self.claims(token))

    async def principal_from_claims(self, claims: dict[str, Any]) -> Principal:
        """Roles and hospital from verified claims: a bearer token's, or a browser
        sign-in's ID token (the same claims, so the same rights)."""
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token has no subject")
        code = claims.get(self.settings.auth_hospital_claim)
        if not isinstance(code, str) or not code:
            raise Forbidden("the token names no member hospital")
        return Principal(subject, code, await self._hospital_pk(code), self._roles(claims))

    async def claims(self, token: str) -> dict[str, Any]:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        claims = await self._verify(token)
        exp = claims.get("exp")
        remaining = float(exp) - time.time() if isinstance(exp, int | float) else 0.0
        if remaining > 0:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[digest] = (claims, time.monotonic() + min(_VERIFIED_TTL, remaining))
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        s = self.settings
        try:
            key = await self.keys.key(jwt.header(token).get("kid"))
            if key is None:
                raise jwt.TokenError("the token is signed with an unknown key")
            return jwt.verify(
                token, key, algorithms=s.auth_algorithms, issuer=s.auth_issuer, audience=s.auth_audience,
                leeway=s.auth_leeway,
            )  # fmt: skip
        except jwt.TokenError as exc:
            raise Unauthorized(str(exc)) from None

    def _roles(self, claims: dict[str, Any]) -> frozenset[Role]:
        raw = claims.get(self.settings.auth_roles_claim, [])
        names = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        return frozenset(self._role_names[n] for n in names if isinstance(n, str) and n in self._role_names)

    async def _hospital_pk(self, code: str) -> int:
        # Served from memory only while the invalidation listener is connected: a hospital
        # removed while it is not would otherwise go unnoticed here.
        live = self.invalidations.live
        cached = self._hospitals.get(code)
        if live and cached is not None and cached[1] > time.monotonic():
            return cached[0]
        generation = self.invalidations.generation
        found = await hospitals.by_code(self.pool, code)
        if found is None:
            raise Forbidden(f"hospital {code!r} is not a member of this archive")
        # Not remembered if a flush (a lost listener) happened during the lookup.
        if live and generation == self.invalidations.generation:
            self._hospitals[code] = (found.pk, time.monotonic() + _HOSPITAL_TTL)
        return found.pk

    def _invalidate(self, kind: str | None, key: str | None) -> None:
        if kind is None:
            self._hospitals.clear()
        elif kind == "hospital" and key is not None:
            self._hospitals.pop(key, None)


def issue_local_token(
    settings: Settings,
    subject: str,
    hospital: str,
    roles: list[str],
    lifetime: int,
    *,
    create_key: bool = False,
    **claims: Any,
) -> str:
    """A token signed with the archive's local key (``filmless token``); NoLocalKey when the
    key is not there (unless ``create_key``: tests that sign before the server starts)."""
    issuer = LocalIssuer(settings.local_key_path, create=create_key)
    now = int(time.time())
    body = {
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        settings.auth_roles_claim: roles,
        settings.auth_hospital_claim: hospital,
        **claims,
    }
    return jwt.sign(body, issuer.private_pem, LOCAL_ALGORITHM, LOCAL_KID)
