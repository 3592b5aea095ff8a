"""Requests to enrol in the patient portal without a code, and the film library's
decisions on them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.repository.database import Pool, connection, transaction
from app.repository.portal import LINK_PATIENT, UPSERT_ACCOUNT

# Stored only for a member hospital; for any other code nothing is, silently.
INSERT = """
INSERT INTO enrolment_requests (hospital_pk, name, birth_date, reference, email)
SELECT pk, $2, $3, $4, $5 FROM hospitals WHERE code = $1 AND removed_at IS NULL"""
_REQUEST = """
SELECT pk, hospital_pk, name, birth_date, reference, email, created_at, decision, decided_at, decided_by,
       patient_id
FROM enrolment_requests"""
SELECT_PENDING = _REQUEST + " WHERE hospital_pk = $1 AND decision IS NULL ORDER BY created_at, pk LIMIT $2"
SELECT_ONE = _REQUEST + " WHERE pk = $1 AND hospital_pk = $2"
# A decision is taken once: the first to decide wins, a second finds nothing pending.
DECIDE = """
UPDATE enrolment_requests SET decision = $3, decided_at = now(), decided_by = $4, patient_id = $5
WHERE pk = $1 AND hospital_pk = $2 AND decision IS NULL
RETURNING email"""
# Who the request may be, at the hospital: the typed reference as a patient ID, or the
# typed birth date (DICOM DA, PS3.5 §6.2), among the patients it holds studies of.
SELECT_CANDIDATES = """
SELECT DISTINCT p.patient_id, p.patient_name, p.patient_birth_date
FROM patients p JOIN studies st ON st.patient_pk = p.pk
WHERE st.hospital_pk = $1 AND st.num_instances > 0 AND p.patient_id <> ''
  AND (p.patient_id = $2 OR p.patient_birth_date = $3)
ORDER BY p.patient_id
LIMIT $4"""


@dataclass(frozen=True)
class EnrolmentRequest:
    pk: int
    hospital_pk: int
    name: str
    birth_date: dt.date
    reference: str
    email: str
    created_at: dt.datetime
    decision: str | None
    decided_at: dt.datetime | None
    decided_by: str | None
    patient_id: str | None


@dataclass(frozen=True)
class Candidate:
    patient_id: str
    patient_name: str | None
    patient_birth_date: str | None


async def add(pool: Pool, hospital: str, name: str, birth_date: dt.date, reference: str, email: str) -> None:
    async with connection(pool) as conn:
        await conn.execute(INSERT, hospital, name, birth_date, reference, email)


async def pending(pool: Pool, hospital_pk: int, limit: int) -> list[EnrolmentRequest]:
    async with connection(pool) as conn:
        return [EnrolmentRequest(**dict(r)) for r in await conn.fetch(SELECT_PENDING, hospital_pk, limit)]


async def one(pool: Pool, pk: int, hospital_pk: int) -> EnrolmentRequest | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(SELECT_ONE, pk, hospital_pk)
    return EnrolmentRequest(**dict(row)) if row else None


async def candidates(
    pool: Pool, hospital_pk: int, reference: str, birth_date: str, limit: int
) -> list[Candidate]:
    async with connection(pool) as conn:
        rows = await conn.fetch(SELECT_CANDIDATES, hospital_pk, reference, birth_date, limit)
    return [Candidate(**dict(r)) for r in rows]


async def approve(pool: Pool, pk: int, hospital_pk: int, by: str, patient_id: str) -> tuple[int, str] | None:
    """Decide the pending request ``pk`` for ``patient_id`` and link that patient to the
    account of the request's address (made if new), in one transaction; the account and
    address, or None when nothing was pending."""
    async with transaction(pool) as conn:
        email: str | None = await conn.fetchval(DECIDE, pk, hospital_pk, "approved", by, patient_id)
        if email is None:
            return None
        account: int = await conn.fetchval(UPSERT_ACCOUNT, email)
        await conn.execute(LINK_PATIENT, account, hospital_pk, patient_id)
        return account, email


async def decline(pool: Pool, pk: int, hospital_pk: int, by: str) -> str | None:
    """Decline the pending request ``pk``; its address, or None when nothing was pending."""
    async with connection(pool) as conn:
        email: str | None = await conn.fetchval(DECIDE, pk, hospital_pk, "declined", by, None)
    return email
