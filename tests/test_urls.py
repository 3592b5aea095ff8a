"""URLs the archive hands out (RetrieveURL, BulkDataURI) lead back to it with the default
settings, whatever ``Host`` the client sent."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures import LiveServer
from tests.samples import make_sample, multipart_body


@pytest.fixture
def live_server_env() -> dict[str, str]:
    return {"FILMLESS_BASE_URL": ""}  # the default: taken from each request


def test_a_host_header_without_the_port(live_server: LiveServer):
    sample = make_sample("ct")
    body, ctype = multipart_body([sample.data])
    port = live_server.url.rsplit(":", 1)[1]
    headers = {**live_server.headers, "Host": "127.0.0.1"}
    upload = {**headers, "Content-Type": ctype}
    stored = httpx.post(live_server.dicomweb + "/studies", content=body, headers=upload, timeout=30)
    assert stored.status_code == 200, stored.text
    assert (
        stored.json()["00081190"]["Value"][0] == f"http://127.0.0.1:{port}/dicom-web/studies/{sample.study}"
    )
    url = f"{live_server.dicomweb}/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    metadata = httpx.get(url + "/metadata", headers=headers, timeout=30).json()[0]
    bulk = metadata["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(f"http://127.0.0.1:{port}/")
    # The URL works as handed out.
    fetched = httpx.get(bulk, headers=live_server.headers, timeout=30)
    assert fetched.status_code == 200 and len(fetched.content) > 1000
