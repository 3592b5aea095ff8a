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
    """The statements of one request, after a first one that filled the caches; its audit
    event is written alone (no other request to batch it with)."""
    response = await served.client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    await served.audit_written()
    async with counted(served) as seen:
        response = await served.client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        await served.audit_written()
    return seen


def _kinds(seen: list[str]) -> list[str]:
    return [
        "audit" if q.startswith("INSERT INTO audit_events") else "share" if "FROM shares s" in q else
        "hospital" if "FROM hospitals" in q else "use" if "UPDATE shares SET uses" in q else "data"
        for q in seen
    ]  # fmt: skip


async def test_a_read_looks_up_no_caller_and_writes_its_event_behind(served: ArchiveUnderTest):
    """No lookup of the caller (bearer token or share secret) once it has been seen, and one
    audit INSERT (which concurrent requests share: see test_audit_behind)."""
    sample = await _stored(served)
    share = await _share_token(served, sample.study)
    for name, (path, headers) in _reads(sample).items():
        bearer = _kinds(await _count(served, path, headers))
        gateway = _kinds(await _count(served, f"/share/{share}{path}", headers | {"Authorization": ""}))
        as_bearer = _kinds(await _count(served, path, headers | {"Authorization": f"Bearer {share}"}))
        print(f"{name}: bearer {bearer}, share root {gateway}, share token as bearer {as_bearer}")
        for kinds in (bearer, gateway, as_bearer):
            assert "share" not in kinds and "hospital" not in kinds, (name, kinds)
            assert kinds.count("audit") == 1, (name, kinds)
        # A share's whole instances are one of its uses, counted in the database.
        assert gateway.count("use") == as_bearer.count("use") == (1 if name == "instance" else 0)
