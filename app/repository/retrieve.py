"""Lookups for WADO-RS: the stored instances under a study, series or instance, within
the caller's scope."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import asyncpg

from app.dicom.frames import PixelInfo
from app.repository.database import Pool, connection
from app.security.scope import Scope

# $1-$3: the UIDs of the resource; $4/$5: the caller's scope (Scope.filters). Retrieval by
# UID is one of the accesses a regional caller may make across member hospitals.
_IN_SCOPE = """
FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk
JOIN patients p ON p.pk = st.patient_pk JOIN hospitals h ON h.pk = st.hospital_pk
WHERE i.status = 1 AND st.study_instance_uid = $1
  AND ($2::text IS NULL OR se.series_instance_uid = $2)
  AND ($3::text IS NULL OR i.sop_instance_uid = $3)
  AND ($4::bigint IS NULL OR st.hospital_pk = $4)
  AND ($5::text[] IS NULL OR st.study_instance_uid = ANY($5::text[]))"""
_ORDERED = _IN_SCOPE + " ORDER BY se.pk, i.instance_number, i.pk"
_OWNER = "p.patient_id, h.code AS hospital"

SELECT_OBJECTS = (
    "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid, "
    f"i.transfer_syntax_uid, i.object_key, i.size, {_OWNER} " + _ORDERED
)
# What changes whenever the instances in scope change: their number, identities and
# last update (instances are immutable once stored; a delete and re-store changes pk).
SELECT_VERSION = (
    "SELECT count(*) AS n, coalesce(sum(i.pk), 0) AS pks, max(i.updated_at) AS updated " + _IN_SCOPE
)
# With what SELECT_VERSION aggregates, so that a first fetch costs one query.
SELECT_METADATA = (
    "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, "
    f"i.metadata::text AS metadata, i.pk, i.updated_at, {_OWNER} " + _ORDERED
)
_BULK_COLUMNS = """i.pk, i.object_key, i.size, i.transfer_syntax_uid, i.bulk::text AS bulk, i.pixel_offset,
       i.pixel_length, i.pixel_encapsulated, i.fragment_offsets, i.fragment_lengths, i.basic_offset_table,
       i.frame_starts, i.number_of_frames, i.rows, i.columns, i.samples_per_pixel, i.bits_allocated"""
SELECT_BULK = f"""
SELECT {_BULK_COLUMNS}, {_OWNER}
{_IN_SCOPE}"""

# The instances of a study or series and where their bulk data lies, for converting
# them as they are retrieved.
SELECT_CONVERTIBLE = (
    "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid, "
    f"{_BULK_COLUMNS}, {_OWNER} " + _ORDERED
)
# What rendering needs from the index. Not the metadata: what derives from it is cached
# by object key (app.services.pixel_sources), which reads it on a miss only.
_RENDERING_COLUMNS = f"se.series_instance_uid, i.sop_instance_uid, {_BULK_COLUMNS}, {_OWNER}"
SELECT_RENDERING = f"SELECT {_RENDERING_COLUMNS} {_IN_SCOPE}"
SELECT_RENDERINGS = f"SELECT {_RENDERING_COLUMNS} {_ORDERED}"
SELECT_INSTANCE_METADATA = (
    "SELECT pk, metadata::text AS metadata FROM instances WHERE pk = ANY($1::bigint[]) AND status = 1"
)
# The representative instance of a study or series (PS3.18 §10.4.1.1.3 leaves the choice to
# the server): the first series by number, its middle instance by number.
SELECT_REPRESENTATIVE = f"""
WITH chosen AS (
    SELECT se.pk FROM series se JOIN studies st ON st.pk = se.study_pk
    WHERE st.study_instance_uid = $1 AND ($2::text IS NULL OR se.series_instance_uid = $2)
      AND ($3::bigint IS NULL OR st.hospital_pk = $3)
      AND ($4::text[] IS NULL OR st.study_instance_uid = ANY($4::text[]))
      AND se.num_instances > 0
    ORDER BY se.series_number NULLS LAST, se.pk LIMIT 1
)
SELECT {_RENDERING_COLUMNS}
FROM instances i JOIN chosen c ON c.pk = i.series_pk JOIN series se ON se.pk = c.pk
JOIN studies st ON st.pk = se.study_pk JOIN patients p ON p.pk = st.patient_pk
JOIN hospitals h ON h.pk = st.hospital_pk
WHERE i.status = 1
ORDER BY i.instance_number NULLS LAST, i.pk
OFFSET (SELECT (count(*) - 1) / 2 FROM instances WHERE series_pk = (SELECT pk FROM chosen) AND status = 1)
LIMIT 1"""
# The instances of a study or series, in order, for rendering each of them.
SELECT_INSTANCE_UIDS = (
    "SELECT se.series_instance_uid, i.sop_instance_uid "
    + _IN_SCOPE
    + " ORDER BY se.pk, i.instance_number, i.pk"
)
# Everything of some studies, for an export (a share's download).
SELECT_EXPORT = f"""
SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid,
       i.transfer_syntax_uid, i.object_key, i.size, i.metadata::text AS metadata, {_OWNER}
FROM instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk
JOIN patients p ON p.pk = st.patient_pk JOIN hospitals h ON h.pk = st.hospital_pk
WHERE i.status = 1 AND st.study_instance_uid = ANY($1::text[])
ORDER BY st.pk, se.pk, i.instance_number, i.pk"""
# A derivative, or else (when $3) the metadata to make it from: one query either way.
SELECT_DERIVED_OR_METADATA = """
SELECT d.object_key, d.media_type, CASE WHEN d.object_key IS NULL AND $3 THEN i.metadata::text END AS metadata
FROM instances i LEFT JOIN derived_objects d ON d.instance_pk = i.pk AND d.variant = $2
WHERE i.pk = $1 AND i.status = 1"""
INSERT_DERIVED = """
INSERT INTO derived_objects (instance_pk, variant, object_key, media_type, size) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING"""


@dataclass(frozen=True)
class Owner:
    """Whose data a row is, for the audit trail."""

    patient_id: str
    hospital: str


@dataclass(frozen=True)
class StoredObject(Owner):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int


@dataclass(frozen=True)
class StoredMetadata(Owner):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    metadata: str  # DICOM JSON text with bulk placeholders
    pk: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class StoredBulk(Owner):
    pk: int
    object_key: str
    transfer_syntax_uid: str
    #: Bulk values other than Pixel Data: tag path -> (offset, length).
    bulk: dict[str, tuple[int, int]]
    pixel: PixelInfo | None


def _args(scope: Scope, study: str, series: str | None, instance: str | None) -> tuple[Any, ...]:
    hospital, studies = scope.filters(cross_hospital=True)
    return study, series, instance, hospital, studies


async def objects(
    pool: Pool, scope: Scope, study: str, series: str | None = None, instance: str | None = None
) -> list[StoredObject]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_OBJECTS, *_args(scope, study, series, instance))
    return [StoredObject(**dict(r)) for r in rows]


async def version(
    pool: Pool, scope: Scope, study: str, series: str | None = None, instance: str | None = None
) -> str | None:
    """A token that changes whenever the stored instances in scope change; None if none."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_VERSION, *_args(scope, study, series, instance))
    if row is None or row["n"] == 0:
        return None
    return _version(row["n"], row["pks"], row["updated"])


def version_of(rows: Sequence[StoredMetadata]) -> str | None:
    """:func:`version` of the instances ``rows`` hold, computed from them."""
    if not rows:
        return None
    return _version(len(rows), sum(r.pk for r in rows), max(r.updated_at for r in rows))


def _version(count: int, pks: object, updated: dt.datetime) -> str:
    return f"{count}:{pks}:{updated.isoformat()}"


async def metadata(
    pool: Pool, scope: Scope, study: str, series: str | None = None, instance: str | None = None
) -> list[StoredMetadata]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_METADATA, *_args(scope, study, series, instance))
    return [StoredMetadata(**dict(r)) for r in rows]


async def bulk(pool: Pool, scope: Scope, study: str, series: str, instance: str) -> StoredBulk | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_BULK, *_args(scope, study, series, instance))
    return None if row is None else _stored_bulk(row)


@dataclass(frozen=True)
class Renderable:
    """What rendering or converting one instance needs from the index: its UIDs, its
    pixel layout and its object (its metadata is read apart, see :func:`instance_metadata`)."""

    pk: int
    series_instance_uid: str
    sop_instance_uid: str
    stored: StoredBulk


async def renderable(pool: Pool, scope: Scope, study: str, series: str, instance: str) -> Renderable | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_RENDERING, *_args(scope, study, series, instance))
    return None if row is None else _renderable(row)


async def renderables(pool: Pool, scope: Scope, study: str, series: str | None) -> list[Renderable]:
    """:func:`renderable` of every instance of a study or series, in order, in one query."""
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_RENDERINGS, *_args(scope, study, series, None))
    return [_renderable(r) for r in rows]


async def representative(pool: Pool, scope: Scope, study: str, series: str | None) -> Renderable | None:
    """The instance that stands for a study or series."""
    hospital, studies = scope.filters(cross_hospital=True)
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_REPRESENTATIVE, study, series, hospital, studies)
    return None if row is None else _renderable(row)


async def convertible(
    pool: Pool, scope: Scope, study: str, series: str | None = None, instance: str | None = None
) -> list[tuple[StoredObject, Renderable]]:
    """:func:`objects`, each with what converting it needs, in one query."""
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_CONVERTIBLE, *_args(scope, study, series, instance))
    return [(StoredObject(**{k: r[k] for k in _OBJECT_FIELDS}), _renderable(r)) for r in rows]


_OBJECT_FIELDS = [f.name for f in fields(StoredObject)]


async def instance_metadata(pool: Pool, pks: Sequence[int]) -> dict[int, str]:
    """The DICOM JSON text (with bulk placeholders) of the instances ``pks``, already found
    in the caller's scope; an instance deleted since is left out."""
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_INSTANCE_METADATA, list(pks))
    return {r["pk"]: r["metadata"] for r in rows}


async def instance_uids(pool: Pool, scope: Scope, study: str, series: str | None) -> list[tuple[str, str]]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_INSTANCE_UIDS, *_args(scope, study, series, None))
    return [(r["series_instance_uid"], r["sop_instance_uid"]) for r in rows]


@dataclass(frozen=True)
class Exported(StoredObject):
    metadata: str


async def export(pool: Pool, studies: list[str]) -> list[Exported]:
    """The stored instances of ``studies`` (already checked against the caller's scope)."""
    async with connection(pool) as conn:
        return [Exported(**dict(r)) for r in await conn.fetch(SELECT_EXPORT, studies)]


async def derived_or_metadata(
    pool: Pool, instance_pk: int, variant: str, with_metadata: bool
) -> tuple[tuple[str, str] | None, str | None] | None:
    """``(object key, media type)`` of a cached derivative of an instance, and the
    instance's metadata text when there is no such derivative and ``with_metadata``; None
    when the instance is gone."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_DERIVED_OR_METADATA, instance_pk, variant, with_metadata)
    if row is None:
        return None
    found = None if row["object_key"] is None else (row["object_key"], row["media_type"])
    return found, row["metadata"]


async def remember_derived(
    pool: Pool, instance_pk: int, variant: str, object_key: str, media_type: str, size: int
) -> bool:
    """Record a derivative; False when the instance is gone or another request was first."""
    async with connection(pool) as conn:
        try:
            status = await conn.execute(INSERT_DERIVED, instance_pk, variant, object_key, media_type, size)
        except asyncpg.ForeignKeyViolationError:
            return False
    return bool(status.endswith(" 1"))


def _renderable(row: asyncpg.Record) -> Renderable:
    return Renderable(row["pk"], row["series_instance_uid"], row["sop_instance_uid"], _stored_bulk(row))


def _stored_bulk(row: asyncpg.Record) -> StoredBulk:
    pixel = None
    if row["pixel_offset"] is not None:
        pixel = PixelInfo(
            offset=row["pixel_offset"],
            length=row["pixel_length"],
            encapsulated=bool(row["pixel_encapsulated"]),
            fragment_offsets=row["fragment_offsets"] or [],
            fragment_lengths=row["fragment_lengths"] or [],
            basic_offset_table=row["basic_offset_table"] or [],
            number_of_frames=row["number_of_frames"] or 1,
            rows=row["rows"],
            columns=row["columns"],
            samples_per_pixel=row["samples_per_pixel"],
            bits_allocated=row["bits_allocated"],
            frame_starts=row["frame_starts"] or [],
        )
    text = row["bulk"]
    # Most instances hold no bulk value but Pixel Data: no JSON to parse.
    values = json.loads(text) if text != "{}" else {}
    locations = {path: (int(loc[0]), int(loc[1])) for path, loc in values.items()}
    return StoredBulk(
        patient_id=row["patient_id"],
        hospital=row["hospital"],
        pk=row["pk"],
        object_key=row["object_key"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        bulk=locations,
        pixel=pixel,
    )
