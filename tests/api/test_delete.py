"""Deleting studies, series and instances: rows and objects go, counts follow, a repeat is
404, and a concurrent reader gets the whole instance or a 404 — never a torn one."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body, split_multipart


async def _store(served: ArchiveUnderTest, *samples: Sample) -> None:
    body, ctype = multipart_body(s.data for s in samples)
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text


async def _object_keys(served: ArchiveUnderTest) -> list[str]:
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        return [r["object_key"] for r in await conn.fetch("SELECT object_key FROM instances")]
    finally:
        await conn.close()


async def test_delete_instance_series_and_study(served: ArchiveUnderTest):
    a = make_sample("ct", PatientID="DEL")
    b = make_sample("ct", study=a.study, series=a.series, PatientID="DEL")
    c = make_sample("mr", study=a.study, PatientID="DEL", Modality="MR")
    await _store(served, a, b, c)
    keys = await _object_keys(served)
    store = served.archive.store

    instance_url = f"/dicom-web/studies/{a.study}/series/{a.series}/instances/{a.instance}"
    assert (await served.client.delete(instance_url)).status_code == 204
    assert (await served.client.get(instance_url)).status_code == 404
    assert (await served.client.delete(instance_url)).status_code == 404  # already gone
    (study,) = (await served.client.get("/dicom-web/studies", params={"PatientID": "DEL"})).json()
    assert study["00201208"]["Value"] == [2]
    assert sorted(study["00080061"]["Value"]) == ["CT", "MR"]

    assert (await served.client.delete(f"/dicom-web/studies/{a.study}/series/{c.series}")).status_code == 204
    (study,) = (await served.client.get("/dicom-web/studies", params={"PatientID": "DEL"})).json()
    assert study["00201206"]["Value"] == [1] and study["00080061"]["Value"] == ["CT"]

    assert (await served.client.delete(f"/dicom-web/studies/{a.study}")).status_code == 204
    assert (await served.client.get("/dicom-web/studies", params={"PatientID": "DEL"})).json() == []
    assert (await served.client.get(f"/dicom-web/studies/{a.study}/metadata")).status_code == 404
    assert (await served.client.delete(f"/dicom-web/studies/{a.study}")).status_code == 404
    for key in keys:
        assert not await store.exists(key)
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        for table in ("instances", "series", "studies", "patients", "object_garbage"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_delete_of_unknown_uids_is_404(served: ArchiveUnderTest):
    a = make_sample("ct")
    await _store(served, a)
    assert (await served.client.delete("/dicom-web/studies/1.2.3")).status_code == 404
    assert (await served.client.delete(f"/dicom-web/studies/{a.study}/series/1.2.3")).status_code == 404
    assert (await served.client.get(f"/dicom-web/studies/{a.study}/metadata")).status_code == 200


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_concurrent_readers_get_whole_instances_or_404(served: ArchiveUnderTest):
    samples = [make_sample("ct") for _ in range(6)]
    await _store(served, *samples)

    async def read(s: Sample) -> tuple[int, bytes]:
        url = f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"
        response = await served.client.get(url)
        if response.status_code != 200:
            return response.status_code, b""
        ((_, payload),) = split_multipart(response.content, response.headers["content-type"])
        return 200, payload

    async def delete(s: Sample) -> int:
        return (await served.client.delete(f"/dicom-web/studies/{s.study}")).status_code

    tasks = [read(s) for s in samples for _ in range(3)] + [delete(s) for s in samples]
    results = await asyncio.gather(*tasks)
    reads, deletes = results[: len(samples) * 3], results[len(samples) * 3 :]
    assert deletes == [204] * len(samples)
    for (status, payload), sample in zip(reads, [s for s in samples for _ in range(3)], strict=True):
        assert (status, payload) in ((200, sample.data), (404, b"")), status
    for sample in samples:
        assert (await read(sample))[0] == 404


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_sweep_retries_objects_it_could_not_remove(served: ArchiveUnderTest):
    from app.services.delete import collect_garbage

    a = make_sample("ct")
    await _store(served, a)
    (key,) = await _object_keys(served)
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        # As if the server died between the commit and removing the object.
        await conn.execute(
            "INSERT INTO object_garbage (object_key, created_at) VALUES ($1, now() - interval '1 hour')", key
        )
        await conn.execute("DELETE FROM instances")
        assert await served.archive.store.exists(key)
        assert await collect_garbage(served.archive) == 1
        assert not await served.archive.store.exists(key)
        assert await conn.fetchval("SELECT count(*) FROM object_garbage") == 0
    finally:
        await conn.close()
