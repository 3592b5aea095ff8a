"""The patient portal: enrolment by a printed code, passwordless sign-in by emailed
one-time links, and the signed-in patient's studies.

Whatever is typed, enrolment and sign-in requests get the same answer ("if that was
right, a link is on its way"), so the portal tells no one which codes, addresses or
patients exist. Codes, links and sessions are stored as keyed hashes only. A patient
sees the studies of the patient IDs their account is linked to, at the hospital that
issued each code, through the same QIDO-RS engine and scope as a share's recipient,
lists and revokes the shares they made, and downloads their studies. Attempts at the
unauthenticated forms are limited per address and per client address (:meth:`Portal.allowed`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.errors import BadRequest, NotFound, Unauthorized
from app.repository import audit as audit_rows
from app.repository import portal as repository
from app.repository import portal_attempts
from app.repository import shares as share_rows
from app.repository.audit import AuditEvent, AuditFilter
from app.repository.shares import ShareRow
from app.security.principal import Principal, Right
from app.security.share_secrets import Hasher, new_access_code, new_token, normalize_code
from app.services import audit, download, mail
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.mail import Letter, valid_address
from app.services.shares import CreatedShare, ShareRequest, Shares

log = logging.getLogger(__name__)

#: A printed enrolment code lasts this long (it travels on paper, by post).
CODE_DAYS = 60
#: A sign-in link lasts this long, and opens once.
LINK_MINUTES = 15
#: A portal session lasts this long.
SESSION_HOURS = 2
#: The longest a share a patient makes may last.
PATIENT_SHARE_DAYS = 30
#: A share a patient makes to look at a study themselves lasts this long.
VIEW_MINUTES = 60
#: Who such a share is for, as the patient's list of shares shows it.
SELF_RECIPIENT = "you, in the viewer"
#: The most of their own shares a patient's list shows.
SHARES_LISTED = 200


@dataclass(frozen=True)
class EnrolmentCode:
    code: str
    patient_id: str
    hospital: str
    expires_at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _subject(account: int) -> str:
    """A portal account as an audited caller."""
    return f"patient:{account}"


class Portal:
    def __init__(self, archive: Archive, hasher: Hasher) -> None:
        self.archive, self.hasher = archive, hasher

    async def new_code(self, by: Principal, trail: Trail, patient_id: str) -> EnrolmentCode:
        """A code binding its holder to ``patient_id`` at the staff member's hospital,
        for a patient the hospital holds studies of (else 404); recorded."""
        trail.note(patients=[patient_id], owners=[by.hospital or ""])
        if by.hospital_pk is None or by.hospital is None:
            raise NotFound("no such patient")
        if not patient_id or not await repository.patient_known(
            self.archive.pool, by.hospital_pk, patient_id
        ):
            raise NotFound("no such patient")
        code = new_access_code()
        expires = _now() + dt.timedelta(days=CODE_DAYS)
        digest = self.hasher.digest("enrol", code)
        await repository.add_code(self.archive.pool, digest, by.hospital_pk, patient_id, by.subject, expires)
        await audit.commit(self.archive, trail, 201, "created a patient portal enrolment code")
        return EnrolmentCode(code, patient_id, by.hospital, expires)

    async def allowed(self, kind: str, address: str, client: str | None, trail: Trail) -> bool:
        """Count an attempt at an unauthenticated form against its address and client
        address; False (recorded) when either is over its limit in this window. The
        caller then checks and sends nothing, and answers as to any other attempt."""
        s = self.archive.settings
        keys = [self.hasher.digest("portal-attempt", f"address:{address}")]
        if client:
            keys.append(self.hasher.digest("portal-attempt", f"client:{client}"))
        bucket = int(time.time()) // s.portal_attempt_window
        counts = await portal_attempts.count(self.archive.pool, kind, keys, bucket)
        limits = [s.portal_attempts_per_address, s.portal_attempts_per_client]
        if all(n <= limit for n, limit in zip(counts, limits, strict=False)):
            return True
        # Neither the address nor the client address reaches the log.
        log.warning("too many %s attempts in this window: answered, not checked", kind)
        await audit.commit(self.archive, trail, 200, f"{kind}: too many attempts, not checked")
        return False

    async def enrol(self, typed_code: str, email: str, base: str, trail: Trail, client: str | None) -> None:
        """Spend the code, link its patient to the account of ``email`` and email a
        sign-in link. Nothing is said of a code that opens nothing."""
        address = valid_address(email).lower()
        if not await self.allowed("enrolment code", address, client, trail):
            return
        code = normalize_code(typed_code)
        account = (
            await repository.enrol(self.archive.pool, self.hasher.digest("enrol", code), address)
            if code
            else None
        )
        if account is None:
            await audit.commit(self.archive, trail, 200, "enrolment code opened nothing")
            return
        trail.event.subject = _subject(account)
        await audit.commit(self.archive, trail, 200, "enrolled with a code")
        await self.send_link(account, address, base)

    async def request_link(self, email: str, base: str, trail: Trail, client: str | None) -> None:
        """Email a sign-in link to an enrolled address; nothing for any other."""
        address = valid_address(email).lower()
        if not await self.allowed("sign-in link", address, client, trail):
            return
        account = await repository.account_of(self.archive.pool, address)
        if account is None:
            await audit.commit(self.archive, trail, 200, "sign-in link asked for an unknown address")
            return
        trail.event.subject = _subject(account)
        await audit.commit(self.archive, trail, 200, "sign-in link sent")
        await self.send_link(account, address, base)

    async def send_link(
        self, account: int, address: str, base: str, subject: str = "Your sign-in link", intro: str = ""
    ) -> None:
        """Email ``address`` a new one-time sign-in link to ``account``, after ``intro``."""
        token = new_token()
        expires = _now() + dt.timedelta(minutes=LINK_MINUTES)
        await repository.add_link(
            self.archive.pool, self.hasher.digest("portal-link", token), account, expires
        )
        text = (
            f"{intro}Sign in to see your medical images:\n\n"
            f"  {base}/portal/signin/{token}\n\n"
            f"The link works once, for {LINK_MINUTES} minutes; after that, ask for a new one at "
            f"{base}/portal. If you did not ask for it, ignore this message.\n"
        )
        await mail.send(self.archive.settings, Letter(address, subject, text))

    async def sign_in(self, token: str, trail: Trail) -> str:
        """Spend a sign-in link; a new session's secret. A used, expired or unknown link
        is refused alike. Either is recorded."""
        account = await repository.spend_link(self.archive.pool, self.hasher.digest("portal-link", token))
        if account is None:
            await audit.commit(self.archive, trail, 401, "sign-in link not valid")
            raise Unauthorized("this sign-in link is not valid (used, expired or unknown): ask for a new one")
        secret = new_token()
        expires = _now() + dt.timedelta(hours=SESSION_HOURS)
        await repository.add_session(
            self.archive.pool, self.hasher.digest("portal-session", secret), account, expires
        )
        trail.identify(await self._caller(account))
        await audit.commit(self.archive, trail, 303, "signed in (emailed link)")
        return secret

    async def principal(self, session: str | None) -> Principal | None:
        """The signed-in patient as a caller: read access to their own studies only."""
        if not session:
            return None
        pool = self.archive.pool
        account = await repository.session_account(pool, self.hasher.digest("portal-session", session))
        if account is None:
            return None
        return await self._caller(account)

    async def _caller(self, account: int) -> Principal:
        studies = await repository.studies_of(self.archive.pool, account)
        return Principal(
            subject=_subject(account), hospital=None, hospital_pk=None, roles=frozenset(),
            shared_studies=frozenset(studies), share_rights=frozenset({Right.READ}),
        )  # fmt: skip

    async def sign_out(self, session: str, trail: Trail) -> None:
        patient = await self.principal(session)
        if patient is not None:
            trail.identify(patient)
        await repository.end_session(self.archive.pool, self.hasher.digest("portal-session", session))
        await audit.commit(self.archive, trail, 303, "signed out")

    def csrf(self, session: str) -> str:
        """The session's form token: derived from its secret, so stored nowhere."""
        return self.hasher.digest("portal-csrf", session).hex()

    async def _creator(self, patient: Principal, study: str) -> tuple[Principal, str]:
        """Who a share the patient makes of ``study`` is made by: this patient, for this
        study only, at the hospital that holds it; and the patient's email address."""
        if patient.shared_studies is None or study not in patient.shared_studies:
            raise NotFound(f"no study {study}")
        account = int(patient.subject.removeprefix("patient:"))
        hospital_pk = await repository.study_hospital(self.archive.pool, study)
        email = await repository.email_of(self.archive.pool, account)
        if hospital_pk is None or email is None:
            raise NotFound(f"no study {study}")
        creator = Principal(
            subject=patient.subject, hospital=None, hospital_pk=hospital_pk, roles=frozenset(),
            shared_studies=frozenset({study}), share_rights=frozenset({Right.READ}),
        )  # fmt: skip
        return creator, email

    async def share(
        self, patient: Principal, trail: Trail, shares: Shares, study: str, days: int, recipient: str | None
    ) -> CreatedShare:
        """A share of one of the patient's own studies, made in the name of the hospital
        that holds it, for at most :data:`PATIENT_SHARE_DAYS`, and recorded; the patient
        is told (by email) when it is first opened and when it is locked out."""
        creator, email = await self._creator(patient, study)
        if not 1 <= days <= PATIENT_SHARE_DAYS:
            raise BadRequest(f"a share you make lasts 1 to {PATIENT_SHARE_DAYS} days")
        asked = ShareRequest(
            studies=[study], expires_at=_now() + dt.timedelta(days=days), permissions=["view", "download"],
            recipient=recipient, notify_email=email,
        )  # fmt: skip
        created = await shares.create(creator, asked)
        share = created.share
        trail.event.share_id = share.id
        trail.note(studies=share.studies, owners=[share.hospital], count=1)
        await audit.commit(self.archive, trail, 201, f"patient created share {share.id}")
        return created

    async def view(self, patient: Principal, trail: Trail, shares: Shares, study: str) -> str:
        """A session of a share of the patient's own study, made for the patient's own
        eyes: view only, for :data:`VIEW_MINUTES`, opened at once (its link and code are
        never shown; a use limit would end the session too), and no email when opened.
        The patient's pages hold no bearer token, and a share's session is what the share
        pages' viewer is scoped by. It is listed among the patient's shares like any
        other, so every look is on their record."""
        creator, _ = await self._creator(patient, study)
        asked = ShareRequest(
            studies=[study], expires_at=_now() + dt.timedelta(minutes=VIEW_MINUTES), permissions=["view"],
            recipient=SELF_RECIPIENT,
        )  # fmt: skip
        created = await shares.create(creator, asked)
        session = await shares.open_session(created.share)
        trail.event.share_id = created.share.id
        trail.note(studies=created.share.studies, owners=[created.share.hospital], count=1)
        await audit.commit(self.archive, trail, 303, f"patient opened study in viewer ({created.share.id})")
        return session

    # --- The patient's own shares and downloads (each recorded as the patient) ----------

    async def own_shares(self, patient: Principal, trail: Trail) -> list[ShareRow]:
        """The shares the patient made, newest first."""
        found = await share_rows.by_creator(self.archive.pool, patient.subject, SHARES_LISTED)
        await audit.commit(self.archive, trail, 200, f"{len(found)} own shares")
        return found

    async def _own(self, patient: Principal, trail: Trail, share_id: str) -> ShareRow:
        # Another's share (a patient's or staff's) is as absent as one that never was.
        trail.event.share_id = share_id  # the id asked for, found or not
        share = await share_rows.by_id(self.archive.pool, share_id)
        if share is None or share.created_by != patient.subject:
            await audit.commit(self.archive, trail, 404, "no such share")
            raise NotFound(f"no share {share_id}")
        return share

    async def own_share(
        self, patient: Principal, trail: Trail, share_id: str
    ) -> tuple[ShareRow, list[AuditEvent]]:
        """One of the patient's shares and who opened what of it."""
        share = await self._own(patient, trail, share_id)
        await audit.visible(self.archive)
        history = await audit_rows.search(self.archive.pool, AuditFilter(share_id=share.id), 500, 0)
        trail.note(studies=share.studies, owners=[share.hospital])
        await audit.commit(self.archive, trail, 200)
        return share, history

    async def revoke(self, patient: Principal, trail: Trail, share_id: str) -> list[str]:
        """Revoke one of the patient's shares (and any shared on from it)."""
        share = await self._own(patient, trail, share_id)
        revoked = await share_rows.revoke(self.archive.pool, share.id, patient.subject)
        for revoked_id in revoked:  # forgotten here at once, elsewhere at the notice
            self.archive.invalidations.changed_here("share", revoked_id)
        await audit.commit(
            self.archive, trail, 200, f"revoked {', '.join(revoked) or 'nothing (already revoked)'}"
        )
        return revoked

    async def download(self, patient: Principal, trail: Trail, study: str) -> AsyncIterator[bytes]:
        """One of the patient's studies as the same ZIP with DICOMDIR a share's recipient
        downloads (:mod:`app.services.download`), recorded before its first byte."""
        if patient.shared_studies is None or study not in patient.shared_studies:
            await audit.commit(self.archive, trail, 404, "no such study")
            raise NotFound(f"no study {study}")
        return await download.study_zip(self.archive, trail, [study])
