"""The write path of the index: two-phase instance writes and the sweep.

A write is (1) :func:`begin` — a *pending* instance row, with its patient, study and series
upserted; (2) the object stored under the row's key; (3) :func:`mark_stored`. A failure
between them is undone by :func:`abandon`, and a crash by :func:`sweep`.

Row locks are always taken in the order patient → study → series → instance, in every
transaction here, so concurrent writes to one study cannot deadlock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import asyncpg

from app.dicom.indexing import IndexRecord, PatientRecord, SeriesRecord, StudyRecord
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

# A batch's instances, from one JSON array of their scalar and array columns and two
# arrays of their JSON documents (bulk locations, metadata), in the order given, which is
# the SOP Instance UID's: concurrent batches then wait on each other's keys in one order.
INSERT_INSTANCES = """
INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number,
    transfer_syntax_uid, rows, columns, bits_allocated, samples_per_pixel, number_of_frames, object_key,
    size, sha256, pixel_offset, pixel_length, pixel_encapsulated, fragment_offsets, fragment_lengths,
    basic_offset_table, frame_starts, bulk, metadata)
SELECT r.series_pk, r.sop_instance_uid, r.sop_class_uid, r.instance_number, r.transfer_syntax_uid,
    r.rows, r.columns, r.bits_allocated, r.samples_per_pixel, r.number_of_frames, r.object_key, r.size,
    decode(r.sha256, 'hex'), r.pixel_offset, r.pixel_length, r.pixel_encapsulated, r.fragment_offsets,
    r.fragment_lengths, r.basic_offset_table, r.frame_starts, d.bulk::jsonb, d.metadata::jsonb
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (series_pk bigint, sop_instance_uid text,
    sop_class_uid text, instance_number integer, transfer_syntax_uid text, rows integer, columns integer,
    bits_allocated integer, samples_per_pixel integer, number_of_frames integer, object_key text,
    size bigint, sha256 text, pixel_offset bigint, pixel_length bigint, pixel_encapsulated boolean,
    fragment_offsets bigint[], fragment_lengths bigint[], basic_offset_table bigint[],
    frame_starts integer[]))
    WITH ORDINALITY AS r(series_pk, sop_instance_uid, sop_class_uid, instance_number, transfer_syntax_uid,
        rows, columns, bits_allocated, samples_per_pixel, number_of_frames, object_key, size, sha256,
        pixel_offset, pixel_length, pixel_encapsulated, fragment_offsets, fragment_lengths,
        basic_offset_table, frame_starts, n)
JOIN unnest($2::text[], $3::text[]) WITH ORDINALITY AS d(bulk, metadata, n) USING (n)
ORDER BY r.n
ON CONFLICT (sop_instance_uid) DO NOTHING
RETURNING pk, sop_instance_uid"""

SELECT_EXISTING = """
SELECT pk, sop_instance_uid, status, sha256, object_key,
       updated_at < now() - make_interval(secs => $2) AS stale
FROM instances WHERE sop_instance_uid = ANY($1::text[]) ORDER BY sop_instance_uid FOR UPDATE"""

# Take over a pending row a crashed or stalled writer left behind.
TAKE_OVER = """
UPDATE instances SET series_pk = $2, object_key = $3, size = $4, sha256 = $5, updated_at = now()
WHERE pk = $1"""

# Whether a hospital holds a stored instance of this UID (an import that coerces skips it).
SELECT_HELD = """
SELECT 1 FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk
WHERE i.sop_instance_uid = $1 AND i.status = 1 AND st.hospital_pk = $2"""

LOCK_STUDIES = "SELECT pk FROM studies WHERE pk = ANY($1::bigint[]) ORDER BY pk FOR UPDATE"
MARK_STORED = """
UPDATE instances i SET status = 1, updated_at = now()
FROM unnest($1::bigint[], $2::text[]) AS w(pk, object_key)
WHERE i.pk = w.pk AND i.object_key = w.object_key AND i.status = 0 RETURNING i.pk"""
COUNT_SERIES_INSTANCES = """
UPDATE series se SET num_instances = se.num_instances + c.n
FROM unnest($1::bigint[], $2::int[]) AS c(pk, n)
WHERE se.pk = c.pk RETURNING se.pk, se.num_instances = c.n AS first"""
# Modalities are a study's in the order they first arrived (the values are CS, which
# cannot hold the backslash they are joined with).
COUNT_STUDY_INSTANCES = """
UPDATE studies st SET
    num_instances = st.num_instances + c.n,
    num_series = st.num_series + c.new_series,
    modalities = st.modalities || ARRAY(
        SELECT m FROM unnest(string_to_array(c.modalities, '\\')) WITH ORDINALITY AS a(m, k)
        WHERE m <> '' AND NOT m = ANY(st.modalities) ORDER BY k)
FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[]) AS c(pk, n, new_series, modalities)
WHERE st.pk = c.pk"""

DELETE_PENDING = """
DELETE FROM instances i USING unnest($1::bigint[], $2::text[]) AS w(pk, object_key)
WHERE i.pk = w.pk AND i.object_key = w.object_key AND i.status = 0"""

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
    #: Other bulk values' locations, ``{"<tag path>": [offset, length]}``, as JSON text.
    bulk: str
    #: The DICOM JSON (PS3.18 Annex F) with bulk values as placeholders, as JSON text:
    #: serialized where it is built, off the event loop.
    metadata: str

    def columns(self) -> dict[str, Any]:
        """The instance row's columns these facts give, but the JSON documents."""
        return {
            "object_key": self.object_key, "size": self.size, "sha256": self.sha256.hex(),
            "transfer_syntax_uid": self.transfer_syntax_uid, "pixel_offset": self.pixel_offset,
            "pixel_length": self.pixel_length, "pixel_encapsulated": self.pixel_encapsulated,
            "fragment_offsets": self.fragment_offsets, "fragment_lengths": self.fragment_lengths,
            "basic_offset_table": self.basic_offset_table, "frame_starts": self.frame_starts,
        }  # fmt: skip


@dataclass(frozen=True)
class Write:
    """One instance to write: what is indexed of it, and its object."""

    record: IndexRecord
    facts: ObjectFacts


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


async def begin(pool: Pool, writes: Sequence[Write], stale_after: int, hospital_pk: int) -> list[Pending]:
    """Phase one, for a batch of instances with distinct SOP Instance UIDs: upsert their
    parents, owned by ``hospital_pk``, once each, and write their pending rows in one
    statement; one :class:`Pending` per write, in order. A study another hospital owns is
    refused like one of another patient: both are a different patient's record.

    A refused instance leaves no trace: when some are refused and others are not, the
    transaction is rolled back and run again without the refused ones (whose parents'
    upserts it may have made), until it holds only instances to write."""
    outcomes: dict[int, Pending] = {}
    todo = list(range(len(writes)))
    while todo:
        try:
            async with transaction(pool) as conn:
                found = await _begin(conn, [writes[i] for i in todo], stale_after, hospital_pk)
                refused = {todo[j]: p for j, p in enumerate(found) if p.outcome is not Outcome.NEW}
                if refused:
                    raise _Refused
                outcomes.update(zip(todo, found, strict=True))
                todo = []
        except _Refused:
            outcomes.update(refused)
            if len(refused) == len(todo):
                break
            todo = [i for i in todo if i not in refused]
    return [outcomes[i] for i in range(len(writes))]


async def _begin(
    conn: asyncpg.Connection, writes: Sequence[Write], stale_after: int, hospital_pk: int
) -> list[Pending]:
    # Row locks in one order in every transaction: patients, then studies, then series,
    # each sorted by key, then instances by SOP Instance UID.
    patients: dict[tuple[str, str], int] = {}
    for w in sorted(writes, key=lambda w: _patient_key(w.record)):
        key = _patient_key(w.record)
        if key not in patients:
            patients[key] = await _upsert_patient(conn, w.record.patient, hospital_pk)
    studies: dict[str, asyncpg.Record] = {}
    for w in sorted(writes, key=lambda w: w.record.study.study_instance_uid):
        uid = w.record.study.study_instance_uid
        if uid not in studies:
            studies[uid] = await _upsert_study(
                conn, w.record.study, patients[_patient_key(w.record)], hospital_pk
            )
    series: dict[str, asyncpg.Record] = {}
    for w in sorted(writes, key=lambda w: w.record.series.series_instance_uid):
        uid = w.record.series.series_instance_uid
        if uid not in series:
            series[uid] = await _upsert_series(
                conn, w.record.series, studies[w.record.study.study_instance_uid]["pk"]
            )
    outcomes: list[Pending | None] = [None] * len(writes)
    rows: list[tuple[int, Write, asyncpg.Record]] = []
    for i, w in enumerate(writes):
        study, se = studies[w.record.study.study_instance_uid], series[w.record.series.series_instance_uid]
        if study["patient_pk"] != patients[_patient_key(w.record)]:
            outcomes[i] = Pending(Outcome.WRONG_PATIENT)
        elif se["study_pk"] != study["pk"]:
            outcomes[i] = Pending(Outcome.WRONG_STUDY)
        else:
            rows.append((i, w, se))
    rows.sort(key=lambda r: r[1].record.instance.sop_instance_uid)
    inserted = await _insert_instances(conn, rows) if rows else {}
    conflicts = [r for r in rows if r[1].record.instance.sop_instance_uid not in inserted]
    existing = {}
    if conflicts:
        uids = [w.record.instance.sop_instance_uid for _, w, _ in conflicts]
        existing = {r["sop_instance_uid"]: r for r in await conn.fetch(SELECT_EXISTING, uids, stale_after)}
    for i, w, se in rows:
        uid = w.record.instance.sop_instance_uid
        parents = {"study_pk": se["study_pk"], "series_pk": se["pk"], "modality": se["modality"]}
        if uid in inserted:
            outcomes[i] = Pending(Outcome.NEW, instance_pk=inserted[uid], **parents)
            continue
        row = existing.get(uid)
        if row is None:
            # Removed between the insert's conflict and the look-up (a concurrent sweep or
            # undo): another writer's, in progress a moment ago.
            outcomes[i] = Pending(Outcome.IN_PROGRESS)
        elif row["status"] == 1:
            outcomes[i] = Pending(Outcome.IDENTICAL if row["sha256"] == w.facts.sha256 else Outcome.DIFFERENT)
        elif not row["stale"]:
            outcomes[i] = Pending(Outcome.IN_PROGRESS)
        else:
            f = w.facts
            await conn.execute(TAKE_OVER, row["pk"], se["pk"], f.object_key, f.size, f.sha256)
            outcomes[i] = Pending(Outcome.NEW, instance_pk=row["pk"], orphan_key=row["object_key"], **parents)
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def _patient_key(record: IndexRecord) -> tuple[str, str]:
    return record.patient.patient_id, record.patient.issuer_of_patient_id


async def _upsert_patient(conn: asyncpg.Connection, p: PatientRecord, hospital_pk: int) -> int:
    values = (p.patient_name, p.patient_name_fold, p.patient_birth_date, p.patient_sex)
    return int(
        await conn.fetchval(UPSERT_PATIENT, p.patient_id, p.issuer_of_patient_id, *values, hospital_pk)
    )


async def _upsert_study(
    conn: asyncpg.Connection, st: StudyRecord, patient_pk: int, hospital_pk: int
) -> asyncpg.Record:
    return await conn.fetchrow(
        UPSERT_STUDY, patient_pk, st.study_instance_uid, st.study_date, st.study_time, st.study_time_key,
        st.accession_number, st.referring_physician_name, st.referring_physician_fold, st.study_description,
        st.study_id, st.timezone_offset, hospital_pk,
    )  # fmt: skip


async def _upsert_series(conn: asyncpg.Connection, se: SeriesRecord, study_pk: int) -> asyncpg.Record:
    return await conn.fetchrow(
        UPSERT_SERIES, study_pk, se.series_instance_uid, se.modality, se.series_number, se.series_description,
        se.body_part_examined, se.pps_start_date, se.pps_start_time, se.pps_start_time_key,
        se.scheduled_step_ids, se.requested_procedure_ids, se.timezone_offset,
    )  # fmt: skip


async def _insert_instances(
    conn: asyncpg.Connection, rows: Sequence[tuple[int, Write, asyncpg.Record]]
) -> dict[str, int]:
    """The pending rows of ``rows`` (sorted by SOP Instance UID) that were new, by UID."""
    columns = []
    for _, w, se in rows:
        inst = w.record.instance
        columns.append({
            "series_pk": se["pk"], "sop_instance_uid": inst.sop_instance_uid,
            "sop_class_uid": inst.sop_class_uid,
            "instance_number": inst.instance_number, "rows": inst.rows, "columns": inst.columns,
            "bits_allocated": inst.bits_allocated, "samples_per_pixel": inst.samples_per_pixel,
            "number_of_frames": inst.number_of_frames, **w.facts.columns(),
        })  # fmt: skip
    found = await conn.fetch(
        INSERT_INSTANCES,
        json.dumps(columns),
        [w.facts.bulk for _, w, _ in rows],
        [w.facts.metadata for _, w, _ in rows],
    )
    return {r["sop_instance_uid"]: r["pk"] for r in found}


async def mark_stored(
    pool: Pool,
    written: Sequence[tuple[Pending, str]],
    event_of: Callable[[set[int]], AuditEvent] | None = None,
) -> set[int]:
    """Phase three, for a batch whose objects are stored (each pending row with its object
    key): make the instances visible, count them in their series and studies, and record
    the audit event ``event_of`` gives for the instance pks marked, in the same
    transaction. Returns those pks; a row swept or taken over meanwhile is not marked (the
    caller removes its object). None marked: nothing is recorded."""
    try:
        async with transaction(pool) as conn:
            # The studies' locks first, as in phase one's upserts: their counters change.
            await conn.execute(LOCK_STUDIES, sorted({p.study_pk for p, _ in written}))
            marked = {
                r["pk"]
                for r in await conn.fetch(
                    MARK_STORED, [p.instance_pk for p, _ in written], [key for _, key in written]
                )
            }
            if not marked:
                raise _Refused
            stored = [p for p, _ in written if p.instance_pk in marked]
            per_series = Counter(p.series_pk for p in stored)
            ordered = sorted(per_series)
            firsts = await conn.fetch(COUNT_SERIES_INSTANCES, ordered, [per_series[pk] for pk in ordered])
            new_series = {r["pk"] for r in firsts if r["first"]}
            studies: dict[int, list[Any]] = {}
            for p in stored:
                study = studies.setdefault(p.study_pk, [0, set(), []])
                study[0] += 1
                study[1].add(p.series_pk)
                if p.modality and p.modality not in study[2]:
                    study[2].append(p.modality)
            keys = sorted(studies)
            await conn.execute(
                COUNT_STUDY_INSTANCES,
                keys,
                [studies[k][0] for k in keys],
                [len(studies[k][1] & new_series) for k in keys],
                ["\\".join(studies[k][2]) for k in keys],
            )
            if event_of is not None:
                await audit.insert(conn, event_of(marked))
    except _Refused:
        return set()
    return marked


async def abandon(pool: Pool, written: Sequence[tuple[Pending, str]]) -> None:
    """Undo phase one after a failed store: remove the pending rows (parents go in a sweep)."""
    if written:
        async with transaction(pool) as conn:
            await conn.execute(
                DELETE_PENDING, [p.instance_pk for p, _ in written], [key for _, key in written]
            )


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
