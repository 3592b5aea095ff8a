"""WADO-RS (PS3.18 §10.4): retrieve instances, metadata and bulk data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from app.dicom.frames import Frame, frame_ranges
from app.dicom.header import BULK_PLACEHOLDER
from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.errors import NotAcceptable, NotFound, RangeNotSatisfiable
from app.repository import retrieve
from app.routers.negotiation import DicomChoice
from app.state import Archive
from app.storage.base import BlobReader, BlobStore

PIXEL_DATA = "7FE00010"


@dataclass(frozen=True)
class Body:
    media_type: str
    chunks: AsyncIterator[bytes]
    length: int | None = None
    #: ``Content-Range`` of a partial (206) response.
    content_range: str | None = None


async def instances(
    archive: Archive, choice: DicomChoice, study: str, series: str | None = None, instance: str | None = None
) -> Body:
    """The instances of a study, series or one instance, as ``multipart/related``. Every
    check happens before the first byte: a streamed response cannot change its status."""
    objects = await retrieve.objects(archive.pool, study, series, instance)
    if not objects:
        raise NotFound(_missing(study, series, instance))
    for obj in objects:
        if not choice.accepts(obj.transfer_syntax_uid):
            raise NotAcceptable(
                f"instance {obj.sop_instance_uid} is stored as {obj.transfer_syntax_uid}; "
                f"the archive cannot convert it to {', '.join(choice.transfer_syntaxes)}"
            )
    first = await archive.store.open(objects[0].object_key)

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        for index, obj in enumerate(objects):
            reader = first if index == 0 else await archive.store.open(obj.object_key)
            headers = {
                "Content-Type": f"application/dicom; transfer-syntax={obj.transfer_syntax_uid}",
                "Content-Length": str(obj.size),
                "Content-Location": _instance_path(
                    obj.study_instance_uid, obj.series_instance_uid, obj.sop_instance_uid
                ),
            }
            yield headers, _drain(reader)

    boundary = multipart_boundary()
    return Body(related_content_type(boundary, "application/dicom"), stream_multipart(parts(), boundary))


async def metadata(
    archive: Archive, root: str, study: str, series: str | None = None, instance: str | None = None
) -> bytes:
    """DICOM JSON of every instance in scope, read from the index (PS3.18 §10.4.1.1.2).
    Bulk values become absolute BulkDataURIs under the instance's URL."""
    rows = await retrieve.metadata(archive.pool, study, series, instance)
    if not rows:
        raise NotFound(_missing(study, series, instance))
    placeholder = f'"{BULK_PLACEHOLDER}'
    pieces = []
    for row in rows:
        url = root + _instance_path(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
        pieces.append(row.metadata.replace(placeholder, f'"{url}/bulkdata/'))
    return ("[" + ",".join(pieces) + "]").encode()


async def bulkdata(
    archive: Archive,
    study: str,
    series: str,
    instance: str,
    path: str,
    multipart: bool,
    byte_range: tuple[int, int | None] | None,
) -> Body:
    """One bulk value (PS3.18 §10.4.1.1.5). Pixel Data comes back frame by frame, each frame
    one part; other values as one part, or as a single body honouring a byte range."""
    stored = await retrieve.bulk(archive.pool, study, series, instance)
    if stored is None:
        raise NotFound(_missing(study, series, instance))
    path = path.upper()
    if path == PIXEL_DATA and stored.pixel is not None:
        frames = frame_ranges(stored.pixel)
        if frames is None:
            frames = [
                [(o, n)]
                for o, n in zip(stored.pixel.fragment_offsets, stored.pixel.fragment_lengths, strict=True)
            ]
    elif path in stored.bulk:
        frames = [[stored.bulk[path]]]
    else:
        raise NotFound(f"instance {instance} has no bulk data at {path}")
    media = "application/octet-stream"
    if stored.pixel is not None and stored.pixel.encapsulated and path == PIXEL_DATA:
        media = f"application/octet-stream; transfer-syntax={stored.transfer_syntax_uid}"
    if not multipart:
        if len(frames) != 1:
            raise NotAcceptable("this bulk value has several frames: accept multipart/related")
        ranges = _sub_range(frames[0], byte_range)
        length = sum(n for _, n in ranges)
        content_range = None
        if byte_range is not None:
            total = sum(n for _, n in frames[0])
            if byte_range[0] >= total:
                raise RangeNotSatisfiable(f"the value has {total} bytes", total)
            content_range = f"bytes {byte_range[0]}-{byte_range[0] + length - 1}/{total}"
        chunks = _read_ranges(archive.store, stored.object_key, ranges)
        return Body("application/octet-stream", chunks, length, content_range)

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        for frame in frames:
            yield {"Content-Type": media}, _read_ranges(archive.store, stored.object_key, frame)

    boundary = multipart_boundary()
    return Body(
        related_content_type(boundary, "application/octet-stream"), stream_multipart(parts(), boundary)
    )


def _sub_range(frame: Frame, byte_range: tuple[int, int | None] | None) -> Frame:
    """Restrict a value's ranges to an HTTP byte range of the value (RFC 9110 §14)."""
    if byte_range is None:
        return frame
    start, end = byte_range
    total = sum(n for _, n in frame)
    end = total - 1 if end is None or end >= total else end
    out: Frame = []
    position = 0
    for offset, length in frame:
        lo, hi = max(start, position), min(end + 1, position + length)
        if lo < hi:
            out.append((offset + lo - position, hi - lo))
        position += length
    return out


async def _read_ranges(store: BlobStore, key: str, ranges: Frame) -> AsyncIterator[bytes]:
    for offset, length in ranges:
        async for chunk in _drain(await store.open(key, offset, offset + length)):
            yield chunk


async def _drain(reader: BlobReader) -> AsyncIterator[bytes]:
    try:
        async for chunk in reader:
            yield chunk
    finally:
        await reader.aclose()


def _instance_path(study: str, series: str, instance: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{instance}"


def _missing(study: str, series: str | None, instance: str | None) -> str:
    if instance:
        return f"no instance {instance} in series {series} of study {study}"
    if series:
        return f"no series {series} in study {study}"
    return f"no study {study}"
