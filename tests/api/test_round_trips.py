"""Database round trips of the common read paths, counted on the archive's own pool: what a
bearer token's and a share token's request costs, audit included."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)

_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@contextlib.asynccontextmanager
async def counted(served: ArchiveUnderTest) -> AsyncIterator[list[str]]:
    """The statements sent on any of the pool's connections while the block runs (one
    round trip each: the archive's statements are prepared once per connection and
    cached). Every connection the pool may open is opened first, so none is missed."""
    pool = served.archive.pool
    seen: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        seen.append(query.query)

    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(pool.acquire()) for _ in range(pool.get_max_size())]
        for conn in held:
            conn.add_query_logger(log)
    try:
        yield seen
    finally:
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(pool.acquire()) for _ in range(pool.get_max_size())]
            for conn in held:
                conn.remove_query_logger(log)


async def _stored(served: ArchiveUnderTest) -> Sample:
    sample = make_sample("ct", PatientID="TRIPS-1")
    body, ctype = multipart_body([sample.data])
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return sample


async def _share_token(served: ArchiveUnderTest, study: str) -> str:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    body = {"studies": [study], "expires_at": expires, "permissions": ["view", "download"]}
    response = await served.client.post("/api/shares", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def _reads(s: Sample) -> dict[str, tuple[str, dict[str, str]]]:
    instance = f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"
    return {
        "instance": (instance, {"Accept": _DICOM}),
        "frame": (instance + "/frames/1", {"Accept": _FRAME}),
        "metadata": (f"/dicom-web/studies/{s.study}/metadata", {"Accept": "application/dicom+json"}),
        "qido": (f"/dicom-web/studies?StudyInstanceUID={s.study}", {"Accept": "application/dicom+json"}),
    }


async def _count(served: ArchiveUnderTest, path: str, headers: dict[str, str]) -> list[str]:
    response = await served.client.get(path, headers=headers)  # warm: caches filled
    assert response.status_code == 200, response.text
    async with counted(served) as seen:
        response = await served.client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        await _flush(served)
    return seen


async def _flush(served: ArchiveUnderTest) -> None:
    flush = getattr(served.archive, "audit", None)
    if flush is not None:
        await flush.flush()


async def test_round_trips_per_read(served: ArchiveUnderTest, capsys: pytest.CaptureFixture[str]):
    sample = await _stored(served)
    share = await _share_token(served, sample.study)
    figures: dict[str, dict[str, int]] = {}
    for name, (path, headers) in _reads(sample).items():
        bearer = await _count(served, path, headers)
        via_gateway = await _count(served, f"/share/{share}{path}", headers | {"Authorization": ""})
        as_bearer = await _count(served, path, headers | {"Authorization": f"Bearer {share}"})
        figures[name] = {"bearer": len(bearer), "share": len(via_gateway), "share-bearer": len(as_bearer)}
        with capsys.disabled():
            print(f"\n{name}: {figures[name]}")
            for label, seen in (("bearer", bearer), ("share", via_gateway), ("share-bearer", as_bearer)):
                for q in seen:
                    print(f"  {label}: " + " ".join(q.split())[:110])
