"""Browser sign-in for the staff console: OpenID Connect's authorization code flow with
PKCE (OIDC Core 1.0 §3.1, RFC 7636), server-side sessions, and their CSRF tokens.

Authlib supplies the protocol pieces (random tokens, the S256 code challenge, the
authorization URL); the ID token is verified with the archive's own pinned JWT
verification (:mod:`app.security.jwt`) against the provider's JWKS, and its claims are
mapped to roles and hospital exactly as a bearer token's are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from app.errors import BadRequest, FilmlessError, Forbidden, StorageUnavailable, Unauthorized
from app.repository import web_sessions
from app.security import jwt
from app.security.keys import JwksKeys
from app.security.principal import Principal, Role
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.settings import Settings

#: A sign-in in progress (at the identity provider) is abandoned after this long.
_PENDING_SECONDS = 600
#: Seconds the provider's discovery document is trusted.
_DISCOVERY_TTL = 3600.0


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class Authenticator(Protocol):
    """What sign-in needs of :class:`app.security.authenticator.Authenticator`: claims to
    a principal, the same mapping as for bearer tokens."""

    async def principal_from_claims(self, claims: dict[str, Any]) -> Principal: ...


@dataclass(frozen=True)
class Signed:
    """A signed-in person: who, and the token their forms must carry."""

    principal: Principal
    csrf: str
    how: str  # "oidc" or "development"
    name: str


class SignIn:
    def __init__(
        self, archive: Archive, authenticator: Authenticator, client: httpx.AsyncClient | None = None
    ) -> None:
        self.archive, self.authenticator = archive, authenticator
        self.settings: Settings = archive.settings
        self._client = client or httpx.AsyncClient(timeout=10)
        self._discovery: tuple[dict[str, Any], float] | None = None
        self._keys: JwksKeys | None = None

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.settings.oidc_issuer and self.settings.oidc_client_id)

    async def close(self) -> None:
        await self._client.aclose()
        if self._keys is not None:
            await self._keys.close()

    # --- The authorization code flow --------------------------------------------------

    async def begin(self, redirect_uri: str) -> tuple[str, str]:
        """A pending session and the provider's authorization URL to send the browser to."""
        if not self.oidc_enabled:
            raise Forbidden("no identity provider is configured")
        config = await self._config()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        session_id: str = generate_token(43)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_PENDING_SECONDS)
        data = {"state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri}
        await web_sessions.add(
            self.archive.pool, _hash(session_id), "pending", data, generate_token(32), expires
        )
        url = add_params_to_uri(
            config["authorization_endpoint"],
            [
                ("response_type", "code"),
                ("client_id", str(self.settings.oidc_client_id)),
                ("redirect_uri", redirect_uri),
                ("scope", self.settings.oidc_scopes),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", create_s256_code_challenge(verifier)),
                ("code_challenge_method", "S256"),
            ],
        )
        return session_id, url

    async def pending(self) -> tuple[str, str]:
        """A pending session for a form shown before sign-in (its CSRF token)."""
        session_id: str = generate_token(43)
        csrf: str = generate_token(32)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_PENDING_SECONDS)
        await web_sessions.add(self.archive.pool, _hash(session_id), "pending", {}, csrf, expires)
        return session_id, csrf

    async def complete(self, pending_id: str | None, code: str, state: str, trail: Trail) -> str:
        """The provider sent the browser back: exchange the code, verify the ID token, and
        open a staff session under a new identifier (the pending one is spent). The
        sign-in, or its refusal, is recorded in the audit trail."""
        try:
            principal, name = await self._completed(pending_id, code, state)
        except FilmlessError as exc:
            await audit.commit(self.archive, trail, exc.status, f"sign-in refused: {exc.message}")
            raise
        return await self._open(principal, "oidc", name, trail)

    async def cancelled(self, trail: Trail) -> None:
        """The provider sent the browser back without a code: recorded as refused."""
        await audit.commit(self.archive, trail, 400, "sign-in cancelled or refused at the identity provider")

    async def _completed(self, pending_id: str | None, code: str, state: str) -> tuple[Principal, str]:
        pending = await web_sessions.take(self.archive.pool, _hash(pending_id)) if pending_id else None
        if pending is None or pending.kind != "pending":
            raise BadRequest("no sign-in is in progress in this browser (or it took too long)")
        if not hmac.compare_digest(pending.data["state"], state):
            raise BadRequest("the sign-in's state does not match")
        config = await self._config()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.data["redirect_uri"],
            "client_id": str(self.settings.oidc_client_id),
            "code_verifier": pending.data["verifier"],
        }
        auth: httpx.Auth | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
        if self.settings.oidc_client_secret is not None:
            # client_secret_basic, which every provider must support (RFC 6749 §2.3.1):
            # both parts form-encoded before they are joined.
            secret = self.settings.oidc_client_secret.get_secret_value()
            auth = httpx.BasicAuth(quote_plus(form["client_id"]), quote_plus(secret))
        try:
            response = await self._client.post(config["token_endpoint"], data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise StorageUnavailable("the identity provider cannot be reached", type(exc).__name__) from None
        if response.status_code != 200:
            raise Unauthorized("the identity provider refused the sign-in", error=None)
        tokens = response.json()
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized("the identity provider sent no ID token", error=None)
        claims = await self._verify(id_token, config["issuer"], tokens.get("access_token"))
        if not hmac.compare_digest(str(claims.get("nonce", "")), pending.data["nonce"]):
            raise Unauthorized("the ID token's nonce does not match", error=None)
        principal = await self.authenticator.principal_from_claims(claims)
        name = str(claims.get("name") or claims.get("email") or principal.subject)
        return principal, name

    async def development(
        self,
        pending_id: str | None,
        csrf: str | None,
        subject: str,
        hospital: str,
        roles: list[str],
        trail: Trail,
    ) -> str:
        """Development sign-in: whoever the form says. Refused unless enabled."""
        try:
            if not self.settings.console_dev_signin:
                raise Forbidden("development sign-in is not enabled")
            pending = await web_sessions.take(self.archive.pool, _hash(pending_id)) if pending_id else None
            if pending is None or pending.kind != "pending" or not csrf_ok(pending.csrf, csrf):
                raise Forbidden("the form is stale or was not sent from this archive's page")
            s = self.settings
            principal = await self.authenticator.principal_from_claims(
                {"sub": subject, s.auth_hospital_claim: hospital, s.auth_roles_claim: roles}
            )
        except FilmlessError as exc:
            await audit.commit(self.archive, trail, exc.status, f"development sign-in refused: {exc.message}")
            raise
        return await self._open(principal, "development", subject, trail)

    # --- Sessions ----------------------------------------------------------------------

    async def signed(self, session_id: str | None) -> Signed | None:
        if not session_id:
            return None
        found = await web_sessions.get(self.archive.pool, _hash(session_id))
        if found is None or found.kind != "staff":
            return None
        d = found.data
        principal = Principal(
            d["subject"], d["hospital"], d["hospital_pk"], frozenset(Role(r) for r in d["roles"])
        )
        return Signed(principal, found.csrf, d["how"], d["name"])

    async def sign_out(self, session_id: str, signed: Signed, trail: Trail) -> None:
        trail.identify(signed.principal)
        await web_sessions.take(self.archive.pool, _hash(session_id))
        await audit.commit(self.archive, trail, 303, "signed out")

    async def _open(self, principal: Principal, how: str, name: str, trail: Trail) -> str:
        session_id: str = generate_token(43)
        data = {
            "subject": principal.subject,
            "hospital": principal.hospital,
            "hospital_pk": principal.hospital_pk,
            "roles": sorted(r.value for r in principal.roles),
            "how": how,
            "name": name,
        }
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=self.settings.console_session_hours)
        await web_sessions.add(
            self.archive.pool, _hash(session_id), "staff", data, generate_token(32), expires
        )
        trail.identify(principal)
        await audit.commit(self.archive, trail, 303, f"signed in ({how})")
        return session_id

    # --- The provider's metadata and keys ----------------------------------------------

    async def _config(self) -> dict[str, Any]:
        if self._discovery is not None and self._discovery[1] > time.monotonic():
            return self._discovery[0]
        issuer = str(self.settings.oidc_issuer).rstrip("/")
        try:
            response = await self._client.get(f"{issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            config: dict[str, Any] = response.json()
            for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(config.get(field), str):
                    raise ValueError(field)
        except (httpx.HTTPError, ValueError) as exc:
            raise StorageUnavailable("the identity provider cannot be reached", type(exc).__name__) from None
        self._discovery = (config, time.monotonic() + _DISCOVERY_TTL)
        if self._keys is None:
            s = self.settings
            self._keys = JwksKeys(config["jwks_uri"], s.auth_jwks_cache_seconds, s.auth_jwks_min_refresh)
        return config

    async def _verify(self, id_token: str, issuer: str, access_token: Any) -> dict[str, Any]:
        """OIDC Core §3.1.3.7: signature by the provider's key, issuer, audience (this
        client), expiry; the nonce is checked by the caller."""
        s = self.settings
        assert self._keys is not None
        try:
            key = await self._keys.key(jwt.header(id_token).get("kid"))
            if key is None:
                raise jwt.TokenError("the ID token is signed with an unknown key")
            return jwt.verify(
                id_token, key, algorithms=s.auth_algorithms, issuer=issuer, audience=str(s.oidc_client_id),
                leeway=s.auth_leeway, access_token=access_token if isinstance(access_token, str) else None,
            )  # fmt: skip
        except jwt.TokenError as exc:
            raise Unauthorized(str(exc), error=None) from None


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
