"""``filmless serve`` with several worker processes: every start-up step runs in each of
them at once (migrations, the LOCAL hospital, keys, the sweep), and any of them answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.fixtures import LiveServer
from tests.samples import make_sample, multipart_body

WORKERS = 2


@pytest.fixture
def live_server_env() -> dict[str, str]:
    # The sweep on, every second: each worker runs it, side by side.
    return {"FILMLESS_WORKERS": str(WORKERS), "FILMLESS_SWEEP_INTERVAL": "1"}


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _started(log: Path) -> int:
    return log.read_text(errors="replace").count("Application startup complete")


def test_workers_store_and_retrieve(live_server: LiveServer, clean_db: str):
    assert live_server.log is not None
    deadline = time.monotonic() + 30
    while _started(live_server.log) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _started(live_server.log) == WORKERS, live_server.log.read_text(errors="replace")
    assert len(_children(live_server.pid)) >= WORKERS

    samples = [make_sample("ct", PatientID="WORKERS-1") for _ in range(6)]
    # A new connection per request: the kernel hands each to whichever worker accepts it.
    for sample in samples:
        body, content_type = multipart_body([sample.data])
        response = httpx.post(
            live_server.dicomweb + "/studies",
            content=body,
            headers={**live_server.headers, "Content-Type": content_type},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    for sample in samples:
        path = f"/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
        response = httpx.get(
            live_server.dicomweb + path,
            headers={**live_server.headers, "Accept": 'multipart/related; type="application/dicom"'},
            timeout=30,
        )
        assert response.status_code == 200
        assert sample.data[-4096:] in response.content
    found = httpx.get(
        live_server.dicomweb + "/studies", params={"PatientID": "WORKERS-1"}, headers=live_server.headers
    )
    assert len(found.json()) == len(samples)

    # Both workers created the LOCAL hospital if missing: it exists once, and alone.
    codes = asyncio.run(_hospital_codes(clean_db))
    assert codes == ["LOCAL"]
    assert "sweep failed" not in live_server.log.read_text(errors="replace")

    # Whichever worker answers a scrape, it counts every worker's requests.
    stored = 'filmless_instances_stored_total{protocol="STOW-RS"}'
    for _ in range(4):
        text = httpx.get(live_server.url + "/metrics", timeout=30).text
        assert sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(stored)) == 6


async def _hospital_codes(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [row["code"] for row in await conn.fetch("SELECT code FROM hospitals ORDER BY code")]
    finally:
        await conn.close()
