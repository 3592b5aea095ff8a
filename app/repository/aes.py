"""Known DICOM application entities (modalities, PACS): who may associate, and where the
archive may send."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from app.errors import BadRequest
from app.repository.database import Pool, connection

_COLUMNS = """ae.pk, ae.ae_title, ae.host, ae.port, ae.hospital_pk, h.code AS hospital, ae.may_echo,
ae.may_store, ae.may_find, ae.may_move, ae.may_get, ae.destination, ae.description, ae.created_at"""
_NEW_COLUMNS = _COLUMNS.replace("ae.", "new.")
INSERT = f"""
WITH new AS (
    INSERT INTO application_entities (ae_title, host, port, hospital_pk, may_echo, may_store, may_find,
                                      may_move, may_get, destination, description)
    SELECT $1, $2, $3, h.pk, $5, $6, $7, $8, $9, $10, $11
    FROM hospitals h WHERE h.code = $4 AND h.removed_at IS NULL
    ON CONFLICT (ae_title) DO NOTHING
    RETURNING *
)
SELECT {_NEW_COLUMNS} FROM new JOIN hospitals h ON h.pk = new.hospital_pk"""
# An AE of a removed hospital is unknown: it may no longer associate (PS3.8 §7.1), nor be
# sent to. Read at every association, so no node can miss the removal.
SELECT_BY_TITLE = f"""SELECT {_COLUMNS} FROM application_entities ae JOIN hospitals h ON h.pk = ae.hospital_pk
WHERE ae.ae_title = $1 AND h.removed_at IS NULL"""
SELECT_ALL = f"""SELECT {_COLUMNS} FROM application_entities ae JOIN hospitals h ON h.pk = ae.hospital_pk
WHERE ($1::bigint IS NULL OR ae.hospital_pk = $1) AND h.removed_at IS NULL ORDER BY ae.ae_title"""
# A hospital's admin changes only their hospital's AEs ($2 NULL: any, for the API's admin).
UPDATE = f"""
WITH new AS (
    UPDATE application_entities SET host = $3, port = $4, may_echo = $5, may_store = $6, may_find = $7,
        may_move = $8, may_get = $9, destination = $10, description = $11
    WHERE ae_title = $1 AND ($2::bigint IS NULL OR hospital_pk = $2)
    RETURNING *
)
SELECT {_NEW_COLUMNS} FROM new JOIN hospitals h ON h.pk = new.hospital_pk WHERE h.removed_at IS NULL"""
DELETE = """DELETE FROM application_entities WHERE ae_title = $1 AND ($2::bigint IS NULL OR hospital_pk = $2)
RETURNING pk"""


@dataclass(frozen=True)
class ApplicationEntity:
    pk: int
    ae_title: str
    host: str
    port: int
    hospital_pk: int
    #: The member hospital's code.
    hospital: str
    may_echo: bool
    may_store: bool
    may_find: bool
    may_move: bool
    may_get: bool
    destination: bool
    description: str
    created_at: dt.datetime


@dataclass(frozen=True)
class NewApplicationEntity:
    ae_title: str
    host: str
    port: int
    hospital: str
    may_echo: bool = True
    may_store: bool = False
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False
    destination: bool = False
    description: str = ""


async def add(pool: Pool, ae: NewApplicationEntity) -> ApplicationEntity | None:
    """The new entity, or None when its title is taken or its hospital unknown (the
    caller tells which by :func:`by_title`). An invalid title (PS3.5 §6.2 AE) or port is
    a :class:`BadRequest`."""
    async with connection(pool) as conn:
        try:
            row = await conn.fetchrow(
                INSERT, ae.ae_title, ae.host, ae.port, ae.hospital, ae.may_echo, ae.may_store, ae.may_find,
                ae.may_move, ae.may_get, ae.destination, ae.description,
            )  # fmt: skip
        except asyncpg.CheckViolationError as exc:
            raise BadRequest(
                "an AE title is 1 to 16 characters, no backslash or control characters, "
                "without leading or trailing spaces; a port is 1 to 65535"
            ) from exc
    return ApplicationEntity(**dict(row)) if row else None


async def by_title(pool: Pool, ae_title: str) -> ApplicationEntity | None:
    """The entity with this title (leading and trailing spaces are not significant)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_BY_TITLE, ae_title.strip())
    return ApplicationEntity(**dict(row)) if row else None


async def every(pool: Pool, hospital_pk: int | None = None) -> list[ApplicationEntity]:
    """All entities, or a hospital's."""
    async with connection(pool) as conn:
        return [ApplicationEntity(**dict(r)) for r in await conn.fetch(SELECT_ALL, hospital_pk)]


@dataclass(frozen=True)
class ApplicationEntityChange:
    """What may change of a known AE: where it listens and what it may do (its title and
    hospital are its identity; remove it and add it again to change those)."""

    host: str
    port: int
    may_echo: bool = True
    may_store: bool = False
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False
    destination: bool = False
    description: str = ""


async def update(
    pool: Pool, ae_title: str, change: ApplicationEntityChange, hospital_pk: int | None = None
) -> ApplicationEntity | None:
    """The entity as changed, or None when there is none by that title (of that hospital,
    when given). A port out of range is a :class:`BadRequest`."""
    async with connection(pool) as conn:
        try:
            row = await conn.fetchrow(
                UPDATE, ae_title.strip(), hospital_pk, change.host, change.port, change.may_echo,
                change.may_store, change.may_find, change.may_move, change.may_get, change.destination,
                change.description,
            )  # fmt: skip
        except asyncpg.CheckViolationError as exc:
            raise BadRequest("a port is 1 to 65535") from exc
    return ApplicationEntity(**dict(row)) if row else None


async def remove(pool: Pool, ae_title: str, hospital_pk: int | None = None) -> bool:
    async with connection(pool) as conn:
        return await conn.fetchval(DELETE, ae_title.strip(), hospital_pk) is not None
