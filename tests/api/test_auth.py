"""Authentication against an identity provider's JWKS: real keys (RSA and EC), a JWKS
served over HTTP with key rotation, and the tokens an attacker would try."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.security.jwt import public_jwk, sign
from app.settings import Settings
from harness.servers import settings_for
from tests.fixtures import HOSPITAL, ArchiveUnderTest, _open

ISSUER, AUDIENCE = "https://idp.example.test", "filmless"


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


RSA_KEY = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_KEY = _pem(ec.generate_private_key(ec.SECP256R1()))
ROTATED_KEY = _pem(ec.generate_private_key(ec.SECP256R1()))
STRANGER_KEY = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


class _Jwks:
    """A JWKS endpoint whose key set the test can change (rotation)."""

    def __init__(self) -> None:
        self.keys = [public_jwk(RSA_KEY, "RS256", "rsa-1"), public_jwk(EC_KEY, "ES256", "ec-1")]
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def jwks() -> Iterator[_Jwks]:
    server = _Jwks()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest_asyncio.fixture(loop_scope="session")
async def idp_archive(clean_db: str, tmp_path: Path, jwks: _Jwks) -> AsyncIterator[ArchiveUnderTest]:
    settings = settings_for(
        clean_db, None, None, tmp_path / "data", sweep_interval=0, auth_keys="jwks",
        auth_jwks_url=jwks.url, auth_issuer=ISSUER, auth_audience=AUDIENCE, auth_leeway=0,
        auth_algorithms=["RS256", "ES256"], auth_jwks_min_refresh=0,
    )  # fmt: skip
    async for under_test in _open(settings):
        yield under_test


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, "nbf": now - 5,
              "roles": ["reader", "uploader"], "hospital": HOSPITAL}  # fmt: skip
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hmac_with_public_key(claims: dict[str, Any]) -> str:
    """The algorithm-confusion forgery: HS256 with the RSA public key as the secret."""
    public = serialization.load_pem_private_key(RSA_KEY.encode(), None).public_key()
    secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _studies(archive: ArchiveUnderTest, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(transport=archive.client._transport, base_url="http://testserver") as client:
        return await client.get("/dicom-web/studies", headers=headers)


@pytest.mark.parametrize(("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")])
async def test_valid_tokens_from_the_provider(idp_archive: ArchiveUnderTest, key: str, alg: str, kid: str):
    assert (await _studies(idp_archive, sign(_claims(), key, alg, kid))).status_code == 200


async def test_no_token_is_401_with_a_challenge(idp_archive: ArchiveUnderTest):
    response = await _studies(idp_archive, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="filmless"'


@pytest.mark.parametrize(
    ("name", "forge"),
    [
        ("expired", lambda: sign(_claims(exp=int(time.time()) - 10), RSA_KEY, "RS256", "rsa-1")),
        ("not yet valid", lambda: sign(_claims(nbf=int(time.time()) + 600), RSA_KEY, "RS256", "rsa-1")),
        ("wrong audience", lambda: sign(_claims(aud="someone-else"), RSA_KEY, "RS256", "rsa-1")),
        ("wrong issuer", lambda: sign(_claims(iss="https://evil.test"), EC_KEY, "ES256", "ec-1")),
        ("no expiry", lambda: sign(_claims(exp=None), RSA_KEY, "RS256", "rsa-1")),
        ("no audience", lambda: sign(_claims(aud=None), RSA_KEY, "RS256", "rsa-1")),
        ("no issuer", lambda: sign(_claims(iss=None), EC_KEY, "ES256", "ec-1")),
        ("alg none", lambda: _unsigned(_claims())),
        ("alg none, kid set", lambda: _unsigned(_claims(), "None")),
        ("HMAC with the public key", lambda: _hmac_with_public_key(_claims())),
        ("unknown key", lambda: sign(_claims(), STRANGER_KEY, "RS256", "rsa-9")),
        ("known kid, other key", lambda: sign(_claims(), STRANGER_KEY, "RS256", "rsa-1")),
        ("EC key id, RSA algorithm", lambda: sign(_claims(), RSA_KEY, "RS256", "ec-1")),
        ("garbage", lambda: "not.a.token"),
        ("tampered payload", lambda: _tampered()),
    ],
)
async def test_bad_tokens_are_refused(idp_archive: ArchiveUnderTest, name: str, forge: Any):
    response = await _studies(idp_archive, forge())
    assert response.status_code == 401, name
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="filmless", error="invalid_token"'), challenge


def _tampered() -> str:
    header, payload, signature = sign(_claims(), RSA_KEY, "RS256", "rsa-1").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["reader", "uploader", "admin"]
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


async def test_valid_token_without_the_right_is_403(idp_archive: ArchiveUnderTest):
    token = sign(_claims(roles=["uploader"]), EC_KEY, "ES256", "ec-1")
    assert (await _studies(idp_archive, token)).status_code == 403
    async with httpx.AsyncClient(
        transport=idp_archive.client._transport, base_url="http://testserver"
    ) as client:
        reader = sign(_claims(roles=["reader"]), EC_KEY, "ES256", "ec-1")
        response = await client.delete(
            "/dicom-web/studies/1.2.3", headers={"Authorization": f"Bearer {reader}"}
        )
        assert response.status_code == 403


@pytest.mark.parametrize("hospital", [None, "NOT-A-MEMBER"])
async def test_tokens_of_no_member_hospital_are_403(idp_archive: ArchiveUnderTest, hospital: str | None):
    token = sign(_claims(hospital=hospital), RSA_KEY, "RS256", "rsa-1")
    assert (await _studies(idp_archive, token)).status_code == 403


async def test_key_rotation(idp_archive: ArchiveUnderTest, jwks: _Jwks):
    # The provider rotates in a new key: its tokens verify once the JWKS is fetched again.
    new = sign(_claims(), ROTATED_KEY, "ES256", "ec-2")
    before = jwks.fetches
    jwks.keys = [public_jwk(RSA_KEY, "RS256", "rsa-1"), public_jwk(ROTATED_KEY, "ES256", "ec-2")]
    assert (await _studies(idp_archive, new)).status_code == 200
    assert jwks.fetches > before
    # ...and the retired key's tokens no longer do.
    old = sign(_claims(), EC_KEY, "ES256", "ec-1")
    assert (await _studies(idp_archive, old)).status_code == 401


async def test_static_pem_keys(clean_db: str, tmp_path: Path):
    public = serialization.load_pem_private_key(EC_KEY.encode(), None).public_key()
    path = tmp_path / "idp.pem"
    path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = settings_for(
        clean_db, None, None, tmp_path / "data", sweep_interval=0, auth_keys="pem",
        auth_public_key_files=[path], auth_issuer=ISSUER, auth_audience=AUDIENCE,
    )  # fmt: skip
    async for archive in _open(settings):
        assert (await _studies(archive, sign(_claims(), EC_KEY, "ES256", "idp"))).status_code == 200
        assert (await _studies(archive, sign(_claims(), ROTATED_KEY, "ES256", "idp"))).status_code == 401


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "none"], []])
def test_settings_refuse_symmetric_or_no_algorithms(algorithms: list[str]):
    with pytest.raises(pydantic.ValidationError):
        Settings(_env_file=None, auth_algorithms=algorithms)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_open_endpoints_need_no_token(served: ArchiveUnderTest):
    async with httpx.AsyncClient(
        transport=served.client._transport, base_url="http://testserver"
    ) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).status_code == 200
        schema = (await anonymous.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in schema["paths"]["/dicom-web/studies"]["get"]["security"]
