"""/metrics: what Prometheus scrapes, and who may."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures import ArchiveUnderTest
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


def _value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def test_requests_and_stored_instances_are_counted(served: ArchiveUnderTest):
    before = (await served.client.get("/metrics")).text
    body, ctype = multipart_body([make_sample("ct").data, b"not dicom"])
    stored = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert stored.status_code == 202
    scraped = await served.client.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    after = scraped.text
    stored_line = 'filmless_instances_stored_total{protocol="STOW-RS"}'
    assert _value(after, stored_line) == _value(before, stored_line) + 1
    refused_line = 'filmless_instances_refused_total{reason="C000"}'
    assert _value(after, refused_line) == _value(before, refused_line) + 1
    route = 'filmless_http_requests_total{method="POST",route="/dicom-web/studies",status="202"}'
    assert _value(after, route) >= 1
    assert 'filmless_database_pool_connections{state="idle"}' in after
    # Labels name route templates, never a UID.
    assert make_sample("ct").study.split(".")[-1] not in after


async def test_only_local_clients_or_the_token_may_scrape(served: ArchiveUnderTest):
    proxied = await served.client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"})
    assert proxied.status_code == 404
    remote = httpx.ASGITransport(app=served.asgi, client=("198.51.100.7", 5000))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as client:
        assert (await client.get("/metrics")).status_code == 404


@pytest.mark.parametrize("served", [{"metrics_token": "scrape-secret-123"}], indirect=True)
async def test_a_configured_token_is_required(served: ArchiveUnderTest):
    assert (await served.client.get("/metrics")).status_code == 404  # the caller's JWT is not it
    wrong = await served.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 404
    right = await served.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
    assert right.status_code == 200 and "filmless_http_requests_total" in right.text
