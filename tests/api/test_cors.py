"""CORS for viewers on another origin: preflight for the headers DICOMweb clients send,
and the response headers they read exposed; other origins get nothing."""

from __future__ import annotations

import pytest

from tests.fixtures import ArchiveUnderTest
from tests.samples import make_sample, multipart_body

VIEWER = "http://viewer.example.test"

pytestmark = [
    pytest.mark.parametrize("backend", ["filesystem"], indirect=True),
    pytest.mark.parametrize("served", [{"cors_origins": [VIEWER]}], indirect=True),
]


async def test_preflight_allows_what_viewers_send(served: ArchiveUnderTest):
    response = await served.client.options(
        "/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1",
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "accept" in allowed and "authorization" in allowed


async def test_responses_expose_what_viewers_read(served: ArchiveUnderTest):
    sample = make_sample("ct")
    body, ctype = multipart_body([sample.data])
    await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    response = await served.client.get(
        f"/dicom-web/studies/{sample.study}/metadata", headers={"Origin": VIEWER}
    )
    assert response.headers["access-control-allow-origin"] == VIEWER
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"content-type", "content-length", "etag", "warning"} <= exposed
    instance = f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    frames = await served.client.get(instance + "/frames/1", headers={"Origin": VIEWER})
    assert frames.headers["cache-control"] == "private, max-age=31536000, immutable"


async def test_other_origins_are_not_allowed(served: ArchiveUnderTest):
    response = await served.client.get("/dicom-web/studies", headers={"Origin": "http://evil.example.test"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await served.client.options(
        "/dicom-web/studies",
        headers={"Origin": "http://evil.example.test", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 400


async def test_an_unexpected_error_is_a_500_a_browser_can_read(served: ArchiveUnderTest):
    async def broken() -> None:
        raise RuntimeError("a bug")

    served.app.add_api_route("/broken-for-test", broken)
    response = await served.client.get("/broken-for-test", headers={"Origin": VIEWER})
    assert response.status_code == 500
    assert response.json() == {"status": 500, "message": "internal error"}
    assert response.headers["access-control-allow-origin"] == VIEWER
