"""The audit trail's storage: append-only rows (a trigger refuses updates and deletes)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg

from app.repository.database import Pool, connection

_COLUMNS = (
    "transaction outcome detail subject hospital roles share_id client_address user_agent method path "
    "query study_uids series_uids instance_uids patient_ids owner_hospitals instances bytes"
).split()

INSERT = (
    f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))}) RETURNING pk, at"
)
# Many events in one statement (one round trip), each with the time it happened: the rows
# of a JSON array, read as the table's own row type.
INSERT_MANY = (
    f"INSERT INTO audit_events (at, {', '.join(_COLUMNS)}) "
    f"SELECT coalesce(at, clock_timestamp()), {', '.join(_COLUMNS)} "
    "FROM jsonb_populate_recordset(NULL::audit_events, $1::jsonb)"
)


@dataclass
class AuditEvent:
    """One access to patient data (or an attempt): who, what, when, from where, outcome."""

    transaction: str
    method: str
    path: str
    outcome: int = 0
    detail: str | None = None
    subject: str | None = None
    hospital: str | None = None
    roles: list[str] = field(default_factory=list)
    share_id: str | None = None
    client_address: str | None = None
    user_agent: str | None = None
    query: str | None = None
    study_uids: list[str] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    instance_uids: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    owner_hospitals: list[str] = field(default_factory=list)
    instances: int = 0
    bytes: int = 0
    # Set when stored.
    pk: int | None = None
    at: dt.datetime | None = None

    def values(self) -> list[Any]:
        return [_storable(getattr(self, c)) for c in _COLUMNS]


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL text can hold it: a NUL (which a hostile request may carry in
    its path or parameters) becomes U+FFFD, so the refusal of such a request is recorded
    like any other.

    >>> _storable(["/studies/" + chr(0)]), _storable(3)
    (['/studies/\ufffd'], 3)
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


async def insert(conn: asyncpg.Connection, event: AuditEvent) -> AuditEvent:
    """Record ``event`` on ``conn`` (inside the caller's transaction when it has one)."""
    row = await conn.fetchrow(INSERT, *event.values())
    event.pk, event.at = row["pk"], row["at"]
    return event


async def record(pool: Pool, event: AuditEvent) -> AuditEvent:
    async with connection(pool) as conn:
        return await insert(conn, event)


async def record_many(pool: Pool, events: list[AuditEvent]) -> None:
    """Record ``events``, whose ``at`` is set, in one statement."""
    rows = [
        {"at": e.at.isoformat() if e.at else None, **dict(zip(_COLUMNS, e.values(), strict=True))}
        for e in events
    ]
    async with connection(pool) as conn:
        await conn.execute(INSERT_MANY, json.dumps(rows, separators=(",", ":")))


@dataclass(frozen=True)
class AuditFilter:
    #: Only events touching data of this hospital, or made by its users (an admin's view).
    hospital: str | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    subject: str | None = None
    share_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def _where(f: AuditFilter) -> tuple[str, list[Any]]:
    clauses, values = [], []

    def add(sql: str, value: Any) -> None:
        # Every "?" in one clause stands for the same value.
        values.append(value)
        clauses.append(sql.replace("?", f"${len(values)}"))

    if f.hospital is not None:
        # A hospital's trail: what its users did, what touched its data, and everything
        # done through its shares (a recipient has no hospital, and a refused attempt
        # touched no data, but both are the sharing hospital's business).
        add(
            "(hospital = ? OR ? = ANY(owner_hospitals) OR share_id IN "
            "(SELECT s.id FROM shares s JOIN hospitals h ON h.pk = s.hospital_pk WHERE h.code = ?))",
            f.hospital,
        )
    if f.patient_id is not None:
        add("? = ANY(patient_ids)", f.patient_id)
    if f.study_uid is not None:
        add("? = ANY(study_uids)", f.study_uid)
    if f.subject is not None:
        add("subject = ?", f.subject)
    if f.share_id is not None:
        add("share_id = ?", f.share_id)
    if f.since is not None:
        add("at >= ?", f.since)
    if f.until is not None:
        add("at < ?", f.until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


async def search(pool: Pool, f: AuditFilter, limit: int, offset: int) -> list[AuditEvent]:
    where, values = _where(f)
    names = [x.name for x in fields(AuditEvent)]
    sql = (
        f"SELECT {', '.join(names)} FROM audit_events{where} "
        f"ORDER BY pk DESC LIMIT ${len(values) + 1} OFFSET ${len(values) + 2}"
    )
    async with connection(pool) as conn:
        rows = await conn.fetch(sql, *values, limit, offset)
    return [AuditEvent(**dict(r)) for r in rows]
