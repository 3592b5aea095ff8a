"""Where token verification keys come from: a JWKS URL (fetched, cached, refetched when an
unknown key id shows up, which is how providers rotate keys), static PEM files, or the
archive's own local signing key."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.errors import StorageUnavailable
from app.security.jwt import public_jwk
from app.settings import Settings

log = logging.getLogger(__name__)

JWK = Mapping[str, Any]
LOCAL_ALGORITHM = "ES256"
LOCAL_KID = "filmless-local-1"


class KeySource(Protocol):
    async def key(self, kid: str | None) -> JWK | None:
        """The public JWK for ``kid`` (None: the only key, if there is exactly one)."""
        ...


def _pick(keys: list[JWK], kid: str | None) -> JWK | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.get("kid") == kid), None)


class StaticKeys:
    def __init__(self, keys: Sequence[JWK]) -> None:
        self._keys = list(keys)

    @classmethod
    def from_pem_files(cls, paths: list[Path]) -> StaticKeys:
        keys = []
        for path in paths:
            public = serialization.load_pem_public_key(path.read_bytes())
            algorithm = "ES256" if isinstance(public, ec.EllipticCurvePublicKey) else "RS256"
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            keys.append(public_jwk(pem.decode(), algorithm, path.stem))
        return cls(keys)

    async def key(self, kid: str | None) -> JWK | None:
        return _pick(self._keys, kid)


class JwksKeys:
    """A JWKS URL, cached for ``ttl`` seconds; an unknown ``kid`` refetches it at most every
    ``min_refresh`` seconds, so a flood of bogus key ids cannot hammer the provider."""

    def __init__(self, url: str, ttl: int, min_refresh: int, client: httpx.AsyncClient | None = None) -> None:
        self._url, self._ttl, self._min_refresh = url, ttl, min_refresh
        self._client = client or httpx.AsyncClient(timeout=10)
        self._keys: list[JWK] = []
        self._fetched = -float("inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> JWK | None:
        now = time.monotonic()
        if now - self._fetched > self._ttl:
            await self._refresh(now)
        found = _pick(self._keys, kid)
        if found is None and now - self._fetched > self._min_refresh:
            await self._refresh(now)  # a key the provider has just rotated in
            found = _pick(self._keys, kid)
        return found

    async def _refresh(self, now: float) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched <= self._min_refresh:
                return  # another request refreshed it meanwhile
            try:
                response = await self._client.get(self._url)
                response.raise_for_status()
                keys = response.json()["keys"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("cannot fetch the JWKS: %s", type(exc).__name__)
                if not self._keys:
                    raise StorageUnavailable("the identity provider's keys cannot be fetched") from exc
                return  # keep the keys we have
            self._keys = [k for k in keys if isinstance(k, dict)]
            self._fetched = now

    async def close(self) -> None:
        await self._client.aclose()


class NoLocalKey(Exception):
    """``filmless token`` found no signing key where the settings say the server keeps it."""


class LocalIssuer:
    """The archive's own signing key, created when the server first starts (mode 0600):
    tokens for development and the embedded default, printed by ``filmless token``. Only
    the server creates it: a token command run with other settings than the server's
    must not mint tokens with a key the server has never seen."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise NoLocalKey(str(path))
        self.private_pem = _load_or_create(path)
        self.public = public_jwk(self.private_pem, LOCAL_ALGORITHM, LOCAL_KID)

    async def key(self, kid: str | None) -> JWK | None:
        return self.public if kid in (None, LOCAL_KID) else None


def _load_or_create(path: Path) -> str:
    if path.exists():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    # Written whole under a temporary name, then linked in: several worker processes may
    # start at once, and exactly one key must win, complete, for all of them.
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(pem)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text()  # another process created it first
    finally:
        temporary.unlink()
    log.info("created a local token signing key at %s", path)
    return pem


def key_source(settings: Settings) -> KeySource:
    if settings.auth_keys == "jwks":
        if not settings.auth_jwks_url:
            raise ValueError("FILMLESS_AUTH_JWKS_URL is required with FILMLESS_AUTH_KEYS=jwks")
        return JwksKeys(
            settings.auth_jwks_url, settings.auth_jwks_cache_seconds, settings.auth_jwks_min_refresh
        )
    if settings.auth_keys == "pem":
        if not settings.auth_public_key_files:
            raise ValueError("FILMLESS_AUTH_PUBLIC_KEY_FILES is required with FILMLESS_AUTH_KEYS=pem")
        return StaticKeys.from_pem_files(settings.auth_public_key_files)
    return LocalIssuer(settings.local_key_path)
