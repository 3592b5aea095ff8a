"""STOW-RS (PS3.18 §10.5): store instances from a ``multipart/related`` request.

The pipeline, which DIMSE C-STORE and the CD import share: the reader spools every part
to disk (:mod:`.reader`), and each part, as it completes, is parsed, indexed and described
in one hop off the event loop (:func:`prepare_part`); only once the whole body is known to
be well formed is anything stored, so a request refused as a whole (400, 413, 415) stores
nothing. The instances are then written in batches, in two phases
(:mod:`app.repository.instances`): the batch's pending rows, its parents upserted once;
its objects, each spooled file handed to the store without another copy; the batch marked
stored with its audit event. Then the response (:mod:`.response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterable, Iterator, Sequence
from dataclasses import dataclass
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
from app.repository.instances import ObjectFacts, Outcome, Pending, Write
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.stow.reader import SpooledPart, spool_parts
from app.services.stow.response import InstanceResult, StowResponse, response
from app.storage.base import CHUNK_SIZE, new_key

log = logging.getLogger(__name__)

#: Objects of one batch put at once: each waits on the object store.
_CONCURRENCY = 4
#: Instances written in one batch (one transaction for each of its two index phases):
#: enough to share a round trip among many, few enough to hold parents' locks briefly.
_BATCH = 64

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
        on_part=prepare_part,
    )
    try:
        # The spool files are the request's own: they may become the objects.
        results = await store_prepared(archive, trail, spooled, study, move=True)
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


async def store_files(
    archive: Archive, trail: Trail, paths: Sequence[Path], *, move: bool = False
) -> list[InstanceResult]:
    """Store Part 10 files already on this machine's disk: DIMSE C-STOREs' received data
    sets, the files of an imported CD. The same pipeline as STOW-RS: one result per file, in
    order. With ``move`` the caller gives the files up (they may become the objects);
    otherwise they stay as they are. Either way the caller removes what is left."""
    parts = [await asyncio.to_thread(_prepare_file, path) for path in paths]
    return await store_prepared(archive, trail, parts, None, move=move)


def _prepare_file(path: Path) -> tuple[SpooledPart, Prepared | HeaderError]:
    """A file on disk as a spooled part, with its size and SHA-256, prepared (blocking)."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                hasher.update(chunk)
                size += len(chunk)
    except OSError as exc:
        # One unreadable file (a C-STORE given up on by its timeout, whose spool file went
        # with it) fails alone, not the batch it was taken into.
        log.warning("an instance to store could not be read: %s", type(exc).__name__)
        return SpooledPart({}, None, path, 0, b""), HeaderError("the file could not be read")
    part = SpooledPart({}, None, path, size, hasher.digest())
    return part, _prepared(part)


@dataclass(frozen=True)
class Prepared:
    """A part parsed, indexed and described: all the pipeline needs of it, made in one
    hop off the event loop. The parsed data set itself is not kept."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    write: Write

    def result(self, failure: FailureReason | None = None, *, already_stored: bool = False) -> InstanceResult:
        return InstanceResult(
            self.sop_class_uid, self.sop_instance_uid, self.study_instance_uid, self.series_instance_uid,
            failure, already_stored,
        )  # fmt: skip


async def prepare_part(part: SpooledPart) -> Prepared | HeaderError:
    """Parse, index and describe a spooled part (off the event loop); a refusal is a value."""
    if part.content_type is not None and part.content_type.essence != MediaTypes.DICOM.value:
        return HeaderError(f"part is {part.content_type.essence}, not application/dicom")
    return await asyncio.to_thread(_prepared, part)


def _prepared(part: SpooledPart) -> Prepared | HeaderError:
    try:
        with part.path.open("rb") as file:
            parsed = read_instance(file)
    except HeaderError as exc:
        return exc
    try:
        write = Write(index_record(parsed.dataset, parsed.rendered), _facts(part, parsed))
    except Exception:
        # A value no layer expected: refused like an unreadable header, logged without it.
        log.exception("STOW-RS: an instance could not be indexed")
        return HeaderError("the data set could not be indexed")
    return Prepared(
        parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_instance_uid, parsed.series_instance_uid,
        write,
    )  # fmt: skip


async def store_prepared(
    archive: Archive,
    trail: Trail,
    parts: Sequence[tuple[SpooledPart, Prepared | HeaderError]],
    study: str | None,
    *,
    move: bool = False,
) -> list[InstanceResult]:
    """The store pipeline every protocol shares: the parts (from :func:`prepare_part`)
    stored for the trail's hospital, in two phases, audited; one result per part, in order.

    Instances are written in batches of distinct SOP Instance UIDs: each batch's parents
    upserted once, its pending rows inserted and then marked stored in set-based
    statements, its audit event recorded in the transaction that makes it visible, and its
    objects put concurrently in between. Each instance fails or succeeds alone (PS3.18
    §10.5.3): only the loss of the database or the object store (:class:`StorageUnavailable`)
    fails the whole request, and then every instance not yet stored is undone."""
    if trail.scope.hospital_pk is None:
        raise Forbidden("only a member hospital's staff may store instances")
    results: list[InstanceResult | None] = [None] * len(parts)
    todo: list[tuple[int, SpooledPart, Prepared]] = []
    for i, (part, prepared) in enumerate(parts):
        if isinstance(prepared, HeaderError):
            log.info("STOW-RS part refused: %s", prepared)
            results[i] = InstanceResult(None, None, failure=FailureReason.CANNOT_UNDERSTAND)
        elif study is not None and prepared.study_instance_uid != study:
            # PS3.18 §10.5.1.1: an instance of another study than the one addressed is refused.
            results[i] = prepared.result(FailureReason.DATA_SET_MISMATCH)
        else:
            todo.append((i, part, prepared))
    for batch in _batches(todo):
        for i, result in await _store_batch(archive, trail, batch, move):
            results[i] = result
    done = [r for r in results if r is not None]
    assert len(done) == len(parts)
    for result in done:
        if result.failure is not None:
            metrics.INSTANCES_REFUSED.labels(f"{int(result.failure):04X}").inc()
    return done


def _batches(
    todo: list[tuple[int, SpooledPart, Prepared]],
) -> Iterator[list[tuple[int, SpooledPart, Prepared]]]:
    """Batches of at most _BATCH instances, in order, none holding a SOP Instance UID
    twice: an instance sent twice in one request is stored once, then found identical
    (or different) like any other sent again."""
    while todo:
        batch: list[tuple[int, SpooledPart, Prepared]] = []
        later: list[tuple[int, SpooledPart, Prepared]] = []
        seen: set[str] = set()
        for item in todo:
            uid = item[2].sop_instance_uid
            if uid in seen or len(batch) == _BATCH:
                later.append(item)
            else:
                seen.add(uid)
                batch.append(item)
        yield batch
        todo = later


async def _store_batch(
    archive: Archive, trail: Trail, batch: list[tuple[int, SpooledPart, Prepared]], move: bool
) -> list[tuple[int, InstanceResult]]:
    hospital_pk = trail.scope.hospital_pk
    assert hospital_pk is not None  # checked by store_prepared
    try:
        pendings = await repository.begin(
            archive.pool, [p.write for _, _, p in batch], archive.settings.pending_timeout, hospital_pk
        )
    except (StorageUnavailable, Forbidden):
        raise
    except Exception:
        if len(batch) > 1:
            # One instance's content met a defect (a value no layer expected): store them
            # one by one, so that only that one is refused.
            return [r for item in batch for r in await _store_batch(archive, trail, [item], move)]
        log.exception("STOW-RS: an instance could not be stored")
        (i, _, prepared) = batch[0]
        return [(i, prepared.result(FailureReason.PROCESSING_FAILURE))]
    answers: list[tuple[int, InstanceResult]] = []
    new: list[tuple[int, SpooledPart, Prepared, Pending]] = []
    for (i, part, prepared), pending in zip(batch, pendings, strict=True):
        if pending.outcome is Outcome.NEW:
            new.append((i, part, prepared, pending))
        elif pending.outcome is Outcome.IDENTICAL:
            # Storing the same bytes again is an idempotent success.
            answers.append((i, prepared.result(already_stored=True)))
        else:
            answers.append((i, prepared.result(_REFUSALS[pending.outcome])))
    if new:
        stored = await _write_objects(archive, trail, new, move)
        for i, _, prepared, pending in new:
            failure = None if pending.instance_pk in stored else FailureReason.PROCESSING_FAILURE
            answers.append((i, prepared.result(failure)))
    return answers


async def _write_objects(
    archive: Archive, trail: Trail, new: list[tuple[int, SpooledPart, Prepared, Pending]], move: bool
) -> set[int]:
    """Phases two and three of a batch: the objects put, a few at a time, then the
    instances marked stored with the batch's audit event. Whatever interrupts them — an
    error, a lost client, a cancelled task — the objects and pending rows of the instances
    not stored are removed before it propagates. Returns the pks of the stored instances."""
    written: list[tuple[Pending, str]] = []
    attempted: list[tuple[Pending, str]] = []
    stored: set[int] = set()
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def put(part: SpooledPart, pending: Pending, key: str) -> None:
        async with gate:
            attempted.append((pending, key))
            try:
                await archive.store.put_file(key, part.path, move=move)
            except StorageUnavailable:
                raise
            except Exception:
                # One instance's object could not be written: refused, the others go on.
                log.exception("STOW-RS: an instance's object could not be stored")
                return
            written.append((pending, key))

    event = trail.child(Transaction(trail.event.transaction))

    def event_of(marked: set[int]) -> AuditEvent:
        # In the request's order, whatever order the puts ended in.
        _describe(event, trail, [(part, prepared) for _, part, prepared, p in new if p.instance_pk in marked])
        return event

    try:
        try:
            async with asyncio.TaskGroup() as group:
                for _, part, prepared, pending in new:
                    group.create_task(put(part, pending, prepared.write.facts.object_key))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        if written:
            stored = await repository.mark_stored(archive.pool, written, event_of)
    finally:
        if len(stored) < len(new):
            undo = [(p, pr.write.facts.object_key) for _, _, pr, p in new if p.instance_pk not in stored]
            await asyncio.shield(_undo(archive, undo, attempted, written))
    orphans = [p.orphan_key for _, _, _, p in new if p.orphan_key and p.instance_pk in stored]
    for key in orphans:
        with contextlib.suppress(Exception):
            await archive.store.delete(key)
    if stored:
        metrics.INSTANCES_STORED.labels(trail.event.transaction).inc(len(stored))
        await audit.export(archive, [event])
    return stored


def _describe(event: AuditEvent, trail: Trail, stored: list[tuple[SpooledPart, Prepared]]) -> None:
    """The storing transaction's event: its own kind (STOW-RS, or C-STORE for the DICOM
    listener), every instance it makes visible."""
    event.outcome, event.instances = 200, len(stored)
    event.bytes = sum(part.size for part, _ in stored)
    event.study_uids = list(dict.fromkeys(p.study_instance_uid for _, p in stored))
    event.series_uids = list(dict.fromkeys(p.series_instance_uid for _, p in stored))
    event.instance_uids = [p.sop_instance_uid for _, p in stored]
    event.patient_ids = list(dict.fromkeys(p.write.record.patient.patient_id for _, p in stored))
    event.owner_hospitals = [trail.event.hospital or ""]


async def _undo(
    archive: Archive,
    undo: list[tuple[Pending, str]],
    attempted: list[tuple[Pending, str]],
    written: list[tuple[Pending, str]],
) -> None:
    """Remove the objects and pending rows of ``undo``: the batch's instances not stored."""
    tried = {p.instance_pk for p, _ in attempted}
    done = {p.instance_pk for p, _ in written}
    removable: list[tuple[Pending, str]] = []
    for pending, key in undo:
        if pending.instance_pk in tried:
            try:
                await archive.store.delete(key)
            except Exception:
                if pending.instance_pk in done:
                    # The object exists and could not be removed: keep its pending row, so
                    # the sweep retries, rather than leave an object nothing refers to.
                    log.warning("could not remove an abandoned object; the sweep will retry")
                    continue
                # A put that failed stored nothing (puts are atomic): the row can go.
        removable.append((pending, key))
    try:
        await repository.abandon(archive.pool, removable)
    except Exception:
        log.warning("could not remove abandoned pending rows; the sweep will", exc_info=True)


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


def _facts(part: SpooledPart, parsed: ParsedInstance) -> ObjectFacts:
    pixel = parsed.pixel
    fragments = pixel.fragments if pixel is not None and pixel.encapsulated else None
    bulk = {path: [loc.offset, loc.length] for path, loc in parsed.bulk.items() if path != "7FE00010"}
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
        bulk=json.dumps(bulk),
        metadata=json.dumps(to_dicom_json(parsed)),
    )
