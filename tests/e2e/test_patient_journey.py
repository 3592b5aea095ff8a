"""A patient's journey through the portal in a real browser: enrolment with the code the
film library printed (staff signed in through a real OpenID Connect provider on loopback),
the sign-in link read from a real SMTP server on loopback (aiosmtpd), the study list with
its thumbnail, the ZIP with DICOMDIR, its images in the share pages' viewer, a share with
a physician for a bounded time (the physician opens it, the patient is told by email),
and its revocation, after which the physician's link is refused. Screenshots are saved."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import secrets
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from app.services.portal import PATIENT_SHARE_DAYS
from tests.console.oidc import CLIENT_ID, PROVIDER_WARNINGS, User, provider
from tests.e2e.conftest import Tools
from tests.fixtures import LiveServer
from tests.mail.smtp import Mailbox, smtp_server
from tests.samples import make_sample, multipart_body

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings(PROVIDER_WARNINGS)]

PATIENT_ID = "E2E-PORTAL"
ADDRESS = "pat@home.example"
RECIPIENT = "Dr. Quinn"


@pytest.fixture
def issuer() -> Iterator[str]:
    alice = User(
        sub="alice", claims={"name": "Alice Archivist", "roles": ["reader", "sharer"], "hospital": "LOCAL"}
    )
    with provider([alice]) as url:
        yield url


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def live_server_env(issuer: str, mailbox: Mailbox) -> dict[str, str]:
    return {
        "FILMLESS_OIDC_ISSUER": issuer,
        "FILMLESS_OIDC_CLIENT_ID": CLIENT_ID,
        "FILMLESS_OIDC_CLIENT_SECRET": secrets.token_urlsafe(16),
        "FILMLESS_SMTP_HOST": mailbox.host,
        "FILMLESS_SMTP_PORT": str(mailbox.port),
        "FILMLESS_SMTP_SECURITY": "none",
    }


def _messages(box: Mailbox, address: str, count: int, subject: str = "") -> list[Any]:
    """The messages to ``address`` (with ``subject`` in theirs), once there are ``count``."""
    deadline = time.monotonic() + 20
    while True:
        found = [m for m in box.messages_to(address) if subject in str(m["Subject"])]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _answer(question: dict[str, Any], box: Mailbox, base: str) -> dict[str, str]:
    messages = _messages(box, question["mailTo"], question["count"])
    assert len(messages) == question["count"], f"{len(messages)} messages to {question['mailTo']}"
    link = re.search(re.escape(base) + r"/portal/signin/[A-Za-z0-9_-]+", messages[-1].get_content())
    assert link, messages[-1].get_content()
    return {"link": link.group(0)}


def _walk(tools: Tools, plan: dict[str, Any], box: Mailbox, base: str, tmp_path: Path) -> dict[str, Any]:
    """Run portal.mjs, answering what it asks; its report."""
    plan_file = tmp_path / "portal-plan.json"
    plan_file.write_text(json.dumps(plan))
    with (
        (tmp_path / "portal-stderr.txt").open("w+") as errors,
        subprocess.Popen(
            [tools.node, "portal.mjs", str(plan_file)], cwd=tools.script.parent, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
        ) as process,
    ):  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        watchdog = threading.Timer(120, process.kill)
        watchdog.start()
        report: dict[str, Any] | None = None
        try:
            for line in process.stdout:
                message = json.loads(line)
                if "ask" in message:
                    process.stdin.write(json.dumps(_answer(message["ask"], box, base)) + "\n")
                    process.stdin.flush()
                else:
                    report = message
            process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
        errors.seek(0)
        assert process.returncode == 0 and report is not None, errors.read()
    return report


def test_a_patient_enrols_signs_in_downloads_shares_and_revokes(
    e2e_tools: Tools,
    live_server: LiveServer,
    mailbox: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = make_sample(
        "ct", PatientName="Portal^Pia", PatientID=PATIENT_ID, PatientBirthDate="19800101",
        StudyDescription="CT wrist",
    )  # fmt: skip
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60) as client:
        body, content_type = multipart_body([sample.data])
        stored = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
    zip_path = tmp_path / "portal.zip"
    plan = {
        "chromium": e2e_tools.chromium, "archive": live_server.url, "study": sample.study,
        "email": ADDRESS, "recipient": RECIPIENT, "zipPath": str(zip_path),
        "screenshots": str(e2e_tools.screenshots),
    }  # fmt: skip
    report = _walk(e2e_tools, plan, mailbox, live_server.url, tmp_path)
    assert "error" not in report, report.get("error")
    with capsys.disabled():
        print(f"\nportal screenshots: {e2e_tools.screenshots}/portal-*.png")

    # Enrolment and the emailed, confirm-before-use sign-in link.
    assert re.fullmatch(r"[0-9A-Z-]{8,}", report["enrolmentCode"])
    assert report["signinHeading"] == "See your medical images"
    assert "sign-in link is on its way" in report["enrolled"]
    assert report["confirmHeading"] == "Sign in"
    # The study list, the study's thumbnail, and its ZIP with a DICOMDIR.
    assert report["homeHeading"] == "Your studies"
    assert len(report["studies"]) == 1 and "CT wrist" in report["studies"][0]
    assert report["thumbnails"] and all(width > 0 for width in report["thumbnails"])
    assert report["zipName"].endswith(".zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert "DICOMDIR" in names
        files = [n for n in names if n != "DICOMDIR" and not n.endswith("/")]
        assert len(files) == 1
        instance = pydicom.dcmread(io.BytesIO(archive.read(files[0])))
    assert instance.SOPInstanceUID == sample.instance and instance.PatientID == PATIENT_ID
    # The share: bounded, opened by the physician, listed as opened, then revoked.
    assert report["maxDays"] == str(PATIENT_SHARE_DAYS)
    assert RECIPIENT in report["printed"] and len(report["accessCode"]) >= 8
    assert report["shareLink"].startswith(f"{live_server.url}/s/")
    assert report["physicianHeading"] == "Images shared with you" and report["physicianStudies"] == 1
    # The patient's own look, in the share pages' viewer, is listed too.
    assert report["viewerHeading"] == "CT wrist"
    assert report["viewerImages"] and all(width > 0 for width in report["viewerImages"])
    (listed,) = [row for row in report["shares"] if RECIPIENT in row]
    assert "active" in listed and "1 times" in listed
    assert len(report["shares"]) == 2 and any("you, in the viewer" in row for row in report["shares"])
    # Seven days, as asked (at most PATIENT_SHARE_DAYS).
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).strftime("%Y-%m-%d")
    assert "active" in report["shareBefore"] and f"open until {until}" in report["shareBefore"]
    assert "revoked" in report["shareAfter"] and report["revokeButtons"] == 0
    assert report["refusedStatus"] == 404 and report["sessionStatus"] == 404
    assert "CT wrist" not in report["refusedText"]
    # Nothing else failed to load; the patient was told when the share was first opened.
    expected = {f"physician 404 {report['shareLink']}", f"physician 404 {report['sessionPage']}"}
    assert set(report["failed"]) == expected, report["failed"]
    opened = _messages(mailbox, ADDRESS, 1, "was opened")
    assert len(opened) == 1 and RECIPIENT in opened[0].get_content()
