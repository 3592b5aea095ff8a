"""Read events written behind the request (app.services.audit_writer): every one lands,
in batches, a full queue makes requests wait, and a shutdown writes what is queued. The
writer is held up for real: another session locks the audit table, so its INSERT waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.servers import settings_for
from tests.api.test_round_trips import counted
from tests.fixtures import ArchiveUnderTest, LiveServer, _open
from tests.samples import Sample, make_sample, multipart_body

FILESYSTEM = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


async def _stored(client: httpx.AsyncClient) -> Sample:
    sample = make_sample("ct", PatientID="BEHIND-" + secrets.token_hex(3))
    body, ctype = multipart_body([sample.data])
    response = await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return sample


async def _rows(url: str, agent: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit_events WHERE user_agent = $1", agent))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _audit_locked(url: str) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """The audit table locked against inserts (reads still work) for the block; yields a
    check that some INSERT into it is waiting for the lock."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")

            async def waiting() -> bool:
                # Inside a transaction the activity view is a snapshot: taken anew each time.
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'INSERT INTO audit_events%'"
                    )
                )

            yield waiting
    finally:
        await conn.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.01)


def _query(sample: Sample) -> str:
    return f"/dicom-web/studies?StudyInstanceUID={sample.study}"


@FILESYSTEM
async def test_every_concurrent_read_lands_in_few_statements(served: ArchiveUnderTest):
    sample = await _stored(served.client)
    agent = "behind-" + secrets.token_hex(4)
    url = served.settings.database_url.get_secret_value()
    n = 40
    async with counted(served) as seen:
        async with _audit_locked(url) as waiting:
            first = await served.client.get(_query(sample), headers={"User-Agent": agent})
            assert first.status_code == 200
            await _until(waiting, "the writer waits for the lock")
            # Answered while the trail cannot be written: the events wait in the queue.
            answers = await asyncio.gather(
                *(served.client.get(_query(sample), headers={"User-Agent": agent}) for _ in range(n - 1))
            )
            assert [a.status_code for a in answers] == [200] * (n - 1)
            assert await _rows(url, agent) == 0
        await served.audit_written()
    assert await _rows(url, agent) == n
    inserts = [q for q in seen if q.startswith("INSERT INTO audit_events")]
    # The one held up, then everything queued behind it at once.
    assert len(inserts) == 2, inserts


@FILESYSTEM
@pytest.mark.parametrize("served", [{"audit_queue": 2}], indirect=True)
async def test_a_full_queue_makes_requests_wait_and_drops_nothing(served: ArchiveUnderTest):
    sample = await _stored(served.client)
    agent = "full-" + secrets.token_hex(4)
    url = served.settings.database_url.get_secret_value()

    async def read() -> httpx.Response:
        return await served.client.get(_query(sample), headers={"User-Agent": agent})

    async with _audit_locked(url) as waiting:
        assert (await read()).status_code == 200
        await _until(waiting, "the writer waits for the lock")
        # Two events fit in the queue; the other requests wait for room, unanswered.
        reads = [asyncio.create_task(read()) for _ in range(5)]

        async def two_done() -> bool:
            return sum(t.done() for t in reads) >= 2

        await _until(two_done, "two requests answered")
        assert await waiting()  # still held up: nothing can have made room
        assert sum(t.done() for t in reads) == 2
    answers = await asyncio.gather(*reads)
    assert [a.status_code for a in answers] == [200] * 5
    await served.audit_written()
    assert await _rows(url, agent) == 6


async def test_a_shutdown_writes_what_is_queued(clean_db: str, tmp_path: Path, signing_key: Path):
    settings = settings_for(
        clean_db, None, None, tmp_path / "data", sweep_interval=0, auth_local_key_file=signing_key
    )
    agent = "shutdown-" + secrets.token_hex(4)
    opened = _open(settings)
    under_test = await anext(opened)
    sample = await _stored(under_test.client)
    async with _audit_locked(clean_db) as waiting:
        for _ in range(5):
            response = await under_test.client.get(_query(sample), headers={"User-Agent": agent})
            assert response.status_code == 200
        await _until(waiting, "the writer waits for the lock")
        closing = asyncio.create_task(opened.aclose())

        async def writing_the_rest() -> bool:
            return under_test.archive.audit.closing

        await _until(writing_the_rest, "the shutdown reaches the trail")
        assert not closing.done()
        assert await _rows(clean_db, agent) == 0
    await asyncio.wait_for(closing, 30)
    assert await _rows(clean_db, agent) == 5


@pytest.fixture
def live_server_env() -> dict[str, str]:
    return {"FILMLESS_WORKERS": "2"}


def test_workers_write_what_is_queued_on_sigterm(live_server: LiveServer, clean_db: str):
    """SIGTERM to the server: each worker's lifespan exit writes its queued events."""
    agent = "sigterm-" + secrets.token_hex(4)

    async def scenario() -> None:
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=live_server.headers, timeout=10
        ) as client:
            sample = await _stored(client)
            async with _audit_locked(clean_db) as waiting:
                for _ in range(8):
                    response = await client.get(_query(sample), headers={"User-Agent": agent})
                    assert response.status_code == 200
                await _until(waiting, "a writer waits for the lock")
                os.kill(live_server.pid, signal.SIGTERM)

                async def shutting_down() -> bool:
                    assert live_server.log is not None
                    return (
                        live_server.log.read_text(errors="replace").count("Waiting for application shutdown")
                        >= 2
                    )

                await _until(shutting_down, "the workers are shutting down", 30)
                assert await _rows(clean_db, agent) == 0
            await _until(lambda: _landed(clean_db, agent, 8), "every event written", 30)

    asyncio.run(scenario())


async def _landed(url: str, agent: str, n: int) -> bool:
    return await _rows(url, agent) == n
