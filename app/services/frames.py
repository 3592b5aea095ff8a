"""WADO-RS frames (PS3.18 §10.4.1.1.4 "Retrieve Frames"): chosen frames of one instance,
each read with one ranged read at offsets the index computed at ingest."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping

from app.dicom.frames import Frame, frame_ranges
from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.dicom.negotiation import negotiate_frames
from app.dicom.pixels import native_frame_bytes
from app.dicom.transfer_syntaxes import EXPLICIT_VR_BIG_ENDIAN
from app.errors import BadRequest, NotAcceptable, NotFound
from app.repository import retrieve
from app.repository.retrieve import Renderable, StoredBulk
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.bodies import Body, open_frame, read_frame
from app.services.budget import decoding_memory
from app.services.pixel_sources import pixel_source

#: More frames than this in one request is refused rather than streamed.
MAX_FRAMES_PER_REQUEST = 10_000
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]: 1-based frame numbers in request order (PS3.18 §8.4.1).

    >>> parse_frame_list("3,1,3")
    [3, 1, 3]
    """
    items = text.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    numbers = []
    for item in items:
        item = item.strip()
        # ASCII digits only: str.isdigit() takes "²", which int() refuses.
        if not _FRAME_NUMBER.fullmatch(item) or int(item) < 1:
            raise BadRequest(f"frame list {text[:64]!r}: {item[:16]!r} is not a frame number (1, 2, …)")
        numbers.append(int(item))
    return numbers


async def frames(
    archive: Archive,
    trail: Trail,
    accept: str | None,
    study: str,
    series: str,
    instance: str,
    numbers: list[int],
) -> Body:
    # One query: it finds the instance and all that serving its frames needs from the index.
    item = await retrieve.renderable(archive.pool, trail.scope, study, series, instance)
    if item is None:
        raise NotFound(f"no instance {instance} in series {series} of study {study}")
    stored = item.stored
    trail.note_instance(study, series, instance, stored)
    pixel = stored.pixel
    if pixel is None:
        raise NotFound(f"instance {instance} has no pixel data")
    choice = negotiate_frames(accept, stored.transfer_syntax_uid, pixel.encapsulated)
    ranges = frame_ranges(pixel)
    if ranges is None:
        raise NotAcceptable(f"the frame boundaries of instance {instance} cannot be determined")
    for number in numbers:
        if number > len(ranges):
            raise NotFound(f"instance {instance} has {len(ranges)} frame(s); there is no frame {number}")
    selected = [ranges[n - 1] for n in numbers]
    part_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    if choice.decode:
        return await audit.sending(
            archive,
            trail,
            await decoded_frame_parts(archive, item, selected, part_type),
        )
    return await audit.sending(archive, trail, await frame_parts(archive, stored, selected, part_type))


async def decoded_frame_parts(
    archive: Archive, item: Renderable, selected: list[Frame], part_type: str
) -> Body:
    """Compressed frames decoded to native Explicit VR Little Endian (transcoding, in the
    renderer pool), one part per frame."""
    description = (await pixel_source(archive, item)).pixel_description()
    pixel = item.stored.pixel
    assert pixel is not None
    need = decoding_memory(pixel.rows, pixel.columns, pixel.samples_per_pixel, pixel.bits_allocated)
    loop = asyncio.get_running_loop()

    async def decode(frame: Frame) -> bytes:
        async with archive.render_budget.reserve(need):
            data = b"".join([c async for c in read_frame(archive.store, item.stored.object_key, frame)])
            native = await loop.run_in_executor(archive.renderer, native_frame_bytes, data, description)
        return native.data

    # The first frame is decoded now: pixel data the archive cannot decode is a 406, not a
    # 200 with a cut body.
    first = await decode(selected[0])

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        yield {"Content-Type": part_type}, _one(first)
        for frame in selected[1:]:
            yield {"Content-Type": part_type}, _one(await decode(frame))

    boundary = multipart_boundary()
    return Body(related_content_type(boundary, part_type.split(";")[0]), stream_multipart(parts(), boundary))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def frame_parts(archive: Archive, stored: StoredBulk, selected: list[Frame], part_type: str) -> Body:
    """A multipart/related body with one part per frame; the first frame's object is opened
    now, so that an object store outage is a 503 rather than a 200 with a cut body."""
    swap = 0
    if stored.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN and stored.pixel is not None:
        swap = (stored.pixel.bits_allocated or 8) // 8

    def headers(frame: Frame) -> dict[str, str]:
        return {"Content-Type": part_type, "Content-Length": str(sum(n for _, n in frame))}

    first = await open_frame(archive.store, stored.object_key, selected[0], swap)

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        yield headers(selected[0]), first
        for frame in selected[1:]:
            yield headers(frame), await open_frame(archive.store, stored.object_key, frame, swap)

    boundary = multipart_boundary()
    root = part_type.split(";")[0]
    return Body(related_content_type(boundary, root), stream_multipart(parts(), boundary))
