"""Nothing lost, nothing half-written: a store that fails mid-write, a crashed writer
swept up, and readiness that tells the truth."""

from __future__ import annotations

import asyncio
import json
import shutil

import asyncpg
import pytest
from pydantic import ValidationError

from app.dicom.header import ParsedInstance, to_dicom_json
from app.dicom.indexing import index_record
from app.repository import hospitals, instances
from app.repository.instances import ObjectFacts, Outcome, Write
from app.services.sweep import SWEEP_LOCK_ID, sweep_once
from app.settings import Settings
from app.storage.base import new_key
from harness.servers import S3Server, s3_client_for
from tests.fixtures import HOSPITAL, ArchiveUnderTest
from tests.samples import make_sample, multipart_body, read_header


async def _rows(served: ArchiveUnderTest, sql: str) -> int:
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _break_the_store(served: ArchiveUnderTest, s3: S3Server | None) -> None:
    if s3 is not None:
        async with s3_client_for(s3) as client:
            await client.delete_bucket(Bucket=served.settings.s3_bucket)
    else:
        root = served.settings.data_dir / "objects"
        shutil.rmtree(root)
        root.write_text("not a directory any more")


async def test_store_failure_is_503_and_leaves_nothing(served: ArchiveUnderTest, object_store):
    await _break_the_store(served, object_store[0])
    body, ctype = multipart_body([make_sample("ct").data])
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 503
    assert await _rows(served, "SELECT count(*) FROM instances") == 0
    ready = await served.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["database"] == "ok" and ready.json()["object_store"] != "ok"
    assert (await served.client.get("/healthz")).status_code == 200


async def test_readyz_when_all_is_well(served: ArchiveUnderTest):
    response = await served.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "object_store": "ok", "spool": "ok"}


async def test_readyz_reports_an_unapplied_or_edited_migration(served: ArchiveUnderTest):
    """A node on a schema its code does not expect answers wrongly: not ready, and why."""
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        last = await conn.fetchrow("SELECT * FROM schema_migrations ORDER BY version DESC LIMIT 1")
        await conn.execute(
            "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = $1", last["version"]
        )
        try:
            response = await served.client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["database"] == f"migration {last['name']} was edited after it was applied"
            await conn.execute("DELETE FROM schema_migrations WHERE version = $1", last["version"])
            response = await served.client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["database"] == f"migration {last['name']} is not applied"
        finally:
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, sha256, applied_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (version) DO UPDATE SET sha256 = EXCLUDED.sha256",
                last["version"], last["name"], last["sha256"], last["applied_at"],
            )  # fmt: skip
    finally:
        await conn.close()
    assert (await served.client.get("/readyz")).status_code == 200


async def test_readyz_reports_an_unwritable_spool(served: ArchiveUnderTest):
    # As root, permissions do not stop a write: replace the directory by a file instead.
    spool = served.settings.spool_path
    shutil.rmtree(spool)
    spool.write_text("not a directory any more")
    response = await served.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["spool"].startswith("the spool directory is not writable")
    assert body["database"] == "ok" and body["object_store"] == "ok"
    spool.unlink()
    spool.mkdir()
    assert (await served.client.get("/readyz")).status_code == 200


def _facts(parsed: ParsedInstance, key: str, size: int, sha256: bytes) -> ObjectFacts:
    """What a writer records in its pending row (no pixel layout: not needed here)."""
    return ObjectFacts(
        object_key=key, size=size, sha256=sha256, transfer_syntax_uid=parsed.transfer_syntax_uid,
        pixel_offset=None, pixel_length=None, pixel_encapsulated=None, fragment_offsets=None,
        fragment_lengths=None, basic_offset_table=None, frame_starts=None, bulk="{}",
        metadata=json.dumps(to_dicom_json(parsed)),
    )  # fmt: skip


async def test_sweep_removes_a_crashed_write(served: ArchiveUnderTest, tmp_path):
    """A writer that died between storing its object and marking the row leaves a pending
    row and an object; the sweep removes both, and the empty parents, once stale."""
    archive = served.archive
    sample = make_sample("ct")
    path = tmp_path / "instance.dcm"
    path.write_bytes(sample.data)
    parsed = read_header(path)
    key = new_key()
    facts = _facts(parsed, key, len(sample.data), b"x" * 32)
    hospital = await hospitals.by_code(archive.pool, HOSPITAL)
    assert hospital is not None
    [pending] = await instances.begin(
        archive.pool, [Write(index_record(parsed.dataset), facts)], 3600, hospital.pk
    )
    assert pending.outcome is Outcome.NEW
    await archive.store.put_file(key, path)

    # Invisible while pending, and not swept while young.
    assert (await served.client.get("/dicom-web/studies")).json() == []
    assert await sweep_once(archive) == 0
    assert await archive.store.exists(key)

    await _rows(served, "UPDATE instances SET updated_at = now() - interval '2 hours' RETURNING 1")
    for table in ("series", "studies", "patients"):
        await _rows(served, f"UPDATE {table} SET updated_at = now() - interval '2 hours' RETURNING 1")
    # Another process (a second worker) sweeping: this one leaves the work to it.
    other = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", SWEEP_LOCK_ID)
        assert await sweep_once(archive) == 0
        assert await archive.store.exists(key)
    finally:
        await other.close()
    assert await sweep_once(archive) == 1
    assert not await archive.store.exists(key)
    for table in ("instances", "series", "studies", "patients"):
        assert await _rows(served, f"SELECT count(*) FROM {table}") == 0

    # The same instance can then be stored normally.
    body, ctype = multipart_body([sample.data])
    assert (
        await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    ).status_code == 200


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_a_stale_pending_row_is_taken_over(served: ArchiveUnderTest, tmp_path):
    archive = served.archive
    hospital = await hospitals.by_code(archive.pool, HOSPITAL)
    assert hospital is not None
    sample = make_sample("ct")
    path = tmp_path / "instance.dcm"
    path.write_bytes(sample.data)
    parsed = read_header(path)
    facts = _facts(parsed, new_key(), 1, b"y" * 32)
    assert (
        await instances.begin(archive.pool, [Write(index_record(parsed.dataset), facts)], 3600, hospital.pk)
    )[0].outcome is Outcome.NEW
    body, ctype = multipart_body([sample.data])
    busy = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert busy.status_code == 409  # another writer holds it (and is not stale yet)
    await _rows(served, "UPDATE instances SET updated_at = now() - interval '2 hours' RETURNING 1")
    taken = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert taken.status_code == 200
    retrieved = await served.client.get(
        f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    )
    assert sample.data in retrieved.content


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_concurrent_stores_into_one_study(served: ArchiveUnderTest):
    """Many requests writing into the same study at once: no deadlock, exact counts."""
    first = make_sample("ct")
    samples = [
        make_sample("ct", study=first.study, series=first.series if i % 2 else None) for i in range(16)
    ]

    async def post(chunk):
        body, ctype = multipart_body(s.data for s in chunk)
        return await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})

    responses = await asyncio.gather(*(post(samples[i : i + 2]) for i in range(0, 16, 2)))
    assert [r.status_code for r in responses] == [200] * 8
    (study,) = (await served.client.get("/dicom-web/studies")).json()
    assert study["00201208"]["Value"] == [16]
    series = (await served.client.get(f"/dicom-web/studies/{first.study}/series")).json()
    assert study["00201206"]["Value"] == [len(series)] == [9]


async def test_local_hospital_is_created_once_by_concurrent_starts(clean_db: str):
    """Worker processes starting together each add the LOCAL hospital when there is none:
    one does, the others find it; none is added once another hospital exists."""
    pool = await asyncpg.create_pool(clean_db, min_size=4, max_size=4)
    try:
        added = await asyncio.gather(*(hospitals.add_first(pool, "LOCAL", "Local") for _ in range(4)))
        assert sum(hospital is not None for hospital in added) == 1
        assert [h.code for h in await hospitals.every(pool)] == ["LOCAL"]
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM hospitals")
        await hospitals.add(pool, "OTHER", "Other")
        assert await hospitals.add_first(pool, "LOCAL", "Local") is None
        assert [h.code for h in await hospitals.every(pool)] == ["OTHER"]
    finally:
        await pool.close()


def test_a_pool_of_one_connection_is_refused():
    """The sweep holds its lock's connection while it works with another: with one
    connection it would wait for itself forever."""
    with pytest.raises(ValidationError):
        Settings(database_pool_max=1)
