"""Converting a stored instance to Explicit VR Little Endian (PS3.18 §8.7.3, Table 8.7.3-2:
the default of ``application/dicom``; PS3.5 §A.2), from any stored syntax.

Two ways, chosen per instance:

* **frame by frame** (Implicit VR Little Endian, Explicit VR Big Endian, compressed
  syntaxes whose frames the index locates): the stored header re-encoded, then each frame
  read with one ranged read and, where needed, decoded in the renderer pool, one at a
  time, so a large instance never sits in memory;
* **whole** (Deflated, PS3.5 §A.5, whose offsets mean nothing in the stored bytes;
  objects without Pixel Data; compressed frames the index cannot tell apart): the one
  instance read and rewritten by pydicom in memory.

A started response cannot change its status, so :func:`prepare` tries each conversion
before the response starts (the first frame decoded, or the whole instance rewritten)
and raises the 406 there; :func:`transcoded` then streams what was prepared."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass

import numpy as np
import pydicom
import pydicom.uid

from app.dicom.frames import Frame, frame_ranges
from app.dicom.pixel_source import PixelSource
from app.dicom.pixels import NativeFrame, PixelDescription, UnsupportedPixelData, native_frame_bytes
from app.dicom.transfer_syntaxes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from app.errors import NotAcceptable
from app.repository.retrieve import Renderable
from app.services.archive import Archive
from app.services.bodies import drain, read_frame
from app.services.budget import decoding_memory

# Lossy compressed syntaxes (PS3.5 §8.2): their decoded pixels keep Lossy Image Compression.
_LOSSY = {
    pydicom.uid.JPEGBaseline8Bit,
    pydicom.uid.JPEGExtended12Bit,
    pydicom.uid.JPEGLSNearLossless,
    pydicom.uid.JPEG2000,
    pydicom.uid.JPEG2000MC,
}
# The element header before Pixel Data's value (PS3.5 §7.1.2): tag and length in Implicit
# VR; tag, VR OB/OW, reserved and length in Explicit VR.
_IMPLICIT_HEADER = 4 + 4
_EXPLICIT_HEADER = 4 + 2 + 2 + 4
# Pydicom's complaints about a data set it cannot read, decode or write.
_REWRITE_ERRORS = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    EOFError,
)


@dataclass
class Conversion:
    """What converting one instance needs, and what was already made of it."""

    item: Renderable
    #: Frames to convert one by one; None: the instance is rewritten whole.
    ranges: list[Frame] | None
    description: PixelDescription | None
    #: The converted first frame (frame by frame) or instance (whole), once prepared.
    first: NativeFrame | None = None
    #: The re-encoded header up to Pixel Data's value, with the first frame.
    header: bytes = b""
    whole: bytes | None = None

    @property
    def kind(self) -> Hashable:
        """Instances of one kind convert alike: trying one tells whether all can."""
        return (self.item.stored.transfer_syntax_uid, self.ranges is None, self.description and (
            self.description.photometric_interpretation, self.description.bits_allocated,
            self.description.bits_stored, self.description.samples_per_pixel,
        ))  # fmt: skip

    @property
    def prepared(self) -> bool:
        return self.first is not None or self.whole is not None


def conversion(item: Renderable, source: PixelSource) -> Conversion:
    """How ``item`` converts, from its pixel ``source``; 406 when its Image Pixel
    attributes cannot be decoded."""
    stored, pixel = item.stored, item.stored.pixel
    if source.problem is not None:
        raise UnsupportedPixelData(source.problem)
    description = source.description
    ranges = None
    if pixel is not None and stored.transfer_syntax_uid != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        ranges = frame_ranges(pixel)
    return Conversion(item, ranges, description)


async def prepare(archive: Archive, conv: Conversion) -> None:
    """Convert what can fail before the response starts: the first frame, or the whole
    instance. Raises UnsupportedPixelData (406) when it cannot be converted."""
    if conv.ranges is not None:
        stored, pixel = conv.item.stored, conv.item.stored.pixel
        assert pixel is not None
        first = await _decode(archive, conv, 0)
        implicit = stored.transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
        end = pixel.offset - (_IMPLICIT_HEADER if implicit else _EXPLICIT_HEADER)
        head = b"".join([c async for c in read_frame(archive.store, stored.object_key, [(0, end)])])
        length = len(first.data) * len(conv.ranges)
        conv.header = await asyncio.to_thread(
            _header, head, first.description, stored.transfer_syntax_uid, length
        )
        conv.first = first
        return
    reader = await archive.store.open(conv.item.stored.object_key)
    data = b"".join([chunk async for chunk in drain(reader)])
    loop = asyncio.get_running_loop()
    conv.whole = await loop.run_in_executor(archive.renderer, _rewritten, data)


async def transcoded(archive: Archive, conv: Conversion) -> AsyncIterator[bytes]:
    if not conv.prepared:
        await prepare(archive, conv)
    if conv.whole is not None:
        data, conv.whole = conv.whole, None
        yield data
        return
    first, ranges = conv.first, conv.ranges
    assert first is not None and ranges is not None
    conv.first = None
    yield conv.header
    yield first.data
    for index in range(1, len(ranges)):
        yield (await _decode(archive, conv, index)).data
    if len(first.data) * len(ranges) % 2:
        yield b"\x00"  # values have even length (PS3.5 §7.1.1)


async def _decode(archive: Archive, conv: Conversion, index: int) -> NativeFrame:
    stored, pixel, ranges, description = (
        conv.item.stored,
        conv.item.stored.pixel,
        conv.ranges,
        conv.description,
    )
    assert pixel is not None and ranges is not None and description is not None
    need = decoding_memory(pixel.rows, pixel.columns, pixel.samples_per_pixel, pixel.bits_allocated)
    loop = asyncio.get_running_loop()
    async with archive.render_budget.reserve(need):
        data = b"".join([c async for c in read_frame(archive.store, stored.object_key, ranges[index])])
        return await loop.run_in_executor(archive.renderer, native_frame_bytes, data, description)


def _header(head: bytes, decoded: PixelDescription, source: str, length: int) -> bytes:
    """The stored Part 10 header re-encoded for native pixels, up to Pixel Data's value."""
    try:
        ds = pydicom.dcmread(io.BytesIO(head), force=True)
        _describe_native(ds, decoded.photometric_interpretation, decoded.samples_per_pixel, source)
        out = _little_endian(ds, source)
    except _REWRITE_ERRORS as exc:
        raise UnsupportedPixelData(f"cannot re-encode the header: {str(exc).splitlines()[0]}") from exc
    vr = b"OW" if decoded.bits_allocated > 8 else b"OB"
    return out.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length + length % 2)


def _describe_native(ds: pydicom.Dataset, interpretation: str, samples: int, source: str) -> None:
    """Image Pixel attributes for the decoded pixels: a YBR JPEG frame decodes to RGB
    (PS3.3 C.7.6.3.1.2; PS3.5 §8.2.1 lets only the compressed form carry YBR_FULL_422),
    samples interleaved, and a lossy source stays marked lossy (PS3.3 C.7.6.1.1.5)."""
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_VR_LITTLE_ENDIAN)
    ds.PhotometricInterpretation = interpretation
    if samples > 1:
        ds.PlanarConfiguration = 0
    if source in _LOSSY:
        ds.LossyImageCompression = "01"
    for tag in (0x7FE00001, 0x7FE00002):  # offset tables describe the encapsulated form only
        if tag in ds:
            del ds[tag]


def _rewritten(data: bytes) -> bytes:
    """One whole instance as Explicit VR Little Endian, its pixels decoded if compressed
    (blocking: run it in the renderer pool)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        source = str(ds.file_meta.TransferSyntaxUID)
        if "PixelData" in ds and pydicom.uid.UID(source).is_encapsulated:
            ds.decompress(as_rgb=True)
            samples = int(ds.get("SamplesPerPixel", 1))
            _describe_native(ds, str(ds.PhotometricInterpretation), samples, source)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_VR_LITTLE_ENDIAN)
        out = _little_endian(ds, source)
    except _REWRITE_ERRORS as exc:
        raise UnsupportedPixelData(
            f"cannot convert this instance to Explicit VR Little Endian: {str(exc).splitlines()[0]}"
        ) from exc
    return out.getvalue()


# Values of these VRs are strings of binary words in the byte order of the transfer
# syntax (PS3.5 §7.3), which pydicom does not convert: the word size of each.
_WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _little_endian(ds: pydicom.Dataset, source: str) -> io.BytesIO:
    """``ds`` written as Explicit VR Little Endian. From Explicit VR Big Endian (PS3.5
    §A.3) pydicom re-encodes numbers, not binary words: those are swapped here."""
    if source == EXPLICIT_VR_BIG_ENDIAN:
        _swap_words(ds)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out


def _swap_words(ds: pydicom.Dataset) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_words(item)
        elif element.VR in _WORDS and isinstance(element.value, bytes) and element.value:
            width = _WORDS[element.VR]
            usable = len(element.value) - len(element.value) % width
            words = np.frombuffer(element.value[:usable], dtype=f">u{width}").astype(f"<u{width}")
            element.value = words.tobytes() + element.value[usable:]


def refused(sop_instance_uid: str, stored: str, problem: NotAcceptable) -> NotAcceptable:
    return NotAcceptable(
        f"instance {sop_instance_uid} is stored as {stored} and cannot be converted to Explicit "
        f"VR Little Endian ({problem.message}); ask for transfer-syntax=* to get it as stored"
    )
