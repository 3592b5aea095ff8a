"""The audit trail: every access to patient data recorded (who, what, when, from where,
outcome), append-only, queryable by admins, exported as DICOM audit messages."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


async def _events(served: ArchiveUnderTest, subject: str) -> list[dict[str, Any]]:
    await served.audit_written()
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        rows = await conn.fetch("SELECT * FROM audit_events WHERE subject = $1 ORDER BY pk", subject)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def _user(
    served: ArchiveUnderTest, roles: list[str] | None = None, hospital: str = HOSPITAL
) -> tuple[httpx.AsyncClient, str]:
    subject = "user-" + secrets.token_hex(4)
    client = served.as_user(hospital, roles, subject)
    client.headers["User-Agent"] = "audit-test/1.0"
    return client, subject


async def _store(client: httpx.AsyncClient, *samples: Sample) -> httpx.Response:
    body, ctype = multipart_body(s.data for s in samples)
    return await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})


async def test_every_transaction_is_recorded(served: ArchiveUnderTest):
    client, subject = _user(served)
    a = make_sample("ct", PatientID="AUD-1")
    b = make_sample("ct", study=a.study, series=a.series, PatientID="AUD-1")
    async with client:
        assert (await _store(client, a, b)).status_code == 200
        await client.get("/dicom-web/studies", params={"PatientID": "AUD-1"})
        await client.get(f"/dicom-web/studies/{a.study}")
        await client.get(f"/dicom-web/studies/{a.study}/metadata")
        instance = f"/dicom-web/studies/{a.study}/series/{a.series}/instances/{a.instance}"
        await client.get(instance + "/frames/1")
        await client.get(
            f"/wado?requestType=WADO&studyUID={a.study}&seriesUID={a.series}&objectUID={a.instance}"
        )
        assert (await client.delete(instance)).status_code == 204
        token = client.headers["Authorization"].split()[1]
    events = await _events(served, subject)
    kinds = [e["transaction"] for e in events]
    assert kinds == ["STOW-RS", "QIDO-RS", "WADO-RS", "METADATA", "WADO-RS", "WADO-URI", "DELETE"]
    # The two instances of one request are stored in one transaction, with one event.
    stow = events[0]
    assert stow["instance_uids"] == [a.instance, b.instance] and stow["instances"] == 2
    assert stow["bytes"] == len(a.data) + len(b.data)
    assert stow["patient_ids"] == ["AUD-1"] and stow["owner_hospitals"] == [HOSPITAL]
    for event in events:
        assert event["hospital"] == HOSPITAL and event["roles"] == ["admin", "reader", "sharer", "uploader"]
        assert event["client_address"] and event["user_agent"] == "audit-test/1.0"
        assert event["study_uids"] == [a.study], event["transaction"]
        assert event["outcome"] in (200, 204)
        # Never a token (nor pixel data) in the trail.
        assert token not in json.dumps({k: str(v) for k, v in event.items()})
    assert events[1]["query"] == "PatientID=AUD-1" and events[1]["instances"] == 1
    assert events[2]["instances"] == 2 and events[2]["bytes"] == len(a.data) + len(b.data)
    assert events[6]["instance_uids"] == [a.instance] and events[6]["instances"] == 1


async def test_refused_attempts_are_recorded(served: ArchiveUnderTest):
    ours = make_sample("ct")
    assert (await _store(served.client, ours)).status_code == 200
    # A member of another hospital guessing a UID: 404, recorded with who tried.
    client, subject = _user(served, hospital=OTHER_HOSPITAL)
    async with client:
        assert (await client.get(f"/dicom-web/studies/{ours.study}/metadata")).status_code == 404
    (event,) = await _events(served, subject)
    assert (event["outcome"], event["hospital"], event["path"]) == (
        404, OTHER_HOSPITAL, f"/dicom-web/studies/{ours.study}/metadata"
    )  # fmt: skip
    # A right the caller does not have: 403.
    client, subject = _user(served, roles=["reader"])
    async with client:
        assert (await _store(client, make_sample("ct"))).status_code == 403
    (event,) = await _events(served, subject)
    assert (event["transaction"], event["outcome"]) == ("STOW-RS", 403)
    # No token at all: 401, recorded without a subject.
    marker = "anonymous-" + secrets.token_hex(4)
    async with httpx.AsyncClient(
        transport=served.client._transport, base_url="http://testserver"
    ) as anonymous:
        assert (await anonymous.get("/dicom-web/studies", headers={"User-Agent": marker})).status_code == 401
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        row = await conn.fetchrow("SELECT subject, outcome FROM audit_events WHERE user_agent = $1", marker)
    finally:
        await conn.close()
    assert (row["subject"], row["outcome"]) == (None, 401)


async def test_a_refused_instance_is_recorded_by_the_request(served: ArchiveUnderTest):
    sample = make_sample("ct")
    client, subject = _user(served)
    async with client:
        assert (await _store(client, sample)).status_code == 200
        changed = sample.dataset
        changed.PatientName = "Other^Name"
        import io

        buffer = io.BytesIO()
        changed.save_as(buffer, enforce_file_format=True)
        body, ctype = multipart_body([buffer.getvalue()])
        assert (
            await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
        ).status_code == 409
    events = await _events(served, subject)
    assert [(e["transaction"], e["outcome"]) for e in events] == [("STOW-RS", 200), ("STOW-RS", 409)]
    assert (
        events[1]["instance_uids"] == [sample.instance] and events[1]["detail"] == "1 of 1 instances refused"
    )


async def test_the_trail_is_append_only(served: ArchiveUnderTest):
    await served.client.get("/dicom-web/studies")
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        for statement in (
            "UPDATE audit_events SET subject = 'someone else'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_admins_query_and_export_their_hospitals_trail(served: ArchiveUnderTest):
    patient = "AUD-" + secrets.token_hex(3)
    sample = make_sample("ct", PatientID=patient)
    client, subject = _user(served)
    async with client:
        assert (await _store(client, sample)).status_code == 200
        await client.get("/dicom-web/studies", params={"PatientID": patient})
    found = (await served.client.get("/api/audit", params={"patient": patient})).json()
    assert {e["transaction"] for e in found} == {"STOW-RS", "QIDO-RS"}
    assert all(e["subject"] == subject for e in found)
    by_study = (
        await served.client.get("/api/audit", params={"study": sample.study, "subject": subject})
    ).json()
    assert len(by_study) == 2
    first = (await served.client.get("/api/audit", params={"patient": patient, "limit": 1})).json()
    second = (
        await served.client.get("/api/audit", params={"patient": patient, "limit": 1, "offset": 1})
    ).json()
    assert first[0]["pk"] != second[0]["pk"]
    since = found[-1]["at"]
    recent = (await served.client.get("/api/audit", params={"patient": patient, "since": since})).json()
    assert len(recent) >= 1
    assert (
        await served.client.get("/api/audit", params={"patient": patient, "until": "2000-01-01T00:00:00Z"})
    ).json() == []

    export = await served.client.get("/api/audit", params={"patient": patient, "format": "csv"})
    assert export.headers["content-type"].startswith("text/csv")
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("pk,at,transaction,outcome") and len(lines) == 3

    # Another hospital's admin sees none of it; readers may not query the trail at all.
    async with served.as_user(OTHER_HOSPITAL) as other:
        assert (await other.get("/api/audit", params={"patient": patient})).json() == []
    async with served.as_user(HOSPITAL, ["reader"]) as reader:
        assert (await reader.get("/api/audit")).status_code == 403


async def test_dicom_audit_messages_go_to_the_sink(served: ArchiveUnderTest, tmp_path: Path):
    sink = tmp_path / "atna.jsonl"
    served.archive.settings.audit_sink = sink
    sample = make_sample("ct", PatientID="ATNA-1")
    client, subject = _user(served)
    async with client:
        await _store(client, sample)
        await client.get("/dicom-web/studies", params={"PatientID": "ATNA-1"})
        await client.get(f"/dicom-web/studies/{sample.study}")
    await served.audit_written()
    messages = [json.loads(line) for line in sink.read_text().splitlines()]
    ours = [m for m in messages if m["ActiveParticipant"][0]["UserID"] == subject]
    assert [m["EventIdentification"]["EventID"]["csd-code"] for m in ours] == ["110104", "110112", "110104"]
    assert [m["EventIdentification"]["EventActionCode"] for m in ours] == ["C", "E", "R"]
    stow = ours[0]
    assert stow["EventIdentification"]["EventOutcomeIndicator"] == 0
    assert stow["ActiveParticipant"][0]["AlternativeUserID"] == HOSPITAL
    objects = {(o["ParticipantObjectIDTypeCode"]["csd-code"], o["ParticipantObjectID"])
               for o in stow["ParticipantObjectIdentification"]}  # fmt: skip
    assert objects == {("2", "ATNA-1"), ("110180", sample.study)}
    assert any("ParticipantObjectQuery" in o for o in ours[1]["ParticipantObjectIdentification"])
