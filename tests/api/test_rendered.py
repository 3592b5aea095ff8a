"""Rendered images and thumbnails through the API: pixels checked against PS3.3's VOI
formula computed here from pydicom's own decoding, media types, caching, errors."""

from __future__ import annotations

import io

import asyncpg
import numpy as np
import pytest
from PIL import Image

from tests.fixtures import OTHER_HOSPITAL, ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


async def _store(served: ArchiveUnderTest, *samples: Sample) -> None:
    body, ctype = multipart_body(s.data for s in samples)
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text


def _url(s: Sample) -> str:
    return f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"


def _image(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


async def test_a_windowed_ct_as_png_matches_the_voi_formula(served: ArchiveUnderTest):
    ct = make_sample("ct")
    await _store(served, ct)
    response = await served.client.get(
        _url(ct) + "/rendered", params={"window": "40,400,linear"}, headers={"Accept": "image/png"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    ds = ct.dataset
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # PS3.3 C.11.2.1.2.1, linear: ((x - (c - 0.5)) / (w - 1) + 0.5) scaled to 0..255.
    expected = np.clip(((hu - (40 - 0.5)) / (400 - 1) + 0.5) * 255, 0, 255)
    got = _image(response.content).astype(np.float64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0


async def test_default_is_jpeg_from_the_instances_own_window(served: ArchiveUnderTest):
    mr = make_sample("mr")
    await _store(served, mr)
    response = await served.client.get(_url(mr) + "/rendered")
    assert response.headers["content-type"] == "image/jpeg"
    assert _image(response.content).shape == (64, 64)
    assert "private" in response.headers["cache-control"]
    as_png = await served.client.get(_url(mr) + "/rendered", params={"accept": "image/png"})
    assert as_png.headers["content-type"] == "image/png"


async def test_compressed_multiframe_frames_render(served: ArchiveUnderTest):
    jpeg = make_sample("jpeg")
    await _store(served, jpeg)
    one = await served.client.get(_url(jpeg) + "/frames/5/rendered", headers={"Accept": "image/png"})
    assert one.status_code == 200
    rgb = _image(one.content)
    expected = jpeg.dataset.pixel_array[4]  # pydicom converts YBR to RGB by default
    assert rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected.astype(int)).mean() < 2
    several = await served.client.get(_url(jpeg) + "/frames/1,30/rendered", headers={"Accept": "image/png"})
    parts = split_multipart(several.content, several.headers["content-type"])
    assert [h["content-type"] for h, _ in parts] == ["image/png", "image/png"]


async def test_a_multiframe_instance_renders_every_frame(served: ArchiveUnderTest):
    dose = make_sample("multiframe")
    await _store(served, dose)
    response = await served.client.get(_url(dose) + "/rendered")
    assert response.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert len(split_multipart(response.content, response.headers["content-type"])) == 15


async def test_series_and_study_rendered_give_one_image_per_instance(served: ArchiveUnderTest):
    a = make_sample("ct", InstanceNumber=1)
    b = make_sample("ct", study=a.study, series=a.series, InstanceNumber=2)
    await _store(served, a, b)
    for url in (
        f"/dicom-web/studies/{a.study}/rendered",
        f"/dicom-web/studies/{a.study}/series/{a.series}/rendered",
    ):
        response = await served.client.get(url)
        assert response.status_code == 200, url
        assert len(split_multipart(response.content, response.headers["content-type"])) == 2


async def test_thumbnails_are_small_and_cached(served: ArchiveUnderTest):
    dose = make_sample("multiframe")
    await _store(served, dose)
    urls = [
        f"/dicom-web/studies/{dose.study}/thumbnail",
        f"/dicom-web/studies/{dose.study}/series/{dose.series}/thumbnail",
        _url(dose) + "/thumbnail",
        _url(dose) + "/frames/3/thumbnail",
    ]
    for url in urls:
        response = await served.client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == "image/jpeg"
        assert max(_image(response.content).shape[:2]) <= 128
    await served.followed_up()  # thumbnails are saved after the response
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        keys = [r["object_key"] for r in await conn.fetch("SELECT object_key FROM derived_objects")]
        assert len(keys) == 2  # the middle frame (shared by three levels) and frame 3
        again = await served.client.get(urls[0])
        assert again.content == (await served.client.get(urls[2])).content
        await served.followed_up()
        assert await conn.fetchval("SELECT count(*) FROM derived_objects") == 2
        # Deleting the instance removes its cached thumbnails too.
        assert (await served.client.delete(_url(dose))).status_code == 204
        for key in keys:
            assert not await served.archive.store.exists(key)
    finally:
        await conn.close()


async def test_errors(served: ArchiveUnderTest):
    ct = make_sample("ct")
    await _store(served, ct)
    assert (
        await served.client.get(_url(ct) + "/rendered", headers={"Accept": "text/html"})
    ).status_code == 406
    bad = await served.client.get(_url(ct) + "/rendered", params={"window": "40"})
    assert bad.status_code == 400 and "window" in bad.json()["message"]
    assert (await served.client.get(_url(ct) + "/rendered", params={"quality": "500"})).status_code == 400
    assert (await served.client.get(_url(ct) + "/frames/2/rendered")).status_code == 404
    assert (
        await served.client.get(f"/dicom-web/studies/{ct.study}/series/1.2.3/thumbnail")
    ).status_code == 404
    async with served.as_user(OTHER_HOSPITAL) as other:
        assert (await other.get(_url(ct) + "/rendered")).status_code == 404
        assert (await other.get(f"/dicom-web/studies/{ct.study}/thumbnail")).status_code == 404


def _restored(sample: Sample, **attributes: object) -> Sample:
    """Another instance under ``sample``'s UIDs, with ``attributes`` changed."""
    ds = sample.dataset
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Sample(buffer.getvalue(), sample.study, sample.series, sample.instance, sample.sop_class)


async def test_a_deleted_instance_is_refused_whatever_was_cached(served: ArchiveUnderTest):
    ct, j2k = make_sample("ct"), make_sample("jpeg2000")
    await _store(served, ct, j2k)
    native = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    reads = [
        (_url(ct) + "/rendered", "image/png"),
        (_url(ct) + "/thumbnail", "image/jpeg"),
        (f"/dicom-web/studies/{ct.study}/series/{ct.series}/rendered", 'multipart/related; type="image/png"'),
        (_url(j2k) + "/frames/1", native),
        (_url(j2k), 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'),
    ]
    first = {}
    for url, accept in reads:
        response = await served.client.get(url, headers={"Accept": accept})
        assert response.status_code == 200, url
        first[url] = response.content
    assert len(served.archive.pixel_sources) == 2  # one per stored object
    for sample in (ct, j2k):
        assert (await served.client.delete(_url(sample))).status_code == 204
    for url, accept in reads:
        assert (await served.client.get(url, headers={"Accept": accept})).status_code == 404, url
    # Stored again under the same UIDs, with another window: rendered from the new
    # instance's metadata, not from what was kept of the deleted one.
    windowed = _restored(ct, WindowCenter=100000, WindowWidth=10)
    await _store(served, windowed)
    again = await served.client.get(_url(ct) + "/rendered", headers={"Accept": "image/png"})
    assert again.status_code == 200
    assert again.content != first[_url(ct) + "/rendered"]
    assert _image(again.content).max() == 0  # everything below the window's centre
    assert len(served.archive.pixel_sources) == 3
