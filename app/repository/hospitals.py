"""Member hospitals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from app.errors import BadRequest
from app.repository import invalidation
from app.repository.database import Pool, connection, transaction

#: What the table's CHECK on the code allows (app/migrations/0003_hospitals_and_audit.sql).
CODE_RULE = "letters, digits, '.', '_' and '-', at most 64"

INSERT = """
INSERT INTO hospitals (code, name) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING
RETURNING pk, code, name, created_at"""
# One statement: of several processes starting at once on an empty table, one inserts
# and the others find the row (or conflict on the code and do nothing).
INSERT_FIRST = """
INSERT INTO hospitals (code, name) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM hospitals)
ON CONFLICT (code) DO NOTHING
RETURNING pk, code, name, created_at"""
SELECT_BY_CODE = "SELECT pk, code, name, created_at FROM hospitals WHERE code = $1 AND removed_at IS NULL"
SELECT_ALL = "SELECT pk, code, name, created_at FROM hospitals WHERE removed_at IS NULL ORDER BY code"
RENAME = """UPDATE hospitals SET name = $2 WHERE code = $1 AND removed_at IS NULL
RETURNING pk, code, name, created_at"""
REMOVE = "UPDATE hospitals SET removed_at = now() WHERE code = $1 AND removed_at IS NULL RETURNING pk"


@dataclass(frozen=True)
class Hospital:
    pk: int
    code: str
    name: str
    created_at: dt.datetime


async def add(pool: Pool, code: str, name: str) -> Hospital | None:
    """The new hospital, or None when the code is taken. A code the table's CHECK refuses
    is a :class:`BadRequest` (the driver's exception stays in the repository)."""
    async with connection(pool) as conn:
        try:
            row = await conn.fetchrow(INSERT, code, name)
        except asyncpg.CheckViolationError as exc:
            raise BadRequest(f"hospital code {code!r}: {CODE_RULE}") from exc
    return Hospital(**dict(row)) if row else None


async def add_first(pool: Pool, code: str, name: str) -> Hospital | None:
    """Add a hospital only when there is none yet; the new one, or None."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(INSERT_FIRST, code, name)
    return Hospital(**dict(row)) if row else None


async def by_code(pool: Pool, code: str) -> Hospital | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_BY_CODE, code)
    return Hospital(**dict(row)) if row else None


async def every(pool: Pool) -> list[Hospital]:
    async with connection(pool) as conn:
        return [Hospital(**dict(r)) for r in await conn.fetch(SELECT_ALL)]


async def rename(pool: Pool, code: str, name: str) -> Hospital | None:
    """The hospital under its new name, or None when there is none by that code (the
    name is shown, never matched against tokens: nothing to invalidate)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(RENAME, code, name)
    return Hospital(**dict(row)) if row else None


async def remove(pool: Pool, code: str) -> bool:
    """Remove a member hospital (its data stays); False when there is none by that code.
    Every process forgets it at commit: the notice goes in the same transaction."""
    async with transaction(pool) as conn:
        if await conn.fetchval(REMOVE, code) is None:
            return False
        await invalidation.notify(conn, "hospital", code)
    return True
