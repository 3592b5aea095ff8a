"""A real OpenID Connect provider on loopback (oidc-provider-mock: Authlib's server on
werkzeug, with a real authorization form, token endpoint and JWKS), and the browser's
part of the authorization code flow, walked with httpx."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

with warnings.catch_warnings():
    # The provider imports authlib.jose, which Authlib now marks deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    from oidc_provider_mock import User, run_server_in_thread

from urllib.parse import parse_qs, urlsplit

from tests.fixtures import HOSPITAL, OTHER_HOSPITAL

#: The provider's own use of Authlib APIs that Authlib now marks deprecated (raised in its
#: server thread, while a test runs).
PROVIDER_WARNINGS = "ignore:get_jwt_config:DeprecationWarning"

CLIENT_ID = "filmless-console"
USERS = [
    User(
        sub="alice", claims={"name": "Alice Archivist", "roles": ["reader", "sharer"], "hospital": HOSPITAL}
    ),
    User(
        sub="olga", claims={"name": "Olga Other", "roles": ["reader", "sharer"], "hospital": OTHER_HOSPITAL}
    ),
    User(sub="adam", claims={"name": "Adam Admin", "roles": ["reader", "admin"], "hospital": HOSPITAL}),
    User(sub="rita", claims={"name": "Rita Reader", "roles": ["reader"], "hospital": HOSPITAL}),
    User(sub="uma", claims={"name": "Uma Uploader", "roles": ["uploader"], "hospital": HOSPITAL}),
    User(
        sub="reggie",
        claims={"name": "Reggie Regional", "roles": ["reader", "regional"], "hospital": HOSPITAL},
    ),
    User(sub="mallory", claims={"name": "Mallory", "roles": ["reader"], "hospital": "not-a-member"}),
]


@contextmanager
def provider(users: list[User] | None = None) -> Iterator[str]:
    """The provider's issuer URL while it runs (with ``users``, else :data:`USERS`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with run_server_in_thread(
            require_nonce=True, user_claims=USERS if users is None else users
        ) as server:
            yield f"http://localhost:{server.server_port}"


async def authorize_at_provider(location: str, subject: str) -> str:
    """What a person does at the provider: open the authorization page, pick themselves,
    and follow the redirect back. Returns the callback URL the provider redirects to."""
    async with httpx.AsyncClient(timeout=10) as browser:
        form = await browser.get(location)
        assert form.status_code == 200 and 'name="sub"' in form.text
        answer = await browser.post(location, data={"sub": subject})
        assert answer.status_code in (302, 303), answer.text
        return answer.headers["location"]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(browser: httpx.AsyncClient, subject: str = "alice") -> httpx.Response:
    """Sign a browser at the archive in through the provider; the callback's response."""
    start = await browser.get("/console/login")
    assert start.status_code == 303
    location = start.headers["location"]
    query = parse_qs(urlsplit(location).query)
    # PKCE (RFC 7636 §4.3): an S256 challenge, never the verifier itself.
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["client_id"] == [CLIENT_ID] and query["nonce"] and query["state"]
    back = await authorize_at_provider(location, subject)
    assert back.startswith("http://testserver/console/callback?")
    return await browser.get(back)
