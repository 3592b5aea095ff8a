"""WADO-RS (PS3.18 §10.4): retrieve instances, metadata and bulk data."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass

from app.dicom.frames import frame_ranges
from app.dicom.header import BULK_PLACEHOLDER, PIXEL_DATA_PATH
from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.dicom.negotiation import DicomChoice
from app.dicom.pixel_source import PixelSource
from app.dicom.transfer_syntaxes import EXPLICIT_VR_LITTLE_ENDIAN
from app.errors import Forbidden, NotAcceptable, NotFound, ObjectNotFound, RangeNotSatisfiable
from app.repository import retrieve
from app.repository.retrieve import Renderable, StoredMetadata, StoredObject
from app.security.principal import Right
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.bodies import Body, drain, open_frame
from app.services.deidentified import deidentified, instance_path
from app.services.frames import frame_parts
from app.services.pixel_sources import pixel_sources
from app.services.shares import take_download
from app.services.transcode import Conversion, conversion, prepare, refused, transcoded
from app.storage.base import BlobReader


async def instances(
    archive: Archive,
    trail: Trail,
    choice: DicomChoice,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Body:
    """The instances of a study, series or one instance, as ``multipart/related``. Every
    check happens before the first byte: a streamed response cannot change its status."""
    found = await _found(archive, trail, choice, study, series, instance)
    objects = [obj for obj, _ in found]
    _note(trail, objects, size=sum(o.size for o in objects))
    sources = await _sources(archive, choice, found)
    # Converting instances of one kind is tried once, on the first of them, before the
    # response starts: what would fail fails here, as a 406 (see app.services.transcode).
    tried: dict[Hashable, NotAcceptable | None] = {}
    plan: list[tuple[StoredObject, Conversion | None]] = []
    left_out: list[StoredObject] = []
    problem: NotAcceptable | None = None
    for obj, item in found:
        try:
            plan.append((obj, await _conversion(archive, choice, obj, item, sources, tried)))
        except NotAcceptable as exc:
            left_out.append(obj)
            problem = exc
    if problem is not None and not plan:
        raise problem
    # The first stored object is opened now: if it was deleted since the lookup, this is a 404.
    first = await archive.store.open(plan[0][0].object_key) if plan[0][1] is None else None
    boundary = multipart_boundary()
    parts = _instance_parts(archive, plan, first)
    if trail.scope.deidentify_key is not None:
        parts = _deidentified_parts(parts, trail.scope.deidentify_key, plan)
    body = stream_multipart(parts, boundary)
    await take_download(archive, trail)
    return await audit.sending(
        archive,
        trail,
        Body(related_content_type(boundary, "application/dicom"), body, warning=_warning(left_out)),
    )


def _warning(left_out: list[StoredObject]) -> str | None:
    """A Warning (RFC 9111 §5.5, code 299) for instances left out of a retrieve because
    they cannot be converted: the response is then a 206 (PS3.18 §8.5) that names them."""
    if not left_out:
        return None
    named = " ".join(o.sop_instance_uid for o in left_out[:20]) + (" ..." if len(left_out) > 20 else "")
    return (
        f'299 filmless "{len(left_out)} instance(s) left out, they cannot be converted to the '
        f'transfer syntax asked for (ask for transfer-syntax=* to get them as stored): {named}"'
    )


async def _found(
    archive: Archive,
    trail: Trail,
    choice: DicomChoice,
    study: str,
    series: str | None,
    instance: str | None,
) -> list[tuple[StoredObject, Renderable | None]]:
    """The instances in scope, in one query: with what converting them needs when the
    client may want some converted."""
    found: list[tuple[StoredObject, Renderable | None]]
    args = (archive.pool, trail.scope, study, series, instance)
    if _may_convert(choice):
        found = list(await retrieve.convertible(*args))
    else:
        found = [(obj, None) for obj in await retrieve.objects(*args)]
    if not found:
        raise NotFound(_missing(study, series, instance))
    return found


def _may_convert(choice: DicomChoice) -> bool:
    for syntax in choice.transfer_syntaxes:
        if syntax == "*":
            return False
        if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
            return True
    return False


def _converts(choice: DicomChoice, obj: StoredObject) -> bool:
    """Whether ``obj`` is to be converted to Explicit VR Little Endian (or refused) rather
    than sent as stored, following the client's preference order."""
    for syntax in choice.transfer_syntaxes:
        if syntax in ("*", obj.transfer_syntax_uid):
            return False
        if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
            return True
    return False


async def _sources(
    archive: Archive, choice: DicomChoice, found: list[tuple[StoredObject, Renderable | None]]
) -> dict[str, PixelSource]:
    """The pixel sources of the instances to convert, by object key (one query for those
    not known yet)."""
    items = [item for obj, item in found if item is not None and _converts(choice, obj)]
    if not items:
        return {}
    return {
        item.stored.object_key: source
        for item, source in zip(items, await pixel_sources(archive, items), strict=True)
    }


async def _conversion(
    archive: Archive,
    choice: DicomChoice,
    obj: StoredObject,
    item: Renderable | None,
    sources: dict[str, PixelSource],
    tried: dict[Hashable, NotAcceptable | None],
) -> Conversion | None:
    """None when ``obj`` goes as stored, or its conversion to Explicit VR Little Endian,
    following the client's preference order; 406 when neither is acceptable or possible."""
    problem: NotAcceptable | None = None
    for syntax in choice.transfer_syntaxes:
        if syntax in ("*", obj.transfer_syntax_uid):
            return None
        if syntax != EXPLICIT_VR_LITTLE_ENDIAN:
            continue
        assert item is not None  # found with what converting needs (see _found)
        try:
            conv = conversion(item, sources[item.stored.object_key])
            if conv.kind not in tried:
                try:
                    await prepare(archive, conv)
                    tried[conv.kind] = None
                except NotAcceptable as exc:
                    tried[conv.kind] = exc
            failed = tried[conv.kind]
            if failed is not None:
                raise failed
            return conv
        except NotAcceptable as exc:
            problem = refused(obj.sop_instance_uid, obj.transfer_syntax_uid, exc)
    if problem is not None:
        raise problem
    raise NotAcceptable(
        f"instance {obj.sop_instance_uid} is stored as {obj.transfer_syntax_uid}; "
        f"the archive cannot convert it to {', '.join(choice.transfer_syntaxes)}"
    )


#: Objects fetched ahead of the one being sent: an object store answers each GET after a
#: round trip, so a study of many small instances would otherwise wait on each in turn.
#: Each response then holds at most this many small objects (8 MiB), while its parts go
#: out in order.
_PREFETCH = 8
#: Objects up to this size are read whole when fetched ahead; larger ones just opened.
_SMALL = 1 << 20


async def _instance_parts(
    archive: Archive, plan: list[tuple[StoredObject, Conversion | None]], first: BlobReader | None
) -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
    ahead: dict[int, asyncio.Task[BlobReader | bytes | None]] = {}

    def fetch_ahead(start: int) -> None:
        for index in range(start, min(start + _PREFETCH, len(plan))):
            obj, conversion = plan[index]
            if conversion is None and index not in ahead and not (index == 0 and first is not None):
                ahead[index] = asyncio.create_task(_fetch(archive, obj))

    try:
        for index, (obj, conversion) in enumerate(plan):
            fetch_ahead(index)
            location = _instance_path(obj.study_instance_uid, obj.series_instance_uid, obj.sop_instance_uid)
            if conversion is not None:
                failed = await _prepared(archive, conversion)
                if failed is not None:
                    yield {"Content-Type": "application/json", "Content-Location": location}, failed
                    continue
                headers = {"Content-Type": f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"}
                yield {**headers, "Content-Location": location}, transcoded(archive, conversion)
                continue
            content = first if index == 0 and first is not None else await ahead.pop(index)
            if content is None:
                continue  # deleted while the response was streaming: no longer part of it
            headers = {
                "Content-Type": f"application/dicom; transfer-syntax={obj.transfer_syntax_uid}",
                "Content-Length": str(obj.size),
                "Content-Location": location,
            }
            yield headers, (_bytes(content) if isinstance(content, bytes) else drain(content))
    finally:
        await _abandon(ahead)


async def _prepared(archive: Archive, conv: Conversion) -> AsyncIterator[bytes] | None:
    """Prepare a conversion (its header and first frame) before its part starts, as the
    first of each kind was before the response: when this later one fails, the response
    has started and cannot change its status, so the instance is sent as a failed part, a
    JSON body saying why, never as a part cut off. (A frame after the first that fails
    still ends the body without its closing delimiter: its part has begun.)"""
    if conv.prepared:
        return None
    try:
        await prepare(archive, conv)
    except NotAcceptable as exc:
        # The reason alone: Content-Location names the instance (in a de-identifying
        # share's terms), the message does not.
        message = f"cannot be converted ({exc}); ask for transfer-syntax=* to get it as stored"
        return _bytes(json.dumps({"status": 406, "message": message}).encode())
    return None


async def _deidentified_parts(
    parts: AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]],
    key: bytes,
    plan: list[tuple[StoredObject, Conversion | None]],
) -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
    """A de-identifying share's copies: each part rewritten, under its replacement UIDs;
    the length is no longer known beforehand."""
    by_location = {
        _instance_path(o.study_instance_uid, o.series_instance_uid, o.sop_instance_uid): o for o, _ in plan
    }
    async for headers, chunks in parts:
        obj = by_location[headers["Content-Location"]]
        if headers["Content-Type"] == "application/json":  # a failed part (see _prepared)
            location = instance_path(
                key, obj.study_instance_uid, obj.series_instance_uid, obj.sop_instance_uid
            )
            yield {**headers, "Content-Location": location}, chunks
            continue
        syntax = headers["Content-Type"].partition("transfer-syntax=")[2] or obj.transfer_syntax_uid
        location = instance_path(key, obj.study_instance_uid, obj.series_instance_uid, obj.sop_instance_uid)
        yield (
            {"Content-Type": headers["Content-Type"], "Content-Location": location},
            deidentified(chunks, key, syntax),
        )


async def _fetch(archive: Archive, obj: StoredObject) -> BlobReader | bytes | None:
    try:
        reader = await archive.store.open(obj.object_key)
    except ObjectNotFound:
        return None
    if obj.size > _SMALL:
        return reader
    return b"".join([chunk async for chunk in drain(reader)])


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _abandon(ahead: dict[int, asyncio.Task[BlobReader | bytes | None]]) -> None:
    """Stop what was fetched ahead for a response that ended early (a client gone)."""
    for task in ahead.values():
        task.cancel()
    for task in ahead.values():
        try:
            result = await task
        except (asyncio.CancelledError, Exception):  # noqa: S112 - only cleaning up
            continue
        if result is not None and not isinstance(result, bytes):
            await result.aclose()


async def single_object(
    archive: Archive, trail: Trail, study: str, series: str, instance: str, transfer_syntax: str
) -> Body:
    """One instance as a bare ``application/dicom`` body (WADO-URI, PS3.18 §9), as stored
    (``transfer_syntax`` ``*`` or the stored UID) or converted to Explicit VR Little Endian."""
    if trail.principal is None or Right.DOWNLOAD not in trail.principal.rights:
        raise Forbidden("sending the DICOM object requires the right to download")
    choice = DicomChoice([transfer_syntax])
    found = await _found(archive, trail, choice, study, series, instance)
    ((obj, item),) = found
    _note(trail, [obj], size=obj.size)
    conv = await _conversion(archive, choice, obj, item, await _sources(archive, choice, found), {})
    if conv is not None:
        converted = transcoded(archive, conv)
        if trail.scope.deidentify_key is not None:
            converted = deidentified(converted, trail.scope.deidentify_key, EXPLICIT_VR_LITTLE_ENDIAN)
        body = Body(f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}", converted)
    else:
        reader = await archive.store.open(obj.object_key)
        media_type = f"application/dicom; transfer-syntax={obj.transfer_syntax_uid}"
        key = trail.scope.deidentify_key
        if key is not None:
            body = Body(media_type, deidentified(drain(reader), key, obj.transfer_syntax_uid))
        else:
            body = Body(media_type, drain(reader), obj.size)
    await take_download(archive, trail)
    return await audit.sending(archive, trail, body)


@dataclass(frozen=True)
class Metadata:
    etag: str
    #: None when the client's ``If-None-Match`` already holds the current version.
    body: bytes | None


async def metadata(
    archive: Archive,
    trail: Trail,
    root: str,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    if_none_match: str | None = None,
) -> Metadata:
    """DICOM JSON of every instance in scope, kept at ingest so objects are never re-read
    (PS3.18 §10.4.1.1.2). Bulk values become BulkDataURIs under the instance's URL. The
    ETag derives from what is stored in scope and the root the URIs are built on, so a
    revalidation costs one aggregate query, and a first fetch the one query of the rows."""
    if if_none_match is not None:
        version = await retrieve.version(archive.pool, trail.scope, study, series, instance)
        if version is None:
            raise NotFound(_missing(study, series, instance))
        etag = _etag(version, root)
        if etag in {t.strip() for t in if_none_match.split(",")}:
            trail.note(
                studies=[study], series=[series] if series else [], instances=[instance] if instance else []
            )
            await audit.commit(archive, trail, 304)
            return Metadata(etag, None)
    rows = await retrieve.metadata(archive.pool, trail.scope, study, series, instance)
    version = retrieve.version_of(rows)
    if version is None:
        raise NotFound(_missing(study, series, instance))
    # From the rows sent: what changed since a revalidation's version is what they hold.
    etag = _etag(version, root)
    _note(trail, rows)
    placeholder = f'"{BULK_PLACEHOLDER}'
    pieces = []
    for row in rows:
        url = root + _instance_path(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
        pieces.append(row.metadata.replace(placeholder, f'"{url}/bulkdata/'))
    await audit.commit(archive, trail, 200)
    return Metadata(etag, ("[" + ",".join(pieces) + "]").encode())


def _etag(version: str, root: str) -> str:
    return '"' + hashlib.sha256(f"{version}|{root}".encode()).hexdigest()[:32] + '"'


async def bulkdata(
    archive: Archive,
    trail: Trail,
    study: str,
    series: str,
    instance: str,
    path: str,
    multipart: bool,
    byte_range: tuple[int, int | None] | None,
) -> Body:
    """One bulk value (PS3.18 §10.4.1.1.5). Pixel Data comes back frame by frame, each frame
    one part; other values as one part, or as a single body honouring a byte range."""
    stored = await retrieve.bulk(archive.pool, trail.scope, study, series, instance)
    if stored is None:
        raise NotFound(_missing(study, series, instance))
    trail.note_instance(study, series, instance, stored)
    path = path.upper()
    if path == PIXEL_DATA_PATH and stored.pixel is not None:
        frames = frame_ranges(stored.pixel)
        if frames is None:
            # Boundaries unknown: the fragments themselves, in order.
            pixel = stored.pixel
            frames = [[f] for f in zip(pixel.fragment_offsets, pixel.fragment_lengths, strict=True)]
        part_type = "application/octet-stream"
        if stored.pixel.encapsulated:
            part_type += f"; transfer-syntax={stored.transfer_syntax_uid}"
    elif path in stored.bulk:
        frames, part_type = [[stored.bulk[path]]], "application/octet-stream"
    else:
        raise NotFound(f"instance {instance} has no bulk data at {path}")
    if multipart:
        return await audit.sending(archive, trail, await frame_parts(archive, stored, frames, part_type))
    if len(frames) != 1:
        raise NotAcceptable("this bulk value has several frames: accept multipart/related")
    total = sum(n for _, n in frames[0])
    # Opened before the response starts (open_frame): an outage is a 503, not a cut body.
    if byte_range is None:
        return await audit.sending(
            archive,
            trail,
            Body(
                "application/octet-stream",
                await open_frame(archive.store, stored.object_key, frames[0]),
                total,
            ),
        )
    start, end = byte_range
    if start >= total:
        raise RangeNotSatisfiable(f"the value has {total} bytes", total)
    end = total - 1 if end is None or end >= total else end
    chunks = await open_frame(archive.store, stored.object_key, _sub_range(frames[0], start, end))
    return await audit.sending(
        archive,
        trail,
        Body("application/octet-stream", chunks, end - start + 1, f"bytes {start}-{end}/{total}"),
    )


def _note(trail: Trail, rows: Sequence[StoredObject | StoredMetadata], size: int = 0) -> None:
    trail.note(
        studies=(r.study_instance_uid for r in rows),
        series=(r.series_instance_uid for r in rows),
        instances=(r.sop_instance_uid for r in rows),
        patients=(r.patient_id for r in rows),
        owners=(r.hospital for r in rows),
        count=len(rows),
        size=size,
    )


def _sub_range(frame: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of a value's byte ranges that fall in ``[start, end]`` of the value."""
    out = []
    position = 0
    for offset, length in frame:
        lo, hi = max(start, position), min(end + 1, position + length)
        if lo < hi:
            out.append((offset + lo - position, hi - lo))
        position += length
    return out


def _instance_path(study: str, series: str, instance: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{instance}"


def _missing(study: str, series: str | None, instance: str | None) -> str:
    if instance:
        return f"no instance {instance} in series {series} of study {study}"
    if series:
        return f"no series {series} in study {study}"
    return f"no study {study}"
