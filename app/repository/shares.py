"""Share links: rows, their studies, sessions, uses and failed attempts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from app.repository import invalidation
from app.repository.database import Pool, connection, transaction

_SHARE_COLUMNS = """s.id, s.hospital_pk, h.code AS hospital, h.name AS hospital_name, s.created_by,
       s.created_at, s.expires_at, s.max_uses, s.uses, s.permissions, s.recipient, s.challenge,
       s.challenge_hash, s.parent_id, s.revoked_at, s.revoked_by, s.deidentify, s.notify_email,
       ARRAY(SELECT ss.study_instance_uid FROM share_studies ss WHERE ss.share_id = s.id
             ORDER BY ss.study_instance_uid) AS studies"""
_SHARE = f"""
SELECT {_SHARE_COLUMNS}
FROM shares s JOIN hospitals h ON h.pk = s.hospital_pk"""

INSERT_SHARE = """
INSERT INTO shares (id, token_hash, code_hash, hospital_pk, created_by, expires_at, max_uses, permissions,
                    recipient, challenge, challenge_hash, parent_id, deidentify, notify_email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"""
INSERT_STUDIES = "INSERT INTO share_studies (share_id, study_instance_uid) SELECT $1, unnest($2::text[])"
SELECT_BY_ID = _SHARE + " WHERE s.id = $1"
SELECT_BY_CODE = _SHARE + " WHERE s.code_hash = $1"
# A creator's own shares, newest first (a patient's, made from the portal).
SELECT_BY_CREATOR = _SHARE + " WHERE s.created_by = $1 ORDER BY s.created_at DESC, s.id LIMIT $2"
# The share a secret opens, as a link's token ($1) or a session's ($2), in one round trip;
# a session's own end, which may come before the share's.
SELECT_BY_SECRET = f"""
SELECT {_SHARE_COLUMNS}, false AS via_session, NULL::timestamptz AS session_expires_at
FROM shares s JOIN hospitals h ON h.pk = s.hospital_pk WHERE s.token_hash = $1
UNION ALL
SELECT {_SHARE_COLUMNS}, true, x.expires_at
FROM shares s JOIN hospitals h ON h.pk = s.hospital_pk JOIN share_sessions x ON x.share_id = s.id
WHERE x.token_hash = $2 AND x.expires_at > now()
LIMIT 1"""
INSERT_SESSION = "INSERT INTO share_sessions (token_hash, share_id, expires_at) VALUES ($1, $2, $3)"
# A use is taken only from a share that is live and not exhausted, atomically; the last
# one tells every process (app.repository.invalidation) to forget the share, at commit.
TAKE_USE = """
WITH used AS (
    UPDATE shares SET uses = uses + 1
    WHERE id = $1 AND revoked_at IS NULL AND expires_at > now() AND (max_uses IS NULL OR uses < max_uses)
    RETURNING id, uses, max_uses
)
SELECT uses, CASE WHEN uses >= max_uses THEN pg_notify($2, 'share:' || id)::text END AS told FROM used"""
# Revoking a share revokes every share minted from it, at any depth.
REVOKE = """
WITH RECURSIVE tree AS (
    SELECT id FROM shares WHERE id = $1
    UNION SELECT s.id FROM shares s JOIN tree t ON s.parent_id = t.id
)
UPDATE shares SET revoked_at = now(), revoked_by = $2
WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL
RETURNING id"""
# Expired sessions and failures older than any lockout window serve no purpose.
DELETE_EXPIRED_SESSIONS = "DELETE FROM share_sessions WHERE expires_at < now()"
DELETE_OLD_FAILURES = "DELETE FROM share_failures WHERE at < now() - make_interval(secs => $1)"
INSERT_FAILURE = "INSERT INTO share_failures (client_address, share_id) VALUES ($1, $2)"
COUNT_FAILURES = """
SELECT
  (SELECT count(*) FROM share_failures
   WHERE share_id = $1 AND at > now() - make_interval(secs => $3)),
  (SELECT count(*) FROM share_failures
   WHERE client_address = $2 AND at > now() - make_interval(secs => $3))"""
# Studies a creator may share: within their scope ($2/$3 as Scope.filters gives them).
SELECT_SHAREABLE = """
SELECT st.study_instance_uid, p.patient_id, p.patient_name, p.patient_birth_date, st.hospital_pk
FROM studies st JOIN patients p ON p.pk = st.patient_pk
WHERE st.study_instance_uid = ANY($1::text[]) AND st.num_instances > 0
  AND ($2::bigint IS NULL OR st.hospital_pk = $2)
  AND ($3::text[] IS NULL OR st.study_instance_uid = ANY($3::text[]))"""
# Every UID of the shared studies, to translate a de-identified share's UIDs back.
SELECT_SHARED_UIDS = """
SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid
FROM studies st JOIN series se ON se.study_pk = st.pk JOIN instances i ON i.series_pk = se.pk
WHERE i.status = 1 AND st.study_instance_uid = ANY($1::text[])"""
# Instances whose Burned In Annotation (0028,0301) is not NO: their pixels may identify.
COUNT_BURNED_IN_RISK = """
SELECT count(*) FROM studies st JOIN series se ON se.study_pk = st.pk JOIN instances i ON i.series_pk = se.pk
WHERE i.status = 1 AND st.study_instance_uid = ANY($1::text[])
  AND coalesce(upper(trim(i.metadata -> '00280301' -> 'Value' ->> 0)), '') <> 'NO'"""
SELECT_SUMMARIES = """
SELECT st.study_instance_uid, st.study_date, st.study_time, st.study_description, st.accession_number,
       st.modalities, st.num_instances, st.num_series, p.patient_name, p.patient_id, p.patient_birth_date,
       h.code AS hospital, h.name AS hospital_name
FROM studies st JOIN patients p ON p.pk = st.patient_pk JOIN hospitals h ON h.pk = st.hospital_pk
WHERE st.study_instance_uid = ANY($1::text[]) AND st.num_instances > 0
ORDER BY st.study_date DESC NULLS LAST, st.pk"""


@dataclass(frozen=True)
class ShareRow:
    id: str
    hospital_pk: int
    hospital: str
    hospital_name: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    max_uses: int | None
    uses: int
    permissions: list[str]
    recipient: str | None
    challenge: str | None
    challenge_hash: bytes | None
    parent_id: str | None
    revoked_at: dt.datetime | None
    revoked_by: str | None
    deidentify: bool
    notify_email: str | None
    studies: list[str]

    def state(self, now: dt.datetime) -> str:
        """active, revoked, expired or exhausted."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "exhausted"
        return "active"


@dataclass(frozen=True)
class NewShare:
    id: str
    token_hash: bytes
    code_hash: bytes
    hospital_pk: int
    created_by: str
    expires_at: dt.datetime
    max_uses: int | None
    permissions: list[str]
    recipient: str | None
    challenge: str | None
    challenge_hash: bytes | None
    parent_id: str | None
    studies: list[str]
    deidentify: bool = False
    notify_email: str | None = None


async def insert(pool: Pool, share: NewShare) -> None:
    async with transaction(pool) as conn:
        await conn.execute(
            INSERT_SHARE, share.id, share.token_hash, share.code_hash, share.hospital_pk, share.created_by,
            share.expires_at, share.max_uses, share.permissions, share.recipient, share.challenge,
            share.challenge_hash, share.parent_id, share.deidentify, share.notify_email,
        )  # fmt: skip
        await conn.execute(INSERT_STUDIES, share.id, share.studies)


async def _one(pool: Pool, sql: str, *args: Any) -> ShareRow | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(sql, *args)
    return ShareRow(**dict(row)) if row else None


async def by_id(pool: Pool, share_id: str) -> ShareRow | None:
    return await _one(pool, SELECT_BY_ID, share_id)


async def by_code(pool: Pool, code_hash: bytes) -> ShareRow | None:
    return await _one(pool, SELECT_BY_CODE, code_hash)


@dataclass(frozen=True)
class Opened:
    """The share a secret opens, and how."""

    share: ShareRow
    via_session: bool
    #: A session's end (never after the share's); None for a link's token.
    session_expires_at: dt.datetime | None


async def by_secret(pool: Pool, token_hash: bytes, session_hash: bytes) -> Opened | None:
    """The share whose link token hashes to ``token_hash``, or whose live session's secret
    hashes to ``session_hash``."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_BY_SECRET, token_hash, session_hash)
    if row is None:
        return None
    found = dict(row)
    via, until = found.pop("via_session"), found.pop("session_expires_at")
    return Opened(ShareRow(**found), via, until)


async def add_session(pool: Pool, session_hash: bytes, share_id: str, expires_at: dt.datetime) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT_SESSION, session_hash, share_id, expires_at)


@dataclass(frozen=True)
class Use:
    """A use taken; ``last`` when the share has none left now."""

    last: bool


async def take_use(pool: Pool, share_id: str) -> Use | None:
    """One use of a live share, or None (revoked, expired, used up)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(TAKE_USE, share_id, invalidation.CHANNEL)
    return None if row is None else Use(last=row["told"] is not None)


async def by_creator(pool: Pool, created_by: str, limit: int) -> list[ShareRow]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_BY_CREATOR, created_by, limit)
    return [ShareRow(**dict(r)) for r in rows]


async def revoke(pool: Pool, share_id: str, by: str) -> list[str]:
    """Revoke a share and its descendants; the ids revoked now. Every process forgets
    them at commit: the notices go in the same transaction."""
    async with transaction(pool) as conn:
        revoked = [r["id"] for r in await conn.fetch(REVOKE, share_id, by)]
        await invalidation.notify_each(conn, "share", revoked)
    return revoked


async def tidy(pool: Pool, failure_window: int) -> None:
    async with connection(pool) as conn:
        await conn.execute(DELETE_EXPIRED_SESSIONS)
        await conn.execute(DELETE_OLD_FAILURES, failure_window)


async def record_failure(pool: Pool, client: str | None, share_id: str | None) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT_FAILURE, client, share_id)


async def failures(pool: Pool, share_id: str | None, client: str | None, window: int) -> tuple[int, int]:
    """Recent failed attempts on ``share_id`` and from ``client`` in the last ``window`` s."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(COUNT_FAILURES, share_id, client, window)
    return int(row[0]), int(row[1])


async def shareable(
    pool: Pool, uids: list[str], hospital: int | None, studies: list[str] | None
) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        return [dict(r) for r in await conn.fetch(SELECT_SHAREABLE, uids, hospital, studies)]


async def summaries(pool: Pool, uids: list[str]) -> list[dict[str, Any]]:
    """What the access page shows of the shared studies (those still stored)."""
    async with connection(pool) as conn:
        return [dict(r) for r in await conn.fetch(SELECT_SUMMARIES, uids)]


@dataclass(frozen=True)
class ShareFilter:
    hospital_pk: int
    study_uid: str | None = None
    patient_id: str | None = None
    created_by: str | None = None
    state: str | None = None


async def search(pool: Pool, f: ShareFilter, limit: int, offset: int) -> list[ShareRow]:
    clauses, values = ["s.hospital_pk = $1"], [f.hospital_pk]

    def add(sql: str, value: Any) -> None:
        values.append(value)
        clauses.append(sql.replace("?", f"${len(values)}"))

    if f.study_uid:
        add(
            "EXISTS (SELECT 1 FROM share_studies x WHERE x.share_id = s.id AND x.study_instance_uid = ?)",
            f.study_uid,
        )
    if f.patient_id:
        add(
            "EXISTS (SELECT 1 FROM share_studies x "
            "JOIN studies st ON st.study_instance_uid = x.study_instance_uid "
            "JOIN patients p ON p.pk = st.patient_pk WHERE x.share_id = s.id AND p.patient_id = ?)",
            f.patient_id,
        )
    if f.created_by:
        add("s.created_by = ?", f.created_by)
    state_sql = {
        "revoked": "s.revoked_at IS NOT NULL",
        "expired": "s.revoked_at IS NULL AND s.expires_at <= now()",
        "exhausted": "s.revoked_at IS NULL AND s.expires_at > now() AND s.uses >= s.max_uses",
        "active": "s.revoked_at IS NULL AND s.expires_at > now() "
        "AND (s.max_uses IS NULL OR s.uses < s.max_uses)",
    }
    if f.state:
        clauses.append(state_sql[f.state])
    sql = (
        f"{_SHARE} WHERE {' AND '.join(clauses)} ORDER BY s.created_at DESC, s.id "
        f"LIMIT ${len(values) + 1} OFFSET ${len(values) + 2}"
    )
    async with connection(pool) as conn:
        rows = await conn.fetch(sql, *values, limit, offset)
    return [ShareRow(**dict(r)) for r in rows]


async def shared_uids(pool: Pool, studies: list[str]) -> list[tuple[str, str, str]]:
    """``(study, series, instance)`` UIDs of every stored instance of ``studies``."""
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_SHARED_UIDS, studies)
    return [(r[0], r[1], r[2]) for r in rows]


async def burned_in_risk(pool: Pool, studies: list[str]) -> int:
    """How many instances of ``studies`` may show identity burned into their pixels."""
    async with connection(pool) as conn:
        return int(await conn.fetchval(COUNT_BURNED_IN_RISK, studies))
