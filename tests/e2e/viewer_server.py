"""A static web server for the prebuilt OHIF viewer, on its own loopback origin.

It serves ``viewer/dist`` (unpacked by ``fetch-viewer.mjs``) at the site root, answers
unknown paths with ``index.html`` (the viewer routes in the browser: ``/viewer?…``), and
serves ``app-config.js`` from ``app-config.template.js``, filled in with the archive's
endpoints and a token.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).parent
DIST = HERE / "viewer" / "dist"
CONFIG_TEMPLATE = HERE / "app-config.template.js"


def app_config(dicomweb_root: str, wado_uri_root: str, token: str) -> bytes:
    text = CONFIG_TEMPLATE.read_text()
    for placeholder, value in (
        ("__DICOMWEB_ROOT__", dicomweb_root),
        ("__WADO_URI_ROOT__", wado_uri_root),
        ("__TOKEN__", token),
    ):
        text = text.replace(placeholder, json.dumps(value))
    return text.encode()


class _Handler(SimpleHTTPRequestHandler):
    server: ViewerServer
    extensions_map = {  # noqa: RUF012 - the base class's own attribute
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(DIST), **kwargs)

    def do_GET(self) -> None:
        self._route()
        super().do_GET()

    def do_HEAD(self) -> None:
        self._route()
        super().do_HEAD()

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/app-config.js":
            self.path = path
        elif path != "/" and not (DIST / path.lstrip("/")).is_file():
            # A route of the single-page application.
            self.path = "/index.html"

    def send_head(self) -> Any:
        if self.path == "/app-config.js":
            body = self.server.config
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            return io.BytesIO(body)
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.config = b"window.config = {};"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def configure(self, dicomweb_root: str, wado_uri_root: str, token: str) -> None:
        self.config = app_config(dicomweb_root, wado_uri_root, token)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The browser drops connections it no longer needs (a cancelled prefetch).
        pass

    def __enter__(self) -> ViewerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
