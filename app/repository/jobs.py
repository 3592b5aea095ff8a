"""Background jobs' rows: state, progress, and each item's outcome."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.repository.database import Pool, connection, transaction

_COLUMNS = """j.pk, j.id, j.kind, h.code AS hospital, j.hospital_pk, j.subject, j.state,
j.parameters::text AS parameters, j.items_total, j.items_done, j.bytes_total, j.bytes_done,
j.counts::text AS counts, j.error, j.created_at, j.started_at, j.finished_at, j.heartbeat_at"""
INSERT = """
INSERT INTO jobs (id, kind, hospital_pk, subject, parameters) VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING pk"""
SELECT_ONE = f"""SELECT {_COLUMNS} FROM jobs j JOIN hospitals h ON h.pk = j.hospital_pk
WHERE j.id = $1 AND j.hospital_pk = $2"""
SELECT_OUTCOMES = """SELECT outcome::text AS outcome FROM job_outcomes WHERE job_pk = $1
ORDER BY position LIMIT $2 OFFSET $3"""
START = """UPDATE jobs SET state = 'running', started_at = now(), heartbeat_at = now()
WHERE pk = $1 AND state = 'queued'"""
PROGRESS = """
UPDATE jobs SET items_total = $2, items_done = $3, bytes_total = $4, bytes_done = $5, counts = $6::jsonb,
       heartbeat_at = now()
WHERE pk = $1 RETURNING (SELECT coalesce(max(position) + 1, 0) FROM job_outcomes WHERE job_pk = $1)"""
INSERT_OUTCOMES = """
INSERT INTO job_outcomes (job_pk, position, outcome)
SELECT $1, $2 + n - 1, o FROM unnest($3::jsonb[]) WITH ORDINALITY AS t(o, n)"""
HEARTBEAT = (
    "UPDATE jobs SET heartbeat_at = now() WHERE pk = ANY($1::bigint[]) AND state IN ('queued', 'running')"
)
FINISH = """UPDATE jobs SET state = $2, error = $3, finished_at = now(), heartbeat_at = now()
WHERE pk = $1 AND state IN ('queued', 'running')"""
INTERRUPT_STALE = """
UPDATE jobs SET state = 'failed', finished_at = now(),
       error = 'interrupted: the archive process running it stopped'
WHERE state IN ('queued', 'running') AND heartbeat_at < now() - make_interval(secs => $1)
RETURNING pk"""


@dataclass(frozen=True)
class Job:
    pk: int
    id: str
    kind: str
    hospital: str
    hospital_pk: int
    subject: str
    state: str
    parameters: dict[str, Any]
    items_total: int
    items_done: int
    bytes_total: int
    bytes_done: int
    counts: dict[str, int]
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime


@dataclass(frozen=True)
class NewJob:
    pk: int
    id: str


async def create(pool: Pool, kind: str, hospital_pk: int, subject: str, parameters: dict[str, Any]) -> NewJob:
    job_id = secrets.token_urlsafe(12)
    async with connection(pool) as conn:
        pk = await conn.fetchval(INSERT, job_id, kind, hospital_pk, subject, json.dumps(parameters))
    return NewJob(pk, job_id)


async def get(pool: Pool, job_id: str, hospital_pk: int) -> Job | None:
    """The job ``job_id`` if it is ``hospital_pk``'s."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_ONE, job_id, hospital_pk)
    return None if row is None else _job(row)


async def outcomes(pool: Pool, job_pk: int, limit: int, offset: int) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_OUTCOMES, job_pk, limit, offset)
    return [json.loads(r["outcome"]) for r in rows]


async def start(pool: Pool, job_pk: int) -> None:
    async with connection(pool) as conn:
        await conn.execute(START, job_pk)


@dataclass(frozen=True)
class Progress:
    items_total: int
    items_done: int
    bytes_total: int
    bytes_done: int
    counts: dict[str, int]


async def progress(pool: Pool, job_pk: int, done: Progress, new_outcomes: Sequence[dict[str, Any]]) -> None:
    """Record the job's progress and append the outcomes of the items just finished."""
    async with transaction(pool) as conn:
        position = await conn.fetchval(
            PROGRESS,
            job_pk,
            done.items_total,
            done.items_done,
            done.bytes_total,
            done.bytes_done,
            json.dumps(done.counts),
        )
        if new_outcomes:
            await conn.execute(INSERT_OUTCOMES, job_pk, position, [json.dumps(o) for o in new_outcomes])


async def heartbeat(pool: Pool, job_pks: Sequence[int]) -> None:
    async with connection(pool) as conn:
        await conn.execute(HEARTBEAT, list(job_pks))


async def finish(pool: Pool, job_pk: int, failed: str | None) -> None:
    """Done, or failed with ``failed`` as the reason."""
    async with connection(pool) as conn:
        await conn.execute(FINISH, job_pk, "failed" if failed else "done", failed)


async def interrupt_stale(pool: Pool, stale_after: float) -> int:
    """Mark failed the unfinished jobs whose heartbeat stopped ``stale_after`` seconds ago
    (their process died); how many."""
    async with connection(pool) as conn:
        return len(await conn.fetch(INTERRUPT_STALE, stale_after))


def _job(row: asyncpg.Record) -> Job:
    data = dict(row)
    data["parameters"] = json.loads(data["parameters"])
    data["counts"] = json.loads(data["counts"])
    return Job(**data)
