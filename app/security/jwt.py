"""JSON Web Tokens (RFC 7519) signed with asymmetric keys. The only module that uses
python-jose: everything else sees claims dictionaries and :class:`TokenError`.

Verification is strict by construction: the algorithm comes from a pinned allow-list of
asymmetric JWS algorithms and must match the key's type, so neither ``alg: none`` nor an
HMAC signature made with a public key as the secret can pass (the classic "algorithm
confusion"); signature, issuer, audience, expiry and not-before are all checked, and a
token without ``exp``, ``aud`` or ``iss`` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

#: Asymmetric JWS algorithms (RFC 7518 §3) and the JWK key type each needs.
KEY_TYPES = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
}


class TokenError(Exception):
    """A token that must be refused; the message says why (never the token itself)."""


def header(token: str) -> dict[str, Any]:
    """The token's JOSE header, unverified: only to choose the key."""
    try:
        found = jwt.get_unverified_header(token)
    except JOSEError as exc:
        raise TokenError("malformed token") from exc
    return dict(found)


def verify(
    token: str,
    key: Mapping[str, Any],
    *,
    algorithms: list[str],
    issuer: str,
    audience: str,
    leeway: int,
    access_token: str | None = None,
) -> dict[str, Any]:
    """The token's claims, if ``key`` (a public JWK) signed it and every claim holds (an
    ID token's ``at_hash`` against ``access_token``, OIDC Core §3.1.3.6)."""
    alg = header(token).get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in KEY_TYPES:
        raise TokenError(f"signature algorithm {alg!r} is not accepted")
    if key.get("kty") != KEY_TYPES[alg]:
        raise TokenError(f"algorithm {alg} does not fit a {key.get('kty')} key")
    try:
        public = jwk.construct(dict(key), algorithm=alg)
        claims = jwt.decode(
            token,
            public,
            algorithms=[alg],
            issuer=issuer,
            audience=audience,
            access_token=access_token,
            # Present, not only matching when present: a token minted for another
            # audience without an "aud" claim must not pass (RFC 7519 §4.1.3).
            options={
                "require_exp": True,
                "require_aud": True,
                "require_iss": True,
                "require_iat": False,
                "leeway": leeway,
            },
        )
    except ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except JWTClaimsError as exc:
        raise TokenError(f"invalid claims: {exc}") from exc
    except JOSEError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    if "nbf" in claims and not isinstance(claims["nbf"], int | float):
        raise TokenError("invalid not-before claim")
    return dict(claims)


def sign(claims: Mapping[str, Any], private_pem: str, algorithm: str, kid: str) -> str:
    """A token for ``claims`` signed with a private key (the local issuer, and tests)."""
    if algorithm not in KEY_TYPES:
        raise ValueError(f"{algorithm} is not an asymmetric algorithm")
    return str(jwt.encode(dict(claims), private_pem, algorithm=algorithm, headers={"kid": kid}))


def public_jwk(private_pem: str, algorithm: str, kid: str) -> dict[str, Any]:
    """The public JWK of a private PEM key, as a JWKS lists it."""
    key = jwk.construct(private_pem, algorithm=algorithm)
    public = key.public_key().to_dict()
    public.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in public.items()}
