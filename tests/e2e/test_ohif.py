"""The OHIF v3 viewer, served from another origin than the archive, lists the studies stored
in it and shows their images: CT and MR, a JPEG-compressed multi-frame ultrasound and native
multi-frame instances (an RT dose grid, an enhanced MR).

The viewer runs in headless Chromium, driven by ``ohif.mjs``; it talks to the archive
directly (CORS), with a bearer token of a reader."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.servers import settings_for
from tests.e2e.conftest import Tools
from tests.e2e.viewer_server import ViewerServer
from tests.fixtures import LiveServer, token
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.e2e


# key, sample, PatientName as stored, as OHIF 3.13's study list shows it, frames
STUDIES = [
    ("ct", "ct", "Tomography^Alice", "Tomography, Alice", 1),
    ("mr", "mr", "Resonance^Bob", "Resonance, Bob", 1),
    ("jpeg", "jpeg", "Echo^Carol", "Echo, Carol", 30),
    ("rtdose", "multiframe", "Dose^Dave", "Dose, Dave", 15),
    ("enhanced-mr", "emri_small.dcm", "Enhanced^Eve", "Enhanced, Eve", 10),
]


def _store(live_server: LiveServer) -> list[dict[str, Any]]:
    studies = []
    with httpx.Client(base_url=live_server.dicomweb, headers=live_server.headers, timeout=60) as client:
        for key, sample, stored_name, shown_name, frames in STUDIES:
            instance = make_sample(sample, PatientName=stored_name, PatientID=f"E2E-{key.upper()}")
            body, content_type = multipart_body([instance.data])
            response = client.post("/studies", content=body, headers={"Content-Type": content_type})
            assert response.status_code == 200, response.text
            studies.append({"key": key, "uid": instance.study, "patientName": shown_name, "frames": frames})
    return studies


def _lit_fraction(png: Path) -> tuple[float, int]:
    """The share of pixels that are not black, and how many grey levels the picture has."""
    pixels = np.asarray(Image.open(png).convert("RGB"))
    lit = (pixels.max(axis=2) > 16).mean()
    levels = len(np.unique(pixels.mean(axis=2).astype(np.uint8)))
    return float(lit), levels


def _problems(report: dict[str, Any]) -> list[str]:
    """Requests the archive refused or the browser could not complete (a CORS refusal shows
    as a failed request), requests without the token, and uncaught errors in the page."""
    requests = report["requests"]
    problems = [f"{r['method']} {r['url']} -> {r['status']}" for r in requests if r["status"] >= 400]
    problems += [
        f"no bearer token: {r['method']} {r['url']}" for r in requests if r["authorization"] != "Bearer"
    ]
    problems += [f"{r['url']} failed: {r['error']}" for r in report["failedRequests"]]
    problems += [f"page error: {e}" for e in report["pageErrors"]]
    return problems


def test_ohif_lists_and_shows_studies_from_another_origin(
    e2e_tools: Tools,
    live_server: LiveServer,
    viewer: ViewerServer,
    clean_db: str,
    signing_key: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    began = time.monotonic()
    assert viewer.origin != live_server.url
    # The viewer only reads: it gets a reader's token, not the fixture's every-role one.
    settings = settings_for(clean_db, None, None, live_server.data_dir, auth_local_key_file=signing_key)
    reader = token(settings, "LOCAL", ["reader"], subject="ohif-viewer")
    viewer.configure(live_server.dicomweb, live_server.url + "/wado", reader)
    studies = _store(live_server)

    plan = {
        "viewer": viewer.origin,
        "archive": live_server.url,
        "chromium": e2e_tools.chromium,
        "screenshots": str(e2e_tools.screenshots),
        "timeoutMs": 60_000,
        "studies": studies,
    }
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    browser_began = time.monotonic()
    run = subprocess.run(
        [e2e_tools.node, str(e2e_tools.script), str(plan_file)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=e2e_tools.script.parent,
        check=False,
    )
    assert run.returncode == 0, f"ohif.mjs failed:\n{run.stderr}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    (e2e_tools.screenshots / "report.json").write_text(json.dumps(report, indent=2))

    with capsys.disabled():
        print(f"\nOHIF against {live_server.url}, served from {viewer.origin}")
        print(f"screenshots: {e2e_tools.screenshots}/ (report.json beside them)")
        print(
            f"browser run {time.monotonic() - browser_began:.1f} s (Chromium start "
            f"{report['browserStartMs'] / 1000:.1f} s, study list {report['worklist']['ms'] / 1000:.1f} s), "
            f"{len(report['requests'])} requests to the archive"
        )
        for seen in report["studies"]:
            outcome = seen["error"].splitlines()[0] if not seen["ok"] else seen["frameLabel"]
            if seen.get("scrolledLabel"):
                outcome += f", scrolled to {seen['scrolledLabel']}"
            print(f"  {seen['key']}: {seen['ms'] / 1000:.1f} s, {outcome}")
    problems = _problems(report)
    # What the browser cannot see (a 500 without CORS headers is a network error to it) is
    # in the server's log.
    server_errors = [
        line
        for line in (tmp_path / "server.log").read_text(errors="replace").splitlines()
        if " ERROR " in line or re.match(r"[\w.]+(Error|Exception): ", line)
    ]
    context = "\n".join(
        [
            *problems,
            *(f"console: {e}" for e in report["consoleErrors"]),
            *(f"server: {e}" for e in server_errors),
        ]
    )

    # The study list shows every stored study.
    worklist = report["worklist"]
    assert worklist["ok"], f"{worklist.get('error')}\n{context}"
    assert sorted(worklist["names"]) == sorted(s["patientName"] for s in studies)
    assert worklist["counter"] == f"1-{len(studies)} of {len(studies)}"

    # Each study opens from the list and its images are drawn.
    for study, seen in zip(studies, report["studies"], strict=True):
        assert seen["ok"], f"{study['key']}: {seen.get('error')}\n{context}"
        assert study["uid"] in seen["url"]
        assert f"1/{study['frames']}" in seen["frameLabel"]
        lit, levels = _lit_fraction(Path(seen["viewportScreenshot"]))
        assert lit > 0.05 and levels > 32, f"{study['key']}: the viewport looks blank ({lit:.1%} lit)"
        if study["frames"] > 1:
            # Scrolling drew other frames, fetched one by one from the frames endpoint.
            assert f"4/{study['frames']}" in seen["scrolledLabel"]
            assert seen["scrolledFrame"]["hash"] != seen["firstFrame"]["hash"]
        fetched = [r for r in report["requests"] if study["uid"] in r["url"] and "/frames/" in r["url"]]
        assert fetched, f"{study['key']}: no frame was retrieved"
        if study["key"] == "jpeg":
            # Compressed frames travel as stored (JPEG baseline) and the viewer decodes them.
            assert all("1.2.840.10008.1.2.4.50" in (r.get("partType") or "") for r in fetched), fetched

    # Every request carried the token, and the archive answered each one.
    assert not problems, context
    with capsys.disabled():
        print(f"e2e test {time.monotonic() - began:.1f} s")
