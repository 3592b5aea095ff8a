"""WADO-RS frames (PS3.18 §10.4.1.1.4): native and encapsulated, single and lists, in
request order, as stored; errors for frames that do not exist."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart

ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


async def _store(served: ArchiveUnderTest, *samples: Sample) -> None:
    body, ctype = multipart_body(s.data for s in samples)
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text


def _frames_url(s: Sample, frames: str) -> str:
    return f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}/frames/{frames}"


def _native_frames(ds: pydicom.Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    size = len(ds.PixelData) // count
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


async def test_native_frames_in_request_order(served: ArchiveUnderTest):
    dose = make_sample("multiframe")
    await _store(served, dose)
    expected = _native_frames(dose.dataset)
    response = await served.client.get(_frames_url(dose, "3,1,15,3"), headers={"Accept": ANY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    parts = split_multipart(response.content, response.headers["content-type"])
    assert [p for _, p in parts] == [expected[2], expected[0], expected[14], expected[2]]
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
@pytest.mark.parametrize(
    "accept",
    [
        None,
        'multipart/related; type="application/octet-stream"',
        "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        "*/*",
    ],
)
async def test_native_frames_default_to_explicit_little_endian(served: ArchiveUnderTest, accept):
    ct = make_sample("ct")
    await _store(served, ct)
    headers = {"Accept": accept} if accept else {}
    response = await served.client.get(_frames_url(ct, "1"), headers=headers)
    assert response.status_code == 200
    ((_, payload),) = split_multipart(response.content, response.headers["content-type"])
    assert payload == ct.dataset.PixelData


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_big_endian_frames_come_back_little_endian(served: ArchiveUnderTest):
    big = make_sample("bigendian")
    little = pydicom.dcmread(io.BytesIO(make_sample("mr").data))
    await _store(served, big)
    response = await served.client.get(_frames_url(big, "1"), headers={"Accept": ANY})
    ((_, payload),) = split_multipart(response.content, response.headers["content-type"])
    # MR_small_bigendian holds the same image as MR_small.
    assert payload == little.PixelData


async def test_encapsulated_frames_as_stored(served: ArchiveUnderTest):
    jpeg = make_sample("jpeg")
    await _store(served, jpeg)
    ds = jpeg.dataset
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    response = await served.client.get(_frames_url(jpeg, "30,2"), headers={"Accept": ANY})
    assert response.status_code == 200
    parts = split_multipart(response.content, response.headers["content-type"])
    assert [p for _, p in parts] == [expected[29], expected[1]]
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"

    as_jpeg = await served.client.get(
        _frames_url(jpeg, "1"), headers={"Accept": 'multipart/related; type="image/jpeg"; transfer-syntax=*'}
    )
    assert as_jpeg.status_code == 200
    ((headers, payload),) = split_multipart(as_jpeg.content, as_jpeg.headers["content-type"])
    assert headers["content-type"].startswith("image/jpeg")
    assert payload == expected[0] and payload.startswith(b"\xff\xd8")


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_compressed_frames_are_decoded_when_asked(served: ArchiveUnderTest):
    j2k, ybr = make_sample("jpeg2000"), make_sample("jpeg")
    await _store(served, j2k, ybr)
    native = 'multipart/related; type="application/octet-stream"'  # default: Explicit VR Little Endian
    named = native + "; transfer-syntax=1.2.840.10008.1.2.1"
    for accept in (native, named):
        response = await served.client.get(_frames_url(j2k, "1"), headers={"Accept": accept})
        assert response.status_code == 200, accept
        ((headers, payload),) = split_multipart(response.content, response.headers["content-type"])
        assert headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        assert payload == j2k.dataset.pixel_array.tobytes()
    response = await served.client.get(_frames_url(ybr, "2,7"), headers={"Accept": native})
    parts = split_multipart(response.content, response.headers["content-type"])
    expected = ybr.dataset.pixel_array  # pydicom decodes YBR_FULL_422 JPEG to RGB, as the archive does
    for (_, payload), index in zip(parts, (1, 6), strict=True):
        got = np.frombuffer(payload, dtype=np.uint8).reshape(expected[index].shape)
        assert np.abs(got.astype(int) - expected[index].astype(int)).mean() < 1


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_what_cannot_be_produced_is_406(served: ArchiveUnderTest):
    jpeg = make_sample("jpeg2000")
    await _store(served, jpeg)
    jpeg_ls = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.80'
    for accept in (jpeg_ls, 'multipart/related; type="image/jpeg"'):
        response = await served.client.get(_frames_url(jpeg, "1"), headers={"Accept": accept})
        assert response.status_code == 406, accept
    # image/jp2 means JPEG 2000 Lossless unless a transfer syntax is named (Table 8.7.3-5);
    # this file is lossy JPEG 2000.
    jp2 = 'multipart/related; type="image/jp2"'
    assert (await served.client.get(_frames_url(jpeg, "1"), headers={"Accept": jp2})).status_code == 406
    named = jp2 + "; transfer-syntax=1.2.840.10008.1.2.4.91"
    ok = await served.client.get(_frames_url(jpeg, "1"), headers={"Accept": named})
    assert ok.status_code == 200
    assert split_multipart(ok.content, ok.headers["content-type"])[0][0]["content-type"].startswith(
        "image/jp2"
    )


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_frames_spanning_fragments_without_an_offset_table(served: ArchiveUnderTest, tmp_path):
    """Each frame split over three fragments, no Basic Offset Table: the frame starts are
    found at ingest from the JPEG markers, and each frame is one ranged read."""
    source = make_sample("jpeg").dataset
    frames = list(generate_frames(source.PixelData, number_of_frames=int(source.NumberOfFrames)))[:5]
    ds = source
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=False)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    sample = Sample(
        buffer.getvalue(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID
    )
    await _store(served, sample)
    response = await served.client.get(_frames_url(sample, "5,1,3"), headers={"Accept": ANY})
    assert response.status_code == 200
    parts = split_multipart(response.content, response.headers["content-type"])
    # encapsulate() pads odd-length fragments; a frame is its fragments concatenated.
    assert [p.rstrip(b"\x00") for _, p in parts] == [
        f.rstrip(b"\x00") for f in (frames[4], frames[0], frames[2])
    ]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_frame_errors(served: ArchiveUnderTest):
    dose, ecg = make_sample("multiframe"), make_sample("ct")
    await _store(served, dose, ecg)
    assert (await served.client.get(_frames_url(dose, "16"))).status_code == 404
    assert (await served.client.get(_frames_url(dose, "1,99"))).status_code == 404
    for bad in ("0", "x", "1,,2", "-1", "1.5"):
        response = await served.client.get(_frames_url(dose, bad))
        assert response.status_code == 400, bad
        assert "frame" in response.json()["message"]
    unknown = f"/dicom-web/studies/{dose.study}/series/{dose.series}/instances/1.2.3/frames/1"
    assert (await served.client.get(unknown)).status_code == 404
