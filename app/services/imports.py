"""Import: the instances of CDs, ZIP files and folders stored through the store pipeline.

Each volume (:mod:`app.services.volumes`) is planned by its DICOMDIR when it has one
(:mod:`app.dicom.filesets`). Its members are then copied out one at a time to a private
temporary directory (or read in place, for a folder), optionally coerced to the local
patient (:mod:`app.dicom.reconciliation`, IHE IRWF.b), and handed in batches to
:func:`app.services.stow.store_files` — the one way the archive stores — while the next
batch is prepared. Every outcome is a value: an unreadable member or a refused instance is
reported, never fatal; only the loss of the database or the object store stops an import.

Re-running an import is safe: an identical instance is reported "already present" by the
pipeline, which compares content hashes and writes nothing. A coerced copy cannot be
identical to an earlier coerced copy (its modification time differs), so with coercion an
instance whose SOP Instance UID the hospital already holds is reported "already present"
without being coerced again. Cancelled (Ctrl-C, a server shutting down), the pipeline
undoes the instances in flight and the temporary directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from app.dicom import filesets
from app.dicom.reconciliation import Coercion, reconcile
from app.dicom.status import FailureReason
from app.errors import StorageUnavailable
from app.repository import audit as audit_repository
from app.repository import instances
from app.services import audit, stow
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.volumes import Volume, VolumeError, open_volume

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Files per call of the store pipeline (which stores a few of them at once), and batches
#: prepared ahead of the one being stored.
BATCH_FILES = 8
_AHEAD = 2


class Status(Enum):
    STORED = "stored"
    PRESENT = "already present"
    REFUSED = "refused"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class MemberOutcome:
    """What became of one member of a volume."""

    volume: str
    member: str
    status: Status
    #: Why it was refused or could not be read (a PS3.4 / PS3.18 failure reason's name, or a
    #: short description); None when stored or present.
    reason: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    #: Attributes coerced (IRWF.b) in the stored copy.
    coerced: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass
class Tally:
    """Progress: what is known so far, updated as the import goes."""

    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    counts: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(Status, 0))


@dataclass
class ImportReport:
    outcomes: list[MemberOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": {s.value: self.count(s) for s in Status},
            "outcomes": [o.as_json() for o in self.outcomes],
        }


#: Called after each batch with the tally and the batch's outcomes.
Listener = Callable[[Tally, list[MemberOutcome]], Awaitable[None] | None]


@dataclass(frozen=True)
class _Prepared:
    volume: str
    member: str
    size: int
    #: The file to store, or None when the member's outcome is already known.
    path: Path | None
    outcome: MemberOutcome | None = None
    coerced: list[str] = field(default_factory=list)
    patient_ids: tuple[str, ...] = ()


async def import_paths(
    archive: Archive,
    trail: Trail,
    paths: Sequence[Path],
    coercion: Coercion | None = None,
    listener: Listener | None = None,
    labels: Sequence[str] | None = None,
) -> ImportReport:
    """Import every volume at ``paths`` for the trail's hospital; the report lists every
    member's outcome, in order, each volume named by its path or by ``labels``. The
    trail's own event is the caller's to commit."""
    report = ImportReport()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="import-", dir=_spool(archive)) as scratch:
        work = Path(scratch)
        volumes: list[tuple[Volume, list[str]]] = []
        try:
            for index, path in enumerate(paths):
                label = labels[index] if labels is not None else str(path)
                try:
                    volume = await asyncio.to_thread(open_volume, path)
                except VolumeError:
                    reason = "not a folder, a ZIP file or an ISO 9660 image that can be read"
                    report.outcomes.append(MemberOutcome(label, "", Status.UNREADABLE, reason))
                    continue
                volume.label = label
                volumes.append((volume, await asyncio.to_thread(_plan, volume, work, report)))
            for volume, members in volumes:
                tally.files_total += len(members)
                tally.bytes_total += sum(volume.size(m) for m in members)
            for outcome in report.outcomes:
                tally.counts[outcome.status] += 1
            await _notify(listener, tally, list(report.outcomes))
            for volume, members in volumes:
                await _import_volume(archive, trail, volume, members, work, coercion, report, tally, listener)
        finally:
            for volume, _ in volumes:
                with contextlib.suppress(Exception):
                    volume.close()
    return report


def _spool(archive: Archive) -> Path:
    spool = archive.settings.spool_path
    spool.mkdir(parents=True, exist_ok=True)
    return spool


def _plan(volume: Volume, work: Path, report: ImportReport) -> list[str]:
    """The members to store (blocking); references to files the volume lacks are reported."""

    def read_dicomdir(name: str) -> Dataset | None:
        local = volume.local_path(name)
        target = local or work / "DICOMDIR"
        try:
            if local is None:
                volume.copy_out(name, target, 1 << 30)
            return pydicom.dcmread(target)
        except (VolumeError, InvalidDicomError, OSError, ValueError, AttributeError, KeyError):
            return None
        finally:
            if local is None:
                target.unlink(missing_ok=True)

    plan = filesets.plan(volume.names(), read_dicomdir)
    for name in plan.missing:
        report.outcomes.append(
            MemberOutcome(
                volume.label, name, Status.UNREADABLE, "referenced by the DICOMDIR, not on the medium"
            )
        )
    return plan.members


async def _import_volume(
    archive: Archive,
    trail: Trail,
    volume: Volume,
    members: list[str],
    work: Path,
    coercion: Coercion | None,
    report: ImportReport,
    tally: Tally,
    listener: Listener | None,
) -> None:
    batches: asyncio.Queue[list[_Prepared] | None] = asyncio.Queue(maxsize=_AHEAD)

    async def prepare_all() -> None:
        batch: list[_Prepared] = []
        for index, name in enumerate(members):
            batch.append(await _prepare(archive, trail, volume, name, work / f"{index}.dcm", coercion))
            if len(batch) == BATCH_FILES:
                await batches.put(batch)
                batch = []
        if batch:
            await batches.put(batch)
        await batches.put(None)

    async def store_all() -> None:
        while (batch := await batches.get()) is not None:
            try:
                outcomes = await _store_batch(archive, trail, batch)
            finally:
                for item in batch:
                    if item.path is not None and item.path.is_relative_to(work):
                        item.path.unlink(missing_ok=True)
            report.outcomes.extend(outcomes)
            tally.files_done += len(batch)
            tally.bytes_done += sum(item.size for item in batch)
            for outcome in outcomes:
                tally.counts[outcome.status] += 1
            await _notify(listener, tally, outcomes)

    # A task group: when storing fails (the archive's storage is down) or the import is
    # cancelled, preparing stops too, and both are finished before the scratch goes.
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(prepare_all())
            group.create_task(store_all())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _prepare(
    archive: Archive, trail: Trail, volume: Volume, name: str, target: Path, coercion: Coercion | None
) -> _Prepared:
    """One member as a file the pipeline can store (blocking work in a thread)."""
    size = volume.size(name)
    local = volume.local_path(name)
    source = local
    try:
        if source is None:
            await _finish(volume.copy_out, name, target, archive.settings.max_part_size)
            source = target
        if not coercion:
            return _Prepared(volume.label, name, size, source)
        header = await asyncio.to_thread(_read_header, source)
        uid = str(header.get("SOPInstanceUID", ""))
        if uid and trail.scope.hospital_pk is not None:
            if await instances.held(archive.pool, trail.scope.hospital_pk, uid):
                outcome = MemberOutcome(
                    volume.label,
                    name,
                    Status.PRESENT,
                    None,
                    uid,
                    str(header.get("StudyInstanceUID", "")) or None,
                )
                _discard(target)
                return _Prepared(volume.label, name, size, None, outcome)
        coerced_path = target.with_suffix(".coerced")
        foreign = str(header.get("PatientID", ""))
        changed = await _finish(write_coerced, source, coerced_path, coercion, dt.datetime.now(dt.UTC))
        _discard(target)
        return _Prepared(
            volume.label, name, size, coerced_path, None, changed, (coercion.patient_id or "", foreign)
        )
    except StorageUnavailable:
        _discard(target)
        raise
    except Exception as exc:
        # Whatever a damaged file makes the parser raise, it fails this member alone.
        _discard(target)
        _discard(target.with_suffix(".coerced"))
        reason = (
            str(exc) if isinstance(exc, VolumeError) else f"not a readable DICOM file ({type(exc).__name__})"
        )
        return _Prepared(
            volume.label, name, size, None, MemberOutcome(volume.label, name, Status.UNREADABLE, reason)
        )


async def _finish(function: Callable[..., T], *args: Any) -> T:
    """``function`` on a thread, waited for even when the import is cancelled: a thread
    cannot be stopped, and one still writing a member into the scratch directory while it
    is removed could leave a file behind. One member's copy is all it waits for."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def write_coerced(source: Path, target: Path, coercion: Coercion, when: dt.datetime) -> list[str]:
    """Write ``source`` reconciled to ``target`` (blocking); the attributes changed.

    Only the header is parsed and rewritten: every attribute the coercion touches precedes
    Pixel Data (7FE0,0010) in tag order (PS3.5 §7.1), so the bytes from Pixel Data to the
    end are copied as they are, in chunks, and the pixel data never pass through memory.
    A Deflated transfer syntax (PS3.5 A.5) compresses the whole data set, so it is
    rewritten whole."""
    with source.open("rb") as file:
        header = pydicom.dcmread(file, stop_before_pixels=True)
        rest = file.tell()
        changed = reconcile(header, coercion, when)
        deflated = header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if deflated:
            full = pydicom.dcmread(source)
            reconcile(full, coercion, when)
            full.save_as(target)
            return changed
        with target.open("wb") as out:
            header.save_as(out)
            file.seek(rest)
            shutil.copyfileobj(file, out, 1 << 20)
    return changed


async def _store_batch(archive: Archive, trail: Trail, batch: list[_Prepared]) -> list[MemberOutcome]:
    ready = [item for item in batch if item.path is not None]
    results = iter(await stow.store_files(archive, trail, [item.path for item in ready if item.path]))
    outcomes: list[MemberOutcome] = []
    coercions = []
    for item in batch:
        if item.outcome is not None:
            outcomes.append(item.outcome)
            continue
        result = next(results)
        outcome = _outcome(item, result)
        if outcome.status is Status.STORED and item.coerced:
            coercions.append(_coercion_event(trail, item, result))
        outcomes.append(outcome)
    for event in coercions:
        # Every coercion is on the trail (IHE IRWF.b: the import is a patient record
        # change): who, which instance, which attributes (names, never values).
        await audit_repository.record(archive.pool, event)
    await audit.export(archive, coercions)
    return outcomes


def _outcome(item: _Prepared, result: stow.InstanceResult) -> MemberOutcome:
    if result.failure is None:
        status = Status.PRESENT if result.already_stored else Status.STORED
        reason = None
    elif result.failure is FailureReason.CANNOT_UNDERSTAND:
        status, reason = Status.UNREADABLE, "not a DICOM instance the archive can read"
    else:
        status, reason = Status.REFUSED, _REASONS.get(result.failure, result.failure.name.lower())
    return MemberOutcome(
        item.volume,
        item.member,
        status,
        reason,
        result.sop_instance_uid,
        result.study_instance_uid,
        item.coerced if status is Status.STORED else [],
    )


_REASONS = {
    FailureReason.DUPLICATE_SOP_INSTANCE: "another instance is stored under this SOP Instance UID",
    FailureReason.DATA_SET_MISMATCH: "its study or series belongs to another patient or study",
    FailureReason.PROCESSING_FAILURE: "processing failure (may succeed if retried)",
}


def _coercion_event(trail: Trail, item: _Prepared, result: stow.InstanceResult) -> Any:
    event = trail.child(Transaction.COERCE)
    event.outcome, event.instances = 200, 1
    event.detail = "coerced " + ", ".join(item.coerced)
    event.study_uids = [result.study_instance_uid or ""]
    event.series_uids = [result.series_instance_uid or ""]
    event.instance_uids = [result.sop_instance_uid or ""]
    event.patient_ids = [p for p in item.patient_ids if p]
    event.owner_hospitals = [trail.event.hospital or ""]
    return event


async def _notify(listener: Listener | None, tally: Tally, outcomes: list[MemberOutcome]) -> None:
    if listener is not None:
        pending = listener(tally, outcomes)
        if pending is not None:
            await pending
