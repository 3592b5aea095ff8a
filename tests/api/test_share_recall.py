"""Share secrets remembered per process (Shares.recall), and forgotten where it matters:
revoked on this process or another one on the same database, used up, expired, or while
the invalidation listener is down."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from harness.servers import settings_for
from tests.api.test_round_trips import counted
from tests.fixtures import ArchiveUnderTest, _open
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)

#: How long a notice may take to reach the other process (milliseconds in practice; the
#: bound only keeps a failure from hanging the test).
PROPAGATION = 5.0


@pytest_asyncio.fixture(loop_scope="session")
async def other(served: ArchiveUnderTest, signing_key: Path) -> AsyncIterator[ArchiveUnderTest]:
    """A second archive process on the same database and files (as a second worker or
    node is), with its own pool, caches and invalidation listener."""
    s = served.settings
    settings = settings_for(
        s.database_url.get_secret_value(), None, None, s.data_dir, sweep_interval=0,
        auth_local_key_file=signing_key, share_key_file=s.share_key_path,
    )  # fmt: skip
    async for under_test in _open(settings):
        yield under_test


@pytest_asyncio.fixture(loop_scope="session")
async def sample(served: ArchiveUnderTest) -> Sample:
    sample = make_sample("ct", PatientID="RECALL-1")
    body, ctype = multipart_body([sample.data])
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return sample


async def _share(served: ArchiveUnderTest, sample: Sample, **extra: Any) -> dict[str, Any]:
    body = {
        "studies": [sample.study], "permissions": ["view", "download"],
        "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(), **extra,
    }  # fmt: skip
    response = await served.client.post("/api/shares", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _search(on: ArchiveUnderTest, token: str, sample: Sample) -> int:
    response = await on.client.get(
        f"/share/{token}/dicom-web/studies", params={"StudyInstanceUID": sample.study},
        headers={"Authorization": ""},
    )  # fmt: skip
    return response.status_code


async def _remembered(on: ArchiveUnderTest, token: str, sample: Sample) -> None:
    """The share answers on ``on`` without looking its secret up again."""
    assert await _search(on, token, sample) == 200
    async with counted(on) as seen:
        assert await _search(on, token, sample) == 200
    assert not [q for q in seen if "FROM shares s" in q], seen


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = PROPAGATION) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.01)


async def test_revoked_on_this_process_is_refused_at_once(served: ArchiveUnderTest, sample: Sample):
    share = await _share(served, sample)
    await _remembered(served, share["token"], sample)
    as_bearer = {"Authorization": f"Bearer {share['token']}"}
    assert (await served.client.get("/dicom-web/studies", headers=as_bearer)).status_code == 200
    assert (await served.client.post(f"/api/shares/{share['id']}/revoke")).status_code == 200
    # The very next request, with no wait for the notice.
    assert await _search(served, share["token"], sample) == 401
    assert (await served.client.get("/dicom-web/studies", headers=as_bearer)).status_code == 401


async def test_revoked_on_another_process_is_refused_there(
    served: ArchiveUnderTest, other: ArchiveUnderTest, sample: Sample
):
    parent = await _share(served, sample, permissions=["view", "download", "reshare"])
    await _remembered(other, parent["token"], sample)
    assert (await served.client.post(f"/api/shares/{parent['id']}/revoke")).status_code == 200

    async def refused() -> bool:
        return await _search(other, parent["token"], sample) == 401

    await _until(refused, "the other process refuses the revoked share")


async def test_used_up_is_refused_everywhere(
    served: ArchiveUnderTest, other: ArchiveUnderTest, sample: Sample
):
    share = await _share(served, sample, max_uses=1)
    token = share["token"]
    await _remembered(other, token, sample)
    # Searching takes no use; retrieving the instance takes the last one.
    path = (
        f"/share/{token}/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    )
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*', "Authorization": ""}
    assert (await served.client.get(path, headers=accept)).status_code == 200
    assert (await served.client.get(path, headers=accept)).status_code == 401

    async def refused() -> bool:
        return await _search(other, token, sample) == 401

    await _until(refused, "the other process refuses the used-up share")
    assert await _search(served, token, sample) == 401
    listed = (await served.client.get(f"/api/shares/{share['id']}")).json()
    assert listed["uses"] == 1


async def test_expiry_is_checked_on_every_use(served: ArchiveUnderTest, sample: Sample):
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    share = await _share(served, sample, expires_at=expires.isoformat())
    await _remembered(served, share["token"], sample)

    async def refused() -> bool:
        return await _search(served, share["token"], sample) == 401

    # Long before the remembered entry would be looked up again.
    await _until(refused, "the expired share is refused", seconds=10)
    assert dt.datetime.now(dt.UTC) >= expires


async def test_nothing_is_served_from_memory_while_notices_may_be_missed(
    served: ArchiveUnderTest, sample: Sample
):
    share = await _share(served, sample)
    await _remembered(served, share["token"], sample)
    invalidations = served.archive.invalidations
    # The listener's connection lost, as a network failure or a database restart loses it.
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'filmless-invalidations' AND datname = current_database()"
        )
    finally:
        await conn.close()
    assert ended >= 1

    async def looked_up_again() -> bool:
        async with counted(served) as seen:
            assert await _search(served, share["token"], sample) == 200
        return any("FROM shares s" in q for q in seen)

    await _until(looked_up_again, "the secret is looked up in the database")

    async def live_again() -> bool:
        return invalidations.live

    await _until(live_again, "the listener reconnects", seconds=15)
    await _remembered(served, share["token"], sample)
