"""STOW-RS (PS3.18 §10.5): store instances from a ``multipart/related`` request.

The body is read from the stream and every part spooled to disk (headers parsed as each
part completes, off the event loop); only once the whole body is known to be well formed
is anything stored, so a request refused as a whole (400, 413, 415) stores nothing. Each
instance is then written in two phases (:mod:`app.repository.instances`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

from app.dicom.header import HeaderError, ParsedInstance, read_instance, to_dicom_json
from app.dicom.indexing import index_record
from app.dicom.media import MediaType, MediaTypes, parse_content_type
from app.dicom.multipart import as_single_part
from app.dicom.status import FailureReason
from app.errors import Forbidden, StorageUnavailable, UnsupportedMediaType
from app.observability import metrics
from app.repository import instances as repository
from app.repository.audit import AuditEvent
from app.repository.instances import ObjectFacts, Outcome, Pending
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.stow.reader import SpooledPart, spool_parts
from app.services.stow.response import InstanceResult, StowResponse, failed, response
from app.storage.base import CHUNK_SIZE, new_key

log = logging.getLogger(__name__)

#: Instances of one request stored at once.
_CONCURRENCY = 4

_REFUSALS = {
    Outcome.DIFFERENT: FailureReason.DUPLICATE_SOP_INSTANCE,
    Outcome.IN_PROGRESS: FailureReason.PROCESSING_FAILURE,
    Outcome.WRONG_STUDY: FailureReason.DATA_SET_MISMATCH,
    Outcome.WRONG_PATIENT: FailureReason.DATA_SET_MISMATCH,
}


async def store(
    archive: Archive,
    trail: Trail,
    chunks: AsyncIterable[bytes],
    content_type: str | None,
    root: str,
    study: str | None,
) -> StowResponse:
    """Store the request's instances for the caller's hospital. Each stored instance is
    audited in the transaction that makes it visible; the request's own event records the
    refused ones, if any."""
    settings = archive.settings
    media = _check_content_type(content_type)
    if media.essence == MediaTypes.DICOM.value:
        # A single instance as the whole body (PS3.18 §10.5.1, "application/dicom").
        chunks, media = as_single_part(chunks, MediaTypes.DICOM.value)
    spooled = await spool_parts(
        chunks,
        media,
        settings.spool_path,
        settings.max_part_size,
        settings.max_request_size,
        on_part=parse_part,
    )
    try:
        results = await store_parsed(archive, trail, spooled, study)
    finally:
        for part, _ in spooled:
            with contextlib.suppress(OSError):
                part.discard()
    answer = response(results, root, study)
    await _record_refusals(archive, trail, answer)
    return answer


async def _record_refusals(archive: Archive, trail: Trail, answer: StowResponse) -> None:
    refused = [r for r in answer.results if r.failure is not None]
    if not refused:
        audit.stored_in_transaction(trail)
        return
    trail.note(
        studies=(r.study_instance_uid or "" for r in refused),
        instances=(r.sop_instance_uid or "" for r in refused),
    )
    detail = f"{len(refused)} of {len(answer.results)} instances refused"
    await audit.commit(archive, trail, answer.status, detail)


async def store_files(archive: Archive, trail: Trail, paths: Sequence[Path]) -> list[InstanceResult]:
    """Store Part 10 files already on this machine's disk: a DIMSE C-STORE's received data
    set, the files of an imported CD. The same pipeline as STOW-RS: one result per file, in
    order. The files are the caller's and stay where they are."""
    parts = [await asyncio.to_thread(describe_file, path) for path in paths]
    parsed = [(part, await parse_part(part)) for part in parts]
    return await store_parsed(archive, trail, parsed, None)


def describe_file(path: Path) -> SpooledPart:
    """A file on disk as a spooled part: its size and SHA-256 (blocking)."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return SpooledPart({}, None, path, size, hasher.digest())


async def store_parsed(
    archive: Archive,
    trail: Trail,
    parts: Sequence[tuple[SpooledPart, ParsedInstance | HeaderError]],
    study: str | None,
) -> list[InstanceResult]:
    """The store pipeline every protocol shares: each part (parsed by :func:`parse_part`)
    stored for the trail's hospital, in two phases, audited; one result per part, in order.

    Each instance fails or succeeds alone (PS3.18 §10.5.3): only the loss of the database
    or the object store (:class:`StorageUnavailable`) fails the whole request, and then
    every instance not yet stored is undone."""
    if trail.scope.hospital_pk is None:
        raise Forbidden("only a member hospital's staff may store instances")
    # A few instances at a time: each waits on the database and the object store.
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(part: SpooledPart, parsed: ParsedInstance | HeaderError) -> InstanceResult:
        async with gate:
            return await _store_isolated(archive, trail, part, parsed, study)

    # A task group: if one fails (the store is down), the others are cancelled, and undo
    # their writes, before the caller removes the files.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(part, parsed)) for part, parsed in parts]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    results = [task.result() for task in tasks]
    for result in results:
        if result.failure is not None:
            metrics.INSTANCES_REFUSED.labels(f"{int(result.failure):04X}").inc()
    return results


def _check_content_type(value: str | None) -> MediaType:
    if not value:
        raise UnsupportedMediaType("a STOW-RS request needs a Content-Type")
    media = parse_content_type(value)
    if media.essence == MediaTypes.DICOM.value:
        return media
    if media.essence != "multipart/related":
        raise UnsupportedMediaType(
            f"STOW-RS takes multipart/related or application/dicom, not {media.essence}"
        )
    kind = media.params.get("type", MediaTypes.DICOM.value).lower()
    if kind != MediaTypes.DICOM.value:
        # PS3.18 §10.5.1.2: metadata-and-bulk-data requests are optional; this archive
        # takes complete Part 10 instances only.
        raise UnsupportedMediaType(
            f'multipart/related; type="{kind}" is not supported; use application/dicom'
        )
    return media


async def parse_part(part: SpooledPart) -> ParsedInstance | HeaderError:
    """Parse a spooled part's header (off the event loop); a refusal is a value."""
    if part.content_type is not None and part.content_type.essence != MediaTypes.DICOM.value:
        return HeaderError(f"part is {part.content_type.essence}, not application/dicom")
    try:
        return await asyncio.to_thread(_read_header, part.path)
    except HeaderError as exc:
        return exc


def _read_header(path: Path) -> ParsedInstance:
    """Parse the header of the file at ``path`` (blocking); app.dicom reads, this opens."""
    with path.open("rb") as file:
        return read_instance(file)


async def _store_isolated(
    archive: Archive, trail: Trail, part: SpooledPart, parsed: ParsedInstance | HeaderError, study: str | None
) -> InstanceResult:
    """:func:`_store_one`, where anything but an outage fails this instance only."""
    try:
        return await _store_one(archive, trail, part, parsed, study)
    except (StorageUnavailable, Forbidden):
        raise
    except Exception:
        # A defect met by one instance's content (a value no layer expected): logged
        # without the value, refused with a reason, and the request's others go on.
        log.exception("STOW-RS: an instance could not be stored")
        if isinstance(parsed, HeaderError):
            return InstanceResult(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
        return InstanceResult(
            parsed.sop_class_uid,
            parsed.sop_instance_uid,
            parsed.study_instance_uid,
            parsed.series_instance_uid,
            FailureReason.PROCESSING_FAILURE,
        )


async def _store_one(
    archive: Archive, trail: Trail, part: SpooledPart, parsed: ParsedInstance | HeaderError, study: str | None
) -> InstanceResult:
    if isinstance(parsed, HeaderError):
        log.info("STOW-RS part refused: %s", parsed)
        return InstanceResult(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
    result = InstanceResult(
        parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_instance_uid, parsed.series_instance_uid
    )
    if study is not None and parsed.study_instance_uid != study:
        # PS3.18 §10.5.1.1: an instance of another study than the one addressed is refused.
        return failed(result, FailureReason.DATA_SET_MISMATCH)
    facts = await asyncio.to_thread(_facts, part, parsed)
    record = index_record(parsed.dataset)
    hospital_pk = trail.scope.hospital_pk
    assert hospital_pk is not None  # checked by store_parsed
    pending = await repository.begin(
        archive.pool, record, facts, archive.settings.pending_timeout, hospital_pk
    )
    if pending.outcome is Outcome.IDENTICAL:
        # Storing the same bytes again is an idempotent success.
        return replace(result, already_stored=True)
    if pending.outcome is not Outcome.NEW:
        return failed(result, _REFUSALS[pending.outcome])
    # The storing transaction's own kind: STOW-RS, or C-STORE for the DICOM listener.
    event = trail.child(Transaction(trail.event.transaction))
    event.outcome, event.instances, event.bytes = 200, 1, part.size
    event.study_uids, event.series_uids = [parsed.study_instance_uid], [parsed.series_instance_uid]
    event.instance_uids, event.patient_ids = [parsed.sop_instance_uid], [record.patient.patient_id]
    event.owner_hospitals = [trail.event.hospital or ""]
    if await _write_object(archive, part.path, pending, facts.object_key, event):
        metrics.INSTANCES_STORED.labels(trail.event.transaction).inc()
        await audit.export(archive, [event])
        return result
    return failed(result, FailureReason.PROCESSING_FAILURE)


async def _write_object(archive: Archive, path: Path, pending: Pending, key: str, event: AuditEvent) -> bool:
    """Phases two and three. Whatever interrupts them — an error, a lost client, a
    cancelled task — the object and the pending row are removed before it propagates."""
    written = stored = False
    try:
        await archive.store.put(key, read_file(path))
        written = True
        stored = await repository.mark_stored(archive.pool, pending, key, event)
    finally:
        if not stored:
            await asyncio.shield(_undo(archive, pending, key, written))
    if pending.orphan_key:
        with contextlib.suppress(Exception):
            await archive.store.delete(pending.orphan_key)
    return stored


async def _undo(archive: Archive, pending: Pending, key: str, written: bool) -> None:
    try:
        await archive.store.delete(key)
    except Exception:
        if written:
            # The object exists and could not be removed: keep its pending row, so the
            # sweep retries, rather than leave an object nothing refers to.
            log.warning("could not remove an abandoned object; the sweep will retry")
            return
        # A put that failed stored nothing (puts are atomic): the row can go.
    try:
        await repository.abandon(archive.pool, pending, key)
    except Exception:
        log.warning("could not remove an abandoned pending row; the sweep will", exc_info=True)


async def read_file(path: Path) -> AsyncIterator[bytes]:
    with await asyncio.to_thread(path.open, "rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
            yield chunk


def _facts(part: SpooledPart, parsed: ParsedInstance) -> ObjectFacts:
    pixel = parsed.pixel
    fragments = pixel.fragments if pixel is not None and pixel.encapsulated else None
    return ObjectFacts(
        object_key=new_key(),
        size=part.size,
        sha256=part.sha256,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        pixel_offset=pixel.value_offset if pixel else None,
        pixel_length=pixel.value_length if pixel else None,
        pixel_encapsulated=pixel.encapsulated if pixel else None,
        fragment_offsets=[f[0] for f in fragments] if fragments is not None else None,
        fragment_lengths=[f[1] for f in fragments] if fragments is not None else None,
        basic_offset_table=list(pixel.basic_offset_table) if pixel and pixel.encapsulated else None,
        frame_starts=list(pixel.frame_starts) if pixel and pixel.encapsulated else None,
        bulk={path: [loc.offset, loc.length] for path, loc in parsed.bulk.items() if path != "7FE00010"},
        metadata=to_dicom_json(parsed),
    )
