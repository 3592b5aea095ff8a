"""The write path of the index: two-phase instance writes and the sweep.

A write is (1) :func:`begin` — a *pending* instance row, with its patient, study and series
upserted; (2) the object stored under the row's key; (3) :func:`mark_stored`. A failure
between them is undone by :func:`abandon`, and a crash by :func:`sweep`.

Row locks are always taken in the order patient → study → series → instance, in every
transaction here, so concurrent writes to one study cannot deadlock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

import asyncpg

from app.dicom.indexing import IndexRecord
from app.repository import audit
from app.repository.audit import AuditEvent
from app.repository.database import Pool, connection, transaction
from app.repository.deletion import QUEUE_GARBAGE

UPSERT_PATIENT = """
INSERT INTO patients (hospital_pk, patient_id, issuer_of_patient_id, patient_name, patient_name_fold,
    patient_birth_date, patient_sex)
VALUES ($7, $1, $2, $3, $4, $5, $6)
ON CONFLICT (hospital_pk, patient_id, issuer_of_patient_id) DO UPDATE SET
    patient_name = COALESCE(patients.patient_name, EXCLUDED.patient_name),
    patient_name_fold = COALESCE(patients.patient_name_fold, EXCLUDED.patient_name_fold),
    patient_birth_date = COALESCE(patients.patient_birth_date, EXCLUDED.patient_birth_date),
    patient_sex = COALESCE(patients.patient_sex, EXCLUDED.patient_sex),
    updated_at = now()
RETURNING pk"""

# The first non-empty value of a study or series attribute wins: later instances complete
# the record but never rewrite it.
UPSERT_STUDY = """
INSERT INTO studies (patient_pk, study_instance_uid, study_date, study_time, study_time_key,
    accession_number, referring_physician_name, referring_physician_fold, study_description, study_id,
    timezone_offset, hospital_pk)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (study_instance_uid) DO UPDATE SET
    study_date = COALESCE(studies.study_date, EXCLUDED.study_date),
    study_time = COALESCE(studies.study_time, EXCLUDED.study_time),
    study_time_key = COALESCE(studies.study_time_key, EXCLUDED.study_time_key),
    accession_number = COALESCE(studies.accession_number, EXCLUDED.accession_number),
    referring_physician_name = COALESCE(studies.referring_physician_name, EXCLUDED.referring_physician_name),
    referring_physician_fold = COALESCE(studies.referring_physician_fold, EXCLUDED.referring_physician_fold),
    study_description = COALESCE(studies.study_description, EXCLUDED.study_description),
    study_id = COALESCE(studies.study_id, EXCLUDED.study_id),
    timezone_offset = COALESCE(studies.timezone_offset, EXCLUDED.timezone_offset),
    updated_at = now()
RETURNING pk, patient_pk"""

UPSERT_SERIES = """
INSERT INTO series (study_pk, series_instance_uid, modality, series_number, series_description,
    body_part_examined, pps_start_date, pps_start_time, pps_start_time_key, scheduled_step_ids,
    requested_procedure_ids, timezone_offset)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (series_instance_uid) DO UPDATE SET
    modality = COALESCE(series.modality, EXCLUDED.modality),
    series_number = COALESCE(series.series_number, EXCLUDED.series_number),
    series_description = COALESCE(series.series_description, EXCLUDED.series_description),
    body_part_examined = COALESCE(series.body_part_examined, EXCLUDED.body_part_examined),
    pps_start_date = COALESCE(series.pps_start_date, EXCLUDED.pps_start_date),
    pps_start_time = COALESCE(series.pps_start_time, EXCLUDED.pps_start_time),
    pps_start_time_key = COALESCE(series.pps_start_time_key, EXCLUDED.pps_start_time_key),
    timezone_offset = COALESCE(series.timezone_offset, EXCLUDED.timezone_offset),
    updated_at = now()
RETURNING pk, study_pk, modality"""

INSERT_INSTANCE = """
INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number,
    transfer_syntax_uid, rows, columns, bits_allocated, samples_per_pixel, number_of_frames, object_key,
    size, sha256, pixel_offset, pixel_length, pixel_encapsulated, fragment_offsets, fragment_lengths,
    basic_offset_table, frame_starts, bulk, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
ON CONFLICT (sop_instance_uid) DO NOTHING
RETURNING pk"""

SELECT_EXISTING = """
SELECT pk, status, sha256, object_key, series_pk,
       updated_at < now() - make_interval(secs => $2) AS stale
FROM instances WHERE sop_instance_uid = $1 FOR UPDATE"""

# Take over a pending row a crashed or stalled writer left behind.
TAKE_OVER = """
UPDATE instances SET series_pk = $2, object_key = $3, size = $4, sha256 = $5, updated_at = now()
WHERE pk = $1"""

# Whether a hospital holds a stored instance of this UID (an import that coerces skips it).
SELECT_HELD = """
SELECT 1 FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk
WHERE i.sop_instance_uid = $1 AND i.status = 1 AND st.hospital_pk = $2"""

LOCK_STUDY = "SELECT pk FROM studies WHERE pk = $1 FOR UPDATE"
COUNT_SERIES_INSTANCE = """
UPDATE series SET num_instances = num_instances + 1 WHERE pk = $1 RETURNING num_instances"""
MARK_STORED = """
UPDATE instances SET status = 1, updated_at = now()
WHERE pk = $1 AND object_key = $2 AND status = 0 RETURNING pk"""
COUNT_STUDY_INSTANCE = """
UPDATE studies SET
    num_instances = num_instances + 1,
    num_series = num_series + $2::int,
    modalities = CASE WHEN $3::text IS NULL OR $3::text = ANY(modalities) THEN modalities
                      ELSE array_append(modalities, $3::text) END
WHERE pk = $1"""

DELETE_PENDING = "DELETE FROM instances WHERE pk = $1 AND object_key = $2 AND status = 0"

SELECT_STALE = """
SELECT pk, object_key FROM instances
WHERE status = 0 AND updated_at < now() - make_interval(secs => $1)
ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED"""
DELETE_INSTANCES = "DELETE FROM instances WHERE pk = ANY($1::bigint[])"
# Parents emptied by a failed or crashed write. A concurrent writer's upsert refreshes
# updated_at under a row lock, so a parent about to receive an instance is never taken.
DELETE_EMPTY_SERIES = """
DELETE FROM series se WHERE se.num_instances = 0
  AND se.updated_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = se.pk)"""
DELETE_EMPTY_STUDIES = """
DELETE FROM studies st WHERE st.num_instances = 0
  AND st.updated_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.pk)"""
DELETE_EMPTY_PATIENTS = """
DELETE FROM patients p WHERE p.updated_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM studies st WHERE st.patient_pk = p.pk)"""


class Outcome(Enum):
    NEW = "new"  # a pending row was written: store the object, then mark_stored
    IDENTICAL = "identical"  # the same bytes are already stored: an idempotent success
    DIFFERENT = "different"  # another instance is stored under this SOP Instance UID
    IN_PROGRESS = "in-progress"  # another request is writing this SOP Instance UID now
    WRONG_STUDY = "wrong-study"  # the series belongs to another study
    WRONG_PATIENT = "wrong-patient"  # the study belongs to another patient


@dataclass(frozen=True)
class ObjectFacts:
    """What the archive knows about the stored object, beyond its index attributes."""

    object_key: str
    size: int
    sha256: bytes
    transfer_syntax_uid: str
    pixel_offset: int | None
    pixel_length: int | None
    pixel_encapsulated: bool | None
    fragment_offsets: list[int] | None
    fragment_lengths: list[int] | None
    basic_offset_table: list[int] | None
    frame_starts: list[int] | None
    bulk: dict[str, list[int | None]]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Pending:
    outcome: Outcome
    instance_pk: int = 0
    study_pk: int = 0
    series_pk: int = 0
    modality: str | None = None
    #: An object left by a writer whose pending row was taken over: delete it.
    orphan_key: str | None = None


class _Refused(Exception):
    """Raised inside a transaction to roll it back, parents' upserts included: a refused
    instance leaves no trace in the index."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


async def begin(
    pool: Pool, record: IndexRecord, facts: ObjectFacts, stale_after: int, hospital_pk: int
) -> Pending:
    """Phase one: upsert the parents, owned by ``hospital_pk``, and write a pending
    instance row. A study another hospital owns is refused like one of another patient:
    both are a different patient's record."""
    try:
        async with transaction(pool) as conn:
            return await _begin(conn, record, facts, stale_after, hospital_pk)
    except _Refused as refused:
        return Pending(refused.outcome)


async def _begin(
    conn: asyncpg.Connection, record: IndexRecord, facts: ObjectFacts, stale_after: int, hospital_pk: int
) -> Pending:
    p, st, se, inst = record.patient, record.study, record.series, record.instance
    patient_pk = await conn.fetchval(
        UPSERT_PATIENT,
        p.patient_id,
        p.issuer_of_patient_id,
        p.patient_name,
        p.patient_name_fold,
        p.patient_birth_date,
        p.patient_sex,
        hospital_pk,
    )
    study = await conn.fetchrow(
        UPSERT_STUDY,
        patient_pk,
        st.study_instance_uid,
        st.study_date,
        st.study_time,
        st.study_time_key,
        st.accession_number,
        st.referring_physician_name,
        st.referring_physician_fold,
        st.study_description,
        st.study_id,
        st.timezone_offset,
        hospital_pk,
    )
    if study["patient_pk"] != patient_pk:
        raise _Refused(Outcome.WRONG_PATIENT)
    series = await conn.fetchrow(
        UPSERT_SERIES,
        study["pk"],
        se.series_instance_uid,
        se.modality,
        se.series_number,
        se.series_description,
        se.body_part_examined,
        se.pps_start_date,
        se.pps_start_time,
        se.pps_start_time_key,
        se.scheduled_step_ids,
        se.requested_procedure_ids,
        se.timezone_offset,
    )
    if series["study_pk"] != study["pk"]:
        raise _Refused(Outcome.WRONG_STUDY)
    parents = {"study_pk": study["pk"], "series_pk": series["pk"], "modality": series["modality"]}
    pk = await conn.fetchval(
        INSERT_INSTANCE,
        series["pk"],
        inst.sop_instance_uid,
        inst.sop_class_uid,
        inst.instance_number,
        facts.transfer_syntax_uid,
        inst.rows,
        inst.columns,
        inst.bits_allocated,
        inst.samples_per_pixel,
        inst.number_of_frames,
        facts.object_key,
        facts.size,
        facts.sha256,
        facts.pixel_offset,
        facts.pixel_length,
        facts.pixel_encapsulated,
        facts.fragment_offsets,
        facts.fragment_lengths,
        facts.basic_offset_table,
        facts.frame_starts,
        json.dumps(facts.bulk),
        json.dumps(facts.metadata),
    )
    if pk is not None:
        return Pending(Outcome.NEW, instance_pk=pk, **parents)
    existing = await conn.fetchrow(SELECT_EXISTING, inst.sop_instance_uid, stale_after)
    if existing["status"] == 1:
        raise _Refused(Outcome.IDENTICAL if existing["sha256"] == facts.sha256 else Outcome.DIFFERENT)
    if not existing["stale"]:
        raise _Refused(Outcome.IN_PROGRESS)
    await conn.execute(TAKE_OVER, existing["pk"], series["pk"], facts.object_key, facts.size, facts.sha256)
    return Pending(Outcome.NEW, instance_pk=existing["pk"], orphan_key=existing["object_key"], **parents)


async def mark_stored(pool: Pool, pending: Pending, object_key: str, event: AuditEvent | None = None) -> bool:
    """Phase three: the object is stored; make the instance visible, and record ``event``
    in the same transaction. False when the pending row was swept or taken over meanwhile
    (the caller then removes its object)."""
    try:
        async with transaction(pool) as conn:
            await conn.execute(LOCK_STUDY, pending.study_pk)
            series_count = await conn.fetchval(COUNT_SERIES_INSTANCE, pending.series_pk)
            if await conn.fetchval(MARK_STORED, pending.instance_pk, object_key) is None:
                raise _Refused(Outcome.NEW)
            await conn.execute(COUNT_STUDY_INSTANCE, pending.study_pk, series_count == 1, pending.modality)
            if event is not None:
                await audit.insert(conn, event)
    except _Refused:
        return False
    return True


async def abandon(pool: Pool, pending: Pending, object_key: str) -> None:
    """Undo phase one after a failed store: remove the pending row (parents go in a sweep)."""
    async with transaction(pool) as conn:
        await conn.execute(DELETE_PENDING, pending.instance_pk, object_key)


async def sweep(pool: Pool, stale_after: int, batch: int = 100) -> list[str]:
    """Remove pending writes older than ``stale_after`` seconds, and queue their objects as
    garbage in the same transaction (:mod:`app.repository.deletion`): the caller deletes
    the objects after the commit, never while holding it, and a crash in between leaves
    them queued for the next sweep. Returns the object keys of the removed rows."""
    keys: list[str] = []
    while True:
        async with transaction(pool) as conn:
            rows = await conn.fetch(SELECT_STALE, stale_after, batch)
            batch_keys = [r["object_key"] for r in rows]
            await conn.execute(QUEUE_GARBAGE, batch_keys)
            await conn.execute(DELETE_INSTANCES, [r["pk"] for r in rows])
            keys += batch_keys
            if len(rows) < batch:
                await conn.execute(DELETE_EMPTY_SERIES, stale_after)
                await conn.execute(DELETE_EMPTY_STUDIES, stale_after)
                await conn.execute(DELETE_EMPTY_PATIENTS, stale_after)
                return keys


async def held(pool: Pool, hospital_pk: int, sop_instance_uid: str) -> bool:
    """Whether ``hospital_pk`` holds a stored instance ``sop_instance_uid``."""
    async with connection(pool) as conn:
        return await conn.fetchval(SELECT_HELD, sop_instance_uid, hospital_pk) is not None
