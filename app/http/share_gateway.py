"""The share gateway: ``/share/{secret}/dicom-web/…`` and ``/share/{secret}/wado`` are the
DICOMweb root of one share, for an outside hospital's PACS, a viewer or a script.

An ASGI middleware, ahead of routing: the path is rewritten to the archive's own
``/dicom-web/…`` (or ``/wado``) and the secret becomes the request's bearer token, which
the authentication dependency resolves to the share's scope — so search and retrieval
are the very same code, restricted to the shared studies, and URLs in responses point
back under the share's root. Only reads pass (anything else is 404), and every response
of a share path — pages included — carries ``Cache-Control: no-store`` and
``Referrer-Policy: no-referrer``: the secret is in the URL.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import share_deidentify

#: Scope key holding the share's root prefix (``/share/{secret}``) for response URLs.
PREFIX_KEY = "filmless.share_prefix"
_SHARE_PATHS = ("/share/", "/s/", "/access")
_READS = {"GET", "HEAD", "OPTIONS"}


class ShareGateway:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_SHARE_PATHS):
            await self.app(scope, receive, send)
            return
        send = _private(send)
        if scope["path"].startswith("/share/"):
            rewritten = _rewrite(scope)
            if rewritten is None:
                await _not_found(send)
                return
            scope = rewritten
            # A de-identifying share's request and answer (app.http.share_deidentify).
            routed = await share_deidentify.route(scope, send, scope[PREFIX_KEY].removeprefix("/share/"))
            if routed is None:
                return
            scope, send = routed
        await self.app(scope, receive, send)


def _rewrite(scope: Scope) -> Scope | None:
    _, _, secret, rest = [*scope["path"].split("/", 3), "", "", ""][:4]
    if not secret or not (rest == "wado" or rest == "dicom-web" or rest.startswith("dicom-web/")):
        return None
    # Share secrets are printable ASCII (app.security.share_secrets); anything else names no
    # share, and could not travel in an Authorization header (RFC 9110 §5.5) anyway.
    if not (secret.isascii() and secret.isprintable()):
        return None
    if scope["method"] not in _READS:
        return None
    path = "/" + rest
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
    if scope["method"] != "OPTIONS":  # a CORS preflight carries no credentials
        headers.append((b"authorization", b"Bearer " + secret.encode("latin-1")))
    return {
        **scope,
        "path": path,
        "raw_path": path.encode(),
        "headers": headers,
        PREFIX_KEY: f"/share/{secret}",
    }


def _private(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
            headers += [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _not_found(send: Send) -> None:
    body = b'{"status":404,"message":"not found"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
