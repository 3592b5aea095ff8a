"""Administration: member hospitals and the audit trail, for admins."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict

from app.errors import BadRequest, Conflict, NotFound
from app.repository import aes, hospitals
from app.repository import audit as audit_repository
from app.repository.aes import ApplicationEntity as ApplicationEntity
from app.repository.aes import ApplicationEntityChange as ApplicationEntityChange
from app.repository.aes import NewApplicationEntity as NewApplicationEntity
from app.repository.audit import AuditEvent
from app.repository.audit import AuditFilter as AuditFilter
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail


async def add_hospital(archive: Archive, trail: Trail, code: str, name: str) -> hospitals.Hospital:
    added = await hospitals.add(archive.pool, code, name)
    if added is None:
        raise Conflict(f"hospital {code!r} exists already")
    trail.event.detail = f"added hospital {added.code}"
    await audit.commit(archive, trail, 201, trail.event.detail)
    return added


async def remove_hospital(archive: Archive, trail: Trail, code: str) -> None:
    """Remove a member hospital: its tokens are refused on every node at once; what it
    stored stays."""
    if not await hospitals.remove(archive.pool, code):
        raise NotFound(f"no member hospital {code!r}")
    await audit.commit(archive, trail, 204, f"removed hospital {code}")


async def rename_hospital(archive: Archive, trail: Trail, code: str, name: str) -> hospitals.Hospital:
    if not name.strip():
        raise BadRequest("a hospital's name is not empty")
    renamed = await hospitals.rename(archive.pool, code, name)
    if renamed is None:
        raise NotFound(f"no member hospital {code!r}")
    await audit.commit(archive, trail, 200, f"renamed hospital {code}")
    return renamed


async def hospitals_list(archive: Archive, trail: Trail) -> list[hospitals.Hospital]:
    found = await hospitals.every(archive.pool)
    await audit.commit(archive, trail, 200)
    return found


async def add_ae(archive: Archive, trail: Trail, ae: aes.NewApplicationEntity) -> aes.ApplicationEntity:
    """A new known AE of a member hospital (it may then associate, PS3.8 §7.1)."""
    added = await aes.add(archive.pool, ae)
    if added is None:
        if await aes.by_title(archive.pool, ae.ae_title) is not None:
            raise Conflict(f"AE title {ae.ae_title!r} is known already")
        raise BadRequest(f"no member hospital {ae.hospital!r}")
    trail.event.detail = f"added AE {added.ae_title} of {added.hospital}"
    await audit.commit(archive, trail, 201, trail.event.detail)
    return added


async def aes_list(
    archive: Archive, trail: Trail, hospital_pk: int | None = None
) -> list[aes.ApplicationEntity]:
    found = await aes.every(archive.pool, hospital_pk)
    await audit.commit(archive, trail, 200)
    return found


async def update_ae(
    archive: Archive, trail: Trail, ae_title: str, change: aes.ApplicationEntityChange,
    hospital_pk: int | None = None,
) -> aes.ApplicationEntity:  # fmt: skip
    """Change where a known AE listens and what it may do; with ``hospital_pk``, only an
    AE of that hospital (a hospital's admin manages their own)."""
    changed = await aes.update(archive.pool, ae_title, change, hospital_pk)
    if changed is None:
        raise NotFound(f"no known AE {ae_title.strip()!r}")
    await audit.commit(archive, trail, 200, f"changed AE {changed.ae_title}")
    return changed


async def remove_ae(archive: Archive, trail: Trail, ae_title: str, hospital_pk: int | None = None) -> None:
    if not await aes.remove(archive.pool, ae_title, hospital_pk):
        raise NotFound(f"no known AE {ae_title.strip()!r}")
    await audit.commit(archive, trail, 204, f"removed AE {ae_title.strip()}")


async def audit_events(
    archive: Archive, trail: Trail, hospital: str | None, f: AuditFilter, limit: int, offset: int
) -> list[AuditEvent]:
    """Events touching ``hospital``'s data or made by its users (an admin sees their own
    hospital's trail, never another's)."""
    scoped = AuditFilter(
        hospital=hospital, patient_id=f.patient_id, study_uid=f.study_uid, subject=f.subject,
        share_id=f.share_id, since=f.since, until=f.until,
    )  # fmt: skip
    await audit.visible(archive)
    async with audit.refusals(archive, trail):
        events = await audit_repository.search(archive.pool, scoped, limit, offset)
    await audit.commit(archive, trail, 200, f"{len(events)} events")
    return events


async def study_history(archive: Archive, hospital: str | None, study: str, limit: int) -> list[AuditEvent]:
    """The accesses to ``study`` that ``hospital``'s trail holds, for the study's page,
    whose own access is recorded by the page's search (so nothing more is)."""
    scoped = AuditFilter(hospital=hospital, study_uid=study)
    await audit.visible(archive)
    return await audit_repository.search(archive.pool, scoped, limit, 0)


_CSV_FIELDS = [
    "pk", "at", "transaction", "outcome", "detail", "subject", "hospital", "roles", "share_id",
    "client_address", "user_agent", "method", "path", "query", "study_uids", "series_uids",
    "instance_uids", "patient_ids", "owner_hospitals", "instances", "bytes",
]  # fmt: skip


def as_csv(events: list[AuditEvent]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for event in events:
        row = asdict(event)
        for name, value in row.items():
            if isinstance(value, list):
                row[name] = " ".join(value)
            elif isinstance(value, dt.datetime):
                row[name] = value.isoformat()
        writer.writerow(row)
    return out.getvalue()
