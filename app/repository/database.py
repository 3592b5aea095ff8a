"""The PostgreSQL connection pool, and the one place asyncpg's failures are translated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg

from app.errors import BadRequest, StorageUnavailable
from app.observability import metrics

log = logging.getLogger(__name__)

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=60, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StorageUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, after asyncpg has rolled back any open transaction.

    The default resets the whole session (advisory locks, settings, listeners, cursors) with
    one more round trip on *every* release, two or three per request. The archive keeps no
    session state: it sets nothing, listens to nothing, and releases each advisory lock
    where it takes it (see :func:`try_lock` and the migration runner).
    """


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map connection-level failures to 503, and values the database cannot take (text with
    NUL, a number out of its column's range: both come from a request's input) to 400;
    anything else is a bug and stays a 500."""
    try:
        yield
    except (
        asyncpg.exceptions._base.DataError,  # client side: an argument that cannot be encoded
        asyncpg.exceptions.CharacterNotInRepertoireError,
        asyncpg.exceptions.UntranslatableCharacterError,
        asyncpg.exceptions.NumericValueOutOfRangeError,
    ) as exc:
        # The client-side DataError is also an InterfaceError: caught before the clause below.
        log.info("a value the database cannot take: %s", type(exc).__name__)
        raise BadRequest("a value in the request is out of range or contains a NUL character") from exc
    except (
        OSError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.InterfaceError,
    ) as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        metrics.DEPENDENCY_ERRORS.labels("database").inc()
        raise StorageUnavailable("the database is unavailable") from exc


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[asyncpg.Connection]:
    async with translate_errors(), pool.acquire() as conn:
        yield conn


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[asyncpg.Connection]:
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def try_lock(pool: Pool, lock_id: int) -> AsyncIterator[bool]:
    """Hold the session advisory lock ``lock_id`` for the block if no other session holds
    it; yields whether it is held. The lock goes with its connection, so a process that
    dies cannot leave it taken."""
    async with connection(pool) as conn:
        held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id))
        try:
            yield held
        finally:
            if held:
                # Shielded: a cancelled task must still let go, as the pool will not.
                await asyncio.shield(conn.execute("SELECT pg_advisory_unlock($1)", lock_id))


async def ping(pool: Pool) -> None:
    async with connection(pool) as conn:
        await conn.fetchval("SELECT 1")
