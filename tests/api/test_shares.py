"""Share links that replace the CD: whole journeys through the API and the pages, and the
ways they must refuse."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pydicom
import pytest
import pytest_asyncio
from pydicom.fileset import FileSet

from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)

PATIENT = {"PatientID": "SHARE-1", "PatientName": "Patient^Pat", "PatientBirthDate": "19700502"}


def _later(**delta: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


@pytest_asyncio.fixture(loop_scope="session")
async def studies(served: ArchiveUnderTest) -> dict[str, list[Sample]]:
    ct = [make_sample("ct", **PATIENT, StudyDescription="CT chest", InstanceNumber=1)]
    ct.append(make_sample("ct", study=ct[0].study, series=ct[0].series, InstanceNumber=2, **PATIENT,
                          StudyDescription="CT chest"))  # fmt: skip
    mr = [make_sample("jpeg", **PATIENT, StudyDescription="Echo")]
    other = [make_sample("mr", **PATIENT, StudyDescription="Not shared")]
    body, ctype = multipart_body(s.data for s in ct + mr + other)
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return {"ct": ct, "mr": mr, "other": other}


async def _create(served: ArchiveUnderTest, uids: list[str], **extra: Any) -> dict[str, Any]:
    body = {"studies": uids, "expires_at": _later(days=7), "permissions": ["view", "download"], **extra}
    response = await served.client.post("/api/shares", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _anonymous(served: ArchiveUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=served.client._transport, base_url="http://testserver")


async def _open(client: httpx.AsyncClient, token: str) -> str:
    """Follow the link; return the session's page path."""
    response = await client.get(f"/s/{token}")
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


async def test_a_whole_journey(served: ArchiveUnderTest, studies, tmp_path: Path):
    ct, mr = studies["ct"], studies["mr"]
    share = await _create(served, [ct[0].study, mr[0].study], recipient="Dr. Who")
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", share["access_code"])
    assert share["page_url"] == f"http://testserver/s/{share['token']}"
    assert share["dicomweb_root"] == f"http://testserver/share/{share['token']}/dicom-web"

    async with _anonymous(served) as browser:
        page_path = await _open(browser, share["token"])
        page = await browser.get(page_path)
        assert page.status_code == 200
        assert "CT chest" in page.text and "Echo" in page.text and "Not shared" not in page.text
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        session = page_path.removeprefix("/s/")
        thumbnail = await browser.get(f"/share/{session}/dicom-web/studies/{ct[0].study}/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert (await browser.get(f"{page_path}/studies/{ct[0].study}")).status_code == 200

        download = await browser.get(f"{page_path}/download")
        assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
        _check_zip(download.content, ct + mr, tmp_path / "unzipped")

        # The token is a DICOMweb root, and a bearer token, for the shared studies only.
        root = f"/share/{share['token']}/dicom-web"
        found = (await browser.get(f"{root}/studies")).json()
        assert {s["0020000D"]["Value"][0] for s in found} == {ct[0].study, mr[0].study}
        assert found[0]["00081190"]["Value"][0].startswith(f"http://testserver{root}/studies/")
        bearer = {"Authorization": f"Bearer {share['token']}"}
        assert len((await browser.get("/dicom-web/studies", headers=bearer)).json()) == 2
        other = studies["other"][0]
        assert (await browser.get(f"{root}/studies/{other.study}/metadata")).status_code == 404
        assert (await browser.get(f"{root}/studies", params={"StudyInstanceUID": other.study})).json() == []
        assert (await browser.post(f"{root}/studies", content=b"x")).status_code == 404

        # Revoked: every path refused at once.
        revoked = await served.client.post(f"/api/shares/{share['id']}/revoke")
        assert revoked.json() == {"revoked": [share["id"]]}
        assert (await browser.get(f"/s/{share['token']}")).status_code == 404
        assert (await browser.get(page_path)).status_code == 404
        assert (await browser.get(f"{page_path}/download")).status_code == 404
        assert (await browser.get(f"{root}/studies")).status_code == 401
        assert (
            await browser.get(f"/share/{session}/dicom-web/studies/{ct[0].study}/thumbnail")
        ).status_code == 401
        assert (await browser.get("/dicom-web/studies", headers=bearer)).status_code == 401

    details = (await served.client.get(f"/api/shares/{share['id']}")).json()
    assert details["state"] == "revoked" and "token" not in details and "access_code" not in details
    kinds = [event["transaction"] for event in details["history"]]
    assert "SHARE-DOWNLOAD" in kinds and "QIDO-RS" in kinds and "SHARE-ACCESS" in kinds
    assert all(share["token"] not in str(event) for event in details["history"])


def _check_zip(content: bytes, samples: list[Sample], where: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        archive.extractall(where)
        names = archive.namelist()
        assert names[0] == "DICOMDIR"
        directory = pydicom.dcmread(io.BytesIO(archive.read("DICOMDIR")))
        records = {
            r.ReferencedSOPInstanceUIDInFile: "/".join(r.ReferencedFileID)
            for r in directory.DirectoryRecordSequence
            if r.DirectoryRecordType == "IMAGE"
        }
        assert set(records) == {s.instance for s in samples}
        for sample in samples:
            assert archive.read(records[sample.instance]) == sample.data
    # pydicom reads it back as a file-set whose every file is there.
    file_set = FileSet(pydicom.dcmread(where / "DICOMDIR"))
    assert sorted(i.SOPInstanceUID for i in file_set) == sorted(s.instance for s in samples)
    assert all(Path(i.path).is_file() for i in file_set)
    file_set._stage["t"].cleanup()  # pydicom otherwise leaves its staging directory to the GC


async def test_secrets_are_stored_only_as_hashes(served: ArchiveUnderTest, studies):
    share = await _create(served, [studies["ct"][0].study])
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        row = await conn.fetchrow("SELECT * FROM shares WHERE id = $1", share["id"])
    finally:
        await conn.close()
    everything = repr(dict(row)).encode()
    assert share["token"].encode() not in everything and share["access_code"].encode() not in everything
    listed = (await served.client.get("/api/shares")).json()
    assert all("token" not in s and "access_code" not in s for s in listed)


async def test_the_access_code_and_the_birth_date_challenge(served: ArchiveUnderTest, studies):
    share = await _create(served, [studies["ct"][0].study], challenge="birthdate")
    async with _anonymous(served) as browser:
        # The link alone only shows the challenge, and opens no DICOMweb root.
        form = await browser.get(f"/s/{share['token']}")
        assert form.status_code == 200 and "date of birth" in form.text
        assert (await browser.get(f"/share/{share['token']}/dicom-web/studies")).status_code == 401
        wrong = await browser.post(f"/s/{share['token']}", data={"answer": "1970-05-03"})
        assert wrong.status_code == 403 and "does not match" in wrong.text
        right = await browser.post(f"/s/{share['token']}", data={"answer": "1970-05-02"})
        assert right.status_code == 303
        assert (await browser.get(right.headers["location"])).status_code == 200
        # The code, typed carelessly, leads to the same challenge.
        typed = share["access_code"].lower().replace("-", " ")
        asked = await browser.post("/access", data={"code": typed})
        assert asked.status_code == 200 and "date of birth" in asked.text
        opened = await browser.post("/access", data={"code": typed, "answer": "1970-05-02"})
        assert opened.status_code == 303 and opened.headers["location"].startswith("/s/")


async def test_failed_challenges_lock_the_share_out(served: ArchiveUnderTest, studies):
    share = await _create(served, [studies["ct"][0].study], challenge="pin", pin="4711")
    async with _anonymous(served) as browser:
        for _ in range(5):
            assert (await browser.post(f"/s/{share['token']}", data={"answer": "0000"})).status_code == 403
        locked = await browser.post(f"/s/{share['token']}", data={"answer": "4711"})
        assert locked.status_code == 429  # even the right PIN, for now


async def test_unknown_codes_lock_the_client_out(served: ArchiveUnderTest, studies):
    share = await _create(served, [studies["ct"][0].study])
    async with _anonymous(served) as browser:
        for n in range(20):
            response = await browser.post("/access", data={"code": f"AAAA-AAAA-{n:04d}"})
            assert response.status_code == 403 and "does not open" in response.text
        assert (await browser.post("/access", data={"code": share["access_code"]})).status_code == 429
        assert (await browser.get("/access")).status_code == 200


async def test_expired_and_exhausted_shares(served: ArchiveUnderTest, studies):
    uid = studies["ct"][0].study
    once = await _create(served, [uid], max_uses=1)
    async with _anonymous(served) as browser:
        page_path = await _open(browser, once["token"])  # the one use
        assert (await browser.get(f"/s/{once['token']}")).status_code == 404
        assert (await browser.get(page_path)).status_code == 404
        expiring = await _create(served, [uid])
        conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
        try:
            await conn.execute(
                "UPDATE shares SET expires_at = now() - interval '1 second' WHERE id = $1", expiring["id"]
            )
        finally:
            await conn.close()
        page = await browser.get(f"/s/{expiring['token']}")
        assert page.status_code == 404 and "not available" in page.text
        assert "Patient" not in page.text  # nothing about the patient
        assert (await browser.get(f"/share/{expiring['token']}/dicom-web/studies")).status_code == 401


async def test_a_view_only_share_cannot_download(served: ArchiveUnderTest, studies):
    ct = studies["ct"][0]
    share = await _create(served, [ct.study], permissions=["view"])
    async with _anonymous(served) as browser:
        page_path = await _open(browser, share["token"])
        assert "Download all" not in (await browser.get(page_path)).text
        assert (await browser.get(f"{page_path}/download")).status_code == 403
        root = f"/share/{share['token']}/dicom-web"
        assert (await browser.get(f"{root}/studies/{ct.study}")).status_code == 403
        frames = await browser.get(
            f"{root}/studies/{ct.study}/series/{ct.series}/instances/{ct.instance}/frames/1"
        )
        assert frames.status_code == 200  # viewing is allowed
        assert len(split_multipart(frames.content, frames.headers["content-type"])) == 1


async def test_child_shares_narrow_and_revocation_cascades(served: ArchiveUnderTest, studies):
    ct, mr = studies["ct"][0], studies["mr"][0]
    parent = await _create(served, [ct.study, mr.study], permissions=["view", "reshare"])
    async with _anonymous(served) as browser:
        page_path = await _open(browser, parent["token"])
        form = await browser.get(f"{page_path}/reshare")
        assert form.status_code == 200
        # Download was not the parent's to give.
        more = {"studies": [ct.study], "days": "3", "download": "yes"}
        assert (await browser.post(f"{page_path}/reshare", data=more)).status_code == 400
        child_page = await browser.post(
            f"{page_path}/reshare", data={"studies": [ct.study], "days": "3", "pin": "123456"}
        )
        assert child_page.status_code == 201
        child_token = re.search(r"/s/([A-Za-z0-9_-]+)", child_page.text).group(1)  # type: ignore[union-attr]
        # Narrower: only the parent's studies.
        refused = await browser.post(
            f"{page_path}/reshare", data={"studies": [studies["other"][0].study], "days": "3"}
        )
        assert refused.status_code == 403
        unlocked = await browser.post(f"/s/{child_token}", data={"answer": "123456"})
        child_session = unlocked.headers["location"].removeprefix("/s/")
        found = (await browser.get(f"/share/{child_session}/dicom-web/studies")).json()
        assert [s["0020000D"]["Value"][0] for s in found] == [ct.study]
        assert (await browser.get(f"/s/{child_session}/download")).status_code == 403
        await served.client.post(f"/api/shares/{parent['id']}/revoke")
        assert (await browser.get(f"/share/{child_session}/dicom-web/studies")).status_code == 401
        assert (await browser.get(f"/s/{child_token}")).status_code == 404
    children = (await served.client.get("/api/shares", params={"state": "revoked"})).json()
    assert {c["parent_id"] for c in children} >= {parent["id"]}


async def test_sharing_needs_the_right_and_sees_only_the_callers_studies(served: ArchiveUnderTest, studies):
    uid = studies["ct"][0].study
    body = {"studies": [uid], "expires_at": _later(days=1)}
    async with served.as_user(HOSPITAL, ["reader"]) as reader:
        assert (await reader.post("/api/shares", json=body)).status_code == 403
    async with served.as_user(OTHER_HOSPITAL, ["sharer", "reader"]) as other:
        assert (await other.post("/api/shares", json=body)).status_code == 404
        assert (await other.get(f"/api/shares/{(await _create(served, [uid]))['id']}")).status_code == 404
    for bad in (
        {"expires_at": _later(days=400)},
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": None},
        {"permissions": ["delete"]},
        {"challenge": "pin"},
        {"challenge": "pin", "pin": "12"},
    ):
        response = await served.client.post("/api/shares", json={**body, **bad})
        assert response.status_code == 400, bad


async def test_the_printable_page(served: ArchiveUnderTest, studies):
    body = {"studies": [studies["ct"][0].study], "expires_at": _later(days=30), "challenge": "birthdate"}
    printed = await served.client.post("/api/shares", json=body, headers={"Accept": "text/html"})
    assert printed.status_code == 201 and printed.headers["content-type"].startswith("text/html")
    text = printed.text
    assert "<svg" in text and "Pat Patient" in text and "date of birth" in text
    code = re.search(r'class="code">([0-9A-Z-]{14})<', text).group(1)  # type: ignore[union-attr]
    token = re.search(r"/s/([A-Za-z0-9_-]+)", text).group(1)  # type: ignore[union-attr]
    share_id = (await served.client.get("/api/shares")).json()[0]["id"]
    again = await served.client.post(
        f"/api/shares/{share_id}/print", data={"token": token, "access_code": code}
    )
    assert again.status_code == 200 and code in again.text
    wrong = await served.client.post(
        f"/api/shares/{share_id}/print", data={"token": token, "access_code": "AAAA-AAAA-AAAA"}
    )
    assert wrong.status_code == 404


async def test_the_sweep_removes_expired_sessions_and_old_failures(served: ArchiveUnderTest, studies):
    from app.services.sweep import sweep_once

    share = await _create(served, [studies["ct"][0].study])
    async with _anonymous(served) as browser:
        await _open(browser, share["token"])
        await browser.post("/access", data={"code": "AAAA-AAAA-AAAA"})
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        await conn.execute("UPDATE share_sessions SET expires_at = now() - interval '1 second'")
        await conn.execute("UPDATE share_failures SET at = now() - interval '1 day'")
        await sweep_once(served.archive)
        assert await conn.fetchval("SELECT count(*) FROM share_sessions") == 0
        assert await conn.fetchval("SELECT count(*) FROM share_failures") == 0
    finally:
        await conn.close()


async def test_the_pages_stylesheet_is_served(served: ArchiveUnderTest):
    response = await served.client.get("/assets/share.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert "@media print" in response.text
