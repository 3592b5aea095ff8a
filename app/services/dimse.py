"""The DICOM listener's callers and its storage service: who an association's calling AE
is, what it may do, and C-STORE through the one store pipeline (:mod:`app.services.stow`).

Each DIMSE operation is audited like a DICOMweb request: a :class:`Trail` per operation,
its caller the calling AE (as ``ae:TITLE`` of the AE's hospital), stored instances
recorded in the transaction that stores them, refusals committed with the DIMSE status.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from app.services.stow import InstanceResult

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


class StoreGroups:
    """C-STORE (PS3.4 B.2.2) through the one store pipeline, with the C-STOREs that arrive
    together stored together.

    An SCU sends one C-STORE at a time on an association and waits for its answer, but a
    modality or a PACS sends over several associations at once. What arrives from one
    calling AE while a batch of its C-STOREs is being stored waits for that batch, then
    goes in the next one: one index transaction per phase for the batch, not per
    instance, and no C-STORE ever waits for a timer. Each is answered with its own status,
    success only once it is durable (its index row committed)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._waiting: dict[tuple[str, str, str], list[tuple[Path, asyncio.Future[InstanceResult]]]] = {}
        self._draining: set[asyncio.Task[None]] = set()

    async def store(self, peer: Peer, path: Path) -> StoreOutcome:
        """Store the received instance, a Part 10 file at ``path`` that the caller gives up
        (it may become the object; the caller removes what is left of it)."""
        if not peer.may(Service.STORE):
            status = await refuse(self.archive, peer, Transaction.C_STORE, "AE may not store")
            return StoreOutcome(status, "this AE may not store", None)
        key = (peer.ae.ae_title, peer.address, peer.called)
        answer: asyncio.Future[InstanceResult] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = []
            task = asyncio.create_task(self._drain(key, peer))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        queue.append((path, answer))
        try:
            result = await answer
        except StorageUnavailable:
            status, comment = store_status(FailureReason.OUT_OF_RESOURCES)
            await _commit_quietly(self.archive, peer.trail(Transaction.C_STORE), status, comment)
            return StoreOutcome(status, comment, None)
        except asyncio.CancelledError:
            # Timed out: not yet taken, it is dropped (nothing of it written); already in
            # a batch, that batch goes on, and a C-STORE sent again finds it stored.
            with contextlib.suppress(ValueError):
                queue.remove((path, answer))
            raise
        status, comment = store_status(result.failure)
        if result.failure is not None:
            trail = peer.trail(Transaction.C_STORE)
            trail.note(studies=[result.study_instance_uid or ""], instances=[result.sop_instance_uid or ""])
            await _commit_quietly(self.archive, trail, status, comment)
        return StoreOutcome(status, comment, result.sop_instance_uid)

    async def _drain(self, key: tuple[str, str, str], peer: Peer) -> None:
        try:
            while batch := self._waiting[key]:
                self._waiting[key] = []
                await self._store_batch(peer, batch)
        finally:
            # Nothing can have been queued meanwhile: this runs on the loop, between awaits.
            self._waiting.pop(key, None)

    async def _store_batch(
        self, peer: Peer, batch: list[tuple[Path, asyncio.Future[InstanceResult]]]
    ) -> None:
        # The batch's stored instances are audited where they are stored, as one C-STORE
        # event of the calling AE naming every one of them.
        trail = peer.trail(Transaction.C_STORE)
        try:
            results = await stow.store_files(self.archive, trail, [path for path, _ in batch], move=True)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else StorageUnavailable("the store was interrupted")
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(
                        failure if isinstance(failure, StorageUnavailable) else _failed(failure)
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (_, answer), result in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(result)

    async def close(self) -> None:
        """Wait for the batches being stored (at shutdown, once no association is left)."""
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)


def _failed(exc: Exception) -> StorageUnavailable:
    # A defect that escaped the pipeline's own per-instance handling: logged once, and
    # answered "out of resources" (the SCU may retry) rather than left without an answer.
    log.error("C-STORE: a batch could not be stored", exc_info=exc)
    return StorageUnavailable("the instance could not be stored")


async def _commit_quietly(archive: Archive, trail: Trail, status: Status, detail: str | None) -> None:
    """Commit a refusal's event; when the database itself is away, the refusal stands and
    the loss of its event is logged."""
    try:
        await audit.commit(archive, trail, audit_outcome(status), f"status 0x{status:04X}: {detail}")
    except StorageUnavailable:
        log.warning("could not record a %s refusal: the database is unavailable", trail.event.transaction)
