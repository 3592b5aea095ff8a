"""Background jobs: long work (an uploaded CD's import, a study sent out) run as tasks in
the server's event loop, with their progress and per-item outcomes in the database.

A job is queued, running, then done or failed. Its process refreshes a heartbeat while
it runs; at start-up (of any process on the database) jobs whose heartbeat stopped are
marked failed, so a job a restart interrupted is never reported running forever. A job
is not resumed: re-running an import or a send is safe and skips what is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.errors import FilmlessError, NotFound
from app.repository import jobs as repository
from app.repository.jobs import NewJob, Progress
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail

log = logging.getLogger(__name__)

#: Seconds between heartbeats of running jobs, and without one before a job is taken
#: for interrupted (several heartbeats: a busy database may delay one).
HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 90.0
#: Outcomes returned by one read of a job, at most.
MAX_OUTCOMES = 1000


class Reporter:
    """What a job's work calls to record its progress."""

    def __init__(self, archive: Archive, job_pk: int) -> None:
        self._archive = archive
        self._pk = job_pk

    async def __call__(self, progress: Progress, outcomes: Sequence[dict[str, Any]] = ()) -> None:
        await repository.progress(self._archive.pool, self._pk, progress, outcomes)


Work = Callable[[Reporter], Awaitable[None]]


class Jobs:
    """The jobs this process runs."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    async def open(self) -> None:
        interrupted = await repository.interrupt_stale(self.archive.pool, STALE_SECONDS)
        if interrupted:
            log.warning("%d job(s) were interrupted by a stop of the archive; marked failed", interrupted)
        self._heartbeat = asyncio.create_task(self._beat())

    async def create(self, kind: str, trail: Trail, parameters: dict[str, Any]) -> NewJob:
        hospital_pk = trail.scope.hospital_pk
        if hospital_pk is None:
            raise NotFound("jobs belong to a member hospital's staff")
        return await repository.create(
            self.archive.pool, kind, hospital_pk, trail.event.subject or "", parameters
        )

    def launch(self, job: NewJob, work: Work) -> None:
        task = asyncio.create_task(self._run(job, work), name=f"job-{job.pk}")
        self._tasks[job.pk] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.pk, None))

    async def wait(self) -> None:
        """Until every job launched so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop: running jobs are cancelled (their work undoes what it had in flight) and
        marked failed."""
        for task in list(self._tasks.values()):
            task.cancel()
        await self.wait()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

    async def _run(self, job: NewJob, work: Work) -> None:
        pool = self.archive.pool
        failure: str | None = "internal error"
        try:
            await repository.start(pool, job.pk)
            await work(Reporter(self.archive, job.pk))
            failure = None
        except asyncio.CancelledError:
            failure = "interrupted: the archive stopped"
            raise
        except FilmlessError as exc:
            failure = exc.message
        except Exception:
            log.exception("job %s failed", job.id)
        finally:
            try:
                await asyncio.shield(repository.finish(pool, job.pk, failure))
            except Exception:
                # Its heartbeat stops with it: the next start-up marks it failed.
                log.warning("could not record the end of job %s", job.id)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if self._tasks:
                try:
                    await repository.heartbeat(self.archive.pool, list(self._tasks))
                except FilmlessError:
                    log.warning("could not refresh the jobs' heartbeat")


async def read(archive: Archive, trail: Trail, job_id: str, limit: int, offset: int) -> dict[str, Any]:
    """A job of the caller's hospital, with its progress and a page of its outcomes."""
    hospital_pk = trail.scope.hospital_pk
    job = await repository.get(archive.pool, job_id, hospital_pk) if hospital_pk is not None else None
    if job is None:
        raise NotFound(f"no job {job_id}")
    outcomes = await repository.outcomes(archive.pool, job.pk, min(limit, MAX_OUTCOMES), offset)
    trail.note(
        studies=(o.get("study_instance_uid") or "" for o in outcomes),
        instances=(o.get("sop_instance_uid") or "" for o in outcomes),
    )
    await audit.commit(archive, trail, 200)
    return {
        "id": job.id,
        "kind": job.kind,
        "hospital": job.hospital,
        "subject": job.subject,
        "state": job.state,
        "parameters": job.parameters,
        "progress": {
            "items_total": job.items_total,
            "items_done": job.items_done,
            "bytes_total": job.bytes_total,
            "bytes_done": job.bytes_done,
        },
        "counts": job.counts,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "outcomes": outcomes,
        "outcomes_offset": offset,
    }
