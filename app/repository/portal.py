"""The patient portal: enrolment codes, accounts, their patients, sign-in links, sessions."""

from __future__ import annotations

import datetime as dt

from app.repository.database import Pool, connection, transaction

INSERT_CODE = """
INSERT INTO enrolment_codes (code_hash, hospital_pk, patient_id, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5)"""
# A code is spent by the first who types it while it lasts: one UPDATE, so once only.
SPEND_CODE = """
UPDATE enrolment_codes SET used_at = now()
WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING hospital_pk, patient_id"""
UPSERT_ACCOUNT = """
INSERT INTO portal_accounts (email) VALUES ($1)
ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
RETURNING pk"""
SELECT_ACCOUNT = "SELECT pk FROM portal_accounts WHERE email = $1"
LINK_PATIENT = """
INSERT INTO portal_patients (account_pk, hospital_pk, patient_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING"""
INSERT_LINK = "INSERT INTO portal_signin_links (token_hash, account_pk, expires_at) VALUES ($1, $2, $3)"
SPEND_LINK = """
UPDATE portal_signin_links SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING account_pk"""
INSERT_SESSION = "INSERT INTO portal_sessions (token_hash, account_pk, expires_at) VALUES ($1, $2, $3)"
SELECT_SESSION = "SELECT account_pk FROM portal_sessions WHERE token_hash = $1 AND expires_at > now()"
DELETE_SESSION = "DELETE FROM portal_sessions WHERE token_hash = $1"
# The studies of an account's patients, matched on hospital and patient ID together.
SELECT_STUDIES = """
SELECT st.study_instance_uid
FROM portal_patients pp
JOIN patients p ON p.patient_id = pp.patient_id
JOIN studies st ON st.patient_pk = p.pk AND st.hospital_pk = pp.hospital_pk
WHERE pp.account_pk = $1 AND st.num_instances > 0"""
PATIENT_KNOWN = """
SELECT EXISTS (SELECT 1 FROM studies st JOIN patients p ON p.pk = st.patient_pk
               WHERE st.hospital_pk = $1 AND p.patient_id = $2 AND st.num_instances > 0)"""


async def add_code(
    pool: Pool, code_hash: bytes, hospital_pk: int, patient_id: str, by: str, expires_at: dt.datetime
) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT_CODE, code_hash, hospital_pk, patient_id, by, expires_at)


async def patient_known(pool: Pool, hospital_pk: int, patient_id: str) -> bool:
    async with connection(pool) as conn:
        return bool(await conn.fetchval(PATIENT_KNOWN, hospital_pk, patient_id))


async def enrol(pool: Pool, code_hash: bytes, email: str) -> int | None:
    """Spend the code and link its patient to the account of ``email`` (made if new);
    the account, or None when the code opens nothing (unknown, used or expired)."""
    async with transaction(pool) as conn:
        spent = await conn.fetchrow(SPEND_CODE, code_hash)
        if spent is None:
            return None
        account: int = await conn.fetchval(UPSERT_ACCOUNT, email)
        await conn.execute(LINK_PATIENT, account, spent["hospital_pk"], spent["patient_id"])
        return account


async def account_of(pool: Pool, email: str) -> int | None:
    async with connection(pool) as conn:
        found: int | None = await conn.fetchval(SELECT_ACCOUNT, email)
    return found


async def add_link(pool: Pool, token_hash: bytes, account: int, expires_at: dt.datetime) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT_LINK, token_hash, account, expires_at)


async def spend_link(pool: Pool, token_hash: bytes) -> int | None:
    async with connection(pool) as conn:
        found: int | None = await conn.fetchval(SPEND_LINK, token_hash)
    return found


async def add_session(pool: Pool, token_hash: bytes, account: int, expires_at: dt.datetime) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT_SESSION, token_hash, account, expires_at)


async def session_account(pool: Pool, token_hash: bytes) -> int | None:
    async with connection(pool) as conn:
        found: int | None = await conn.fetchval(SELECT_SESSION, token_hash)
    return found


async def end_session(pool: Pool, token_hash: bytes) -> None:
    async with connection(pool) as conn:
        await conn.execute(DELETE_SESSION, token_hash)


async def studies_of(pool: Pool, account: int) -> list[str]:
    async with connection(pool) as conn:
        return [r[0] for r in await conn.fetch(SELECT_STUDIES, account)]


SELECT_EMAIL = "SELECT email FROM portal_accounts WHERE pk = $1"
SELECT_STUDY_HOSPITAL = "SELECT hospital_pk FROM studies WHERE study_instance_uid = $1"


async def email_of(pool: Pool, account: int) -> str | None:
    async with connection(pool) as conn:
        found: str | None = await conn.fetchval(SELECT_EMAIL, account)
    return found


async def study_hospital(pool: Pool, study: str) -> int | None:
    async with connection(pool) as conn:
        found: int | None = await conn.fetchval(SELECT_STUDY_HOSPITAL, study)
    return found
