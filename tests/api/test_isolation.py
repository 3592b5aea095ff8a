"""Member hospitals are isolated: a reader of one can neither find, retrieve nor delete
another's study by any path, guessed UIDs included (404, never 403: existence does not
leak). Regional readers find a specific patient's studies across members."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from app.dicom.status import FailureReason
from app.repository import aes
from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)

PATIENT = {"PatientID": "MRN-1", "IssuerOfPatientID": "REGION", "PatientName": "Shared^Pat",
           "PatientBirthDate": "19600101"}  # fmt: skip


async def _store(client: httpx.AsyncClient, *samples: Sample) -> httpx.Response:
    body, ctype = multipart_body(s.data for s in samples)
    return await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})


@pytest_asyncio.fixture(loop_scope="session")
async def two_hospitals(served: ArchiveUnderTest) -> AsyncIterator[tuple[Sample, Sample]]:
    """The same patient (same PatientID and issuer) seen at TEST and at OTHER."""
    ours, theirs = make_sample("ct", **PATIENT), make_sample("jpeg", **PATIENT)
    assert (await _store(served.client, ours)).status_code == 200
    async with served.as_user(OTHER_HOSPITAL) as other:
        assert (await _store(other, theirs)).status_code == 200
    yield ours, theirs


# Their study is JPEG: frames come as stored.
_ACCEPT_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _urls(s: Sample) -> list[str]:
    instance = f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"
    return [
        f"/dicom-web/studies/{s.study}",
        f"/dicom-web/studies/{s.study}/series/{s.series}",
        instance,
        f"/dicom-web/studies/{s.study}/metadata",
        f"/dicom-web/studies/{s.study}/series/{s.series}/metadata",
        instance + "/metadata",
        instance + "/frames/1",
        instance + "/bulkdata/7FE00010",
        f"/wado?requestType=WADO&studyUID={s.study}&seriesUID={s.series}&objectUID={s.instance}",
    ]


async def test_a_reader_sees_only_their_hospitals_studies(served: ArchiveUnderTest, two_hospitals):
    ours, theirs = two_hospitals
    client = served.client
    studies = (await client.get("/dicom-web/studies")).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [ours.study]
    assert studies[0]["00091010"]["Value"] == [HOSPITAL]
    for level in ("series", "instances"):
        found = (await client.get(f"/dicom-web/{level}")).json()
        assert {m["0020000D"]["Value"][0] for m in found} == {ours.study}
    for query in ({"StudyInstanceUID": theirs.study}, {"PatientID": "MRN-1"}, {"AccessionNumber": "*"}):
        found = (await client.get("/dicom-web/studies", params=query)).json()
        assert theirs.study not in {m["0020000D"]["Value"][0] for m in found}, query
    assert (await client.get(f"/dicom-web/studies/{theirs.study}/series")).json() == []
    assert (await client.get(f"/dicom-web/studies/{theirs.study}/instances")).json() == []


async def test_another_hospitals_study_is_404_on_every_retrieval_path(
    served: ArchiveUnderTest, two_hospitals
):
    ours, theirs = two_hospitals
    for url in _urls(theirs):
        response = await served.client.get(url)
        assert response.status_code == 404, url
    for url in _urls(ours):  # the same paths work for the hospital's own study
        response = await served.client.get(url, headers={"Accept": "*/*"})
        assert response.status_code == 200, url


async def test_another_hospitals_study_cannot_be_deleted(served: ArchiveUnderTest, two_hospitals):
    _, theirs = two_hospitals
    for url in _urls(theirs)[:3]:
        assert (await served.client.delete(url)).status_code == 404, url
    async with served.as_user(OTHER_HOSPITAL) as other:
        assert (await other.get(f"/dicom-web/studies/{theirs.study}/metadata")).status_code == 200


async def test_storing_into_another_hospitals_study_is_refused(served: ArchiveUnderTest, two_hospitals):
    _, theirs = two_hospitals
    intruder = make_sample("ct", study=theirs.study, **PATIENT)
    response = await _store(served.client, intruder)
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [FailureReason.DATA_SET_MISMATCH]
    async with served.as_user(OTHER_HOSPITAL) as other:
        (study,) = (await other.get("/dicom-web/studies")).json()
        assert study["00201208"]["Value"] == [1]


async def test_patient_ids_collide_without_merging(served: ArchiveUnderTest, two_hospitals):
    """MRN-1 at TEST and MRN-1 at OTHER are two patient records."""
    _, theirs = two_hospitals
    async with served.as_user(OTHER_HOSPITAL) as other:
        found = (await other.get("/dicom-web/studies", params={"PatientID": "MRN-1"})).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [theirs.study]


@pytest.mark.parametrize(
    "query",
    [
        {"PatientID": "MRN-1", "IssuerOfPatientID": "REGION"},
        {"PatientName": "Shared^Pat", "PatientBirthDate": "19600101"},
    ],
)
async def test_regional_lookup_of_a_specific_patient(served: ArchiveUnderTest, two_hospitals, query):
    ours, theirs = two_hospitals
    async with served.as_user(HOSPITAL, ["reader", "regional"]) as regional:
        found = (await regional.get("/dicom-web/studies", params=query)).json()
        owners = {s["0020000D"]["Value"][0]: s["00091010"]["Value"][0] for s in found}
        assert owners == {ours.study: HOSPITAL, theirs.study: OTHER_HOSPITAL}
        # Having found it, the regional reader may retrieve the other member's study.
        for url in _urls(theirs):
            response = await regional.get(
                url, headers={"Accept": _ACCEPT_AS_STORED if "/frames/" in url else "*/*"}
            )
            assert response.status_code == 200, url
        # ...but not delete it, nor store into it.
        assert (await regional.delete(f"/dicom-web/studies/{theirs.study}")).status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"PatientID": "MRN-1"},
        {"PatientName": "Shared*", "PatientBirthDate": "19600101"},
        {"PatientName": "Shared^Pat"},
    ],
)
async def test_broad_regional_browsing_stays_in_the_own_hospital(
    served: ArchiveUnderTest, two_hospitals, query
):
    ours, _ = two_hospitals
    async with served.as_user(HOSPITAL, ["reader", "regional"]) as regional:
        found = (await regional.get("/dicom-web/studies", params=query)).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [ours.study]


async def test_a_removed_hospital_is_refused_and_its_data_stays(served: ArchiveUnderTest, two_hospitals):
    ours, theirs = two_hospitals
    ae = aes.NewApplicationEntity("OTHER_CT", "127.0.0.1", 104, OTHER_HOSPITAL, may_store=True)
    assert await aes.add(served.archive.pool, ae) is not None
    async with served.as_user(OTHER_HOSPITAL) as other:
        # Its token was accepted (and the hospital remembered) before the removal.
        assert (await other.get("/dicom-web/studies")).status_code == 200
        assert (await served.client.delete(f"/api/hospitals/{OTHER_HOSPITAL}")).status_code == 204
        # The notice reaches this process's own cache too, delivered at commit.
        for _ in range(200):
            refused = await other.get("/dicom-web/studies")
            if refused.status_code == 403:
                break
            await asyncio.sleep(0.01)
        assert refused.status_code == 403, refused.text
    assert (await served.client.delete(f"/api/hospitals/{OTHER_HOSPITAL}")).status_code == 404
    # Its modalities may no longer associate.
    assert await aes.by_title(served.archive.pool, "OTHER_CT") is None
    listed = (await served.client.get("/api/hospitals")).json()
    assert OTHER_HOSPITAL not in [h["code"] for h in listed]
    async with served.as_user(HOSPITAL, roles=["reader", "regional"]) as regional:
        found = await regional.get(
            "/dicom-web/studies", params={"PatientID": "MRN-1", "IssuerOfPatientID": "REGION"}
        )
    assert {s["0020000D"]["Value"][0] for s in found.json()} == {ours.study, theirs.study}
