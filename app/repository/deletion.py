"""Deleting studies, series and instances from the index.

Rows go in one transaction, taking row locks in the archive's order (patient → study →
series → instance, as in :mod:`app.repository.instances`); the object keys are queued in
``object_garbage`` in the same transaction and removed by the caller after the commit.
"""

from __future__ import annotations

import asyncpg

from app.repository import audit
from app.repository.audit import AuditEvent
from app.repository.database import Pool, transaction
from app.security.scope import Scope

# Deletion never crosses hospitals, regional rights or not: $2 is the caller's hospital.
SELECT_STUDY = "SELECT pk, patient_pk FROM studies WHERE study_instance_uid = $1 AND hospital_pk = $2"
SELECT_PATIENT_ID = "SELECT patient_id FROM patients WHERE pk = $1"
LOCK_PATIENT = "SELECT pk FROM patients WHERE pk = $1 FOR UPDATE"
LOCK_STUDY = "SELECT pk FROM studies WHERE pk = $1 FOR UPDATE"
# Cached derivatives (thumbnails) of the instances in scope: their objects go as well.
DELETE_DERIVED = """
DELETE FROM derived_objects d USING instances i, series se
WHERE d.instance_pk = i.pk AND i.series_pk = se.pk AND se.study_pk = $1
  AND ($2::text IS NULL OR se.series_instance_uid = $2)
  AND ($3::text IS NULL OR i.sop_instance_uid = $3)
RETURNING d.object_key"""
# Pending rows in scope go too: their writers find their row gone and remove their object.
DELETE_INSTANCES = """
DELETE FROM instances i USING series se
WHERE i.series_pk = se.pk AND se.study_pk = $1
  AND ($2::text IS NULL OR se.series_instance_uid = $2)
  AND ($3::text IS NULL OR i.sop_instance_uid = $3)
RETURNING i.object_key, i.status, i.sop_instance_uid, se.pk AS series_pk"""
RECOUNT_SERIES = """
UPDATE series se SET num_instances =
    (SELECT count(*) FROM instances i WHERE i.series_pk = se.pk AND i.status = 1)
WHERE se.pk = ANY($1::bigint[])"""
DELETE_EMPTY_SERIES = """
DELETE FROM series se WHERE se.pk = ANY($1::bigint[])
  AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = se.pk)"""
RECOUNT_STUDY = """
UPDATE studies st SET
    num_instances = coalesce((SELECT sum(se.num_instances) FROM series se WHERE se.study_pk = st.pk), 0),
    num_series = (SELECT count(*) FROM series se WHERE se.study_pk = st.pk AND se.num_instances > 0),
    modalities = coalesce((
        SELECT array_agg(DISTINCT se.modality) FROM series se
        WHERE se.study_pk = st.pk AND se.num_instances > 0 AND se.modality IS NOT NULL), '{}')
WHERE st.pk = $1"""
DELETE_EMPTY_STUDY = """
DELETE FROM studies st WHERE st.pk = $1 AND NOT EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.pk)"""
DELETE_EMPTY_PATIENT = """
DELETE FROM patients p WHERE p.pk = $1 AND NOT EXISTS (SELECT 1 FROM studies st WHERE st.patient_pk = p.pk)"""
QUEUE_GARBAGE = "INSERT INTO object_garbage (object_key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
FORGET_GARBAGE = "DELETE FROM object_garbage WHERE object_key = ANY($1::text[])"
SELECT_OLD_GARBAGE = """
SELECT object_key FROM object_garbage WHERE created_at < now() - make_interval(secs => $1)
ORDER BY created_at LIMIT $2"""


class _NothingStored(Exception):
    """Raised to roll back: nothing visible in scope (pending writes are not ours to end)."""


async def delete(
    pool: Pool, scope: Scope, study: str, series: str | None, instance: str | None, event: AuditEvent
) -> tuple[int, list[str]] | None:
    """Remove what is in scope and record ``event`` in the same transaction; return how
    many stored instances went and the object keys to remove, or None when nothing
    stored is in scope."""
    hospital, studies = scope.filters(cross_hospital=False)
    if studies is not None:
        return None  # a share never deletes
    try:
        async with transaction(pool) as conn:
            removed = await _delete(conn, hospital, study, series, instance, event)
            await audit.insert(conn, event)
            return removed
    except _NothingStored:
        return None


async def _delete(
    conn: asyncpg.Connection,
    hospital: int | None,
    study: str,
    series: str | None,
    instance: str | None,
    event: AuditEvent,
) -> tuple[int, list[str]]:
    found = await conn.fetchrow(SELECT_STUDY, study, hospital)
    if found is None:
        raise _NothingStored
    await conn.execute(LOCK_PATIENT, found["patient_pk"])
    await conn.execute(LOCK_STUDY, found["pk"])
    derived = [r["object_key"] for r in await conn.fetch(DELETE_DERIVED, found["pk"], series, instance)]
    rows = await conn.fetch(DELETE_INSTANCES, found["pk"], series, instance)
    stored = [r for r in rows if r["status"] == 1]
    if not stored:
        raise _NothingStored
    event.patient_ids = [await conn.fetchval(SELECT_PATIENT_ID, found["patient_pk"])]
    event.instance_uids = [r["sop_instance_uid"] for r in stored]
    event.instances = len(stored)
    series_pks = list({r["series_pk"] for r in rows})
    await conn.execute(RECOUNT_SERIES, series_pks)
    await conn.execute(DELETE_EMPTY_SERIES, series_pks)
    await conn.execute(RECOUNT_STUDY, found["pk"])
    await conn.execute(DELETE_EMPTY_STUDY, found["pk"])
    await conn.execute(DELETE_EMPTY_PATIENT, found["patient_pk"])
    keys = [r["object_key"] for r in rows] + derived
    await conn.execute(QUEUE_GARBAGE, keys)
    return len(stored), keys


async def forget_garbage(pool: Pool, keys: list[str]) -> None:
    async with transaction(pool) as conn:
        await conn.execute(FORGET_GARBAGE, keys)


async def old_garbage(pool: Pool, older_than: int, limit: int = 1000) -> list[str]:
    async with transaction(pool) as conn:
        return [r["object_key"] for r in await conn.fetch(SELECT_OLD_GARBAGE, older_than, limit)]
