"""The DICOM listener's callers and its storage service: who an association's calling AE
is, what it may do, and C-STORE through the one store pipeline (:mod:`app.services.stow`).

Each DIMSE operation is audited like a DICOMweb request: a :class:`Trail` per operation,
its caller the calling AE (as ``ae:TITLE`` of the AE's hospital), stored instances
recorded in the transaction that stores them, refusals committed with the DIMSE status.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from app.dicom.dimse_status import Status, audit_outcome, store_status
from app.dicom.status import FailureReason
from app.errors import StorageUnavailable
from app.repository import aes, hospitals
from app.repository.aes import ApplicationEntity
from app.security.principal import Principal
from app.services import audit, stow
from app.services.archive import Archive
from app.services.audit import Trail, Transaction

log = logging.getLogger(__name__)


class Service:
    """What an AE may ask for (its ``may_*`` permissions)."""

    ECHO, STORE, FIND, MOVE, GET = "echo", "store", "find", "move", "get"


@dataclass(frozen=True)
class Peer:
    """The calling AE of an association, once recognised."""

    ae: ApplicationEntity
    #: The peer's network address (the audit's client address).
    address: str
    #: The archive's AE title the peer called.
    called: str

    @property
    def principal(self) -> Principal:
        # No roles: an AE's permissions, not roles, gate the DIMSE services; its scope is
        # its hospital's, exactly as a token of that hospital.
        return Principal(f"ae:{self.ae.ae_title}", self.ae.hospital, self.ae.hospital_pk, frozenset())

    def may(self, service: str) -> bool:
        return bool(getattr(self.ae, f"may_{service}"))

    def trail(self, transaction: Transaction) -> Trail:
        trail = Trail(
            transaction,
            method=transaction.value,
            path=f"dicom:{self.called}",
            client_address=self.address,
            user_agent=f"AE {self.ae.ae_title}",
        )
        trail.identify(self.principal)
        return trail


async def recognise(archive: Archive, calling: str, called: str, address: str) -> Peer | None:
    """The peer of an A-ASSOCIATE-RQ (PS3.8 §7.1.1.3), or None when its calling AE title is
    unknown: the association is then rejected, and the refusal audited."""
    settings = archive.settings
    ae = await aes.by_title(archive.pool, calling)
    if ae is None and settings.dicom_accept_unknown_hospital:
        ae = await _unknown_accepted(archive, calling, address)
    if ae is None:
        trail = Trail(
            Transaction.ASSOCIATION, method="A-ASSOCIATE", path=f"dicom:{called}",
            client_address=address, user_agent=f"AE {calling.strip()}",
        )  # fmt: skip
        trail.event.subject = f"ae:{calling.strip()}"
        await audit.commit(archive, trail, 403, "calling AE title not recognised")
        return None
    return Peer(ae, address, called.strip())


async def _unknown_accepted(archive: Archive, calling: str, address: str) -> ApplicationEntity | None:
    code = archive.settings.dicom_accept_unknown_hospital
    assert code is not None
    hospital = await hospitals.by_code(archive.pool, code)
    if hospital is None:
        log.error("FILMLESS_DICOM_ACCEPT_UNKNOWN_HOSPITAL names no member hospital: %s", code)
        return None
    log.warning(
        "DEVELOPMENT ONLY: accepting unknown calling AE %r from %s as an AE of hospital %s "
        "(FILMLESS_DICOM_ACCEPT_UNKNOWN_HOSPITAL)",
        calling.strip(), address, code,
    )  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    return ApplicationEntity(
        pk=0, ae_title=calling.strip(), host=address, port=104, hospital_pk=hospital.pk, hospital=code,
        may_echo=True, may_store=True, may_find=True, may_move=False, may_get=True, destination=False,
        description="accepted as unknown (development)", created_at=now,
    )  # fmt: skip


async def refuse(archive: Archive, peer: Peer, transaction: Transaction, detail: str) -> Status:
    """An operation the peer's AE may not use: audited, answered "not authorized"."""
    trail = peer.trail(transaction)
    await audit.commit(archive, trail, audit_outcome(Status.NOT_AUTHORIZED), detail)
    return Status.NOT_AUTHORIZED


@dataclass(frozen=True)
class StoreOutcome:
    status: Status
    comment: str | None
    sop_instance_uid: str | None


async def store(archive: Archive, peer: Peer, path: Path) -> StoreOutcome:
    """C-STORE (PS3.4 B.2.2) of one received instance, written as a Part 10 file at
    ``path`` (the caller's, left in place). Success only once it is durable: the store
    pipeline answers after its index row is committed."""
    if not peer.may(Service.STORE):
        status = await refuse(archive, peer, Transaction.C_STORE, "AE may not store")
        return StoreOutcome(status, "this AE may not store", None)
    trail = peer.trail(Transaction.C_STORE)
    try:
        [result] = await stow.store_files(archive, trail, [path])
    except StorageUnavailable:
        status, comment = store_status(FailureReason.OUT_OF_RESOURCES)
        await _commit_quietly(archive, trail, status, comment)
        return StoreOutcome(status, comment, None)
    status, comment = store_status(result.failure)
    if result.failure is None:
        audit.stored_in_transaction(trail)
    else:
        trail.note(studies=[result.study_instance_uid or ""], instances=[result.sop_instance_uid or ""])
        await _commit_quietly(archive, trail, status, comment)
    return StoreOutcome(status, comment, result.sop_instance_uid)


async def _commit_quietly(archive: Archive, trail: Trail, status: Status, detail: str | None) -> None:
    """Commit a refusal's event; when the database itself is away, the refusal stands and
    the loss of its event is logged."""
    try:
        await audit.commit(archive, trail, audit_outcome(status), f"status 0x{status:04X}: {detail}")
    except StorageUnavailable:
        log.warning("could not record a %s refusal: the database is unavailable", trail.event.transaction)
