"""A share's access page in a real browser, on a phone-sized screen: the recipient answers
the birth date challenge, sees the studies with their thumbnails, opens one, and the
printable page staff hand out has its QR code. Screenshots are saved."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import Tools
from tests.fixtures import LiveServer
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.e2e

PATIENT = {"PatientID": "SHARE-E2E", "PatientName": "Patient^Paula", "PatientBirthDate": "19700502"}


def _share(live_server: LiveServer) -> tuple[dict[str, object], str]:
    ct = make_sample("ct", StudyDescription="CT chest", **PATIENT)
    echo = make_sample("jpeg", StudyDescription="Echocardiogram", **PATIENT)
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60) as client:
        body, content_type = multipart_body([ct.data, echo.data])
        stored = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
        request = {"studies": [ct.study, echo.study], "expires_at": expires, "challenge": "birthdate",
                   "permissions": ["view", "download"], "recipient": "Dr. Example"}  # fmt: skip
        created = client.post("/api/shares", json=request)
        assert created.status_code == 201, created.text
        share = created.json()
        printed = client.post(
            f"/api/shares/{share['id']}/print",
            data={"token": share["token"], "access_code": share["access_code"]},
        )
        assert printed.status_code == 200
    return share, printed.text


def _lit(png: Path) -> float:
    pixels = np.asarray(Image.open(png).convert("L"))
    return float((pixels < 240).mean())  # the pages are dark text on white


def test_a_recipient_opens_the_access_page_in_a_browser(
    e2e_tools: Tools, live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    share, print_html = _share(live_server)
    plan = {
        "chromium": e2e_tools.chromium,
        "pageUrl": share["page_url"],
        "birthDate": "1970-05-02",
        "printHtml": print_html.replace("<head>", f'<head><base href="{live_server.url}/">'),
        "archive": live_server.url,
        "screenshots": str(e2e_tools.screenshots),
    }
    plan_file = tmp_path / "share-plan.json"
    plan_file.write_text(json.dumps(plan))
    run = subprocess.run(
        [e2e_tools.node, "share_page.mjs", str(plan_file)],
        capture_output=True, text=True, timeout=300, cwd=e2e_tools.script.parent, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report.get("error")
    with capsys.disabled():
        print(f"\nshare page screenshots: {e2e_tools.screenshots}/share-*.png")

    assert report["challengeStatus"] == 200 and report["challengeHeading"] == "Confirm it is you"
    assert report["listHeading"] == "Images shared with you"
    assert sorted(report["studyTitles"]) == ["CT chest", "Echocardiogram"]
    assert len(report["thumbnails"]) == 2 and all(t["w"] > 0 for t in report["thumbnails"])
    assert report["downloadLink"] == 1
    assert report["images"] and all(width > 0 for width in report["images"])
    assert report["printQr"] == 1
    # The strict CSP blocks nothing the pages need, and nothing failed to load.
    assert not report["cspViolations"], report["cspViolations"]
    failed = [r for r in report["responses"] if r["status"] >= 400]
    assert not failed, failed
    for name in ("share-challenge", "share-studies", "share-study", "share-print"):
        assert _lit(e2e_tools.screenshots / f"{name}.png") > 0.01, name
