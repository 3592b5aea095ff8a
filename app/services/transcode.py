"""Transcoding a compressed instance to Explicit VR Little Endian for clients that cannot
decode it (PS3.18 §8.7.3.5: the transfer-syntax media type parameter), as a stream:
the stored header re-encoded, then each frame decoded in the renderer pool, one at a
time, so a large multi-frame instance never sits in memory."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import AsyncIterator

import pydicom
import pydicom.uid

from app.dicom.frames import frame_ranges
from app.dicom.pixels import NativeFrame, PixelDescription, native_frame_bytes
from app.dicom.transfer_syntaxes import EXPLICIT_VR_LITTLE_ENDIAN
from app.errors import NotAcceptable
from app.repository.retrieve import Renderable
from app.services.budget import decoding_memory
from app.services.reading import read_frame
from app.state import Archive

# Lossy compressed syntaxes (PS3.5 §8.2): their decoded pixels keep Lossy Image Compression.
_LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93",
}
# The element header before an encapsulated Pixel Data value: tag, VR OB, reserved, length.
_EXPLICIT_HEADER = 4 + 2 + 2 + 4


def can_transcode(item: Renderable) -> bool:
    pixel = item.stored.pixel
    return pixel is not None and pixel.encapsulated and frame_ranges(pixel) is not None


async def transcoded(archive: Archive, item: Renderable) -> AsyncIterator[bytes]:
    stored, pixel = item.stored, item.stored.pixel
    ranges = frame_ranges(pixel) if pixel is not None else None
    if pixel is None or ranges is None:
        raise NotAcceptable("this instance cannot be converted to Explicit VR Little Endian")
    description = PixelDescription.from_json(json.loads(item.metadata), stored.transfer_syntax_uid)
    loop = asyncio.get_running_loop()

    need = decoding_memory(pixel.rows, pixel.columns, pixel.samples_per_pixel, pixel.bits_allocated)

    async def decode(index: int) -> NativeFrame:
        async with archive.render_budget.reserve(need):
            data = b"".join([c async for c in read_frame(archive.store, stored.object_key, ranges[index])])
            return await loop.run_in_executor(archive.renderer, native_frame_bytes, data, description)

    # The first frame tells what the decoded pixels are (YBR becomes RGB) before the header.
    first = await decode(0)
    header_end = pixel.offset - _EXPLICIT_HEADER
    head = b"".join([c async for c in read_frame(archive.store, stored.object_key, [(0, header_end)])])
    length = len(first.data) * len(ranges)
    yield await asyncio.to_thread(_header, head, first.description, stored.transfer_syntax_uid, length)
    yield first.data
    for index in range(1, len(ranges)):
        yield (await decode(index)).data
    if length % 2:
        yield b"\x00"  # values have even length (PS3.5 §7.1.1)


def _header(head: bytes, decoded: PixelDescription, source: str, length: int) -> bytes:
    """The stored Part 10 header re-encoded for native pixels, up to Pixel Data's value."""
    ds = pydicom.dcmread(io.BytesIO(head), force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_VR_LITTLE_ENDIAN)
    ds.PhotometricInterpretation = decoded.photometric_interpretation
    if decoded.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    if source in _LOSSY:
        ds.LossyImageCompression = "01"
    for tag in (0x7FE00001, 0x7FE00002):  # offset tables describe the encapsulated form only
        if tag in ds:
            del ds[tag]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    vr = b"OW" if decoded.bits_allocated > 8 else b"OB"
    return out.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length + length % 2)
