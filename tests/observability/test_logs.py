"""The log an operator reads: one JSON object per line, a request id on each line of a
request and in its response, an access line per request, and nothing that identifies a
patient or opens a share."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal

import httpx

from tests.fixtures import LiveServer
from tests.samples import make_sample, multipart_body

NAME, PATIENT_ID, BIRTH = "Logwatch^Philippa", "PHI-7731904", "19610417"


def test_the_log_holds_no_secret_and_follows_each_request(live_server: LiveServer):
    sample = make_sample("ct", PatientName=NAME, PatientID=PATIENT_ID, PatientBirthDate=BIRTH)
    body, ctype = multipart_body([sample.data])
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=30) as client:
        stored = client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
        assert stored.status_code == 200
        rid = stored.headers["x-request-id"]
        assert client.get("/dicom-web/studies", params={"PatientName": NAME}).status_code == 200
        assert client.get("/dicom-web/studies", params={"PatientID": PATIENT_ID}).status_code == 200
        kept = client.get("/dicom-web/studies", headers={"X-Request-ID": "proxy-1234abcd"})
        assert kept.headers["x-request-id"] == "proxy-1234abcd"
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        share = client.post(
            "/api/shares",
            json={"studies": [sample.study], "expires_at": expires, "challenge": "birthdate"},
        ).json()
        with httpx.Client(base_url=live_server.url, timeout=30) as anonymous:
            anonymous.get(f"/s/{share['token']}")
            anonymous.post("/access", data={"code": share["access_code"]})
            anonymous.get(f"/share/{share['token']}/dicom-web/studies")
        assert client.get("/dicom-web/studies/1.2.3/series/%00").status_code in (400, 404)
    os.kill(live_server.pid, signal.SIGTERM)
    assert live_server.log is not None
    text = live_server.log.read_text(errors="replace")
    for secret in (NAME, "Logwatch", "Philippa", PATIENT_ID, BIRTH, share["token"], share["access_code"],
                   live_server.token, live_server.token.split(".")[1]):  # fmt: skip
        assert secret not in text, secret
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "filmless.access"]
    stow = [line for line in access if line.get("request_id") == rid]
    assert (
        len(stow) == 1
        and stow[0]["status"] == 200
        and stow[0]["message"].startswith("POST /dicom-web/studies")
    )
    assert any("/s/(secret)" in line["message"] for line in access)
    assert not any(line.get("exception") for line in lines), [line for line in lines if line.get("exception")]
