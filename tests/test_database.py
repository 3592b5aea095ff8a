"""The connection pool without its per-release session reset: what a request leaves on a
connection (an open transaction, an advisory lock) does not reach the next user."""

from __future__ import annotations

import asyncpg

from app.repository.database import connection, create_pool, try_lock


async def test_released_connections_carry_nothing_over(migrated_db: str):
    pool = await create_pool(migrated_db, min_size=1, max_size=1)
    other = await asyncpg.connect(migrated_db)
    try:
        # A transaction abandoned on a connection is rolled back when it is released.
        async with connection(pool) as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE leftover (x int)")
        async with connection(pool) as conn:
            assert await conn.fetchval("SELECT to_regclass('pg_temp.leftover')") is None
            assert not conn.is_in_transaction()
        # The sweep's lock is held for its block only, on the single pooled connection.
        async with try_lock(pool, 4242) as held:
            assert held
            assert not await other.fetchval("SELECT pg_try_advisory_lock(4242)")
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
        await other.execute("SELECT pg_advisory_unlock(4242)")
    finally:
        await other.close()
        await pool.close()
