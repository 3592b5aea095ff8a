"""Read events written behind the request, in batches, and the audit sink.

A read (QIDO-RS, WADO-RS, metadata, WADO-URI) changes nothing, so nothing ties its event
to a transaction of its own: the request hands the event to a bounded queue before its
first byte leaves and goes on; one background task writes whatever has queued up in one
INSERT and appends the batch to the audit sink. Under load a batch holds many requests'
events, so the trail costs a fraction of a round trip per read.

What the audit guarantees stays (PS3.15 A.5 asks for every access to be recorded):

- Back-pressure, never loss: a request that finds the queue full waits for room; after
  :data:`_PUT_TIMEOUT` it fails with 503, unserved, rather than served unrecorded.
- A clean shutdown (the lifespan's exit, which a worker's SIGTERM leads to) writes every
  queued event before the pool closes. Only a process killed outright loses the events
  of its last moments (at most the queue).
- The database away: the batch is kept and written again until it goes in (the queue
  fills meanwhile, and requests wait). An event the table itself refuses is written
  alone, and if it still fails it is logged (its transaction, never its values) and
  counted in ``filmless_audit_unwritable``: as before, when such a request failed.
- Visibility: an event is in the database within a batch's time after its response
  started (milliseconds); :meth:`AuditWriter.flush` waits for those queued so far, which
  the audit queries of this process do first. Another process's are seen once written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from dataclasses import replace
from pathlib import Path

from app.dicom.audit_message import audit_message
from app.errors import StorageUnavailable
from app.observability import metrics
from app.repository import audit as repository
from app.repository.audit import AuditEvent
from app.repository.database import Pool
from app.settings import Settings

log = logging.getLogger(__name__)

#: Events written in one statement, at most.
_BATCH = 500
#: Seconds the writer lets events gather once the first has come (unless a flush waits):
#: concurrent requests then share a statement instead of each waking the writer for its own.
_LINGER = 0.002
#: Seconds a request waits for room in a full queue before it is refused (503).
_PUT_TIMEOUT = 30.0
#: Seconds a shutdown waits for the queue to be written (the database may be away).
_CLOSE_TIMEOUT = 30.0
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0


class AuditSink:
    """The file DICOM audit messages are appended to (``FILMLESS_AUDIT_SINK``), as JSON lines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: One append at a time, so concurrent batches' lines never interleave.
        self._lock = asyncio.Lock()

    async def append(self, events: list[AuditEvent]) -> None:
        path, source = self.settings.audit_sink, self.settings.audit_source_id
        if path is None or not events:
            return
        lines = "".join(json.dumps(audit_message(e, source), separators=(",", ":")) + "\n" for e in events)
        try:
            async with self._lock:
                await asyncio.to_thread(_append, path, lines)
        except OSError as exc:
            # The database holds the trail; the sink is a copy for the ATNA repository.
            log.warning("cannot write to the audit sink: %s", exc)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


class AuditWriter:
    """The bounded queue of read events and the task that writes them."""

    def __init__(self, pool: Pool, sink: AuditSink, capacity: int) -> None:
        self.pool, self.sink = pool, sink
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(capacity)
        self._task: asyncio.Task[None] | None = None
        # Events queued and written so far, in queue order: a flush waits for the count
        # queued when it began to be written.
        self._queued = self._written = 0
        self._progress = asyncio.Condition()
        #: Set while someone waits for the queue to be written: no lingering then.
        self._hurry = asyncio.Event()
        #: Set when the shutdown has begun writing what is queued.
        self.closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def put(self, event: AuditEvent) -> None:
        """Queue ``event``, waiting for room when the queue is full (never dropping it).
        What is recorded is the event as it is now, at the time it happened."""
        event = replace(event, at=event.at or dt.datetime.now(dt.UTC))
        if not self.running:
            # Not started, or shut down (a request finishing late): written now.
            await self._write([event])
            return
        if self._queue.full():
            try:
                # Not wait_for: no task between the event entering the queue and being
                # counted, so the count follows the queue's order (see flush).
                async with asyncio.timeout(_PUT_TIMEOUT):
                    await self._queue.put(event)
            except TimeoutError:
                raise StorageUnavailable("the audit trail cannot be written") from None
        else:
            self._queue.put_nowait(event)
        self._queued += 1

    async def flush(self) -> None:
        """Wait until every event queued before this call is in the database."""
        target = self._queued
        self._hurry.set()
        try:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target or not self.running)
        finally:
            self._hurry.clear()

    async def close(self) -> None:
        """Write what is queued (before the pool closes), then stop."""
        self.closing = True
        try:
            await asyncio.wait_for(self.flush(), _CLOSE_TIMEOUT)
        except TimeoutError:
            log.error("shutting down with %d audit events not written", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_LINGER):
                        await self._hurry.wait()
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            self._written += len(batch)
            async with self._progress:
                self._progress.notify_all()

    async def _write(self, batch: list[AuditEvent]) -> None:
        if not await self._insert(batch):
            # One of them is refused by the table: the others go in one by one.
            for event in batch:
                if not await self._insert([event]):
                    log.error("an audit event of %s could not be recorded", event.transaction)
                    metrics.AUDIT_UNWRITABLE.labels(event.transaction).inc()
        metrics.AUDIT_BATCHES.inc()
        await self.sink.append(batch)

    async def _insert(self, events: list[AuditEvent]) -> bool:
        """Whether ``events`` went in; tried again for as long as the database is away."""
        delay = _RETRY_FIRST
        while True:
            try:
                await repository.record_many(self.pool, events)
                return True
            except StorageUnavailable:
                log.warning("audit events kept until the database is back (%d)", len(events))
                await asyncio.sleep(delay)
                delay = min(2 * delay, _RETRY_MAX)
            except Exception as exc:  # what the table refuses; the writer must go on
                log.warning("audit events refused: %s", type(exc).__name__)
                return False
