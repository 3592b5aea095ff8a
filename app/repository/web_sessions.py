"""Browser sessions (the staff console), by the hash of their identifier."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from app.repository.database import Pool, connection

INSERT = """
INSERT INTO web_sessions (id_hash, kind, data, csrf, expires_at) VALUES ($1, $2, $3::jsonb, $4, $5)"""
SELECT = """
SELECT kind, data, csrf, expires_at FROM web_sessions WHERE id_hash = $1 AND expires_at > now()"""
DELETE = "DELETE FROM web_sessions WHERE id_hash = $1 RETURNING kind, data, csrf, expires_at"
DELETE_EXPIRED = "DELETE FROM web_sessions WHERE expires_at <= now()"


@dataclass(frozen=True)
class WebSession:
    kind: str
    data: dict[str, Any]
    csrf: str
    expires_at: dt.datetime


def _session(row: Any) -> WebSession:
    data = row["data"]
    return WebSession(
        row["kind"], json.loads(data) if isinstance(data, str) else data, row["csrf"], row["expires_at"]
    )


async def add(
    pool: Pool, id_hash: bytes, kind: str, data: dict[str, Any], csrf: str, expires_at: dt.datetime
) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT, id_hash, kind, json.dumps(data), csrf, expires_at)
        # Sessions are few; the expired ones go when new ones come.
        await conn.execute(DELETE_EXPIRED)


async def get(pool: Pool, id_hash: bytes) -> WebSession | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT, id_hash)
    return _session(row) if row else None


async def take(pool: Pool, id_hash: bytes) -> WebSession | None:
    """Remove a session and return what it was (None when there was none, or it expired)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(DELETE, id_hash)
    if row is None or row["expires_at"] <= dt.datetime.now(dt.UTC):
        return None
    return _session(row)
