"""WADO-URI (PS3.18 §9)."""

from __future__ import annotations

import pytest

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
    for extra in ({}, {"contentType": "application/dicom"}, {"transferSyntax": "1.2.840.10008.1.2.4.50"}):
        response = await served.client.get("/wado", params=_params(sample, **extra))
        assert response.status_code == 200, extra
        assert response.content == sample.data
        assert response.headers["content-type"].startswith("application/dicom")


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"requestType": None}, 400),
        ({"requestType": "WADO-RS"}, 400),
        ({"studyUID": None}, 400),
        ({"seriesUID": "x.y"}, 400),
        ({"objectUID": None}, 400),
        ({"objectUID": "1.2.3"}, 404),
        ({"transferSyntax": "1.2.840.10008.1.2.1"}, 406),
        ({"contentType": "text/html"}, 406),
    ],
)
async def test_errors(served: ArchiveUnderTest, change, status):
    sample = await _stored(served, "jpeg")
    params = {k: v for k, v in {**_params(sample), **change}.items() if v is not None}
    response = await served.client.get("/wado", params=params)
    assert response.status_code == status
    assert response.json()["message"]
