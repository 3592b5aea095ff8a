"""Rendered images and thumbnails (PS3.18 §10.4.1.1.3 "Rendered", §10.4.1.1.6
"Thumbnail"): frames decoded and rendered in the archive's bounded renderer pool, default
thumbnails cached in the object store after their first rendering."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from app.dicom.frames import Frame, frame_ranges
from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.dicom.negotiation import RenderedChoice
from app.dicom.pixel_source import PixelSource
from app.dicom.pixels import decode_frame
from app.dicom.rendering import RenderOptions, output_size, render, working_memory
from app.errors import NotAcceptable, NotFound
from app.repository import retrieve
from app.repository.retrieve import Renderable
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.bodies import Body, drain, read_frame
from app.services.pixel_sources import pixel_source, pixel_sources


async def _renderable(archive: Archive, trail: Trail, study: str, series: str, instance: str) -> Renderable:
    item = await retrieve.renderable(archive.pool, trail.scope, study, series, instance)
    if item is None:
        raise NotFound(f"no instance {instance} in series {series} of study {study}")
    return _noted(trail, study, item)


def _noted(trail: Trail, study: str, item: Renderable) -> Renderable:
    if item.stored.pixel is None:
        raise NotAcceptable(f"instance {item.sop_instance_uid} has no pixel data to render")
    trail.note_instance(study, item.series_instance_uid, item.sop_instance_uid, item.stored)
    return item


def _frame_count(item: Renderable) -> int:
    assert item.stored.pixel is not None
    return max(item.stored.pixel.number_of_frames, 1)


@dataclass(frozen=True)
class _Source:
    """What rendering any frame of one instance needs: its frame ranges, and what derives
    from its metadata (kept by object key, see app.services.pixel_sources)."""

    item: Renderable
    ranges: list[Frame]
    pixels: PixelSource


def _source(item: Renderable, pixels: PixelSource) -> _Source:
    assert item.stored.pixel is not None
    ranges = frame_ranges(item.stored.pixel)
    if ranges is None:
        raise NotAcceptable("the frame boundaries of this instance cannot be determined")
    return _Source(item, ranges, pixels)


async def _source_of(archive: Archive, item: Renderable) -> _Source:
    return _source(item, await pixel_source(archive, item))


def _memory_needed(item: Renderable, options: RenderOptions, thumbnail: bool) -> int:
    """What rendering one frame of ``item`` will hold, from the index alone; BadRequest
    when the requested size is beyond the archive's bounds. Called for every image of a
    response before its first byte."""
    pixel = item.stored.pixel
    assert pixel is not None
    rows, columns = pixel.rows or 1, pixel.columns or 1
    size = output_size(options, rows, columns, thumbnail=thumbnail)
    return working_memory(rows, columns, pixel.samples_per_pixel or 1, pixel.bits_allocated or 16, size)


async def render_frame(
    archive: Archive, source: _Source, frame: int, media_type: str, options: RenderOptions, thumbnail: bool
) -> bytes:
    """One frame (1-based) of ``source`` rendered as ``media_type``, within the process's
    render memory budget."""
    stored, ranges = source.item.stored, source.ranges
    if not 1 <= frame <= len(ranges):
        raise NotFound(f"the instance has {len(ranges)} frame(s); there is no frame {frame}")
    async with archive.render_budget.reserve(_memory_needed(source.item, options, thumbnail)):
        data = b"".join([c async for c in read_frame(archive.store, stored.object_key, ranges[frame - 1])])
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            archive.renderer, _render, data, source.pixels, frame - 1, media_type, options, thumbnail
        )


def _render(
    data: bytes, pixels: PixelSource, index: int, media_type: str, options: RenderOptions, thumbnail: bool
) -> bytes:
    description = pixels.pixel_description()
    presentation = pixels.presentation(index)
    return render(
        decode_frame(data, description), description, presentation, media_type, options, thumbnail=thumbnail
    )


async def rendered_instance(
    archive: Archive, trail: Trail, choice: RenderedChoice, options: RenderOptions,
    study: str, series: str, instance: str, frames: list[int] | None = None,
) -> Body:  # fmt: skip
    """An instance (all its frames) or chosen frames of it, rendered."""
    item = await _renderable(archive, trail, study, series, instance)
    _memory_needed(item, options, False)
    source = await _source_of(archive, item)
    numbers = frames or list(range(1, _frame_count(item) + 1))
    if len(numbers) == 1 and not choice.multipart:
        image = await render_frame(archive, source, numbers[0], choice.media_type, options, False)
        return await audit.sending(archive, trail, _single(image, choice.media_type))
    for number in numbers:  # every frame exists, or the response is a 404 before any byte
        if number > _frame_count(item):
            raise NotFound(f"the instance has {_frame_count(item)} frame(s); there is no frame {number}")

    async def images() -> AsyncIterator[bytes]:
        for number in numbers:
            yield await render_frame(archive, source, number, choice.media_type, options, False)

    return await audit.sending(archive, trail, await _multipart(images(), choice.media_type))


async def rendered_collection(
    archive: Archive,
    trail: Trail,
    choice: RenderedChoice,
    options: RenderOptions,
    study: str,
    series: str | None,
) -> Body:
    """Each instance of a study or series, its first frame rendered, one part each."""
    found = await retrieve.renderables(archive.pool, trail.scope, study, series)
    if not found:
        raise NotFound(f"no series {series} in study {study}" if series else f"no study {study}")
    items = [_noted(trail, study, item) for item in found]
    for item in items:
        _memory_needed(item, options, False)
    sources = [_source(i, p) for i, p in zip(items, await pixel_sources(archive, items), strict=True)]

    async def images() -> AsyncIterator[bytes]:
        for source in sources:
            yield await render_frame(archive, source, 1, choice.media_type, options, False)

    return await audit.sending(archive, trail, await _multipart(images(), choice.media_type))


async def thumbnail(
    archive: Archive, trail: Trail, choice: RenderedChoice, options: RenderOptions,
    study: str, series: str | None = None, instance: str | None = None, frame: int | None = None,
) -> Body:  # fmt: skip
    """A small image standing for a study, series, instance or frame (the middle instance
    of the first series, the middle frame of a multi-frame instance)."""
    if instance is None:
        # One query finds the representative instance and what rendering it needs.
        chosen = await retrieve.representative(archive.pool, trail.scope, study, series)
        if chosen is None:
            raise NotFound(f"no series {series} in study {study}" if series else f"no study {study}")
        item = _noted(trail, study, chosen)
    else:
        assert series is not None
        item = await _renderable(archive, trail, study, series, instance)
    _memory_needed(item, options, True)
    number = frame or (_frame_count(item) + 1) // 2
    if options != RenderOptions():
        image = await render_frame(
            archive, await _source_of(archive, item), number, choice.media_type, options, True
        )
        return await audit.sending(archive, trail, _single(image, choice.media_type))
    return await audit.sending(
        archive,
        trail,
        _single(await _cached_thumbnail(archive, item, number, choice.media_type), choice.media_type),
    )


async def _cached_thumbnail(archive: Archive, item: Renderable, frame: int, media_type: str) -> bytes:
    # Only default thumbnails are cached: a bounded set of variants per instance.
    variant = f"thumbnail/{frame}/{media_type}"
    key = _derived_key(item.stored.object_key, variant)
    remembered = archive.thumbnails.get(key)
    if remembered is not None:
        return remembered
    # One query: the stored thumbnail, or else the metadata to render it from when what
    # derives from that is not known yet.
    known = archive.pixel_sources.get(item.stored.object_key) is not None
    found = await retrieve.derived_or_metadata(archive.pool, item.pk, variant, not known)
    if found is None:
        raise NotFound(f"instance {item.sop_instance_uid} was deleted")
    cached, metadata = found
    if cached is not None:
        image = b"".join([c async for c in drain(await archive.store.open(cached[0]))])
        archive.thumbnails.put(key, image)
        return image
    source = _source(item, await pixel_source(archive, item, metadata))
    image = await render_frame(archive, source, frame, media_type, RenderOptions(), True)
    # Answered from memory from now on (safe: looked up only after the request has found
    # the instance), and saved for every process after the response, not before it.
    archive.thumbnails.put(key, image)
    await archive.followups.run(_keep_thumbnail(archive, item.pk, variant, key, media_type, image))
    return image


async def _keep_thumbnail(
    archive: Archive, instance_pk: int, variant: str, key: str, media_type: str, image: bytes
) -> None:
    """Store a rendered thumbnail and record it: the object first, so no row ever names a
    missing one."""
    await archive.store.put(key, _one(image))
    if not await retrieve.remember_derived(archive.pool, instance_pk, variant, key, media_type, len(image)):
        await archive.store.delete(key)  # the instance was deleted meanwhile


def _derived_key(object_key: str, variant: str) -> str:
    """A key for a derivative, in the store's key form, fixed by the instance's own key."""
    digest = hashlib.sha256(f"{object_key}|{variant}".encode()).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest[:32]}"


def _single(image: bytes, media_type: str) -> Body:
    return Body(media_type, _one(image), len(image))


async def _multipart(images: AsyncIterator[bytes], media_type: str) -> Body:
    """One part per image. The first is rendered now, so that what fails for all of them
    (pixel data the archive cannot decode) is a status, not a cut body."""
    first = await anext(images)

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        yield {"Content-Type": media_type}, _one(first)
        async for image in images:
            yield {"Content-Type": media_type}, _one(image)

    boundary = multipart_boundary()
    return Body(related_content_type(boundary, media_type), stream_multipart(parts(), boundary))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def uri_image(
    archive: Archive,
    trail: Trail,
    study: str,
    series: str,
    instance: str,
    media_type: str,
    options: RenderOptions,
) -> Body | None:
    """A WADO-URI image (PS3.18 §9.1.2.2): the chosen frame (default the first) rendered;
    None when the object has no pixel data (the caller then sends it as DICOM)."""
    item = await retrieve.renderable(archive.pool, trail.scope, study, series, instance)
    if item is None:
        raise NotFound(f"no instance {instance} in series {series} of study {study}")
    if item.stored.pixel is None:
        return None
    trail.note_instance(study, series, instance, item.stored)
    source = await _source_of(archive, item)
    image = await render_frame(archive, source, options.frame_number or 1, media_type, options, False)
    return await audit.sending(archive, trail, _single(image, media_type))
