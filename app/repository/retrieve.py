"""Lookups for WADO-RS: the stored instances under a study, series or instance, within
the caller's scope."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.dicom.frames import PixelInfo
from app.repository.database import Pool, connection
from app.scope import Scope

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
SELECT_METADATA = (
    "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, "
    f"i.metadata::text AS metadata, {_OWNER} " + _ORDERED
)
SELECT_BULK = f"""
SELECT i.object_key, i.size, i.transfer_syntax_uid, i.bulk::text AS bulk, i.pixel_offset, i.pixel_length,
       i.pixel_encapsulated, i.fragment_offsets, i.fragment_lengths, i.basic_offset_table, i.frame_starts,
       i.number_of_frames, i.rows, i.columns, i.samples_per_pixel, i.bits_allocated, {_OWNER}
{_IN_SCOPE}"""


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


@dataclass(frozen=True)
class StoredBulk(Owner):
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
    return f"{row['n']}:{row['pks']}:{row['updated'].isoformat()}"


async def metadata(
    pool: Pool, scope: Scope, study: str, series: str | None = None, instance: str | None = None
) -> list[StoredMetadata]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_METADATA, *_args(scope, study, series, instance))
    return [StoredMetadata(**dict(r)) for r in rows]


async def bulk(pool: Pool, scope: Scope, study: str, series: str, instance: str) -> StoredBulk | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_BULK, *_args(scope, study, series, instance))
    if row is None:
        return None
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
    locations = {path: (int(loc[0]), int(loc[1])) for path, loc in json.loads(row["bulk"]).items()}
    return StoredBulk(
        patient_id=row["patient_id"],
        hospital=row["hospital"],
        object_key=row["object_key"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        bulk=locations,
        pixel=pixel,
    )
