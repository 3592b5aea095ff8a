"""WADO-RS (PS3.18 §10.4): instances come back byte for byte, metadata carries resolvable
BulkDataURIs — on both object stores."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames

from tests.fixtures import ArchiveUnderTest
from tests.samples import SAMPLE_FILES, Sample, make_sample, multipart_body, split_multipart

DICOM = 'multipart/related; type="application/dicom"'


async def _store(client: httpx.AsyncClient, samples: list[Sample]) -> None:
    body, ctype = multipart_body(s.data for s in samples)
    response = await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text


def _instance_url(s: Sample) -> str:
    return f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"


@pytest.mark.parametrize("name", list(SAMPLE_FILES))
async def test_instance_round_trip_is_byte_identical(served: ArchiveUnderTest, name: str):
    sample = make_sample(name)
    await _store(served.client, [sample])
    response = await served.client.get(
        _instance_url(sample), headers={"Accept": DICOM + "; transfer-syntax=*"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("multipart/related")
    ((headers, payload),) = split_multipart(response.content, response.headers["content-type"])
    assert payload == sample.data
    stored_syntax = pydicom.dcmread(io.BytesIO(sample.data)).file_meta.TransferSyntaxUID
    assert headers["content-type"] == f"application/dicom; transfer-syntax={stored_syntax}"
    assert pydicom.dcmread(io.BytesIO(payload)).SOPInstanceUID == sample.instance


async def test_study_and_series_retrieve(served: ArchiveUnderTest):
    first = make_sample("ct")
    second = make_sample("ct", study=first.study, series=first.series, InstanceNumber=2)
    other_series = make_sample("mr", study=first.study, PatientID=first.dataset.PatientID)
    await _store(served.client, [first, second, other_series])

    study = await served.client.get(f"/dicom-web/studies/{first.study}")
    assert study.status_code == 200
    parts = split_multipart(study.content, study.headers["content-type"])
    assert {p for _, p in parts} == {first.data, second.data, other_series.data}

    series = await served.client.get(
        f"/dicom-web/studies/{first.study}/series/{first.series}", headers={"Accept": DICOM}
    )
    parts = split_multipart(series.content, series.headers["content-type"])
    assert {p for _, p in parts} == {first.data, second.data}


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_transfer_syntax_negotiation(served: ArchiveUnderTest):
    jpeg = make_sample("jpeg")
    await _store(served.client, [jpeg])
    url = _instance_url(jpeg)
    # Default (no parameter) and "*" give the stored syntax.
    assert (await served.client.get(url, headers={"Accept": DICOM})).status_code == 200
    same = await served.client.get(
        url, headers={"Accept": DICOM + "; transfer-syntax=1.2.840.10008.1.2.4.50"}
    )
    assert same.status_code == 200
    # A syntax the archive cannot produce is 406...
    jpeg_ls = DICOM + "; transfer-syntax=1.2.840.10008.1.2.4.80"
    refused = await served.client.get(url, headers={"Accept": jpeg_ls})
    assert refused.status_code == 406
    assert "1.2.840.10008.1.2.4.50" in refused.json()["message"]
    # ...unless the client also takes something the archive has, with a lower q-value.
    fallback = await served.client.get(
        url, headers={"Accept": jpeg_ls + ", " + DICOM + "; transfer-syntax=*; q=0.5"}
    )
    assert fallback.status_code == 200
    ((headers, _),) = split_multipart(fallback.content, fallback.headers["content-type"])
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert (await served.client.get(url, headers={"Accept": "application/dicom+json"})).status_code == 406


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_unknown_uids_are_404(served: ArchiveUnderTest):
    sample = make_sample("ct")
    await _store(served.client, [sample])
    for url in (
        "/dicom-web/studies/1.2.3",
        f"/dicom-web/studies/{sample.study}/series/1.2.3",
        f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/1.2.3",
        f"/dicom-web/studies/1.2.3/series/{sample.series}/instances/{sample.instance}",
        "/dicom-web/studies/1.2.3/metadata",
        f"/dicom-web/studies/{sample.study}/series/1.2.3/metadata",
    ):
        response = await served.client.get(url)
        assert response.status_code == 404, url
        assert response.json()["message"]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_malformed_uid_in_path_is_400(served: ArchiveUnderTest):
    assert (await served.client.get("/dicom-web/studies/not-a-uid")).status_code == 400
    assert (await served.client.get("/dicom-web/studies/1.2/metadata", params={"x": 1})).status_code == 404


async def test_metadata_at_every_level_with_resolvable_bulk_data(served: ArchiveUnderTest):
    ct = make_sample("ct")
    ct2 = make_sample("ct", study=ct.study, series=ct.series)
    mr = make_sample("mr", study=ct.study, PatientID=ct.dataset.PatientID)
    await _store(served.client, [ct, ct2, mr])

    study = await served.client.get(f"/dicom-web/studies/{ct.study}/metadata")
    assert study.status_code == 200
    assert study.headers["content-type"].startswith("application/dicom+json")
    assert {m["00080018"]["Value"][0] for m in study.json()} == {ct.instance, ct2.instance, mr.instance}
    series = (await served.client.get(f"/dicom-web/studies/{ct.study}/series/{ct.series}/metadata")).json()
    assert {m["00080018"]["Value"][0] for m in series} == {ct.instance, ct2.instance}
    (instance,) = (await served.client.get(_instance_url(ct) + "/metadata")).json()

    expected = ct.dataset
    assert instance["00100010"]["Value"] == [{"Alphabetic": str(expected.PatientName)}]
    assert instance["00280010"]["Value"] == [expected.Rows]
    pixel = instance["7FE00010"]
    assert "Value" not in pixel and "InlineBinary" not in pixel
    uri = pixel["BulkDataURI"]
    assert uri == f"http://testserver{_instance_url(ct)}/bulkdata/7FE00010"

    multipart = await served.client.get(uri)
    assert multipart.status_code == 200
    ((_, frame),) = split_multipart(multipart.content, multipart.headers["content-type"])
    assert frame == expected.PixelData

    single = await served.client.get(uri, headers={"Accept": "application/octet-stream"})
    assert single.content == expected.PixelData
    ranged = await served.client.get(
        uri, headers={"Accept": "application/octet-stream", "Range": "bytes=10-19"}
    )
    assert ranged.status_code == 206
    assert ranged.content == expected.PixelData[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(expected.PixelData)}"


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_encapsulated_pixel_data_bulk_returns_the_frames(served: ArchiveUnderTest):
    jpeg = make_sample("jpeg")  # 30 JPEG frames
    await _store(served.client, [jpeg])
    (metadata,) = (await served.client.get(_instance_url(jpeg) + "/metadata")).json()
    response = await served.client.get(metadata["7FE00010"]["BulkDataURI"])
    assert response.status_code == 200
    parts = split_multipart(response.content, response.headers["content-type"])
    ds = jpeg.dataset
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    assert [payload for _, payload in parts] == expected
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_multiframe_native_bulk_returns_each_frame(served: ArchiveUnderTest):
    dose = make_sample("multiframe")
    await _store(served.client, [dose])
    response = await served.client.get(_instance_url(dose) + "/bulkdata/7FE00010")
    parts = split_multipart(response.content, response.headers["content-type"])
    ds = dose.dataset
    assert len(parts) == int(ds.NumberOfFrames)
    assert b"".join(p for _, p in parts) == ds.PixelData


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_unknown_bulk_path_is_404(served: ArchiveUnderTest):
    ct = make_sample("ct")
    await _store(served.client, [ct])
    assert (await served.client.get(_instance_url(ct) + "/bulkdata/00100010")).status_code == 404
    assert (await served.client.get(_instance_url(ct) + "/bulkdata/nonsense")).status_code == 400


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_range_beyond_the_value_is_416(served: ArchiveUnderTest):
    ct = make_sample("ct")
    await _store(served.client, [ct])
    size = len(ct.dataset.PixelData)
    response = await served.client.get(
        _instance_url(ct) + "/bulkdata/7FE00010",
        headers={"Accept": "application/octet-stream", "Range": f"bytes={size}-"},
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_metadata_etag_revalidation_and_gzip(served: ArchiveUnderTest):
    first = make_sample("ct")
    await _store(served.client, [first])
    url = f"/dicom-web/studies/{first.study}/metadata"
    cold = await served.client.get(url, headers={"Accept-Encoding": "gzip"})
    assert cold.status_code == 200
    assert cold.headers["content-encoding"] == "gzip"  # httpx decoded it for us
    etag = cold.headers["etag"]
    assert cold.json()[0]["00080018"]["Value"] == [first.instance]

    unchanged = await served.client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    # A new instance in the study changes its version.
    second = make_sample("ct", study=first.study, series=first.series)
    await _store(served.client, [second])
    changed = await served.client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(changed.json()) == 2
    plain = await served.client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


@pytest.mark.parametrize("name", ["jpeg", "jpeg2000", "rle"])
async def test_compressed_instances_are_transcoded_on_request(served: ArchiveUnderTest, name: str):
    sample = make_sample(name)
    await _store(served.client, [sample])
    accept = DICOM + "; transfer-syntax=1.2.840.10008.1.2.1"
    response = await served.client.get(_instance_url(sample), headers={"Accept": accept})
    assert response.status_code == 200
    ((headers, payload),) = split_multipart(response.content, response.headers["content-type"])
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    got, original = pydicom.dcmread(io.BytesIO(payload)), sample.dataset
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.SOPInstanceUID == sample.instance and got.PatientName == original.PatientName
    assert got.pixel_array.shape == original.pixel_array.shape
    tolerance = 1 if name == "jpeg" else 0  # JPEG decoders may round differently
    assert abs(got.pixel_array.astype(int) - original.pixel_array.astype(int)).max() <= tolerance
    if name == "jpeg":
        assert got.PhotometricInterpretation == "RGB" and got.LossyImageCompression == "01"
    # WADO-URI asks the same way.
    uri = await served.client.get(
        "/wado",
        params={"requestType": "WADO", "studyUID": sample.study, "seriesUID": sample.series,
                "objectUID": sample.instance, "transferSyntax": "1.2.840.10008.1.2.1",
                "contentType": "application/dicom"},
    )  # fmt: skip
    assert uri.status_code == 200
    assert pydicom.dcmread(io.BytesIO(uri.content)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
