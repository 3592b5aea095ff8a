"""The staff console in a real browser: sign-in through a real OpenID Connect provider on
loopback, a search, a study's page with thumbnails, a share created with its Access Page
(and its PDF), and the share revoked. Screenshots are saved."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, User, provider
from tests.e2e.conftest import Tools
from tests.fixtures import LiveServer
from tests.samples import make_sample, multipart_body

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings(PROVIDER_WARNINGS)]


@pytest.fixture
def issuer() -> Iterator[str]:
    # The live server's own member hospital (the embedded default's first).
    alice = User(
        sub="alice", claims={"name": "Alice Archivist", "roles": ["reader", "sharer"], "hospital": "LOCAL"}
    )
    with provider([alice]) as url:
        yield url


@pytest.fixture
def live_server_env(issuer: str) -> dict[str, str]:
    # A confidential client: the provider's token endpoint authenticates its clients.
    secret = secrets.token_urlsafe(16)
    return {
        "FILMLESS_OIDC_ISSUER": issuer,
        "FILMLESS_OIDC_CLIENT_ID": CLIENT_ID,
        "FILMLESS_OIDC_CLIENT_SECRET": secret,
    }


def test_staff_sign_in_search_share_and_revoke(
    e2e_tools: Tools, live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = make_sample("ct", PatientName="Console^Carla", PatientID="E2E-C", StudyDescription="CT knee")
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60) as client:
        body, content_type = multipart_body([sample.data])
        stored = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
    plan = {
        "chromium": e2e_tools.chromium, "archive": live_server.url, "patientName": "console",
        "screenshots": str(e2e_tools.screenshots),
    }  # fmt: skip
    plan_file = tmp_path / "console-plan.json"
    plan_file.write_text(json.dumps(plan))
    run = subprocess.run(
        [e2e_tools.node, "console.mjs", str(plan_file)],
        capture_output=True, text=True, timeout=300, cwd=e2e_tools.script.parent, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report.get("error")
    with capsys.disabled():
        print(f"\nconsole screenshots: {e2e_tools.screenshots}/console-*.png")
    assert report["signinHeading"] == "Sign in"
    assert "Alice Archivist" in report["home"]
    assert report["results"] == 1 and report["thumbnails"] and all(w > 0 for w in report["thumbnails"])
    assert len(report["accessCode"]) >= 8 and report["pdfName"].endswith(".pdf")
    assert report["sharesListed"] == 1 and "revoked" in report["afterRevoke"]
    assert report["failed"] == []
