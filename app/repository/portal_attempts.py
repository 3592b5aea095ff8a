"""Counted attempts at the portal's unauthenticated forms, in fixed windows."""

from __future__ import annotations

from app.repository.database import Pool, transaction

# One more attempt in this window, atomically (concurrent workers each add theirs): the
# count including it.
COUNT = """
INSERT INTO portal_attempts (kind, key_hash, bucket, attempts) VALUES ($1, $2, $3, 1)
ON CONFLICT (kind, key_hash, bucket) DO UPDATE SET attempts = portal_attempts.attempts + 1
RETURNING attempts"""
# Windows before the current one count for nothing.
DELETE_OLD = "DELETE FROM portal_attempts WHERE bucket < $1"


async def count(pool: Pool, kind: str, keys: list[bytes], bucket: int) -> list[int]:
    """Count one attempt against each of ``keys`` in window ``bucket``; the counts."""
    async with transaction(pool) as conn:
        await conn.execute(DELETE_OLD, bucket)
        return [int(await conn.fetchval(COUNT, kind, key, bucket)) for key in keys]
