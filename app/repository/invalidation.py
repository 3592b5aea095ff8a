"""Invalidating in-process caches across every process on one database, through
PostgreSQL LISTEN/NOTIFY.

Several ``filmless serve`` processes (workers of one node, or nodes behind a load balancer)
share one PostgreSQL. A process that changes what another may have cached (a hospital
removed) sends a NOTIFY on :data:`CHANNEL` *in the transaction that makes the change*:
PostgreSQL delivers it at commit, and only then, so no process can see the notice before
the change, nor miss the notice of a change that committed.

Each process listens on one dedicated connection (the pool's connections are shared and
reset by nobody, see :func:`app.repository.database._keep_session`). A notice sent while
that connection is down is lost to it, so a process must not trust its invalidatable
caches then: :attr:`Invalidations.live` is false from the moment the connection is lost
until a new one listens again, and every subscriber is flushed on reconnecting. A cache
consults ``live`` before serving an entry, and ``generation`` to refuse to store an entry
looked up before a notice or a flush.

Which caches there are, and why each is safe across processes:

- hospital code -> key (:mod:`app.security.authenticator`): invalidated here.
- verified token claims (ibid.): a pure function of the token's bytes and the signing
  keys, neither of which is in the database: nothing on another node can change it.
- thumbnails by object key (:class:`app.lru.LruBytes`): object keys are random, never
  reused, and name immutable content; an entry is only looked up after the request found
  and authorised the instance in the database, so a deleted study is refused before it.
- a share by its secret (:class:`app.services.shares.Shares`): invalidated here when it is
  revoked (with every share minted from it) or used up, in the transaction that does it;
  its expiry (and its session's) is checked from the remembered row on every use. A
  lockout bars answering a challenge or entering a code, never a secret already open,
  so it changes nothing remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

#: The NOTIFY channel every process listens on.
CHANNEL = "filmless_invalidate"
#: A notice's payload is ``<kind>:<key>``, e.g. ``hospital:LOCAL``.
NOTIFY = "SELECT pg_notify($1, $2)"
_RETRY_SECONDS = 1.0
#: A connection the network silently dropped raises no error until used: it is pinged
#: this often, and given up when it does not answer in time.
_PING_SECONDS = 10.0
_PING_TIMEOUT = 5.0

Subscriber = Callable[[str | None, str | None], None]
"""Called with (kind, key) for a notice, or (None, None) to flush everything."""


NOTIFY_EACH = "SELECT pg_notify($1, $2 || ':' || key) FROM unnest($3::text[]) AS key"


async def notify(conn: asyncpg.Connection, kind: str, key: str) -> None:
    """Tell every process (this one included) that ``kind:key`` changed; delivered when the
    transaction ``conn`` is in commits, and not at all if it rolls back."""
    await conn.execute(NOTIFY, CHANNEL, f"{kind}:{key}")


async def notify_each(conn: asyncpg.Connection, kind: str, keys: list[str]) -> None:
    """:func:`notify` of each of ``keys``, in one round trip."""
    if keys:
        await conn.execute(NOTIFY_EACH, CHANNEL, kind, keys)


class Invalidations:
    """The listening side: one connection, reconnected whenever it is lost."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._subscribers: list[Subscriber] = []
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Increases at every notice and flush: a lookup begun under an older generation
        #: must not be remembered, it may predate the change the notice announced.
        self.generation = 0

    @property
    def live(self) -> bool:
        """Whether every change committed since the last flush has been (or will be) seen."""
        return self._conn is not None and not self._conn.is_closed() and not self._lost.is_set()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def start(self) -> None:
        """Listen before returning (start-up fails if the database cannot be reached), then
        keep listening in the background."""
        await self._connect()
        self._task = asyncio.create_task(self._keep_listening(), name="invalidations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=5)

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": "filmless-invalidations"}
        )
        self._lost.clear()
        conn.add_termination_listener(lambda _: self._lost.set())
        await conn.add_listener(CHANNEL, self._received)
        # Anything cached before now may predate a notice this connection never saw.
        self._conn = conn
        self._flush()

    async def _keep_listening(self) -> None:
        while True:
            await self._until_lost()
            log.warning("the invalidation listener lost its database connection; caches bypassed")
            self._flush()
            while True:
                try:
                    await self._connect()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                    log.warning("cannot listen for invalidations yet: %s", type(exc).__name__)
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                log.info("the invalidation listener is back; caches flushed")
                break

    async def _until_lost(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), _PING_SECONDS)
                return
            assert self._conn is not None
            try:
                await self._conn.fetchval("SELECT 1", timeout=_PING_TIMEOUT)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                self._lost.set()
                self._conn.terminate()
                return

    def changed_here(self, kind: str, key: str) -> None:
        """``kind:key`` changed, committed by this process: its caches forget it now, not
        when its own notice comes back (the other processes' do then)."""
        self._received(None, 0, CHANNEL, f"{kind}:{key}")

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, key = payload.partition(":")
        self.generation += 1
        for subscriber in self._subscribers:
            subscriber(kind, key)

    def _flush(self) -> None:
        self.generation += 1
        for subscriber in self._subscribers:
            subscriber(None, None)
