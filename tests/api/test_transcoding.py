"""Retrieving in Explicit VR Little Endian, the default of ``application/dicom`` (PS3.18
Table 8.7.3-2), from every stored transfer syntax; ``transfer-syntax=*`` as stored; and
conversions that cannot be done refused before the response starts."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart

DICOM = 'multipart/related; type="application/dicom"'


def _resaved(sample: Sample, syntax: str) -> Sample:
    """``sample`` written in another native transfer syntax."""
    ds = sample.dataset
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(
        out, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True
    )
    return Sample(out.getvalue(), sample.study, sample.series, sample.instance, sample.sop_class)


def _from_file(path: str | Path, **attributes: Any) -> Sample:
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return Sample(
        out.getvalue(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID
    )


def _lossy() -> Sample:
    path = get_testdata_file("JPEG-lossy.dcm")
    assert path is not None
    return _from_file(str(path))


async def _store(client: httpx.AsyncClient, samples: list[Sample]) -> None:
    body, ctype = multipart_body(s.data for s in samples)
    response = await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text


def _url(s: Sample) -> str:
    return f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"


def _one_part(response: httpx.Response) -> tuple[dict[str, str], bytes]:
    assert response.status_code == 200, response.text
    ((headers, payload),) = split_multipart(response.content, response.headers["content-type"])
    return headers, payload


_SOURCES = {
    "implicit": lambda: _resaved(make_sample("ct"), ImplicitVRLittleEndian),
    "deflated": lambda: _resaved(make_sample("ct"), DeflatedExplicitVRLittleEndian),
    "bigendian": lambda: make_sample("bigendian"),
    "jpeg": lambda: make_sample("jpeg"),
    "jpeg2000": lambda: make_sample("jpeg2000"),
    "rle": lambda: make_sample("rle"),
}


@pytest.mark.parametrize("source", list(_SOURCES))
async def test_every_stored_syntax_comes_back_as_explicit_vr_little_endian(
    served: ArchiveUnderTest, source: str
):
    sample = _SOURCES[source]()
    await _store(served.client, [sample])
    for accept in (DICOM, None):  # the default, named or not
        headers = {"Accept": accept} if accept else {}
        part, payload = _one_part(await served.client.get(_url(sample), headers=headers))
        assert part["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        got, original = pydicom.dcmread(io.BytesIO(payload)), sample.dataset
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert not got.is_implicit_VR and got.is_little_endian
        assert got.SOPInstanceUID == sample.instance and got.PatientName == original.PatientName
        assert got.pixel_array.dtype.isnative and got.pixel_array.shape == original.pixel_array.shape
        tolerance = 1 if source == "jpeg" else 0  # JPEG decoders may round differently
        assert abs(got.pixel_array.astype(int) - original.pixel_array.astype(int)).max() <= tolerance
        if source == "jpeg":  # YBR_FULL_422 JPEG decodes to RGB (PS3.3 C.7.6.3.1.2)
            assert got.PhotometricInterpretation == "RGB" and got.LossyImageCompression == "01"

    # As stored, byte for byte, when asked for with "*" (WADO-RS and WADO-URI).
    part, payload = _one_part(
        await served.client.get(_url(sample), headers={"Accept": DICOM + "; transfer-syntax=*"})
    )
    assert payload == sample.data
    uri = await served.client.get("/wado", params=_uri_params(sample, transferSyntax="*"))
    assert uri.status_code == 200 and uri.content == sample.data
    converted = await served.client.get("/wado", params=_uri_params(sample))
    assert converted.status_code == 200
    assert (
        pydicom.dcmread(io.BytesIO(converted.content)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    )


def _uri_params(s: Sample, **extra: str) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": s.study, "seriesUID": s.series, "objectUID": s.instance,
            "contentType": "application/dicom", **extra}  # fmt: skip


async def test_a_study_of_mixed_syntaxes_converts_every_instance(served: ArchiveUnderTest):
    first = make_sample("ct")
    others = [
        _resaved(make_sample("ct", study=first.study, series=first.series), ImplicitVRLittleEndian),
        make_sample("rle", study=first.study, PatientID=first.dataset.PatientID),
    ]
    await _store(served.client, [first, *others])
    response = await served.client.get(f"/dicom-web/studies/{first.study}", headers={"Accept": DICOM})
    assert response.status_code == 200
    parts = split_multipart(response.content, response.headers["content-type"])
    assert len(parts) == 3
    for headers, payload in parts:
        assert headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
        assert pydicom.dcmread(io.BytesIO(payload)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # The Explicit VR Little Endian original goes through untouched.
    assert first.data in {p for _, p in parts}


@pytest.mark.skipif(shutil.which("dcmdjpeg") is None, reason="DCMTK's dcmdjpeg is the oracle")
async def test_twelve_bit_jpeg_extended_is_decoded(served: ArchiveUnderTest, tmp_path: Path):
    """pydicom's JPEG-lossy.dcm: 12-bit JPEG Extended whose scan header has Se 0."""
    sample = _lossy()
    await _store(served.client, [sample])
    _, payload = _one_part(await served.client.get(_url(sample), headers={"Accept": DICOM}))
    got = pydicom.dcmread(io.BytesIO(payload))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and got.LossyImageCompression == "01"
    (tmp_path / "in.dcm").write_bytes(sample.data)
    decoded = await asyncio.create_subprocess_exec(
        "dcmdjpeg", str(tmp_path / "in.dcm"), str(tmp_path / "out.dcm")
    )
    assert await decoded.wait() == 0
    expected = pydicom.dcmread(tmp_path / "out.dcm").pixel_array.astype(int)
    assert got.pixel_array.shape == expected.shape
    assert np.abs(got.pixel_array.astype(int) - expected).max() <= 1  # IDCT rounding

    image = await served.client.get(_url(sample) + "/rendered", headers={"Accept": "image/png"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


def _undecodable() -> Sample:
    """A JPEG Baseline instance whose codestream is garbage: it is stored (ingest never
    decodes), but cannot be converted."""
    ds = make_sample("ct").dataset
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x00" * 64 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return Sample(
        out.getvalue(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID
    )


def _jpeg_ct(**attributes: Any) -> Sample:
    """A JPEG Baseline instance of the same kind as :func:`_undecodable` (8-bit
    MONOCHROME2), whose codestream decodes."""
    from PIL import Image

    ds = make_sample("ct").dataset
    jpeg = io.BytesIO()
    Image.fromarray(np.arange(128 * 128, dtype=np.uint8).reshape(128, 128)).save(jpeg, "JPEG")
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return Sample(
        out.getvalue(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID
    )


async def test_a_later_instance_that_cannot_be_converted_is_a_failed_part(served: ArchiveUnderTest):
    # Tried up front, the first of their kind converts: the response starts as a 200. The
    # second of the kind fails once it has started, and is sent as a failed part naming it.
    good = _jpeg_ct(InstanceNumber=1)
    bad = _undecodable()
    ds = bad.dataset
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = good.study, good.series, 2
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    bad = Sample(out.getvalue(), good.study, good.series, bad.instance, bad.sop_class)
    await _store(served.client, [good, bad])
    study = await served.client.get(f"/dicom-web/studies/{good.study}", headers={"Accept": DICOM})
    assert study.status_code == 200
    first, failed = split_multipart(study.content, study.headers["content-type"])
    assert first[0]["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    converted = pydicom.dcmread(io.BytesIO(first[1]))
    assert converted.SOPInstanceUID == good.instance and converted.pixel_array.shape == (128, 128)
    assert failed[0]["content-type"] == "application/json"
    assert failed[0]["content-location"] == _url(bad).removeprefix("/dicom-web")
    problem = json.loads(failed[1])
    assert problem["status"] == 406 and "transfer-syntax=*" in problem["message"]

    # Through a de-identifying share, the failed part names the instance by its new UIDs.
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    body = {"studies": [good.study], "expires_at": expires, "permissions": ["view", "download"],
            "deidentify": True}  # fmt: skip
    share = await served.client.post("/api/shares", json=body)
    assert share.status_code == 201, share.text
    root = f"/share/{share.json()['token']}/dicom-web"
    async with httpx.AsyncClient(transport=served.client._transport, base_url="http://testserver") as anon:
        found = await anon.get(f"{root}/studies", headers={"Accept": "application/dicom+json"})
        study_uid = found.json()[0]["0020000D"]["Value"][0]
        shared = await anon.get(f"{root}/studies/{study_uid}", headers={"Accept": DICOM})
    assert shared.status_code == 200
    _, failed = split_multipart(shared.content, shared.headers["content-type"])
    assert failed[0]["content-type"] == "application/json"
    assert failed[0]["content-location"].startswith(f"/studies/{study_uid}/series/2.25.")
    originals = {good.study, good.series, bad.instance}
    assert not any(uid in failed[0]["content-location"] or uid.encode() in failed[1] for uid in originals)


async def test_a_conversion_that_fails_is_refused_before_the_response(served: ArchiveUnderTest):
    bad = _undecodable()
    good = make_sample("ct", study=bad.study, series=bad.series)
    await _store(served.client, [bad, good])
    response = await served.client.get(_url(bad), headers={"Accept": DICOM})
    assert response.status_code == 406
    assert bad.instance in response.json()["message"] and "transfer-syntax=*" in response.json()["message"]
    # In a study, the others come back, in a 206 whose Warning names what is left out (PS3.18 §8.5).
    study = await served.client.get(f"/dicom-web/studies/{bad.study}", headers={"Accept": DICOM})
    assert study.status_code == 206
    assert study.headers["warning"].startswith("299 filmless ") and bad.instance in study.headers["warning"]
    ((_, payload),) = split_multipart(study.content, study.headers["content-type"])
    assert payload == good.data
    uri = await served.client.get("/wado", params=_uri_params(bad))
    assert uri.status_code == 406
    # As stored it is still there, and a client that takes either gets it as stored.
    either = DICOM + f"; transfer-syntax={ExplicitVRLittleEndian}, " + DICOM + "; transfer-syntax=*; q=0.5"
    _, payload = _one_part(await served.client.get(_url(bad), headers={"Accept": either}))
    assert payload == bad.data


@pytest.mark.parametrize("served", [{"retrieve_as_stored": True}], indirect=True)
async def test_the_as_stored_setting_restores_the_old_default(served: ArchiveUnderTest):
    sample = _resaved(make_sample("ct"), ImplicitVRLittleEndian)
    await _store(served.client, [sample])
    part, payload = _one_part(await served.client.get(_url(sample), headers={"Accept": DICOM}))
    assert payload == sample.data and part["content-type"].endswith(ImplicitVRLittleEndian)
    uri = await served.client.get("/wado", params=_uri_params(sample))
    assert uri.status_code == 200 and uri.content == sample.data
    # Naming the syntax still converts.
    named = DICOM + f"; transfer-syntax={ExplicitVRLittleEndian}"
    _, converted = _one_part(await served.client.get(_url(sample), headers={"Accept": named}))
    assert pydicom.dcmread(io.BytesIO(converted)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


async def test_an_object_without_pixel_data_is_converted_whole(served: ArchiveUnderTest):
    path = get_testdata_file("rtplan.dcm")  # Implicit VR Little Endian, no Pixel Data
    assert path is not None
    sample = _from_file(str(path))
    await _store(served.client, [sample])
    _, payload = _one_part(await served.client.get(_url(sample), headers={"Accept": DICOM}))
    got, original = pydicom.dcmread(io.BytesIO(payload)), sample.dataset
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not got.is_implicit_VR
    assert got.SOPInstanceUID == sample.instance
    assert got.BeamSequence[0].BeamName == original.BeamSequence[0].BeamName
    assert len(got.BeamSequence) == len(original.BeamSequence)
