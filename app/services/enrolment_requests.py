"""Enrolment in the patient portal by request, for a patient without a printed code:
they type who they are (name, birth date, the hospital's patient ID or a health card
number, an email address), the film library of the hospital they named checks it
against its records and approves — linking the patient record it confirms — or
declines. The requester is emailed either way.

The form's answer is the same whatever was typed and whoever exists: it is stored and
decided by people, never matched while the requester waits, so no answer, timing or
email tells an unapproved requester which patients a hospital holds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from app.errors import BadRequest, Conflict, NotFound
from app.repository import enrolment_requests as repository
from app.repository import hospitals
from app.repository import portal as portal_rows
from app.repository.enrolment_requests import Candidate, EnrolmentRequest
from app.repository.hospitals import Hospital
from app.security.principal import Principal
from app.security.share_secrets import Hasher
from app.services import audit, mail
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.mail import Letter, MailUnavailable, valid_address
from app.services.portal import Portal

log = logging.getLogger(__name__)

#: The most pending requests the console lists, oldest first.
LISTED = 200
#: The most candidate patient records shown for one request.
CANDIDATES = 20


@dataclass(frozen=True)
class Decided:
    request: EnrolmentRequest
    #: Whether the requester's email went (or went to the outbox); the decision stands anyway.
    emailed: bool


def _text(value: str, what: str, longest: int) -> str:
    value = " ".join(value.split())
    if not value or len(value) > longest:
        raise BadRequest(f"{what}: 1 to {longest} characters")
    return value


class EnrolmentRequests:
    def __init__(self, archive: Archive, hasher: Hasher) -> None:
        self.archive, self.hasher = archive, hasher

    # --- The requester ----------------------------------------------------------------

    async def hospitals(self) -> list[Hospital]:
        """The member hospitals a request may be sent to (public: no patient data)."""
        return await hospitals.every(self.archive.pool)

    async def submit(
        self,
        trail: Trail,
        client: str | None,
        hospital: str,
        name: str,
        birth_date: dt.date,
        reference: str,
        email: str,
    ) -> None:
        """Store a request for the film library (for a member hospital; for any other code,
        nothing). Only the shape of what is typed is checked, never who it names."""
        address = valid_address(email).lower()
        if not await Portal(self.archive, self.hasher).allowed("enrolment request", address, client, trail):
            return
        if not dt.date(1880, 1, 1) <= birth_date <= dt.date.today():
            raise BadRequest("birth date: a date in the past")
        await repository.add(
            self.archive.pool, hospital, _text(name, "name", 200), birth_date,
            _text(reference, "patient ID or health card number", 64), address,
        )  # fmt: skip
        await audit.commit(self.archive, trail, 200, "enrolment request received")

    # --- The film library -------------------------------------------------------------

    async def pending(self, by: Principal, trail: Trail) -> list[EnrolmentRequest]:
        """The requests still to decide at the staff member's hospital, oldest first."""
        found = (
            []
            if by.hospital_pk is None
            else await repository.pending(self.archive.pool, by.hospital_pk, LISTED)
        )
        await audit.commit(self.archive, trail, 200, f"{len(found)} pending enrolment requests")
        return found

    async def _one(self, by: Principal, trail: Trail, pk: int) -> EnrolmentRequest:
        # Another hospital's request is as absent as one that never was.
        found = (
            None if by.hospital_pk is None else await repository.one(self.archive.pool, pk, by.hospital_pk)
        )
        if found is None:
            await audit.commit(self.archive, trail, 404, "no such enrolment request")
            raise NotFound(f"no enrolment request {pk}")
        return found

    async def review(self, by: Principal, trail: Trail, pk: int) -> tuple[EnrolmentRequest, list[Candidate]]:
        """A request and the hospital's patient records it may be: the typed reference as
        a patient ID, or the typed birth date."""
        request = await self._one(by, trail, pk)
        assert by.hospital_pk is not None
        found = await repository.candidates(
            self.archive.pool,
            by.hospital_pk,
            request.reference,
            request.birth_date.strftime("%Y%m%d"),
            CANDIDATES,
        )
        trail.note(patients=[c.patient_id for c in found], owners=[by.hospital or ""])
        await audit.commit(self.archive, trail, 200, f"reviewed enrolment request {pk}")
        return request, found

    async def approve(self, by: Principal, trail: Trail, pk: int, patient_id: str, base: str) -> Decided:
        """Link ``patient_id`` (a patient the hospital holds studies of) to the account of
        the request's address and email it a sign-in link."""
        request = await self._one(by, trail, pk)
        assert by.hospital_pk is not None and by.hospital is not None
        patient_id = patient_id.strip()
        trail.note(patients=[patient_id], owners=[by.hospital])
        if not patient_id or not await portal_rows.patient_known(
            self.archive.pool, by.hospital_pk, patient_id
        ):
            await audit.commit(self.archive, trail, 404, "no such patient")
            raise NotFound("no such patient at this hospital")
        linked = await repository.approve(self.archive.pool, pk, by.hospital_pk, by.subject, patient_id)
        if linked is None:
            await audit.commit(self.archive, trail, 409, f"enrolment request {pk} was decided already")
            raise Conflict("this request was decided already")
        account, address = linked
        intro = "Your request to see your medical images online has been approved by the film library.\n\n"
        emailed = await self._tell(Portal(self.archive, self.hasher).send_link(
            account, address, base, "Your enrolment is approved", intro,
        ))  # fmt: skip
        await audit.commit(
            self.archive, trail, 200,
            f"approved enrolment request {pk}" + ("" if emailed else " (the email could not be sent)"),
        )  # fmt: skip
        return Decided(request, emailed)

    async def decline(self, by: Principal, trail: Trail, pk: int, base: str) -> Decided:
        request = await self._one(by, trail, pk)
        assert by.hospital_pk is not None
        address = await repository.decline(self.archive.pool, pk, by.hospital_pk, by.subject)
        if address is None:
            await audit.commit(self.archive, trail, 409, f"enrolment request {pk} was decided already")
            raise Conflict("this request was decided already")
        text = (
            "We could not match your request to see your medical images online with our records, "
            "so it has been declined.\n\n"
            "If you think this is a mistake, please ask the film library of your hospital for an "
            f"enrolment code, which you can use at {base}/portal/enrol.\n"
        )
        emailed = await self._tell(
            mail.send(self.archive.settings, Letter(address, "Your enrolment request", text))
        )
        await audit.commit(
            self.archive, trail, 200,
            f"declined enrolment request {pk}" + ("" if emailed else " (the email could not be sent)"),
        )  # fmt: skip
        return Decided(request, emailed)

    @staticmethod
    async def _tell(sending: Awaitable[object]) -> bool:
        """Send the decision's email: the decision is made whether or not it goes."""
        try:
            await sending
        except MailUnavailable:
            return False
        return True
