"""Response bodies read from the object store: whole objects and frames, each frame with one
ranged read (frames spanning several fragments are read as one span and the item
headers between them dropped)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from app.dicom.frames import Frame
from app.storage.base import BlobReader, BlobStore


@dataclass(frozen=True)
class Body:
    media_type: str
    chunks: AsyncIterator[bytes]
    length: int | None = None
    #: ``Content-Range`` of a partial (206) response.
    content_range: str | None = None
    #: Why some of what was asked for is left out (a 206 with this ``Warning``, PS3.18 §8.5).
    warning: str | None = None

    @property
    def status(self) -> int:
        return 206 if self.content_range is not None or self.warning is not None else 200


async def drain(reader: BlobReader) -> AsyncIterator[bytes]:
    try:
        async for chunk in reader:
            yield chunk
    finally:
        await reader.aclose()


async def open_frame(store: BlobStore, key: str, frame: Frame, swap_width: int = 0) -> AsyncIterator[bytes]:
    """The bytes of one frame, with the object opened by this call: a missing object or an
    unreachable store fails here, before a response that will carry the frame starts.
    ``swap_width`` > 1 converts big-endian samples of that many bytes to little endian
    (native Explicit VR Big Endian, PS3.5 §A.3)."""
    if len(frame) == 1 and swap_width <= 1:
        offset, length = frame[0]
        return drain(await store.open(key, offset, offset + length))
    start = frame[0][0]
    reader = await store.open(key, start, frame[-1][0] + frame[-1][1])
    return _pieces(reader, frame, start, swap_width)


async def _pieces(reader: BlobReader, frame: Frame, start: int, swap_width: int) -> AsyncIterator[bytes]:
    # Frames spanning several fragments are read as one span, the item headers dropped.
    span = b"".join([chunk async for chunk in drain(reader)])
    data = b"".join(span[o - start : o - start + n] for o, n in frame)
    yield _little_endian(data, swap_width) if swap_width > 1 else data


async def read_frame(store: BlobStore, key: str, frame: Frame, swap_width: int = 0) -> AsyncIterator[bytes]:
    """:func:`open_frame`, opened when first iterated."""
    async for chunk in await open_frame(store, key, frame, swap_width):
        yield chunk


def _little_endian(data: bytes, width: int) -> bytes:
    return np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()
