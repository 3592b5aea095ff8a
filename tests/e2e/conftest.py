"""Browser tests: the OHIF viewer, served from its own origin, against a live archive.

They need Node.js, Debian's Chromium (``/usr/bin/chromium``) and what ``make test-e2e``
installs into this folder (playwright-core under ``node_modules/``, the prebuilt viewer under
``viewer/``), so they are collected only when ``FILMLESS_E2E=1``, which ``make test-e2e``
sets: ``make test`` stays fast and needs no browser.

Once collected, a missing tool is an error, so that CI cannot pass without running them;
with ``FILMLESS_E2E_OPTIONAL=1`` it is a skip instead, for a developer machine without them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.viewer_server import DIST, ViewerServer

HERE = Path(__file__).parent
#: Debian's package (apt-get install chromium); another build with FILMLESS_E2E_CHROMIUM.
CHROMIUM = os.environ.get("FILMLESS_E2E_CHROMIUM", "/usr/bin/chromium")
#: Where screenshots go (git-ignored), unless FILMLESS_E2E_SCREENSHOTS names another folder.
SCREENSHOTS = Path(os.environ.get("FILMLESS_E2E_SCREENSHOTS", HERE / "screenshots"))

collect_ignore = ["node_modules", "viewer", "screenshots"]
if os.environ.get("FILMLESS_E2E") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: a real browser against a real server process (make test-e2e; needs Chromium)"
    )


@dataclass(frozen=True)
class Tools:
    node: str
    chromium: str
    script: Path
    screenshots: Path


@pytest.fixture(scope="session")
def e2e_tools() -> Tools:
    """Node.js, Chromium, playwright-core and the unpacked viewer, or an error saying how to
    get them (a skip with FILMLESS_E2E_OPTIONAL=1)."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (apt-get install -y nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get update && apt-get install -y chromium)")
    if not (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append(f"{HERE / 'node_modules'}/playwright-core (make test-e2e installs it with npm)")
    if not (DIST / "index.html").is_file():
        missing.append(f"the OHIF viewer in {DIST} (make test-e2e unpacks it with npm)")
    if missing:
        message = "end-to-end tests need: " + "; ".join(missing)
        if os.environ.get("FILMLESS_E2E_OPTIONAL") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    assert node is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return Tools(node, CHROMIUM, HERE / "ohif.mjs", SCREENSHOTS)


@pytest.fixture
def viewer(e2e_tools: Tools) -> Iterator[ViewerServer]:
    """The prebuilt OHIF viewer on its own loopback port: another origin than the archive's."""
    with ViewerServer() as server:
        yield server


@pytest.fixture
def live_server_env(viewer: ViewerServer) -> dict[str, str]:
    """The archive under test lets the viewer's origin call it from the browser."""
    return {"FILMLESS_CORS_ORIGINS": json.dumps([viewer.origin])}
