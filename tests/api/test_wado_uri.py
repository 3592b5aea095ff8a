"""WADO-URI (PS3.18 §9)."""

from __future__ import annotations

import io

import pydicom
import pytest
from PIL import Image

from tests.fixtures import ArchiveUnderTest
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


async def _stored(served: ArchiveUnderTest, name: str = "ct"):
    sample = make_sample(name)
    body, ctype = multipart_body([sample.data])
    assert (
        await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    ).status_code == 200
    return sample


def _params(s, **extra):
    return {
        "requestType": "WADO",
        "studyUID": s.study,
        "seriesUID": s.series,
        "objectUID": s.instance,
        **extra,
    }


async def test_retrieve_as_application_dicom(served: ArchiveUnderTest):
    sample = await _stored(served, "jpeg")
    for extra in (
        {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.50"},
        {"contentType": "application/dicom", "transferSyntax": "*"},
        {"contentType": "image/avif, application/dicom", "transferSyntax": "*"},
    ):
        response = await served.client.get("/wado", params=_params(sample, **extra))
        assert response.status_code == 200, extra
        assert response.content == sample.data
        assert response.headers["content-type"].startswith("application/dicom")
    # Without transferSyntax: Explicit VR Little Endian (PS3.18 §9.1.2.2.4).
    for extra in ({"contentType": "application/dicom"}, {"contentType": "image/avif, application/dicom"}):
        response = await served.client.get("/wado", params=_params(sample, **extra))
        assert response.status_code == 200, extra
        assert response.headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        converted = pydicom.dcmread(io.BytesIO(response.content))
        assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert converted.SOPInstanceUID == sample.instance


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"requestType": None}, 400),
        ({"requestType": "WADO-RS"}, 400),
        ({"studyUID": None}, 400),
        ({"seriesUID": "x.y"}, 400),
        ({"objectUID": None}, 400),
        ({"objectUID": "1.2.3"}, 404),
        ({"transferSyntax": "1.2.840.10008.1.2.4.80", "contentType": "application/dicom"}, 406),
        ({"contentType": "text/html"}, 406),
    ],
)
async def test_errors(served: ArchiveUnderTest, change, status):
    sample = await _stored(served, "jpeg")
    params = {k: v for k, v in {**_params(sample), **change}.items() if v is not None}
    response = await served.client.get("/wado", params=params)
    assert response.status_code == status
    assert response.json()["message"]


async def test_images_by_default_with_window_size_and_frame(served: ArchiveUnderTest):
    ct = await _stored(served, "ct")
    response = await served.client.get("/wado", params=_params(ct))
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (128, 128)
    small = await served.client.get(
        "/wado", params=_params(ct, contentType="image/png", windowCenter="40", windowWidth="400", rows="64")
    )
    assert small.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(small.content)).size == (64, 64)
    dose = await _stored(served, "multiframe")
    assert (await served.client.get("/wado", params=_params(dose, frameNumber="15"))).status_code == 200
    assert (await served.client.get("/wado", params=_params(dose, frameNumber="16"))).status_code == 404
    bad = await served.client.get("/wado", params=_params(ct, windowCenter="40"))
    assert bad.status_code == 400 and "windowWidth" in bad.json()["message"]
