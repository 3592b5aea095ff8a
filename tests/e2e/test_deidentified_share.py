"""De-identifying shares in a real browser: staff share a study with "deidentify" (PS3.15
Annex E, Basic Application Level Confidentiality Profile); its recipient opens the page,
sees the study's thumbnail and images, and nowhere on either page the patient's name, ID,
birth date or the original UIDs; the ZIP they download holds files pydicom reads that carry
none of them. A share of an image whose Burned In Annotation is YES warns of it; one of
images marked NO does not. Screenshots are saved."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.e2e.conftest import Tools
from tests.fixtures import LiveServer
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.e2e

PATIENT = {"PatientID": "DEID-E2E-42", "PatientName": "Secret^Sammy", "PatientBirthDate": "19610203"}
#: How the identity could show on a page or in a file.
IDENTITY = ["DEID-E2E-42", "Secret", "Sammy", "19610203", "1961-02-03", "03 February 1961"]


def _share(client: httpx.Client, study: str) -> dict[str, Any]:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    request = {"studies": [study], "expires_at": expires, "permissions": ["view", "download"],
               "recipient": "Dr. Example", "deidentify": True}  # fmt: skip
    created = client.post("/api/shares", json=request)
    assert created.status_code == 201, created.text
    return dict(created.json())


def _check_zip(path: Path, originals: set[str]) -> list[pydicom.Dataset]:
    with zipfile.ZipFile(path) as archive:
        assert "DICOMDIR" in archive.namelist()
        datasets = []
        for name in archive.namelist():
            data = archive.read(name)
            for value in IDENTITY + sorted(originals):
                assert value.encode() not in data, (name, value)
            if name != "DICOMDIR" and not name.endswith("/"):
                datasets.append(pydicom.dcmread(io.BytesIO(data)))
    assert datasets
    return datasets


def test_a_recipient_sees_a_deidentified_share_without_the_patients_identity(
    e2e_tools: Tools, live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = make_sample("ct", StudyDescription="CT chest", BurnedInAnnotation="NO", **PATIENT)
    burned = make_sample("mr", StudyDescription="MR head", BurnedInAnnotation="YES", **PATIENT)
    samples: dict[str, Sample] = {"clean": clean, "burned": burned}
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60) as client:
        body, content_type = multipart_body([clean.data, burned.data])
        stored = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        shares = {name: _share(client, s.study) for name, s in samples.items()}
    assert shares["clean"]["burned_in_warning"] is False and shares["burned"]["burned_in_warning"] is True
    plan = {
        "chromium": e2e_tools.chromium,
        "screenshots": str(e2e_tools.screenshots),
        "shares": [
            {"name": name, "pageUrl": share["page_url"], "zipPath": str(tmp_path / f"{name}.zip")}
            for name, share in shares.items()
        ],
    }
    plan_file = tmp_path / "deidentified-plan.json"
    plan_file.write_text(json.dumps(plan))
    run = subprocess.run(
        [e2e_tools.node, "deidentified.mjs", str(plan_file)],
        capture_output=True, text=True, timeout=120, cwd=e2e_tools.script.parent, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report.get("error")
    with capsys.disabled():
        print(f"\nde-identified share screenshots: {e2e_tools.screenshots}/deidentified-*.png")
    assert report["failed"] == []

    for name, sample in samples.items():
        seen = report["shares"][name]
        originals = {sample.study, sample.series, sample.instance}
        assert seen["heading"] == "Images shared with you" and seen["notice"] == 1
        assert seen["thumbnails"] and all(width > 0 for width in seen["thumbnails"])
        assert seen["images"] and all(width > 0 for width in seen["images"])
        # Nowhere on either page, as read or in its markup: not the name, the ID, the
        # birth date, the study's description (PS3.15 Table E.1-1 removes it) or a UID.
        for shown in ("listText", "listHtml", "studyText", "studyHtml"):
            for value in [*IDENTITY, str(sample.dataset.StudyDescription), *originals]:
                assert value not in seen[shown], (name, shown, value)
        (copy,) = _check_zip(tmp_path / f"{name}.zip", originals)
        assert copy.PatientIdentityRemoved == "YES" and copy.Modality == sample.dataset.Modality
        assert copy.pixel_array.size > 0
    assert report["shares"]["clean"]["warning"] == []
    (warning,) = report["shares"]["burned"]["warning"]
    assert "burned-in annotation" in warning
