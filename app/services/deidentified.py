"""De-identified copies of stored instances, streamed: the header (everything before the
pixel data) is read, de-identified (app.dicom.deidentification) and written anew; the
pixel data and what follows go on chunk by chunk as stored. Only one instance's header
is ever held in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.dicom.deidentification import is_deflated, pixel_tag_at, remap_uid, rewrite_header


async def deidentified(
    chunks: AsyncIterator[bytes], key: bytes, transfer_syntax: str
) -> AsyncIterator[bytes]:
    """The Part 10 file ``chunks`` carries, de-identified with ``key``."""
    prefix = bytearray()
    whole = is_deflated(transfer_syntax)
    searched, retry_until = 0, -1
    async for chunk in chunks:
        prefix += chunk
        if whole:
            continue
        # Parsed again only when a pixel data tag may have arrived, or while the element
        # header after one is incomplete: a large header is not re-read for every chunk.
        found = pixel_tag_at(prefix, max(0, searched - 3))
        searched = len(prefix)
        if found >= 0:
            retry_until = found + 16
        elif len(prefix) > retry_until + len(chunk):
            continue
        done = await asyncio.to_thread(rewrite_header, bytes(prefix), key, False)
        if done is not None:
            header, used = done
            yield header
            yield bytes(prefix[used:])
            prefix.clear()
            async for rest in chunks:
                yield rest
            return
    # No pixel data (or a deflated data set): the whole file was the header.
    done = await asyncio.to_thread(rewrite_header, bytes(prefix), key, True)
    assert done is not None  # a complete file is rewritten or raises
    yield done[0]


def instance_path(key: bytes, study: str, series: str, instance: str) -> str:
    """An instance's WADO-RS path under its replacement UIDs."""
    study, series, instance = (remap_uid(key, u) for u in (study, series, instance))
    return f"/studies/{study}/series/{series}/instances/{instance}"
