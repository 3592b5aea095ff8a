"""pynetdicom's event handlers: thin adapters from DIMSE to the archive's services.

pynetdicom calls each handler on an association's own thread. A handler translates the
request, hands the work to the application's event loop (:meth:`Bridge.run`, with a
timeout) — one pool, one transaction discipline, one audit trail for HTTP and DICOM —
and translates the result into a PS3.4 status (:mod:`app.dicom.dimse_status`). Blocking file
work (writing a received instance, removing a sent one) stays on the association's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from app.dicom.dimse_status import Status, audit_outcome
from app.dicom.identifiers import IdentifierError, QueryLevel, find_request, patient_key, retrieve_params
from app.dimse import commitment_report
from app.errors import StorageUnavailable
from app.repository import aes
from app.repository.retrieve import StoredObject
from app.services import audit, commitment, dimse, query_retrieve
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.dimse import Peer, Service

log = logging.getLogger(__name__)
T = TypeVar("T")

_PATIENT_ROOT = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelMove),
    str(PatientRootQueryRetrieveInformationModelGet),
}
#: A-ASSOCIATE-RJ (PS3.8 §9.3.4): rejected-permanent, DICOM UL service-user, calling AE
#: title not recognised; and rejected-transient, service-user, no reason given.
_REJECT_UNKNOWN_AE = (0x01, 0x01, 0x03)
_REJECT_TRANSIENT = (0x02, 0x01, 0x01)
#: Values larger than this are read from the spooled file only when sent.
_DEFER = 64 << 10


class Bridge:
    """Runs the application's coroutines on its event loop, from pynetdicom's threads."""

    def __init__(self, archive: Archive, loop: asyncio.AbstractEventLoop) -> None:
        self.archive = archive
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.archive.settings.dicom_operation_timeout)
        except TimeoutError:
            # The coroutine is cancelled, and undoes its writes (the store pipeline's
            # cleanup runs on cancellation); the operation fails "out of resources".
            future.cancel()
            raise StorageUnavailable("the operation took too long") from None


class Handlers:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.archive = bridge.archive
        self._peers: weakref.WeakKeyDictionary[Association, Peer] = weakref.WeakKeyDictionary()
        self.stores = dimse.StoreGroups(self.archive)
        self._lock = threading.Lock()

    # --- Association ----------------------------------------------------------------------
    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: admit the calling AE only if it is known (PS3.8 §7.1.1.3)."""
        assoc = event.assoc
        rq = assoc.requestor.primitive
        assert rq is not None  # set before EVT_REQUESTED is triggered
        calling, called = str(rq.calling_ae_title), str(rq.called_ae_title)
        address = str(assoc.requestor.address)
        try:
            peer = self.bridge.run(dimse.recognise(self.archive, calling, called, address))
        except Exception:
            log.exception("could not look up calling AE %r; association rejected", calling.strip())
            _reject(assoc, _REJECT_TRANSIENT)
            return
        if peer is None:
            log.info("association from unknown calling AE %r (%s) rejected", calling.strip(), address)
            _reject(assoc, _REJECT_UNKNOWN_AE)
            return
        with self._lock:
            self._peers[assoc] = peer

    def on_closed(self, event: Event) -> None:
        """EVT_ABORTED, EVT_CONN_CLOSE: a C-STORE data set cut off by an abort or a lost
        connection never reaches :meth:`on_store`; the temporary file pynetdicom was
        receiving it into is removed here (nothing of it was stored)."""
        message = getattr(event.assoc.dimse, "message", None)
        partial = getattr(message, "_data_set_file", None)
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.close()
                os.unlink(partial.name)

    def peer(self, assoc: Association) -> Peer:
        with self._lock:
            return self._peers[assoc]

    # --- Verification (PS3.4 Annex A) -----------------------------------------------------
    def on_echo(self, event: Event) -> int:
        peer = self.peer(event.assoc)
        if not peer.may(Service.ECHO):
            return int(
                self.bridge.run(dimse.refuse(self.archive, peer, Transaction.C_ECHO, "AE may not echo"))
            )
        return int(Status.SUCCESS)

    # --- Storage (PS3.4 Annex B) ----------------------------------------------------------
    def on_store(self, event: Event) -> Dataset:
        peer = self.peer(event.assoc)
        spool = self.archive.settings.spool_path
        path = spool / f"cstore-{os.urandom(12).hex()}.dcm"
        try:
            write_part10(path, event.file_meta, Path(event.dataset_path), peer.ae.ae_title)
            outcome = self.bridge.run(self.stores.store(peer, path))
            status, comment = outcome.status, outcome.comment
        except StorageUnavailable:
            status, comment = Status.OUT_OF_RESOURCES, "out of resources; retry"
        except OSError:
            log.exception("C-STORE: could not spool the received instance")
            status, comment = Status.OUT_OF_RESOURCES, "out of resources; retry"
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return status_dataset(status, comment)

    # --- Query (PS3.4 C.4.1) --------------------------------------------------------------
    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        peer = self.peer(event.assoc)
        if not peer.may(Service.FIND):
            yield self._refused(peer, Transaction.C_FIND, "AE may not query"), None
            return
        trail = peer.trail(Transaction.C_FIND)
        patient_root = str(event.request.AffectedSOPClassUID) in _PATIENT_ROOT
        status: Status = Status.SUCCESS
        detail = None
        try:
            request = find_request(event.identifier, patient_root=patient_root)
            trail.event.query = urlencode([("QueryRetrieveLevel", request.level.value), *request.params])
            seen: set[tuple[str, str, str]] = set()
            offset, more = 0, True
            while more:
                matches, more = self.bridge.run(
                    query_retrieve.find_page(self.archive, trail, request, offset)
                )
                offset += len(matches)
                for match in matches:
                    if event.is_cancelled:
                        status, detail = Status(0xFE00), "cancelled"
                        break
                    if request.level is QueryLevel.PATIENT:
                        key = patient_key(match)
                        if key in seen:
                            continue
                        seen.add(key)
                        for tag in (0x00091010, 0x00090010):
                            if tag in match:
                                del match[tag]
                    yield Status.PENDING, match
                if status != Status.SUCCESS:
                    break
        except IdentifierError as exc:
            status, detail = Status.IDENTIFIER_MISMATCH, str(exc)
        except StorageUnavailable:
            status, detail = Status.OUT_OF_RESOURCES, "out of resources"
        self._commit(trail, status, detail)
        yield status_dataset(status, detail), None

    # --- Retrieve (PS3.4 C.4.2 C-MOVE, C.4.3 C-GET) ---------------------------------------
    def on_move(self, event: Event) -> Iterator[Any]:
        peer = self.peer(event.assoc)
        destination = self.bridge.run(aes.by_title(self.archive.pool, str(event.move_destination)))
        if (
            destination is None
            or not destination.destination
            or destination.hospital_pk != peer.ae.hospital_pk
        ):
            # PS3.4 C.4.2.1.5 "Move Destination unknown": only a destination AE of the
            # caller's own hospital is known to it; data never leaves its scope by C-MOVE.
            self._commit(peer.trail(Transaction.C_MOVE), Status.MOVE_DESTINATION_UNKNOWN,
                         "move destination unknown")  # fmt: skip
            yield None, None
            return
        trail = peer.trail(Transaction.C_MOVE)
        trail.event.query = urlencode([("MoveDestination", destination.ae_title)])
        refusal, objects = self._locate(peer, trail, event, Service.MOVE)
        contexts = _contexts(objects)
        yield destination.host, destination.port, {"contexts": contexts}
        yield from self._send(trail, refusal, objects)

    def on_get(self, event: Event) -> Iterator[Any]:
        peer = self.peer(event.assoc)
        trail = peer.trail(Transaction.C_GET)
        refusal, objects = self._locate(peer, trail, event, Service.GET)
        yield from self._send(trail, refusal, objects)

    def _locate(
        self, peer: Peer, trail: Trail, event: Event, service: str
    ) -> tuple[tuple[Status, str] | None, list[StoredObject]]:
        if not peer.may(service):
            return (Status.NOT_AUTHORIZED, f"AE may not {service}"), []
        patient_root = str(event.request.AffectedSOPClassUID) in _PATIENT_ROOT
        try:
            level, params = retrieve_params(event.identifier, patient_root=patient_root)
            q = trail.event.query
            trail.event.query = (q + "&" if q else "") + urlencode(
                [("QueryRetrieveLevel", level.value), *params]
            )
            return None, self.bridge.run(query_retrieve.locate(self.archive, trail, params))
        except IdentifierError as exc:
            return (Status.IDENTIFIER_MISMATCH, str(exc)), []
        except StorageUnavailable:
            return (Status.SUB_OPERATIONS_REFUSED, "out of resources"), []

    def _send(
        self, trail: Trail, refusal: tuple[Status, str] | None, objects: list[StoredObject]
    ) -> Iterator[Any]:
        """The sub-operations (PS3.4 C.4.2.3, C.4.3.3): a count, then one pending status
        and instance per object; pynetdicom counts completed, failed and warning
        sub-operations from each C-STORE response and sends the final status."""
        if refusal is not None:
            yield 1
            self._commit(trail, refusal[0], refusal[1])
            yield status_dataset(*refusal), None
            return
        yield len(objects)
        sent: Path | None = None
        try:
            for obj in objects:
                try:
                    sent = self.bridge.run(query_retrieve.fetch(self.archive, trail, obj))
                except StorageUnavailable:
                    sent = None
                if sent is None:
                    # Deleted since it was located, or the store failed: not sent (it
                    # stays among the remaining sub-operations); the others go on.
                    continue
                # pynetdicom's C-MOVE and C-GET sub-operations take a Dataset, not a file:
                # large values stay in the spooled file until they are encoded.
                yield Status.PENDING, dcmread(sent, defer_size=_DEFER)
                with contextlib.suppress(OSError):
                    sent.unlink()
                sent = None
        finally:
            if sent is not None:
                with contextlib.suppress(OSError):
                    sent.unlink()
            self._commit(trail, Status.SUCCESS, f"{len(objects)} sub-operations")

    # --- Storage Commitment Push Model (PS3.4 Annex J) ------------------------------------
    def on_n_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        peer = self.peer(event.assoc)
        if not peer.may(Service.STORE):
            return self._refused(peer, Transaction.STORAGE_COMMITMENT, "AE may not store"), None
        if event.action_type != 1:
            return Status.NO_SUCH_ACTION, None
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "")
        references = [
            (str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", "")))
            for item in info.get("ReferencedSOPSequence", [])
        ]
        if not transaction_uid or not references or not all(c and i for c, i in references):
            return Status.INVALID_ARGUMENT, None
        trail = peer.trail(Transaction.STORAGE_COMMITMENT)
        trail.event.query = urlencode([("TransactionUID", transaction_uid)])
        try:
            verdict = self.bridge.run(commitment.verify(self.archive, trail, references))
        except StorageUnavailable:
            return Status.OUT_OF_RESOURCES, None
        self._commit(
            trail, Status.SUCCESS, f"{len(verdict.committed)} committed, {len(verdict.failed)} failed"
        )
        # PS3.4 J.3.3: the result goes in an N-EVENT-REPORT after this N-ACTION's response,
        # on this association if it is still open, else on a new one.
        report = commitment_report.Report(self.archive.settings, peer.ae, transaction_uid, verdict)
        threading.Thread(
            target=report.send, args=(event.assoc,), name="commitment-report", daemon=True
        ).start()
        return Status.SUCCESS, None

    # --- Helpers ---------------------------------------------------------------------------
    def _refused(self, peer: Peer, transaction: Transaction, detail: str) -> int:
        try:
            return int(self.bridge.run(dimse.refuse(self.archive, peer, transaction, detail)))
        except StorageUnavailable:
            return int(Status.NOT_AUTHORIZED)

    def _commit(self, trail: Trail, status: Status, detail: str | None) -> None:
        text = f"status 0x{int(status):04X}" + (f": {detail}" if detail else "")
        try:
            self.bridge.run(audit.commit(self.archive, trail, audit_outcome(status), text))
        except Exception:
            log.warning("could not record a %s event", trail.event.transaction, exc_info=True)


def _reject(assoc: Association, reason: tuple[int, int, int]) -> None:
    """Send an A-ASSOCIATE-RJ, and wait until it has gone out (the peer then closes the
    connection, or the ARTIM timer ends it) before the association's socket is closed, as
    pynetdicom's own rejections do."""
    assoc.acse.send_reject(*reason)
    assoc.kill()


def status_dataset(status: int, comment: str | None = None) -> Dataset:
    """A response status (PS3.7 C.1), with an Error Comment (0000,0902) for failures."""
    ds = Dataset()
    ds.Status = int(status)
    if comment and status not in (Status.SUCCESS, Status.PENDING):
        ds.ErrorComment = comment[:64]
    return ds


def write_part10(path: Path, file_meta: FileMetaDataset, received: Path, source_ae: str) -> None:
    """Write the received data set as a Part 10 file (PS3.10 §7.1): preamble, ``DICM``, the
    File Meta Information of the C-STORE (its SOP Class and Instance, the negotiated
    transfer syntax, the sending AE), then the data set's bytes exactly as received.

    pynetdicom wrote ``received`` as a Part 10 file too; its data set starts after its
    own File Meta group, whose length its first element gives (PS3.10 §7.1)."""
    meta = FileMetaDataset(file_meta)
    meta.SourceApplicationEntityTitle = source_ae
    with received.open("rb") as source, path.open("wb") as out:
        source.seek(132)
        head = source.read(12)
        if head[:4] != b"\x02\x00\x00\x00" or head[4:6] != b"UL":
            raise OSError("the received data set has no File Meta Information Group Length")
        source.seek(132 + 12 + int.from_bytes(head[8:12], "little"))
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
        # Not synced: the store makes the object durable (a rename into place is synced
        # there), and before that the file is only the C-STORE's spool.
        shutil.copyfileobj(source, out, 1 << 20)


def _contexts(objects: list[StoredObject]) -> list[Any]:
    """Presentation contexts to propose to a C-MOVE destination: each SOP class with the
    transfer syntaxes its instances are stored in (they are sent as stored)."""
    syntaxes: dict[str, list[str]] = {}
    for obj in objects:
        found = syntaxes.setdefault(obj.sop_class_uid, [])
        if obj.transfer_syntax_uid not in found:
            found.append(obj.transfer_syntax_uid)
    # PS3.8 §9.3.2.2: at most 128 presentation contexts in an A-ASSOCIATE-RQ.
    return [build_context(uid, ts) for uid, ts in list(syntaxes.items())[:128]]
