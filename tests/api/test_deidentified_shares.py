"""A share that serves de-identified copies (PS3.15 Annex E, Basic Application Level
Confidentiality Profile) on its page, its ZIP and its DICOMweb root, with UIDs replaced
consistently, and one that does not."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from typing import Any

import httpx
import pydicom
import pytest
import pytest_asyncio
from pydicom.dataset import Dataset

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)

PATIENT = {"PatientID": "DEID-77", "PatientName": "Secret^Sam", "PatientBirthDate": "19610203"}
IDENTITY = (b"DEID-77", b"Secret", b"19610203")


@pytest_asyncio.fixture(loop_scope="session")
async def studies(served: ArchiveUnderTest) -> dict[str, list[Sample]]:
    first = make_sample("ct", **PATIENT, BurnedInAnnotation="NO", InstanceNumber=1, AccessionNumber="ACC9")
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.sop_class
    reference.ReferencedSOPInstanceUID = first.instance
    second = make_sample("ct", study=first.study, series=first.series, **PATIENT, BurnedInAnnotation="NO",
                         InstanceNumber=2, ReferencedImageSequence=[reference])  # fmt: skip
    unknown = make_sample("ct", **PATIENT)  # no Burned In Annotation: unknown
    burned = make_sample("mr", **PATIENT, BurnedInAnnotation="YES")
    body, ctype = multipart_body(s.data for s in (first, second, unknown, burned))
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return {"clean": [first, second], "unknown": [unknown], "burned": [burned]}


async def _create(served: ArchiveUnderTest, uids: list[str], **extra: Any) -> dict[str, Any]:
    body = {"studies": uids, "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat(),
            "permissions": ["view", "download"], **extra}  # fmt: skip
    response = await served.client.post("/api/shares", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _anonymous(served: ArchiveUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=served.client._transport, base_url="http://testserver")


def _value(ds: dict[str, Any], tag: str) -> Any:
    return ds.get(tag, {}).get("Value", [None])[0]


def _no_identity(data: bytes) -> None:
    for value in IDENTITY:
        assert value not in data, value


async def _json(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    return response.json(), response.content


async def test_deidentified_share_on_every_path(served: ArchiveUnderTest, studies):
    first, second = studies["clean"]
    originals = {first.study, first.series, first.instance, second.instance}
    share = await _create(served, [first.study], deidentify=True)
    assert share["deidentify"] is True and share["burned_in_warning"] is False
    root = f"/share/{share['token']}/dicom-web"

    async with _anonymous(served) as client:
        found, raw = await _json(client, f"{root}/studies")
        assert len(found) == 1
        study = _value(found[0], "0020000D")
        assert study not in originals and study.startswith("2.25.")
        assert _value(found[0], "00100010") is None
        assert _value(found[0], "00100020").startswith("ANON")  # a pseudonym (Z/D: D)
        assert _value(found[0], "00100030") is None and _value(found[0], "00080050") is None
        assert _value(found[0], "00120062") == "YES"
        assert "filmless-burned-in-annotation" not in (await client.get(f"{root}/studies")).headers
        _no_identity(raw)
        assert not any(uid.encode() in raw for uid in originals)

        (series,), raw = await _json(client, f"{root}/studies/{study}/series")
        series_uid = _value(series, "0020000E")
        assert series_uid not in originals
        instances, raw = await _json(client, f"{root}/studies/{study}/instances")
        assert {_value(i, "0020000E") for i in instances} == {series_uid}  # relations hold
        by_number = {_value(i, "00200013"): _value(i, "00080018") for i in instances}
        assert set(by_number.values()).isdisjoint(originals) and len(set(by_number.values())) == 2
        _no_identity(raw)

        again, _ = await _json(client, f"{root}/studies")  # another request, the same UIDs
        assert _value(again[0], "0020000D") == study

        metadata, raw = await _json(client, f"{root}/studies/{study}/metadata")
        _no_identity(raw)
        assert not any(uid.encode() in raw for uid in originals)
        meta = {_value(m, "00200013"): m for m in metadata}
        assert {_value(m, "00080018") for m in metadata} == set(by_number.values())
        assert {_value(m, "0020000E") for m in metadata} == {series_uid}
        referenced = _value(meta[2], "00081140")
        assert _value(referenced, "00081155") == by_number[1]  # the reference follows its target
        assert _value(meta[1], "00120064")["00080100"]["Value"] == ["113100"]
        assert all(not (int(t, 16) >> 16) % 2 for t in meta[1])  # private attributes removed

        dicom = {"Accept": 'multipart/related; type="application/dicom"'}
        response = await client.get(f"{root}/studies/{study}", headers=dicom)
        assert response.status_code == 200, response.text
        parts = split_multipart(response.content, response.headers["content-type"])
        assert len(parts) == 2
        stored = {s.instance: pydicom.dcmread(io.BytesIO(s.data)) for s in (first, second)}
        for headers, data in parts:
            _no_identity(data)
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.SOPInstanceUID == by_number[ds.InstanceNumber]
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert headers["content-location"].endswith(f"/series/{series_uid}/instances/{ds.SOPInstanceUID}")
            assert ds.StudyInstanceUID == study and ds.SeriesInstanceUID == series_uid
            assert str(ds.PatientName) == "" and ds.PatientBirthDate == ""
            assert ds.PatientID == _value(found[0], "00100020")
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
            original = stored[first.instance if ds.InstanceNumber == 1 else second.instance]
            assert ds.PixelData == original.PixelData  # pixels as stored
            assert not any(e.tag.is_private for e in ds)
            if ds.InstanceNumber == 2:
                assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == by_number[1]

        frame = await client.get(
            f"{root}/studies/{study}/series/{series_uid}/instances/{by_number[1]}/frames/1",
            headers={"Accept": "multipart/related; type=application/octet-stream"},
        )
        assert frame.status_code == 200
        ((_, pixels),) = split_multipart(frame.content, frame.headers["content-type"])
        assert pixels == stored[first.instance].PixelData

        other_bulk = f"{root}/studies/{study}/series/{series_uid}/instances/{by_number[1]}/bulkdata/00091001"
        for path in ("00091001", "0040A730/0/00080100"):  # only the pixel data is bulk here
            assert (await client.get(f"{other_bulk.rsplit('/', 1)[0]}/{path}")).status_code == 404

        for view in ("thumbnail", "rendered"):
            image = await client.get(
                f"{root}/studies/{study}/series/{series_uid}/instances/{by_number[1]}/{view}"
            )
            assert image.status_code == 200 and image.headers["content-type"].startswith("image/"), view

        uri = await client.get(
            f"/share/{share['token']}/wado",
            params={"requestType": "WADO", "studyUID": study, "seriesUID": series_uid,
                    "objectUID": by_number[1], "contentType": "application/dicom"},
        )  # fmt: skip
        assert uri.status_code == 200, uri.text
        _no_identity(uri.content)
        assert pydicom.dcmread(io.BytesIO(uri.content)).SOPInstanceUID == by_number[1]

        # The originals open nothing, and a search on what the profile removes matches nothing.
        assert (await client.get(f"{root}/studies/{first.study}/metadata")).status_code == 404
        for query in ({"PatientName": "Secret*"}, {"PatientID": "DEID-77"}, {"00100030": "19610203"},
                      {"StudyInstanceUID": first.study}):  # fmt: skip
            matches, _ = await _json(client, f"{root}/studies?{httpx.QueryParams(query)}")
            assert matches == [], query
        matches, _ = await _json(client, f"{root}/studies?{httpx.QueryParams(StudyInstanceUID=study)}")
        assert len(matches) == 1
        # Only its own root de-identifies: the token is no key to the archive's.
        bearer = {"Authorization": f"Bearer {share['token']}", "Accept": "application/dicom+json"}
        direct = await client.get("/dicom-web/studies", headers=bearer)
        assert direct.status_code == 401 and b"Secret" not in direct.content

        # The page and the ZIP of the same share.
        opened = await client.get(f"/s/{share['token']}")
        assert opened.status_code == 303
        page = await client.get(opened.headers["location"])
        assert page.status_code == 200
        assert "Secret" not in page.text and first.study not in page.text and study in page.text
        assert "de-identified" in page.text and "burned-in" not in page.text
        study_page = await client.get(f"{opened.headers['location']}/studies/{study}")
        assert study_page.status_code == 200 and by_number[2] in study_page.text
        assert not any(uid in study_page.text for uid in originals)
        download = await client.get(f"{opened.headers['location']}/download")
        assert download.status_code == 200
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            files = {n: archive.read(n) for n in archive.namelist()}
    _no_identity(b"".join(files.values()))
    assert not any(uid.encode() in data for uid in originals for data in files.values())
    dicomdir = pydicom.dcmread(io.BytesIO(files.pop("DICOMDIR")))
    assert {r.ReferencedSOPInstanceUIDInFile for r in dicomdir.DirectoryRecordSequence
            if "ReferencedSOPInstanceUIDInFile" in r} == set(by_number.values())  # fmt: skip
    assert len(files) == 2
    for data in files.values():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.SOPInstanceUID in by_number.values() and ds.PatientIdentityRemoved == "YES"
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(first.data)).PixelData


async def test_burned_in_annotation_warns(served: ArchiveUnderTest, studies):
    for name in ("unknown", "burned"):
        share = await _create(served, [studies[name][0].study], deidentify=True)
        assert share["burned_in_warning"] is True, name
        detail = await served.client.get(f"/api/shares/{share['id']}")
        assert detail.json()["burned_in_warning"] is True
        async with _anonymous(served) as client:
            opened = await client.get(f"/s/{share['token']}")
            page = await client.get(opened.headers["location"])
            qido = await client.get(f"/share/{share['token']}/dicom-web/studies")
        assert "burned-in annotation" in page.text
        assert qido.headers["filmless-burned-in-annotation"] == "possible"


async def test_a_normal_share_serves_originals(served: ArchiveUnderTest, studies):
    first, _ = studies["clean"]
    share = await _create(served, [first.study])
    assert share["deidentify"] is False and share["burned_in_warning"] is False
    root = f"/share/{share['token']}/dicom-web"
    async with _anonymous(served) as client:
        response = await client.get(
            f"{root}/studies/{first.study}/series/{first.series}/instances/{first.instance}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        assert response.status_code == 200
        ((_, data),) = split_multipart(response.content, response.headers["content-type"])
        assert data == first.data
        found, _ = await _json(client, f"{root}/studies?PatientID=DEID-77")
        assert _value(found[0], "0020000D") == first.study


async def test_a_deidentified_share_cannot_be_reshared(served: ArchiveUnderTest, studies):
    body = {"studies": [studies["clean"][0].study], "deidentify": True, "permissions": ["view", "reshare"],
            "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()}  # fmt: skip
    response = await served.client.post("/api/shares", json=body)
    assert response.status_code == 400 and "sharing further" in response.text


async def test_an_instance_stored_later_is_reached_by_its_new_uid(served: ArchiveUnderTest):
    early = make_sample("ct", **PATIENT)
    late = make_sample("ct", study=early.study, series=early.series, **PATIENT)

    async def store(sample: Sample) -> None:
        body, ctype = multipart_body([sample.data])
        response = await served.client.post(
            "/dicom-web/studies", content=body, headers={"Content-Type": ctype}
        )
        assert response.status_code == 200, response.text

    await store(early)
    share = await _create(served, [early.study], deidentify=True)
    root = f"/share/{share['token']}/dicom-web"
    async with _anonymous(served) as client:
        (study,), _ = await _json(client, f"{root}/studies")
        study_uid = _value(study, "0020000D")
        assert len((await _json(client, f"{root}/studies/{study_uid}/metadata"))[0]) == 1
        await store(late)
        instances, _ = await _json(client, f"{root}/studies/{study_uid}/instances")
        assert len(instances) == 2
        for found in instances:
            series_uid, instance_uid = _value(found, "0020000E"), _value(found, "00080018")
            url = f"{root}/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}"
            (meta,), _ = await _json(client, f"{url}/metadata")
            assert _value(meta, "00080018") == _value(found, "00080018")
