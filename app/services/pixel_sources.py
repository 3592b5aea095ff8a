"""The :class:`~app.dicom.pixel_source.PixelSource` of stored instances, kept by object key.

An object never changes under its key (keys are random and never reused), so what derives
from it is computed once per process: the instance's DICOM JSON is read from the index and
parsed, and its LUT values read from the store, on the first request only. Every request
still finds and authorises the instance's index row first, and takes the object key from
that row: an instance deleted (or stored again, under a new key) is never served from an
old entry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

from app.dicom.header import BULK_PLACEHOLDER
from app.dicom.pixel_source import PixelSource
from app.dicom.pixels import Presentation
from app.errors import NotFound
from app.repository import retrieve
from app.repository.retrieve import Renderable
from app.services.archive import Archive
from app.services.bodies import read_frame

#: DICOM JSON longer than this is parsed off the event loop.
_PARSE_OFF_LOOP = 256 << 10


async def pixel_source(archive: Archive, item: Renderable, metadata: str | None = None) -> PixelSource:
    """The source of ``item``, made from its ``metadata`` text if it is given and needed."""
    (source,) = await pixel_sources(archive, [item], None if metadata is None else {item.pk: metadata})
    return source


async def pixel_sources(
    archive: Archive, items: Sequence[Renderable], texts: Mapping[int, str] | None = None
) -> list[PixelSource]:
    """The sources of ``items``, in order; the metadata of those not known yet is read in
    one query, unless ``texts`` has it (by instance pk). NotFound when one of them was
    deleted since its row was found."""
    cache = archive.pixel_sources
    known = {item.stored.object_key: cache.get(item.stored.object_key) for item in items}
    missing = {item.stored.object_key: item for item in items if known[item.stored.object_key] is None}
    if missing:
        if texts is None or any(item.pk not in texts for item in missing.values()):
            texts = await retrieve.instance_metadata(archive.pool, [item.pk for item in missing.values()])
        for key, item in missing.items():
            text = texts.get(item.pk)
            if text is None:
                raise NotFound(f"instance {item.sop_instance_uid} was deleted")
            source = await _built(archive, item, text)
            cache.put(key, source, source.size)
            known[key] = source
    return [_present(known[item.stored.object_key]) for item in items]


def _present(source: PixelSource | None) -> PixelSource:
    assert source is not None
    return source


async def _built(archive: Archive, item: Renderable, text: str) -> PixelSource:
    if len(text) > _PARSE_OFF_LOOP:
        metadata = await asyncio.to_thread(json.loads, text)
    else:
        metadata = json.loads(text)
    stored = item.stored
    # LUT values the metadata holds as bulk data (palettes, LUT sequences), read from the
    # stored object at the offsets recorded at ingest.
    luts: dict[str, bytes] = {}
    for uri in Presentation.bulk_data_uris(metadata):
        location = stored.bulk.get(uri.removeprefix(BULK_PLACEHOLDER))
        if location is not None:
            luts[uri] = b"".join([c async for c in read_frame(archive.store, stored.object_key, [location])])
    return PixelSource.from_json(
        metadata, stored.transfer_syntax_uid, luts, stored.pixel is not None, len(text)
    )
